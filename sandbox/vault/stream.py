"""Streaming authenticated encryption: AES-256-GCM over fixed-size chunks (the STREAM
construction of Hoang, Reyhanitabar, Rogaway and Vizár, "Online Authenticated-Encryption
and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015, as in Tink's streaming AEAD and age).

A stream is a sequence of chunks, each ``chunk_size`` bytes of plaintext (the last one
shorter, possibly empty) sealed on its own::

    nonce(i) = prefix (7 random bytes, one per stream) || i (4 bytes, big-endian) || last (1 byte)
    chunk(i) = AES-256-GCM(key, nonce(i), plaintext(i), associated data) || tag (16 bytes)

so that memory stays at one chunk whatever the size of the stream, and a reader detects a
chunk changed, dropped, reordered, repeated or moved from another stream (the associated
data names the stream), and a stream cut short (only the last chunk carries the flag).
Pure functions over iterables of bytes; no files, no keys kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32  # AES-256
PREFIX_BYTES = 7
TAG_BYTES = 16
DEFAULT_CHUNK = 1 << 20  # 1 MiB of plaintext per chunk
MAX_CHUNKS = 1 << 32  # the counter's range: 4 PiB at 1 MiB chunks


class StreamError(ValueError):
    """The ciphertext is not what was sealed under this key and associated data."""


def new_prefix() -> bytes:
    return os.urandom(PREFIX_BYTES)


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= MAX_CHUNKS:
        raise StreamError("the stream is longer than its counter can number")
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def rechunk(blocks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``blocks`` of any sizes as blocks of exactly ``size`` bytes (the last one shorter,
    possibly empty), holding at most one block and one chunk in memory."""
    pending = bytearray()
    for block in blocks:
        pending += block
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    yield bytes(pending)


def seal(
    key: bytes, prefix: bytes, associated: bytes, plaintext: Iterable[bytes], chunk_size: int
) -> Iterator[bytes]:
    """The sealed chunks of ``plaintext`` (an iterable of blocks of any sizes)."""
    if len(key) != KEY_BYTES or len(prefix) != PREFIX_BYTES or chunk_size <= 0:
        raise ValueError("a 32-byte key, a 7-byte prefix and a positive chunk size")
    aead = AESGCM(key)
    chunks = rechunk(plaintext, chunk_size)
    current = next(chunks)
    index = 0
    for following in chunks:
        yield aead.encrypt(_nonce(prefix, index, False), current, associated)
        current, index = following, index + 1
    yield aead.encrypt(_nonce(prefix, index, True), current, associated)


def open_sealed(
    key: bytes, prefix: bytes, associated: bytes, sealed: Iterable[bytes], chunk_size: int
) -> Iterator[bytes]:
    """The plaintext chunks of a sealed stream (``sealed``: blocks of any sizes), each
    yielded only once its tag has been checked; :class:`StreamError` at the first chunk
    that fails, or if the stream ends before its last chunk."""
    aead = AESGCM(key)
    chunks = rechunk(sealed, chunk_size + TAG_BYTES)
    current = next(chunks)
    index = 0
    for following in chunks:
        if not following:  # ``current`` was a full chunk and nothing follows it
            break
        yield _open_chunk(aead, prefix, index, False, current, associated)
        current, index = following, index + 1
    yield _open_chunk(aead, prefix, index, True, current, associated)


def _open_chunk(
    aead: AESGCM, prefix: bytes, index: int, last: bool, chunk: bytes, associated: bytes
) -> bytes:
    try:
        return aead.decrypt(_nonce(prefix, index, last), chunk, associated)
    except InvalidTag:
        where = "last chunk" if last else f"chunk {index}"
        raise StreamError(f"{where} does not authenticate (changed, moved or cut short)") from None


def sealed_size(plain_size: int, chunk_size: int) -> int:
    """Bytes of ciphertext for ``plain_size`` bytes of plaintext."""
    chunks = plain_size // chunk_size + 1
    return plain_size + chunks * TAG_BYTES
