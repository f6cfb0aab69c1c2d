"""The pipeline's object stores as Settings describe them: S3 buckets when named, else directories under DATA_DIR."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from collector.settings import BucketSettings, Settings
from pipeline.clients import ClientConfigError
from pipeline.objects import LocalStore, ObjectStore, S3Location, S3Store


class Stores:
    """Raw and processed stores, and clients' own processed buckets opened once on first use.

    A client's own bucket is reached with the processed bucket's credentials and endpoint; in development (no
    PROCESSED_S3_BUCKET) it is a directory of that name beside the processed one.
    """

    def __init__(self, settings: Settings, stack: AsyncExitStack, raw: ObjectStore, processed: ObjectStore) -> None:
        self._settings = settings
        self._stack = stack
        self.raw = raw
        self.processed = processed
        self._own: dict[str, ObjectStore] = {}

    @classmethod
    async def open(cls, settings: Settings, stack: AsyncExitStack) -> Stores:
        """Open both stores; the S3 clients close with `stack`."""
        local = Path(settings.data_dir) / "objects"
        raw: ObjectStore
        processed: ObjectStore
        if settings.raw.bucket:
            raw = await S3Store.open(_location(settings.raw, settings.raw.bucket), stack)
        else:
            raw = LocalStore(local / "raw")
        if settings.processed.bucket:
            processed = await S3Store.open(_location(settings.processed, settings.processed.bucket), stack)
        else:
            processed = LocalStore(local / "processed")
        return cls(settings, stack, raw, processed)

    async def client_bucket(self, bucket: str) -> ObjectStore:
        """A client's own bucket; ClientConfigError if it names the raw bucket (no client writes among raw objects)."""
        raw = self._settings.raw.bucket or (None if self._settings.processed.bucket else "raw")
        if bucket == raw:
            raise ClientConfigError(f"processed_bucket {bucket} is the raw bucket")
        store = self._own.get(bucket)
        if store is None:
            if self._settings.processed.bucket:
                store = await S3Store.open(_location(self._settings.processed, bucket), self._stack)
            else:
                store = LocalStore(Path(self._settings.data_dir) / "objects" / _safe_dir(bucket))
            self._own[bucket] = store
        return store


def _location(settings: BucketSettings, bucket: str) -> S3Location:
    """`bucket` reached as `settings` say: their credentials, region and (resolved) endpoint."""
    return S3Location(
        bucket,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
    )


def _safe_dir(bucket: str) -> str:
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in bucket).strip(".")
    if not name:
        raise ValueError(f"bucket name {bucket!r} cannot be a directory")
    return name
