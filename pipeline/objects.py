"""Object stores the pipeline writes to: S3 (aioboto3, any S3-compatible endpoint) or a local directory."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aioboto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

# Keys are ours (raw-events/..., processed-events/<client>/... or processed-events/client_id=<client>/date=<day>/...):
# anything else is refused before it becomes a path. fullmatch, never `$`: `$` also matches before a trailing newline.
_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=\-/]{0,1023}")


class ObjectStoreError(Exception):
    """The store could not do what was asked (unreachable, denied, missing object); retry on a later cycle."""


def check_key(key: str) -> str:
    if not _SAFE_KEY.fullmatch(key) or ".." in key.split("/") or "//" in key:
        raise ValueError(f"unsafe object key {key!r}")
    return key


class ObjectStore(Protocol):
    """Where raw or processed objects live. `put` of an existing key replaces it: keys are deterministic."""

    name: str  # for status and error lines: s3://bucket or file://dir
    # Where "Successfully uploaded N events to raw <destination>: <key>" says the events went: "S3" (the seed's
    # line, which log searches expect), or the local folder that development mode writes to instead.
    destination: str

    async def put(self, key: str, body: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes: ...

    def list_keys(self, prefix: str) -> AsyncIterator[str]:
        """Every key under `prefix`, however many (pages past the 1,000-key listing limit)."""
        ...


class LocalStore:
    """A directory with the same keys as the bucket would have (development mode: `make run` exports anyway)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"file://{root}"
        self.destination = f"local folder {root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, body: bytes, content_type: str) -> None:
        try:
            await asyncio.to_thread(self._write, self._path(key), body)
        except OSError as exc:
            raise ObjectStoreError(f"{self.name}/{key}: {exc}") from exc

    @staticmethod
    def _write(path: Path, body: bytes) -> None:
        # Written beside the target and renamed over it: a reader never sees half an object.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(body)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    async def get(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except OSError as exc:
            raise ObjectStoreError(f"{self.name}/{key}: {exc}") from exc

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        paths = await asyncio.to_thread(lambda: sorted(p for p in self.root.rglob("*") if p.is_file()))
        for path in paths:
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix) and not path.name.startswith(".tmp-"):
                yield key


@dataclass(frozen=True, slots=True)
class S3Location:
    """A bucket and how to reach it; credentials None means the default AWS chain (env, profile, role)."""

    bucket: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None


class S3Store:
    """One bucket through one long-lived aioboto3 client (opened by `open`, closed with the stack)."""

    def __init__(self, location: S3Location, client: Any) -> None:
        self.location = location
        self.name = f"s3://{location.bucket}"
        self.destination = "S3"
        self._client = client

    @classmethod
    async def open(cls, location: S3Location, stack: AsyncExitStack, *, timeout_s: float = 30.0) -> S3Store:
        session = aioboto3.Session(
            aws_access_key_id=location.access_key,
            aws_secret_access_key=location.secret_key,
            region_name=location.region,
        )
        config = BotoConfig(
            connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 3, "mode": "standard"}
        )
        client = await stack.enter_async_context(
            session.client("s3", endpoint_url=location.endpoint_url, config=config)
        )
        return cls(location, client)

    async def put(self, key: str, body: bytes, content_type: str) -> None:
        try:
            await self._client.put_object(
                Bucket=self.location.bucket, Key=check_key(key), Body=body, ContentType=content_type
            )
        except (BotoCoreError, ClientError) as exc:
            raise ObjectStoreError(f"{self.name}/{key}: upload failed: {exc}") from exc

    async def get(self, key: str) -> bytes:
        try:
            response = await self._client.get_object(Bucket=self.location.bucket, Key=check_key(key))
            async with response["Body"] as stream:
                body: bytes = await stream.read()
                return body
        except (BotoCoreError, ClientError) as exc:
            raise ObjectStoreError(f"{self.name}/{key}: download failed: {exc}") from exc

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except (BotoCoreError, ClientError) as exc:
            raise ObjectStoreError(f"{self.name}: listing {prefix!r} failed: {exc}") from exc
