"""Release bundles: the signed zip in which an approved export leaves the platform.

A bundle (FORMAT.md §10) holds::

    manifest.json    canonical JSON: format, version, what the gateway states about the
                     release, and every file's name, size and SHA-256
    signature.json   the operator organization's Ed25519 signature over the manifest
    README.txt       how to verify, in Chinese and English (not signed)
    files/<name>     the released files

The gateway builds the manifest with :func:`bundle_manifest`, has it signed with
:data:`DOMAIN_RELEASE` and writes the zip with :func:`write_bundle`. Anyone checks it
offline with :func:`verify_bundle`, and with :func:`ledger_problems` that the ledger
published the signing key and recorded the release: ``python -m audit.bundle BUNDLE
[--ledger DIR]``. Verification never raises for a hostile file: what it reads is bounded
(member count, sizes, compression ratio, overlapping members) and every problem found is
reported as a sentence.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import stat
import struct
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import canonical, entry
from audit.errors import InvalidEntry, KeyringError
from audit.signing import ALGORITHM, b64decode, b64encode, check_signature, key_id_of
from audit.store import fsync_dir
from audit.verify import entries_between, verify

DOMAIN_RELEASE = b"sbx/release-bundle/v1\n"
BUNDLE_FORMAT = "sbx-release-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
README = "README.txt"
FILES = "files/"
RESERVED_KEYS = ("files", "format", "version")
MAX_NAME_CHARS = 255
MAX_BUNDLE_BYTES = 16 << 30  # default bound on the bytes one verification decompresses
MAX_META_BYTES = 16 << 20  # manifest.json, signature.json, README.txt
MAX_MEMBERS = 100_000
MAX_RATIO = 100  # a deflated member may expand at most this much…
RATIO_FLOOR = 1 << 20  # …once it is larger than this
_CHUNK = 1 << 20
_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: no build time leaks in
_MEMBER_MODE = (stat.S_IFREG | 0o444) << 16
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature … file name length, extra length
_DRIVE = re.compile(r"[A-Za-z]:")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ENTRY = b'{"action":"organization.key",'
_RELEASE_ENTRY = b'{"action":"export.release",'
_SIGNATURE_MEMBERS = {"algorithm", "domain", "key_id", "public_key", "signature"}
# What the zip module and the decompressor raise for damaged or hostile input.
_ZIP_ERRORS: tuple[type[Exception], ...] = (zipfile.BadZipFile, zlib.error, struct.error)
_ZIP_ERRORS += (EOFError, OSError, ValueError, RuntimeError, ArithmeticError, LookupError)

README_TEXT = """\
sbx 发布包 / sbx release bundle

本压缩包是一次经批准的数据导出：files/ 目录中是导出的文件；manifest.json 列出每个文件
的大小和 SHA-256；signature.json 是运营机构对 manifest.json 的 Ed25519 签名。
无需联网即可验证（需要 Python 3.11 及以上版本和 cryptography 包，以及 sbx 的 audit 包）：

    python -m audit.bundle 本文件.zip [--ledger 审计账本目录]

或使用 sbx 命令：sbx verify-bundle 本文件.zip [--ledger 审计账本目录]
持有平台审计账本的一方（监管、审计）可加 --ledger，核对账本是否公布了签名密钥并记录了本次发布。
格式规范见 sbx 源代码中 audit/FORMAT.md 的 “Release bundles” 一节，可据此用任何工具独立验证。
本说明文件不在签名范围内。

This zip is an approved export of data: the files are under files/; manifest.json lists
each file's size and SHA-256; signature.json is the operator organization's Ed25519
signature over manifest.json. Verify it offline (Python 3.11 or later with the
cryptography package, and sbx's audit package):

    python -m audit.bundle THIS.zip [--ledger LEDGER_FOLDER]

or with the sbx command: sbx verify-bundle THIS.zip [--ledger LEDGER_FOLDER]
Whoever holds the platform's audit ledger (regulators, auditors) adds --ledger to check
that the ledger published the signing key and recorded this release.
The format is specified in the section "Release bundles" of audit/FORMAT.md in the sbx
sources, so that any tool can check it independently. This file is not signed.
"""


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


def _climbs(name: str) -> bool:
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
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def bundle_manifest(body: dict[str, Any], files: Sequence[tuple[str, Path]]) -> dict[str, Any]:
    """The manifest to sign: ``body`` with the format, the version and every file's name,
    size and SHA-256, sorted by name. Raises :class:`ValueError` for a bad or repeated
    name, a reserved key in ``body``, or a value canonical JSON cannot hold."""
    reserved = [key for key in RESERVED_KEYS if key in body]
    if reserved:
        raise ValueError(f"the manifest body must not set {', '.join(reserved)}: the bundle does")
    listed: dict[str, dict[str, Any]] = {}
    for name, path in files:
        if (problem := name_problem(name)) is not None:
            raise ValueError(problem)
        if name in listed:
            raise ValueError(f"file name {name!r} is given twice")
        digest, size = hash_file(Path(path))
        listed[name] = {"bytes": size, "name": name, "sha256": digest}
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        **body,
        "files": [listed[name] for name in sorted(listed)],
    }
    canonical.encode(manifest)  # CanonicalError (a ValueError) says which value and where
    return manifest


def signature_document(signature: Mapping[str, str]) -> dict[str, str]:
    """The content of ``signature.json`` for ``signature`` (``key_id``, ``public_key``,
    ``signature``)."""
    missing = [key for key in ("key_id", "public_key", "signature") if key not in signature]
    if missing:
        raise ValueError(f"the signature lacks {', '.join(missing)}")
    return {
        "algorithm": ALGORITHM,
        "domain": DOMAIN_RELEASE.decode().rstrip("\n"),
        "key_id": signature["key_id"],
        "public_key": signature["public_key"],
        "signature": signature["signature"],
    }


def write_bundle(
    destination: Path,
    manifest: dict[str, Any],
    signature: Mapping[str, str],
    files: Sequence[tuple[str, Path]],
) -> str:
    """Write the bundle to ``destination`` atomically and return its SHA-256 (hex).

    The same inputs give the same bytes. Raises :class:`ValueError`, and leaves nothing
    behind, if the manifest is malformed, the signature does not verify, the files are
    not the ones listed, or a file no longer has the size and hash the manifest says."""
    if problems := manifest_problems(manifest):
        raise ValueError("cannot write the bundle: " + "; ".join(problems))
    document = signature_document(signature)
    problems = _check_signature(document, manifest, None).problems
    by_name = dict(files)
    if len(by_name) != len(files) or sorted(by_name) != [f["name"] for f in manifest["files"]]:
        problems.append("the files given are not the files the manifest lists")
    if problems:
        raise ValueError("cannot write the bundle: " + "; ".join(problems))
    destination = Path(destination)
    fd, temporary = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
    )
    try:
        with os.fdopen(fd, "w+b") as handle:
            with zipfile.ZipFile(handle, "w") as archive:
                archive.writestr(_member(MANIFEST), canonical.encode(manifest))
                archive.writestr(_member(SIGNATURE), canonical.encode(document))
                archive.writestr(_member(README), README_TEXT.encode())
                for listed in manifest["files"]:
                    _copy_in(archive, listed, Path(by_name[listed["name"]]))
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


def _member(name: str, size: int = 0) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_TIMESTAMP)
    info.compress_type = zipfile.ZIP_STORED  # no ratio a verifier could mistake for a bomb
    info.create_system = 3  # Unix: the mode below means what it says
    info.external_attr = _MEMBER_MODE
    info.file_size = size
    return info


def _copy_in(archive: zipfile.ZipFile, listed: dict[str, Any], path: Path) -> None:
    name, expected = listed["name"], listed["bytes"]
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as source, archive.open(_member(FILES + name, expected), "w") as target:
        while chunk := source.read(_CHUNK):
            size += len(chunk)
            if size > expected:
                break
            digest.update(chunk)
            target.write(chunk)
    if size != expected or digest.hexdigest() != listed["sha256"]:
        raise ValueError(f"{path} changed since the manifest was made (size or SHA-256 differs)")


# ---------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class BundleReport:
    """What :func:`verify_bundle` found. ``ok`` only if ``problems`` is empty."""

    ok: bool
    problems: tuple[str, ...]
    manifest: dict[str, Any] | None
    key_id: str | None
    manifest_sha256: str | None
    public_key: str | None = None  # base64 of the raw Ed25519 key in signature.json
    trusted: bool = False  # the key is one of the trusted keys the caller gave

    def files(self) -> list[tuple[str, int]]:
        """The names and sizes of the manifest's files, as far as it could be read."""
        listed = (self.manifest or {}).get("files")
        return [
            (item["name"], item["bytes"])
            for item in (listed if isinstance(listed, list) else [])
            if isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and type(item.get("bytes")) is int
        ]


def manifest_problems(manifest: Any) -> list[str]:
    """What makes ``manifest`` not a version-1 bundle manifest (empty: nothing)."""
    if not isinstance(manifest, dict):
        return ["manifest.json is not a JSON object"]
    version = manifest.get("version")
    if manifest.get("format") != BUNDLE_FORMAT or type(version) is not int or version != 1:
        return [
            f"manifest.json is not a version 1 release bundle manifest (format "
            f"{str(manifest.get('format'))[:64]!r}, version {str(version)[:16]})"
        ]
    files = manifest.get("files")
    if not isinstance(files, list):
        return ["manifest.json has no list of files"]
    problems: list[str] = []
    names: list[str] = []
    for number, listed in enumerate(files):
        if not isinstance(listed, dict) or set(listed) != {"bytes", "name", "sha256"}:
            problems.append(f"manifest.json: file {number} must have exactly bytes, name, sha256")
            continue
        if (problem := name_problem(listed["name"])) is not None:
            problems.append(f"manifest.json: {problem}")
            continue
        size, digest = listed["bytes"], listed["sha256"]
        if type(size) is not int or size < 0:
            problems.append(f"manifest.json: bytes of {listed['name']!r} is not a size")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            problems.append(f"manifest.json: sha256 of {listed['name']!r} is not 64 hex digits")
        names.append(listed["name"])
    if len(set(names)) != len(names):
        problems.append("manifest.json lists a file name twice")
    elif names != sorted(names):
        problems.append("manifest.json does not list its files sorted by name")
    return problems


@dataclass
class _SignatureCheck:
    problems: list[str] = field(default_factory=list)
    key_id: str | None = None  # when well-formed
    public_key: str | None = None  # base64, when a well-formed key
    trusted: bool = False


def _check_signature(
    document: Any, manifest: Any, trusted_keys: Mapping[str, str] | None
) -> _SignatureCheck:
    """Check the content of ``signature.json`` against the manifest (and the trusted
    keys, if given)."""
    check = _SignatureCheck()
    problems = check.problems
    if not isinstance(document, dict) or set(document) != _SIGNATURE_MEMBERS:
        members = ", ".join(sorted(_SIGNATURE_MEMBERS))
        problems.append(f"signature.json must be an object with exactly {members}")
        return check
    if document["algorithm"] != ALGORITHM:
        problems.append(f"signature.json: unknown algorithm {str(document['algorithm'])[:32]!r}")
    if document["domain"] != DOMAIN_RELEASE.decode().rstrip("\n"):
        problems.append(f"signature.json: wrong domain {str(document['domain'])[:64]!r}")
    key_id = document["key_id"]
    if isinstance(key_id, str) and _HEX64.fullmatch(key_id):
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
        if not check_signature(verifier, DOMAIN_RELEASE, manifest, document["signature"]):
            problems.append("the signature does not verify: the manifest or signature was changed")
    else:
        problems.append("the signature cannot be checked without a readable manifest")
    if trusted_keys is not None:
        pinned = trusted_keys.get(check.key_id or "")
        if pinned is None:
            problems.append(f"key {check.key_id} is not one of the trusted keys")
        elif _raw_or_none(pinned) != raw or key_id_of(raw) != key_id:
            problems.append(f"key {check.key_id} is trusted with another public key")
        else:
            check.trusted = True
    return check


def _raw_or_none(text: str) -> bytes | None:
    try:
        return b64decode(text, "public key")
    except KeyringError:
        return None


def parse_trusted_key(text: str) -> tuple[str, str]:
    """``KEY_ID=BASE64`` as ``(key id, base64 public key)``; :class:`ValueError` if the
    id is not the SHA-256 of the key."""
    key_id, _, public = text.partition("=")
    raw = _raw_or_none(public)
    if raw is None or len(raw) != 32:
        raise ValueError(f"expected KEY_ID=BASE64 with a 32-byte Ed25519 key, got {text[:80]!r}")
    if key_id_of(raw) != key_id:
        raise ValueError(f"{key_id[:80]!r} is not the id of that key (it is {key_id_of(raw)})")
    return key_id, public


def verify_bundle(
    path: Path,
    *,
    trusted_keys: Mapping[str, str] | None = None,
    max_bytes: int = MAX_BUNDLE_BYTES,
) -> BundleReport:
    """Check the bundle at ``path`` against itself and, if ``trusted_keys`` (key id →
    base64 public key) is given, require its key to be one of them. Reads at most
    ``max_bytes`` decompressed bytes. Never raises for a damaged or hostile file."""
    return _Verification(Path(path), trusted_keys, max_bytes).run()


@dataclass
class _Verification:
    path: Path
    trusted_keys: Mapping[str, str] | None
    max_bytes: int
    problems: list[str] = field(default_factory=list)
    manifest: Any = None
    manifest_sha256: str | None = None
    key_id: str | None = None
    public_key: str | None = None
    trusted: bool = False

    def run(self) -> BundleReport:
        try:
            with open(self.path, "rb") as raw, zipfile.ZipFile(raw) as archive:
                self._check(archive, raw)
        except _ZIP_ERRORS as exc:
            self.problems.append(f"{self.path.name} is not a readable zip file: {exc}")
        problems = tuple(dict.fromkeys(self.problems))
        return BundleReport(
            ok=not problems,
            problems=problems,
            manifest=self.manifest if isinstance(self.manifest, dict) else None,
            key_id=self.key_id,
            manifest_sha256=self.manifest_sha256,
            public_key=self.public_key,
            trusted=self.trusted,
        )

    def _check(self, archive: zipfile.ZipFile, raw: IO[bytes]) -> None:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            self.problems.append(f"the zip has {len(infos):,} members, more than {MAX_MEMBERS:,}")
            return
        members = self._members(infos)
        refused = self._refused(infos, raw)
        metadata = {}
        for name in (MANIFEST, SIGNATURE):
            info = members.get(name)
            if info is None:
                what = "the bundle has no manifest" if name == MANIFEST else "it is not signed"
                self.problems.append(f"{name} is missing: {what}")
            elif info.filename not in refused:
                metadata[name] = self._read_small(archive, info)
        usable = False
        if (data := metadata.get(MANIFEST)) is not None:
            self.manifest_sha256 = hashlib.sha256(data).hexdigest()
            self.manifest = self._decode(MANIFEST, data)
            if self.manifest is not None:
                problems = manifest_problems(self.manifest)
                self.problems.extend(problems)
                usable = not problems
        if (data := metadata.get(SIGNATURE)) is not None:
            document = self._decode(SIGNATURE, data)
            if document is not None:
                check = _check_signature(document, self.manifest, self.trusted_keys)
                self.problems.extend(check.problems)
                self.key_id, self.public_key = check.key_id, check.public_key
                self.trusted = check.trusted
        present = {n[len(FILES) :]: i for n, i in members.items() if n.startswith(FILES)}
        if not usable:
            self.problems.append("the files cannot be checked without a valid manifest")
            return
        for listed in self.manifest["files"]:
            info = present.pop(listed["name"], None)
            if info is None:
                self.problems.append(f"files/{listed['name']} is in the manifest but missing")
            elif info.filename not in refused:
                self._check_file(archive, info, listed)
        for name in sorted(present):
            self.problems.append(f"files/{name} is not in the manifest (a file was added)")

    def _members(self, infos: Iterable[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
        """The members by name; problems for names that climb, repeat or do not belong."""
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename
            if info.orig_filename != name:
                self.problems.append(f"member {info.orig_filename[:80]!r} has a NUL in its name")
            elif _climbs(name):
                self.problems.append(f"member {name[:80]!r} points outside the bundle (not read)")
            elif name in members:
                self.problems.append(f"member {name[:80]!r} appears twice")
            elif name in (MANIFEST, SIGNATURE, README) or (
                name.startswith(FILES) and name_problem(name[len(FILES) :]) is None
            ):
                members[name] = info
            else:
                self.problems.append(
                    f"unexpected member {name[:80]!r}: a bundle holds only manifest.json, "
                    "signature.json, README.txt and files/<name>"
                )
        return members

    def _refused(self, infos: list[zipfile.ZipInfo], raw: IO[bytes]) -> set[str]:
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

    def _read_small(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
        if info.file_size > MAX_META_BYTES:
            self.problems.append(f"{info.filename} is larger than {MAX_META_BYTES:,} bytes")
            return None
        try:
            with archive.open(info) as member:
                data = member.read(MAX_META_BYTES + 1)
        except _ZIP_ERRORS as exc:
            self.problems.append(f"{info.filename} cannot be read: {exc}")
            return None
        if len(data) > MAX_META_BYTES:
            self.problems.append(f"{info.filename} is larger than {MAX_META_BYTES:,} bytes")
            return None
        return data

    def _decode(self, name: str, data: bytes) -> Any:
        try:
            return canonical.decode_canonical(data)
        except canonical.CanonicalError as exc:
            self.problems.append(f"{name} is not canonical JSON: {exc}")
            return None

    def _check_file(
        self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, listed: dict[str, Any]
    ) -> None:
        name, expected = info.filename, listed["bytes"]
        if info.file_size != expected:
            self.problems.append(
                f"{name} is {info.file_size:,} bytes, the manifest says {expected:,}"
            )
            return
        digest = hashlib.sha256()
        size = 0
        try:
            with archive.open(info) as member:
                while size <= expected and (chunk := member.read(_CHUNK)):
                    size += len(chunk)
                    digest.update(chunk)
        except _ZIP_ERRORS as exc:
            self.problems.append(f"{name} cannot be read: {exc}")
            return
        if size != expected:
            self.problems.append(f"{name} holds {size:,} bytes, the manifest says {expected:,}")
        elif digest.hexdigest() != listed["sha256"]:
            self.problems.append(
                f"{name} does not have the SHA-256 the manifest says: the file was changed"
            )


# ---------------------------------------------------------------------- the ledger


@dataclass(frozen=True)
class LedgerCheck:
    """What the ledger says about a bundle: where it published the bundle's key
    (``key_seq``) and recorded the release (``release_seq``). ``ok`` only without
    problems."""

    problems: tuple[str, ...]
    key_seq: int | None = None
    release_seq: int | None = None
    entries: int = 0
    trust: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        key, release = self.key_seq, self.release_seq
        return (
            ("key not published" if key is None else f"key published at seq {key}")
            + ", "
            + ("release not recorded" if release is None else f"release recorded at seq {release}")
        )


def ledger_problems(
    ledger_dir: Path, report: BundleReport, *, trusted_ledger_keys: Sequence[str] | None = None
) -> LedgerCheck:
    """Verify the ledger folder (read-only, as ``python -m audit.verify`` does), then find
    the ``organization.key`` entry that published the bundle's key and the
    ``export.release`` entry that recorded its manifest, both covered by a signed
    checkpoint. ``trusted_ledger_keys``: key ids the ledger's first key must be."""
    if report.key_id is None or report.public_key is None or report.manifest_sha256 is None:
        return LedgerCheck(("the bundle has no readable manifest and key to look up",))
    folder = Path(ledger_dir)
    if not folder.is_dir():
        return LedgerCheck((f"{folder} is not a ledger folder",))
    verified = verify(folder, trusted_keys=trusted_ledger_keys)
    if not verified.ok:
        return LedgerCheck(
            (f"the ledger does not verify: {verified.problem}",), trust=verified.trust
        )
    found: dict[str, int] = {}
    near_miss: tuple[int, str, str] | None = None  # this manifest, but another key or outcome
    try:
        for seq, line in entries_between(folder, 0, verified.entries):
            if not line.startswith((_KEY_ENTRY, _RELEASE_ENTRY)):
                continue
            try:
                value = entry.parse(line)
            except InvalidEntry:
                continue
            detail = value["detail"]
            if value["action"] == "organization.key":
                if (detail.get("key_id"), detail.get("public_key")) == (
                    report.key_id,
                    report.public_key,
                ):
                    found.setdefault("key", seq)
            elif detail.get("manifest_sha256") == report.manifest_sha256:
                if detail.get("key_id") == report.key_id and value["outcome"] == "ok":
                    found.setdefault("release", seq)
                elif near_miss is None:
                    near_miss = (seq, str(detail.get("key_id"))[:64], value["outcome"])
            if len(found) == 2:
                break
    except OSError as exc:
        return LedgerCheck((f"the ledger cannot be read: {exc}",), trust=verified.trust)
    problems = []
    if "key" not in found:
        problems.append(f"the ledger does not publish key {report.key_id} (organization.key)")
    if "release" not in found:
        if near_miss is not None:
            seq, key_id, outcome = near_miss
            problems.append(
                f"the ledger's export.release entry for this manifest (seq {seq}) names key "
                f"{key_id} with outcome {outcome!r}, not key {report.key_id} with outcome 'ok'"
            )
        else:
            problems.append(
                f"the ledger records no release of manifest {report.manifest_sha256} "
                "(export.release)"
            )
    latest = verified.latest_checkpoint
    signed = int(latest["size"]) if latest else 0
    for what, seq in sorted(found.items(), key=lambda item: item[1]):
        if seq >= signed:
            problems.append(
                f"the {what} entry (seq {seq}) is not yet covered by a signed checkpoint; "
                "verify again after the next one"
            )
    return LedgerCheck(
        tuple(problems),
        key_seq=found.get("key"),
        release_seq=found.get("release"),
        entries=verified.entries,
        trust=verified.trust,
    )


# ---------------------------------------------------------------------- command line


def format_bundle_report(path: Path, report: BundleReport, check: LedgerCheck | None) -> str:
    ok = report.ok and (check is None or check.ok)
    lines = [f"OK: release bundle {path} verifies" if ok else f"FAILED: release bundle {path}"]
    lines.extend(f"  problem: {problem}" for problem in report.problems)
    if check is not None:
        lines.extend(f"  ledger problem: {problem}" for problem in check.problems)
    files = report.files()
    lines.append(f"  files: {len(files)} ({sum(size for _, size in files):,} bytes)")
    lines.extend(f"    {name}  {size:,} bytes" for name, size in files)
    if report.manifest_sha256:
        lines.append(f"  manifest sha256: {report.manifest_sha256}")
    if report.key_id:
        pinned = "trusted" if report.trusted else "not pinned (pass --key to require it)"
        lines.append(f"  signed by key: {report.key_id} ({pinned})")
    if check is not None:
        lines.append(f"  ledger: {check.summary()}; {check.trust}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audit.bundle", description="Verify an sbx release bundle offline."
    )
    parser.add_argument("bundle", help="the release bundle (.zip)")
    parser.add_argument(
        "--ledger", metavar="DIR", help="ledger folder that must record the key and the release"
    )
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY_ID=BASE64",
        help="a key the bundle may be signed with (repeatable; default: any)",
    )
    parser.add_argument(
        "--ledger-key",
        action="append",
        default=[],
        metavar="KEY_ID",
        help="key id the ledger's first key must be (repeatable)",
    )
    args = parser.parse_args(argv)
    if not os.path.isfile(args.bundle):
        print(f"error: {args.bundle} is not a file", file=sys.stderr)
        return 2
    if args.ledger is not None and not os.path.isdir(args.ledger):
        print(f"error: {args.ledger} is not a ledger folder", file=sys.stderr)
        return 2
    try:
        trusted = dict(parse_trusted_key(text) for text in args.key) if args.key else None
    except ValueError as exc:
        print(f"error: --key: {exc}", file=sys.stderr)
        return 2
    path = Path(args.bundle)
    report = verify_bundle(path, trusted_keys=trusted)
    check = None
    if args.ledger is not None:
        check = ledger_problems(
            Path(args.ledger), report, trusted_ledger_keys=args.ledger_key or None
        )
    print(format_bundle_report(path, report, check))
    return 0 if report.ok and (check is None or check.ok) else 1


if __name__ == "__main__":
    sys.exit(main())
