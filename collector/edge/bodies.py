"""Request bodies: read under a byte limit, gunzipped under the same limit, compressed and inflated."""

from __future__ import annotations

import zlib

from starlette.types import Message, Receive

from collector.errors import BodyTooLarge, InvalidEncoding, UnsupportedMediaType


class ClientDisconnected(Exception):
    """The client went away before its body was read (or was cut off by the read deadline): answer nothing."""


def decoder_for(encoding: bytes | None) -> zlib._Decompress | None:
    """A gzip decompressor for `Content-Encoding: gzip`, None for identity; 415 for anything else."""
    if encoding is None:
        return None
    value = encoding.strip().lower()
    if value == b"gzip" or value == b"x-gzip":
        return zlib.decompressobj(wbits=31)
    if value in (b"", b"identity"):
        return None
    raise UnsupportedMediaType("Content-Encoding must be gzip or identity")


async def read_body(receive: Receive, limit: int, content_length: bytes | None, encoding: bytes | None = None) -> bytes:
    """The request body, refusing (413) as soon as it passes `limit` bytes, whatever Content-Length said.

    A gzip body is decompressed chunk by chunk, never producing more than `limit` + 1 bytes, so a gzip bomb
    costs at most `limit` bytes of memory before its 413.
    """
    decoder = decoder_for(encoding)
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            declared = 0
        if declared > limit:
            raise BodyTooLarge(f"the body is {declared} bytes; at most {limit} are accepted")
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    if decoder is not None:
        return await _read_gzip(receive, message, decoder, limit)
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_gzip(receive: Receive, message: Message, decoder: zlib._Decompress, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = compressed = 0
    while True:
        data = message.get("body", b"")
        # Without Content-Length (chunked) nothing else bounds the compressed bytes: gzip that inflates to little
        # or nothing (empty deflate blocks) would be read for ever. Compressed is never larger than `limit` either.
        compressed += len(data)
        if compressed > limit:
            raise BodyTooLarge(f"the compressed body is larger than {limit} bytes")
        chunk = _inflate(decoder, data, limit - size)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes once decompressed")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
    if not decoder.eof or decoder.unused_data:
        raise InvalidEncoding("the gzip body is truncated or followed by other data")
    return b"".join(chunks)


def _inflate(decoder: zlib._Decompress, data: bytes, room: int) -> bytes:
    """Decompress `data`, producing at most `room` + 1 bytes (one more than allowed is enough to refuse)."""
    if decoder.eof:
        if data:
            raise InvalidEncoding("data after the end of the gzip stream")
        return b""
    try:
        out = decoder.decompress(data, room + 1)
    except zlib.error as exc:
        raise InvalidEncoding(f"the body is not valid gzip: {exc}") from None
    return out
