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
reported as a sentence. The zip mechanics and those defences are :mod:`audit.signedzip`'s,
shared with evidence bundles (:mod:`audit.evidence`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from audit import canonical, entry, signedzip
from audit.errors import InvalidEntry, KeyringError
from audit.signedzip import HEX64, MAX_ARCHIVE_BYTES, ZipCheck, copy_in, member_info
from audit.signedzip import hash_file as hash_file
from audit.signedzip import name_problem as name_problem
from audit.signing import b64decode, key_id_of
from audit.verify import entries_between, verify

DOMAIN_RELEASE = b"sbx/release-bundle/v1\n"
BUNDLE_FORMAT = "sbx-release-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
README = "README.txt"
FILES = "files/"
RESERVED_KEYS = ("files", "format", "version")
MAX_BUNDLE_BYTES = MAX_ARCHIVE_BYTES  # default bound on the bytes one verification reads
_KEY_ENTRY = b'{"action":"organization.key",'
_RELEASE_ENTRY = b'{"action":"export.release",'

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


# ---------------------------------------------------------------------- writing


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
    return signedzip.signature_document(DOMAIN_RELEASE, signature)


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

    def fill(archive: zipfile.ZipFile) -> None:
        archive.writestr(member_info(MANIFEST), canonical.encode(manifest))
        archive.writestr(member_info(SIGNATURE), canonical.encode(document))
        archive.writestr(member_info(README), README_TEXT.encode())
        for listed in manifest["files"]:
            path = Path(by_name[listed["name"]])
            copy_in(
                archive, FILES + listed["name"], path, size=listed["bytes"], sha256=listed["sha256"]
            )

    return signedzip.write_zip(Path(destination), fill)


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
        if not isinstance(digest, str) or not HEX64.fullmatch(digest):
            problems.append(f"manifest.json: sha256 of {listed['name']!r} is not 64 hex digits")
        names.append(listed["name"])
    if len(set(names)) != len(names):
        problems.append("manifest.json lists a file name twice")
    elif names != sorted(names):
        problems.append("manifest.json does not list its files sorted by name")
    return problems


def _check_signature(
    document: Any, manifest: Any, trusted_keys: Mapping[str, str] | None
) -> signedzip.SignatureCheck:
    """Check the content of ``signature.json`` against the manifest (and the trusted
    keys, if given); ``trusted`` says whether the key is one of them."""
    check = signedzip.check_signature_document(document, manifest, DOMAIN_RELEASE)
    if trusted_keys is None or check.public_key is None:
        return check
    pinned = trusted_keys.get(check.key_id or "")
    raw = b64decode(check.public_key, "public_key")
    if pinned is None:
        check.problems.append(f"key {check.key_id} is not one of the trusted keys")
    elif _raw_or_none(pinned) != raw or key_id_of(raw) != check.key_id:
        check.problems.append(f"key {check.key_id} is trusted with another public key")
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


def _in_bundle(name: str) -> bool:
    return name in (MANIFEST, SIGNATURE, README) or (
        name.startswith(FILES) and name_problem(name[len(FILES) :]) is None
    )


@dataclass
class _Verification:
    path: Path
    trusted_keys: Mapping[str, str] | None
    max_bytes: int
    manifest: Any = None
    manifest_sha256: str | None = None
    key_id: str | None = None
    public_key: str | None = None
    trusted: bool = False
    reader: ZipCheck = field(init=False)

    def __post_init__(self) -> None:
        self.reader = ZipCheck(self.max_bytes)

    def run(self) -> BundleReport:
        self.reader.run(self.path, self._check)
        problems = tuple(dict.fromkeys(self.reader.problems))
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
        reader, problems = self.reader, self.reader.problems
        infos = archive.infolist()
        if reader.too_many(infos):
            return
        holds = "a bundle holds only manifest.json, signature.json, README.txt and files/<name>"
        members = reader.members(infos, _in_bundle, holds)
        refused = reader.refused(infos, raw)
        metadata = {}
        for name in (MANIFEST, SIGNATURE):
            info = members.get(name)
            if info is None:
                what = "the bundle has no manifest" if name == MANIFEST else "it is not signed"
                problems.append(f"{name} is missing: {what}")
            elif info.filename not in refused:
                metadata[name] = reader.read_small(archive, info)
        usable = False
        if (data := metadata.get(MANIFEST)) is not None:
            self.manifest_sha256 = hashlib.sha256(data).hexdigest()
            self.manifest = reader.decode(MANIFEST, data)
            if self.manifest is not None:
                found = manifest_problems(self.manifest)
                problems.extend(found)
                usable = not found
        if (data := metadata.get(SIGNATURE)) is not None:
            document = reader.decode(SIGNATURE, data)
            if document is not None:
                check = _check_signature(document, self.manifest, self.trusted_keys)
                problems.extend(check.problems)
                self.key_id, self.public_key = check.key_id, check.public_key
                self.trusted = check.trusted
        present = {n[len(FILES) :]: i for n, i in members.items() if n.startswith(FILES)}
        if not usable:
            problems.append("the files cannot be checked without a valid manifest")
            return
        for listed in self.manifest["files"]:
            info = present.pop(listed["name"], None)
            if info is None:
                problems.append(f"files/{listed['name']} is in the manifest but missing")
            elif info.filename not in refused:
                reader.check_member(archive, info, listed["bytes"], listed["sha256"])
        for name in sorted(present):
            problems.append(f"files/{name} is not in the manifest (a file was added)")


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
