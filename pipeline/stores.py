"""The pipeline's object stores as Settings describe them: S3 buckets when named, else directories under DATA_DIR."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from collector.settings import Settings
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
        if settings.raw_s3_bucket:
            raw = await S3Store.open(_location(settings, settings.raw_s3_bucket, raw_bucket=True), stack)
        else:
            raw = LocalStore(local / "raw")
        if settings.processed_s3_bucket:
            processed = await S3Store.open(_location(settings, settings.processed_s3_bucket, raw_bucket=False), stack)
        else:
            processed = LocalStore(local / "processed")
        return cls(settings, stack, raw, processed)

    async def client_bucket(self, bucket: str) -> ObjectStore:
        """A client's own bucket; ClientConfigError if it names the raw bucket (no client writes among raw objects)."""
        raw = self._settings.raw_s3_bucket or (None if self._settings.processed_s3_bucket else "raw")
        if bucket == raw:
            raise ClientConfigError(f"processed_bucket {bucket} is the raw bucket")
        store = self._own.get(bucket)
        if store is None:
            if self._settings.processed_s3_bucket:
                store = await S3Store.open(_location(self._settings, bucket, raw_bucket=False), self._stack)
            else:
                store = LocalStore(Path(self._settings.data_dir) / "objects" / _safe_dir(bucket))
            self._own[bucket] = store
        return store


def _location(settings: Settings, bucket: str, *, raw_bucket: bool) -> S3Location:
    s = settings
    endpoint, region, access_key, secret_key = (
        (s.raw_s3_endpoint_url, s.raw_s3_region, s.raw_s3_access_key, s.raw_s3_secret_key)
        if raw_bucket
        else (s.processed_s3_endpoint_url, s.processed_s3_region, s.processed_s3_access_key, s.processed_s3_secret_key)
    )
    return S3Location(
        bucket,
        endpoint_url=endpoint or s.s3_endpoint_url,
        region=region,
        access_key=access_key,
        secret_key=secret_key,
    )


def _safe_dir(bucket: str) -> str:
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in bucket).strip(".")
    if not name:
        raise ValueError(f"bucket name {bucket!r} cannot be a directory")
    return name
