"""Evidence bundles: the ledger entries of a scope, with everything needed to check them
offline, in one signed zip (FORMAT.md §11).

A bundle holds::

    manifest.json    canonical JSON: the scope, who made it and when, the ledger id, the
                     checkpoint every proof is against, each entry's seq and leaf hash,
                     each document's name, size, SHA-256 and the entry that names it, and
                     the size and SHA-256 of every other member
    signature.json   Ed25519 over the manifest by the ledger's current signing key
    README.txt       how to verify, in Chinese and English (not signed)
    checkpoint.json  the checkpoint (FORMAT §4)
    keys/<id>.json   the ledger's key chain up to the signing key (FORMAT §5.1)
    entries.jsonl    the entries' exact lines, in seq order
    proofs.jsonl     per entry its seq and audit path to the checkpoint's root (§8.3)
    documents/<name> agreements, release bundles, attachments the entries name

:func:`write_evidence` builds one from a :class:`~audit.ledger.Ledger`; anyone checks it
with :func:`verify_evidence` — and with :func:`ledger_match` that its checkpoint is the
ledger's — or ``python -m audit.evidence BUNDLE [--trusted-key KEYID] [--ledger DIR]
[--json]`` (exit status: 0 it verifies, 1 altered or damaged, 2 unreadable or bad
arguments, 3 not from the trusted ledger, 4 not the given ledger's). The format's names
and rules are :mod:`audit.evidenceformat`, the verification :mod:`audit.evidencecheck`,
the zip mechanics and the defences against hostile zips :mod:`audit.signedzip`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from audit import canonical, entry, merkle, signedzip
from audit.bundle import verify_bundle
from audit.checkpoint import Checkpoint
from audit.errors import InvalidEntry, LedgerError, ProofError
from audit.evidencecheck import EvidenceReport, verify_evidence
from audit.evidenceformat import (
    CHECKPOINT,
    DOCUMENT_KINDS,
    DOCUMENTS,
    DOMAIN_EVIDENCE,
    ENTRIES,
    EVIDENCE_FORMAT,
    EVIDENCE_VERSION,
    EXIT_ALTERED,
    EXIT_LEDGER,
    EXIT_OK,
    EXIT_UNTRUSTED,
    EXIT_USAGE,
    KEYS,
    MANIFEST,
    PROOFS,
    README,
    RESERVED_KEYS,
    SIGNATURE,
    LedgerMatch,
    manifest_problems,
    names_sha256,
    release_problem,
)
from audit.ledger import Ledger
from audit.signedzip import HEX64, copy_in, hash_file, member_info, name_problem
from audit.signing import b64encode, sign
from audit.verify import entries_between, verify

__all__ = [
    "DOMAIN_EVIDENCE",
    "Document",
    "EvidenceReport",
    "LedgerMatch",
    "Written",
    "ledger_match",
    "main",
    "verify_evidence",
    "write_evidence",
]

CHINA = timezone(timedelta(hours=8), "CST")
README_TEXT = """\
sbx 证据包 / sbx evidence bundle

本压缩包是审计账本中一个范围（机构、授权、时段）的记录及其证明：entries.jsonl 是账本记录的
原始行；proofs.jsonl 是每条记录到 checkpoint.json（账本签名的检查点）的默克尔包含证明；
keys/ 是账本的密钥链；documents/ 是记录所指的文件（协议、发布包、承诺书等）；
manifest.json 列出以上全部内容的 SHA-256，signature.json 是账本签名密钥对它的 Ed25519 签名。
无需联网即可验证（需要 Python 3.11 及以上版本和 cryptography 包，以及 sbx 的 audit 包）：

    python -m audit.evidence 本文件.zip --trusted-key 账本首个密钥ID [--ledger 审计账本目录]

或使用 sbx 命令：sbx verify-evidence 本文件.zip --trusted-key 账本首个密钥ID
账本首个密钥 ID 应从平台之外的渠道获得（创建账本时打印，也可用 sbx audit keys 查看）；
不提供时该密钥被默认信任，验证结果会注明这一点。持有审计账本的一方可加 --ledger，
核对本包的检查点确属该账本。格式规范见 sbx 源代码中 audit/FORMAT.md 的
“Evidence bundles” 一节。本说明文件不在签名范围内。

This zip holds the audit ledger's entries of one scope (an organization, a grant, a
period) with their proofs: entries.jsonl holds the ledger's exact lines; proofs.jsonl
an inclusion proof of each to checkpoint.json, a checkpoint the ledger signed; keys/ the
ledger's key chain; documents/ the files the entries name (agreements, release bundles,
commitment letters); manifest.json lists the SHA-256 of all of it and signature.json is
the ledger signing key's Ed25519 signature over it. Verify it offline (Python 3.11 or
later with the cryptography package, and sbx's audit package):

    python -m audit.evidence THIS.zip --trusted-key FIRST_LEDGER_KEY_ID [--ledger LEDGER_FOLDER]

or with the sbx command: sbx verify-evidence THIS.zip --trusted-key FIRST_LEDGER_KEY_ID
Take the id of the ledger's first key from outside the platform (it is printed when the
ledger is created and by sbx audit keys); without it that key is taken on trust and the
result says so. Whoever holds the ledger adds --ledger to check that the checkpoint is
that ledger's. The format is specified in the section "Evidence bundles" of
audit/FORMAT.md in the sbx sources. This file is not signed.
"""


@dataclass(frozen=True)
class Document:
    """A file to put in a bundle as ``documents/<name>``, named by entry ``seq``: for
    ``kind`` ``file`` the entry's detail holds the file's SHA-256; for
    ``release-bundle`` the file is a release bundle (§10) whose manifest digest and key
    the entry (``export.release``) records."""

    name: str
    path: Path
    seq: int
    kind: str = "file"


@dataclass(frozen=True)
class Written:
    """What :func:`write_evidence` wrote."""

    sha256: str  # of the zip
    bytes: int
    entries: int
    documents: int
    manifest_sha256: str
    checkpoint_size: int
    key_id: str  # the key that signed it


# ---------------------------------------------------------------------- documents


def document_problem(value: Mapping[str, Any], document: Document, sha256: str) -> str | None:
    """Why entry ``value`` does not name ``document`` (whose SHA-256 is ``sha256``)."""
    if document.kind == "file":
        if names_sha256(value.get("detail"), sha256):
            return None
        return f"entry {document.seq} does not name the SHA-256 of documents/{document.name}"
    report = verify_bundle(document.path)
    if not report.ok or report.manifest_sha256 is None or report.key_id is None:
        return f"documents/{document.name} is not a valid release bundle: {report.problems}"
    return release_problem(value, report.manifest_sha256, report.key_id)


# ---------------------------------------------------------------------- writing


def write_evidence(
    ledger: Ledger,
    destination: Path,
    *,
    entries: Iterable[int],
    documents: Sequence[Document] = (),
    scope: Mapping[str, Any],
    created_by: str,
    created: int,
    body: Mapping[str, Any] | None = None,
) -> Written:
    """Write the evidence bundle of ledger entries ``entries`` (seqs) and ``documents`` to
    ``destination`` atomically. The proofs are against the latest checkpoint (one is
    signed first if it does not cover every entry); the manifest is signed with the
    ledger's current key. ``body`` adds members to the manifest (an id, say). The same
    ledger state and inputs give the same bytes. Raises :class:`ValueError` (nothing
    left behind) for a document that no entry of the bundle names, a bad name or a
    reserved key in ``body``; :class:`~audit.errors.LedgerError` for an entry the ledger
    does not have."""
    extra = dict(body or {})
    if reserved := [key for key in RESERVED_KEYS if key in extra]:
        raise ValueError(f"the manifest body must not set {', '.join(reserved)}")
    seqs = sorted(set(entries))
    if seqs and seqs[0] < 0:
        raise LedgerError(f"no entry {seqs[0]}")
    checkpoint = ledger.latest_checkpoint()
    if checkpoint is None or (seqs and checkpoint.size <= seqs[-1]):
        checkpoint = ledger.checkpoint()
    if seqs and checkpoint.size <= seqs[-1]:
        raise LedgerError(f"no entry {seqs[-1]}: the ledger has {checkpoint.size} entries")
    signer, private = ledger.signing_key()
    chain = ledger.keychain().records
    ids = [record.key_id for record in chain]
    if signer.key_id not in ids or checkpoint.key_id not in ids[: ids.index(signer.key_id) + 1]:
        raise LedgerError("the signing key or the checkpoint's key is not in the key chain")
    chain = chain[: ids.index(signer.key_id) + 1]
    destination = Path(destination)
    work = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        leaves, named = _write_entries(ledger, seqs, checkpoint.size, checkpoint.root, work)
        listed = _list_documents(documents, named)
        (work / CHECKPOINT).write_bytes(canonical.encode(checkpoint.to_dict()))
        (work / "keys").mkdir()
        for record in chain:
            (work / f"{KEYS}{record.key_id}.json").write_bytes(canonical.encode(record.to_dict()))
        members: list[dict[str, Any]] = []
        for name in sorted(
            [CHECKPOINT, ENTRIES, PROOFS, *(f"{KEYS}{r.key_id}.json" for r in chain)]
        ):
            digest, size = hash_file(work / name)
            members.append({"bytes": size, "name": name, "sha256": digest})
        manifest = {
            **extra,
            "checkpoint": checkpoint.to_dict(),
            "created": created,
            "created_by": created_by,
            "documents": listed,
            "entries": leaves,
            "format": EVIDENCE_FORMAT,
            "ledger": ledger.ledger_id,
            "members": members,
            "scope": dict(scope),
            "version": EVIDENCE_VERSION,
        }
        encoded = canonical.encode(manifest)
        if problems := manifest_problems(manifest):
            raise ValueError("cannot write the evidence bundle: " + "; ".join(problems))
        signature = signedzip.signature_document(
            DOMAIN_EVIDENCE,
            {
                "key_id": signer.key_id,
                "public_key": b64encode(signer.public_key),
                "signature": sign(private, DOMAIN_EVIDENCE, manifest),
            },
        )
        paths = {d.name: Path(d.path) for d in documents}

        def fill(archive: zipfile.ZipFile) -> None:
            archive.writestr(member_info(MANIFEST), encoded)
            archive.writestr(member_info(SIGNATURE), canonical.encode(signature))
            archive.writestr(member_info(README), README_TEXT.encode())
            for item in members:
                copy_in(archive, item["name"], work / item["name"], **_sized(item))
            for item in listed:
                copy_in(archive, DOCUMENTS + item["name"], paths[item["name"]], **_sized(item))

        digest = signedzip.write_zip(destination, fill)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Written(
        sha256=digest,
        bytes=destination.stat().st_size,
        entries=len(seqs),
        documents=len(listed),
        manifest_sha256=hashlib.sha256(encoded).hexdigest(),
        checkpoint_size=checkpoint.size,
        key_id=signer.key_id,
    )


def _sized(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"size": item["bytes"], "sha256": item["sha256"]}


def _write_entries(
    ledger: Ledger, seqs: list[int], size: int, root: bytes, work: Path
) -> tuple[list[list[Any]], dict[int, dict[str, Any]]]:
    """Write ``entries.jsonl`` and ``proofs.jsonl``; return the manifest's entry list and
    every entry parsed, by seq (documents are checked against them)."""
    leaves: list[list[Any]] = []
    parsed: dict[int, dict[str, Any]] = {}
    with open(work / ENTRIES, "wb") as lines, open(work / PROOFS, "wb") as proofs:
        for seq in seqs:
            line = ledger.read_entry(seq)
            leaf = merkle.leaf_hash(line)
            path = merkle.inclusion_proof_from(ledger.index.node, seq, size)
            try:  # what is written is what a verifier will accept, or nothing is
                merkle.verify_inclusion(leaf, seq, size, path, root)
                value = entry.parse(line)
            except (ProofError, InvalidEntry) as exc:
                raise LedgerError(f"entry {seq} cannot be proven: {exc}") from None
            parsed[seq] = value
            leaves.append([seq, leaf.hex()])
            lines.write(line + b"\n")
            proofs.write(canonical.encode({"path": [h.hex() for h in path], "seq": seq}) + b"\n")
    return leaves, parsed


def _list_documents(
    documents: Sequence[Document], named: Mapping[int, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    listed: dict[str, dict[str, Any]] = {}
    for document in documents:
        if (problem := name_problem(document.name)) is not None:
            raise ValueError(problem)
        if document.name in listed:
            raise ValueError(f"document name {document.name!r} is given twice")
        if document.kind not in DOCUMENT_KINDS:
            raise ValueError(f"unknown kind of document {document.kind!r}")
        value = named.get(document.seq)
        if value is None:
            raise ValueError(
                f"documents/{document.name}: entry {document.seq} is not in the bundle"
            )
        digest, size = hash_file(Path(document.path))
        if (problem := document_problem(value, document, digest)) is not None:
            raise ValueError(problem)
        listed[document.name] = {
            "bytes": size,
            "kind": document.kind,
            "name": document.name,
            "seq": document.seq,
            "sha256": digest,
        }
    return [listed[name] for name in sorted(listed)]


# ---------------------------------------------------------------------- the ledger


def ledger_match(
    ledger_dir: Path, report: EvidenceReport, trusted_keys: Sequence[str] | None = None
) -> LedgerMatch:
    """Verify the ledger folder (read-only, as ``python -m audit.verify`` does), then check
    that the bundle's checkpoint is one of its checkpoints or has the root of its first
    entries, and that its latest checkpoint is at least as large."""
    checkpoint = report.checkpoint
    if checkpoint is None:
        return LedgerMatch(("the bundle has no readable checkpoint to look up",))
    folder = Path(ledger_dir)
    if not (folder / "LEDGER.json").is_file():
        return LedgerMatch((f"{folder} is not a ledger folder (no LEDGER.json)",))
    verified = verify(folder, trusted_keys=trusted_keys)
    if not verified.ok:
        return LedgerMatch(
            (f"the ledger does not verify: {verified.problem}",), trust=verified.trust
        )
    if verified.ledger != checkpoint.ledger:
        return LedgerMatch(
            (
                f"the bundle's checkpoint is of ledger {checkpoint.ledger}, the folder holds "
                f"ledger {verified.ledger}",
            ),
            trust=verified.trust,
        )
    latest = verified.latest_checkpoint
    latest_size = int(latest["size"]) if latest else None
    problems = []
    encoded = checkpoint.encode()
    try:
        lines = (folder / "checkpoints.log").read_bytes().split(b"\n")
        position = next((n for n, line in enumerate(lines) if line == encoded), None)
        if position is None:
            problems += _root_problems(folder, checkpoint, verified.entries)
    except OSError as exc:
        return LedgerMatch((f"the ledger cannot be read: {exc}",), trust=verified.trust)
    if latest_size is None or latest_size < checkpoint.size:
        problems.append(
            f"the ledger's latest checkpoint (size {latest_size}) does not cover the bundle's "
            f"(size {checkpoint.size})"
        )
    if report.key_id is not None and not (folder / "keys" / f"{report.key_id}.json").is_file():
        problems.append(f"the ledger has no key {report.key_id}, which signed the bundle")
    return LedgerMatch(
        tuple(problems),
        entries=verified.entries,
        latest_size=latest_size,
        position=position,
        trust=verified.trust,
    )


def _root_problems(folder: Path, checkpoint: Checkpoint, entries: int) -> list[str]:
    """A checkpoint not in the log: compare its root with the ledger's first entries'."""
    if checkpoint.size > entries:
        return [
            f"the ledger has {entries:,} entries and the bundle's checkpoint covers "
            f"{checkpoint.size:,}: entries were removed, or the folder is an older copy"
        ]
    compact = merkle.CompactRange()
    for _, line in entries_between(folder, 0, checkpoint.size):
        compact.append(merkle.leaf_hash(line))
    if compact.root() != checkpoint.root:
        return [
            f"the ledger's first {checkpoint.size:,} entries have another root than the "
            "bundle's checkpoint: the ledger was rewritten, or the bundle is of another copy"
        ]
    return []


# ---------------------------------------------------------------------- command line


def china_time(micros: Any) -> str:
    if type(micros) is not int:
        return "?"
    try:
        moment = datetime.fromtimestamp(micros / 1_000_000, UTC).astimezone(CHINA)
    except (OverflowError, OSError, ValueError):
        return "?"
    return moment.isoformat(timespec="seconds")


def format_report(path: Path, report: EvidenceReport, match: LedgerMatch | None) -> str:
    verdict = {
        EXIT_OK: f"OK: evidence bundle {path} verifies",
        EXIT_ALTERED: f"FAILED: evidence bundle {path} was altered or is damaged",
        EXIT_UNTRUSTED: f"NOT TRUSTED: evidence bundle {path} is intact but not shown to "
        "come from the trusted ledger",
        EXIT_LEDGER: f"NOT THE LEDGER'S: evidence bundle {path} is intact but its checkpoint "
        "is not shown to be the given ledger's",
    }[report.exit_code(match)]
    lines = [verdict]
    lines += [f"  problem: {problem}" for problem in report.problems]
    lines += [f"  not trusted: {problem}" for problem in report.untrusted]
    if match is not None:
        lines += [f"  ledger problem: {problem}" for problem in match.problems]
    manifest = report.manifest or {}
    if manifest:
        lines.append(f"  scope: {canonical.encode(manifest.get('scope')).decode()}")
        lines.append(
            f"  made by {str(manifest.get('created_by'))[:80]} at "
            f"{china_time(manifest.get('created'))}"
        )
        lines.append(f"  ledger: {str(manifest.get('ledger'))[:64]}")
        listed = manifest.get("entries")
        count = len(listed) if isinstance(listed, list) else 0
        lines.append(f"  entries: {report.entries:,} of {count:,} verified")
    if report.checkpoint is not None:
        lines.append(
            f"  checkpoint: size {report.checkpoint.size:,}, root {report.checkpoint.root.hex()}, "
            f"signed {china_time(report.checkpoint.time)}"
        )
    documents = report.documents()
    lines.append(f"  documents: {len(documents)}")
    for item in documents:
        if isinstance(item, dict):
            lines.append(
                f"    {str(item.get('name'))[:120]}  {item.get('kind')}  {item.get('bytes'):,} "
                f"bytes  (entry {item.get('seq')})"
            )
    if report.manifest_sha256:
        lines.append(f"  manifest sha256: {report.manifest_sha256}")
    if report.key_id:
        lines.append(f"  signed by key: {report.key_id}")
    lines.append(f"  trust: {report.trust}")
    if match is not None:
        lines.append(f"  ledger: {match.summary()}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audit.evidence",
        description="Verify an sbx evidence bundle offline. Exit status: 0 it verifies; "
        "1 it was altered or is damaged; 2 it cannot be read (usage); 3 it is intact but "
        "not signed by the trusted ledger; 4 it is intact but not the given ledger's.",
    )
    parser.add_argument("bundle", help="the evidence bundle (.zip)")
    parser.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="KEYID",
        help="key id the ledger's first key must be (repeatable; default: taken on trust)",
    )
    parser.add_argument(
        "--ledger", metavar="DIR", help="ledger folder whose checkpoint the bundle's must be"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.bundle):
        print(f"error: {args.bundle} is not a file", file=sys.stderr)
        return EXIT_USAGE
    if args.ledger is not None and not os.path.isdir(args.ledger):
        print(f"error: {args.ledger} is not a ledger folder", file=sys.stderr)
        return EXIT_USAGE
    if bad := [key for key in args.trusted_key if not HEX64.fullmatch(key)]:
        print(f"error: --trusted-key {bad[0][:80]!r} is not 64 hex digits", file=sys.stderr)
        return EXIT_USAGE
    trusted = args.trusted_key or None
    report = verify_evidence(Path(args.bundle), trusted_keys=trusted)
    match = None if args.ledger is None else ledger_match(Path(args.ledger), report, trusted)
    code = report.exit_code(match)
    if args.json:
        document = report.to_dict(match)
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(format_report(Path(args.bundle), report, match))
    return code


if __name__ == "__main__":
    sys.exit(main())
