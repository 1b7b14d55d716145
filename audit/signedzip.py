"""Signed zip files: what release bundles (FORMAT.md §10) and evidence bundles (§11) share.

Writing: every member stored uncompressed with a fixed time and mode, so the same content
always gives the same bytes (:func:`member_info`, :func:`copy_in`), and the zip written
to a temporary file beside its destination, synchronised and renamed into place
(:func:`write_zip`). The signature is a detached Ed25519 signature over the canonical
manifest, in ``signature.json`` (:func:`signature_document`, :func:`check_signature_document`).

Reading a zip someone handed over: :class:`ZipCheck` collects every problem as a sentence
and never raises for a hostile file. It bounds what it reads (member count, sizes,
compression ratio, members overlapping one another), refuses member names that climb out
of the folder or repeat, and reads members as streams, never beyond their declared size.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import canonical
from audit.errors import KeyringError
from audit.signing import ALGORITHM, b64decode, b64encode, check_signature, key_id_of
from audit.store import fsync_dir

MAX_NAME_CHARS = 255
MAX_ARCHIVE_BYTES = 16 << 30  # default bound on the bytes one verification decompresses
MAX_META_BYTES = 16 << 20  # manifest.json, signature.json, README.txt
MAX_MEMBERS = 100_000
MAX_RATIO = 100  # a deflated member may expand at most this much…
RATIO_FLOOR = 1 << 20  # …once it is larger than this
CHUNK = 1 << 20
TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: no build time leaks in
HEX64 = re.compile(r"[0-9a-f]{64}")
SIGNATURE_MEMBERS = frozenset({"algorithm", "domain", "key_id", "public_key", "signature"})
_MEMBER_MODE = (stat.S_IFREG | 0o444) << 16
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature … file name length, extra length
_DRIVE = re.compile(r"[A-Za-z]:")
# What the zip module and the decompressor raise for damaged or hostile input.
ZIP_ERRORS: tuple[type[Exception], ...] = (zipfile.BadZipFile, zlib.error, struct.error)
ZIP_ERRORS += (EOFError, OSError, ValueError, RuntimeError, ArithmeticError, LookupError)


# ---------------------------------------------------------------------- names


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a file of a bundle, or ``None`` if it can: a relative
    POSIX path of at most 255 printable characters, without ``.``, ``..`` or empty parts."""
    if not isinstance(name, str):
        return "a file name must be a string"
    shown = repr(name[:80]) + ("…" if len(name) > 80 else "")
    if not name:
        return "a file name must not be empty"
    if len(name) > MAX_NAME_CHARS:
        return f"file name {shown} is longer than {MAX_NAME_CHARS} characters"
    if not name.isprintable():
        return f"file name {shown} contains control or unprintable characters"
    if "\\" in name:
        return f"file name {shown} contains a backslash (separate folders with /)"
    if name.startswith("/") or _DRIVE.match(name):
        return f"file name {shown} is an absolute path"
    parts = name.split("/")
    if "" in parts:
        return f"file name {shown} has an empty part (// or a trailing /)"
    if "." in parts or ".." in parts:
        return f"file name {shown} has a . or .. part"
    return None


def climbs(name: str) -> bool:
    """Whether a member name would land outside the folder it is extracted into."""
    return (
        name.startswith("/") or "\\" in name or bool(_DRIVE.match(name)) or ".." in name.split("/")
    )


# ---------------------------------------------------------------------- writing


def hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and length of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def member_info(name: str, size: int = 0) -> zipfile.ZipInfo:
    """A member as the reference writers make it: stored, 1980-01-01, mode 0444."""
    info = zipfile.ZipInfo(name, date_time=TIMESTAMP)
    info.compress_type = zipfile.ZIP_STORED  # no ratio a verifier could mistake for a bomb
    info.create_system = 3  # Unix: the mode below means what it says
    info.external_attr = _MEMBER_MODE
    info.file_size = size
    return info


def copy_in(archive: zipfile.ZipFile, name: str, path: Path, *, size: int, sha256: str) -> None:
    """Copy the file at ``path`` into member ``name``; :class:`ValueError` unless it still
    has the ``size`` and ``sha256`` it was listed with."""
    digest = hashlib.sha256()
    seen = 0
    with open(path, "rb") as source, archive.open(member_info(name, size), "w") as target:
        while chunk := source.read(CHUNK):
            seen += len(chunk)
            if seen > size:
                break
            digest.update(chunk)
            target.write(chunk)
    if seen != size or digest.hexdigest() != sha256:
        raise ValueError(f"{path} changed since the manifest was made (size or SHA-256 differs)")


def write_zip(destination: Path, fill: Callable[[zipfile.ZipFile], None]) -> str:
    """Write a zip to ``destination`` atomically with ``fill(archive)`` and return its
    SHA-256 (hex). Nothing is left behind if ``fill`` raises."""
    destination = Path(destination)
    fd, temporary = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
    )
    try:
        with os.fdopen(fd, "w+b") as handle:
            with zipfile.ZipFile(handle, "w", allowZip64=True) as archive:
                fill(archive)
            handle.flush()
            os.fsync(handle.fileno())
            handle.seek(0)
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        os.chmod(temporary, 0o644)
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_dir(destination.parent)
    return digest


# ---------------------------------------------------------------------- signatures


def domain_name(domain: bytes) -> str:
    """A signature domain as ``signature.json`` names it (without the line feed)."""
    return domain.decode().rstrip("\n")


def signature_document(domain: bytes, signature: Mapping[str, str]) -> dict[str, str]:
    """The content of ``signature.json`` for ``signature`` (``key_id``, ``public_key``,
    ``signature``) made over the manifest in ``domain``."""
    missing = [key for key in ("key_id", "public_key", "signature") if key not in signature]
    if missing:
        raise ValueError(f"the signature lacks {', '.join(missing)}")
    return {
        "algorithm": ALGORITHM,
        "domain": domain_name(domain),
        "key_id": signature["key_id"],
        "public_key": signature["public_key"],
        "signature": signature["signature"],
    }


@dataclass
class SignatureCheck:
    """What :func:`check_signature_document` found."""

    problems: list[str] = field(default_factory=list)
    key_id: str | None = None  # when well-formed
    public_key: str | None = None  # base64, when a well-formed key
    verified: bool = False  # the signature holds over the manifest
    trusted: bool = False  # the key is one the caller trusts (set by the caller)


def check_signature_document(document: Any, manifest: Any, domain: bytes) -> SignatureCheck:
    """Check the content of ``signature.json``: its members, that ``key_id`` is the id of
    its public key, and that the signature holds over ``domain`` and the manifest."""
    check = SignatureCheck()
    problems = check.problems
    if not isinstance(document, dict) or set(document) != SIGNATURE_MEMBERS:
        members = ", ".join(sorted(SIGNATURE_MEMBERS))
        problems.append(f"signature.json must be an object with exactly {members}")
        return check
    if document["algorithm"] != ALGORITHM:
        problems.append(f"signature.json: unknown algorithm {str(document['algorithm'])[:32]!r}")
    if document["domain"] != domain_name(domain):
        problems.append(f"signature.json: wrong domain {str(document['domain'])[:64]!r}")
    key_id = document["key_id"]
    if isinstance(key_id, str) and HEX64.fullmatch(key_id):
        check.key_id = key_id
    else:
        problems.append("signature.json: key_id is not 64 hex digits")
    try:
        raw = b64decode(document["public_key"], "public_key")
        if len(raw) != 32:
            raise KeyringError("an Ed25519 public key is 32 bytes")
    except KeyringError as exc:
        problems.append(f"signature.json: {exc}")
        return check
    check.public_key = b64encode(raw)
    if check.key_id is not None and key_id_of(raw) != key_id:
        problems.append(
            f"key id {key_id} does not match the public key in signature.json "
            f"(whose id is {key_id_of(raw)})"
        )
    if isinstance(manifest, dict):
        verifier = Ed25519PublicKey.from_public_bytes(raw)
        if check_signature(verifier, domain, manifest, document["signature"]):
            check.verified = True
        else:
            problems.append("the signature does not verify: the manifest or signature was changed")
    else:
        problems.append("the signature cannot be checked without a readable manifest")
    return check


# ---------------------------------------------------------------------- reading


@dataclass
class ZipCheck:
    """The defences of a verifier against a hostile zip; every problem is a sentence in
    ``problems``. ``max_bytes`` bounds what one verification decompresses."""

    max_bytes: int = MAX_ARCHIVE_BYTES
    problems: list[str] = field(default_factory=list)

    def run(self, path: Path, check: Callable[[zipfile.ZipFile, IO[bytes]], None]) -> None:
        """Open ``path`` as a zip and call ``check(archive, raw file)``; a file that is
        not a readable zip is a problem, not an exception."""
        try:
            with open(path, "rb") as raw, zipfile.ZipFile(raw) as archive:
                check(archive, raw)
        except ZIP_ERRORS as exc:
            self.problems.append(f"{Path(path).name} is not a readable zip file: {exc}")

    def too_many(self, infos: list[zipfile.ZipInfo]) -> bool:
        if len(infos) > MAX_MEMBERS:
            self.problems.append(f"the zip has {len(infos):,} members, more than {MAX_MEMBERS:,}")
            return True
        return False

    def members(
        self, infos: Iterable[zipfile.ZipInfo], allowed: Callable[[str], bool], holds: str
    ) -> dict[str, zipfile.ZipInfo]:
        """The members by name; problems for names that climb, repeat or are not
        ``allowed`` (``holds`` says, in the problem, what a bundle holds instead)."""
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename
            if info.orig_filename != name:
                self.problems.append(f"member {info.orig_filename[:80]!r} has a NUL in its name")
            elif climbs(name):
                self.problems.append(f"member {name[:80]!r} points outside the bundle (not read)")
            elif name in members:
                self.problems.append(f"member {name[:80]!r} appears twice")
            elif allowed(name):
                members[name] = info
            else:
                self.problems.append(f"unexpected member {name[:80]!r}: {holds}")
        return members

    def refused(self, infos: list[zipfile.ZipInfo], raw: IO[bytes]) -> set[str]:
        """Members not to decompress: encrypted, unknown compression, expanding far more
        than data does, overlapping another member (the zip bomb that expands one
        compressed stream many times), or beyond the bytes this verification reads."""
        refused: set[str] = set()
        total = sum(info.file_size for info in infos)
        if total > self.max_bytes:
            self.problems.append(
                f"the members would expand to {total:,} bytes, more than the {self.max_bytes:,} "
                "this verification reads: refused as a zip bomb or an oversized bundle"
            )
            return {info.filename for info in infos}
        end_of_file = raw.seek(0, os.SEEK_END)
        spans: list[tuple[int, int, str]] = []
        for info in infos:
            name = info.filename[:80]
            if info.flag_bits & 0x1 or info.compress_type not in (
                zipfile.ZIP_STORED,
                zipfile.ZIP_DEFLATED,
            ):
                self.problems.append(f"member {name!r} is encrypted or compressed unusually")
                refused.add(info.filename)
                continue
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * info.compress_size:
                self.problems.append(
                    f"member {name!r} would expand from {info.compress_size:,} to "
                    f"{info.file_size:,} bytes: refused as a zip bomb (not read)"
                )
                refused.add(info.filename)
            raw.seek(info.header_offset)
            header = raw.read(_LOCAL_HEADER.size)
            if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                self.problems.append(f"member {name!r} has no local header where the zip says")
                refused.add(info.filename)
                continue
            _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
            data_end = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
            spans.append((info.header_offset, data_end + info.compress_size, info.filename))
        spans.sort()
        reach, reacher = 0, ""  # the furthest any member before has reached, and which
        for start, end, name in spans:
            if start < reach:
                self.problems.append(
                    f"members {reacher[:80]!r} and {name[:80]!r} overlap: refused as a zip bomb"
                )
                refused.update((reacher, name))
            if end > reach:
                reach, reacher = end, name
        if reach > end_of_file:
            self.problems.append("the zip is truncated: a member ends past the end of the file")
        return refused

    def read_small(
        self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int = MAX_META_BYTES
    ) -> bytes | None:
        """A member of at most ``limit`` bytes, whole (``None`` and a problem if not)."""
        if info.file_size > limit:
            self.problems.append(f"{info.filename} is larger than {limit:,} bytes")
            return None
        try:
            with archive.open(info) as member:
                data = member.read(limit + 1)
        except ZIP_ERRORS as exc:
            self.problems.append(f"{info.filename} cannot be read: {exc}")
            return None
        if len(data) > limit:
            self.problems.append(f"{info.filename} is larger than {limit:,} bytes")
            return None
        return data

    def decode(self, name: str, data: bytes) -> Any:
        """``data`` as canonical JSON (``None`` and a problem if it is not)."""
        try:
            return canonical.decode_canonical(data)
        except canonical.CanonicalError as exc:
            self.problems.append(f"{name} is not canonical JSON: {exc}")
            return None

    def check_member(
        self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, sha256: str
    ) -> bool:
        """Whether the member holds ``size`` bytes with SHA-256 ``sha256`` (read as a
        stream, never beyond ``size``); a problem if not."""
        name = info.filename
        if info.file_size != size:
            self.problems.append(f"{name} is {info.file_size:,} bytes, the manifest says {size:,}")
            return False
        digest = hashlib.sha256()
        seen = 0
        try:
            with archive.open(info) as member:
                while seen <= size and (chunk := member.read(CHUNK)):
                    seen += len(chunk)
                    digest.update(chunk)
        except ZIP_ERRORS as exc:
            self.problems.append(f"{name} cannot be read: {exc}")
            return False
        if seen != size:
            self.problems.append(f"{name} holds {seen:,} bytes, the manifest says {size:,}")
            return False
        if digest.hexdigest() != sha256:
            self.problems.append(
                f"{name} does not have the SHA-256 the manifest says: the file was changed"
            )
            return False
        return True
