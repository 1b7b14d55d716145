"""Checking an evidence bundle (FORMAT.md §11), trusting nothing in it but the
mathematics and, if given, the id of the ledger's first key.

:func:`verify_evidence` checks the bundle on its own: every member against the manifest,
the key chain from the first key, the checkpoint's signature, every entry's bytes
against its leaf hash and its proof against the checkpoint's root, the signature over
the manifest by a key of the chain, and every document against its hash and the entry
that names it (:func:`audit.evidence.ledger_match` then checks, for whoever holds the
ledger, that the checkpoint is that ledger's). It never raises for a damaged or hostile
bundle: problems are sentences, of kinds that :meth:`EvidenceReport.exit_code` tells apart.
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from audit import canonical, entry, merkle
from audit.bundle import verify_bundle
from audit.checkpoint import Checkpoint, CheckpointError
from audit.errors import InvalidEntry, KeyringError, ProofError
from audit.evidenceformat import (
    CHECKPOINT,
    DOCUMENTS,
    DOMAIN_EVIDENCE,
    ENTRIES,
    EXIT_ALTERED,
    EXIT_LEDGER,
    EXIT_OK,
    EXIT_UNTRUSTED,
    HOLDS,
    KEYS,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    PROOFS,
    README,
    SIGNATURE,
    LedgerMatch,
    in_evidence,
    iter_lines,
    manifest_problems,
    names_sha256,
    release_problem,
)
from audit.signedzip import (
    CHUNK,
    HEX64,
    MAX_ARCHIVE_BYTES,
    ZIP_ERRORS,
    ZipCheck,
    check_signature_document,
)
from audit.signing import KeyChain, KeyRecord
from audit.verify import trust_statement

MAX_REPORTED = 20  # problems with entries reported one by one; the rest are counted
_END = object()


# ---------------------------------------------------------------------- the report


@dataclass(frozen=True)
class EvidenceReport:
    """What :func:`verify_evidence` found. ``problems``: the bundle was altered or is
    damaged; ``untrusted``: it is intact but not shown to come from the trusted ledger."""

    path: str
    problems: tuple[str, ...]
    untrusted: tuple[str, ...]
    manifest: dict[str, Any] | None
    manifest_sha256: str | None
    key_id: str | None
    checkpoint: Checkpoint | None
    trust: str
    entries: int  # entries whose bytes and proof hold

    @property
    def ok(self) -> bool:
        return not self.problems and not self.untrusted

    def documents(self) -> list[dict[str, Any]]:
        found = (self.manifest or {}).get("documents")
        return list(found) if isinstance(found, list) else []

    def exit_code(self, match: LedgerMatch | None = None) -> int:
        if self.problems:
            return EXIT_ALTERED
        if self.untrusted:
            return EXIT_UNTRUSTED
        if match is not None and not match.ok:
            return EXIT_LEDGER
        return EXIT_OK

    def to_dict(self, match: LedgerMatch | None = None) -> dict[str, Any]:
        manifest = self.manifest or {}
        return {
            "checkpoint": None if self.checkpoint is None else self.checkpoint.to_dict(),
            "created": manifest.get("created"),
            "created_by": manifest.get("created_by"),
            "documents": self.documents(),
            "entries": self.entries,
            "exit": self.exit_code(match),
            "key_id": self.key_id,
            "ledger": manifest.get("ledger"),
            "ledger_match": None if match is None else match.to_dict(),
            "manifest_sha256": self.manifest_sha256,
            "ok": self.ok and (match is None or match.ok),
            "path": self.path,
            "problems": list(self.problems),
            "scope": manifest.get("scope"),
            "trust": self.trust,
            "untrusted": list(self.untrusted),
        }


# ---------------------------------------------------------------------- verifying


def verify_evidence(
    path: Path,
    *,
    trusted_keys: Sequence[str] | None = None,
    max_bytes: int = MAX_ARCHIVE_BYTES,
) -> EvidenceReport:
    """Check the evidence bundle at ``path``; ``trusted_keys``: ids the ledger's first
    key must be one of (else it is taken on trust, and the report's ``trust`` says so).
    Reads at most ``max_bytes`` decompressed bytes. Never raises for a bad bundle."""
    check = _Verification(Path(path), set(trusted_keys) if trusted_keys else None, max_bytes)
    check.reader.run(check.path, check.check)
    return EvidenceReport(
        path=str(path),
        problems=tuple(dict.fromkeys(check.reader.problems)),
        untrusted=tuple(dict.fromkeys(check.untrusted)),
        manifest=check.manifest,
        manifest_sha256=check.manifest_sha256,
        key_id=check.key_id,
        checkpoint=check.checkpoint,
        trust=check.trust,
        entries=check.verified,
    )


@dataclass
class _Verification:
    path: Path
    trusted: set[str] | None
    max_bytes: int
    reader: ZipCheck = field(init=False)
    untrusted: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    manifest_sha256: str | None = None
    key_id: str | None = None
    checkpoint: Checkpoint | None = None
    trust: str = "no keys"
    verified: int = 0
    entry_problems: int = 0

    def __post_init__(self) -> None:
        self.reader = ZipCheck(self.max_bytes)

    @property
    def problems(self) -> list[str]:
        return self.reader.problems

    def check(self, archive: zipfile.ZipFile, raw: IO[bytes]) -> None:
        infos = archive.infolist()
        if self.reader.too_many(infos):
            return
        members = self.reader.members(infos, in_evidence, HOLDS)
        refused = self.reader.refused(infos, raw)
        usable = {name: info for name, info in members.items() if name not in refused}
        if not self._read_manifest(archive, members, usable) or self.manifest is None:
            self.problems.append("nothing else can be checked without a valid manifest")
            return
        manifest = self.manifest
        self._check_signature(archive, members, usable)
        listed = {item["name"] for item in manifest["members"]}
        for item in manifest["members"]:
            info = members.get(item["name"])
            if info is None:
                self.problems.append(f"{item['name']} is in the manifest but missing")
            elif item["name"] in usable:
                self.reader.check_member(archive, info, item["bytes"], item["sha256"])
        for name in members:
            if name not in (MANIFEST, SIGNATURE, README) and not name.startswith(DOCUMENTS):
                if name not in listed:
                    self.problems.append(f"{name} is not in the manifest (a member was added)")
        chain = self._key_chain(archive, usable, manifest["ledger"])
        self._check_checkpoint(archive, members, usable, chain)
        if chain is not None and self.key_id is not None and chain.get(self.key_id) is None:
            self.untrusted.append(
                f"the bundle is signed by key {self.key_id}, which is not one of the "
                "ledger's keys (keys/)"
            )
        details = self._check_entries(archive, usable)
        self._check_documents(archive, members, usable, details)

    def _read_manifest(
        self,
        archive: zipfile.ZipFile,
        members: Mapping[str, zipfile.ZipInfo],
        usable: Mapping[str, zipfile.ZipInfo],
    ) -> bool:
        if MANIFEST not in members:
            self.problems.append("manifest.json is missing: the bundle has no manifest")
            return False
        if MANIFEST not in usable:
            return False
        data = self.reader.read_small(archive, usable[MANIFEST], MAX_MANIFEST_BYTES)
        if data is None:
            return False
        self.manifest_sha256 = hashlib.sha256(data).hexdigest()
        value = self.reader.decode(MANIFEST, data)
        if value is None:
            return False
        problems = manifest_problems(value)
        self.problems.extend(problems)
        if problems:
            return False
        self.manifest = value
        return True

    def _check_signature(
        self,
        archive: zipfile.ZipFile,
        members: Mapping[str, zipfile.ZipInfo],
        usable: Mapping[str, zipfile.ZipInfo],
    ) -> None:
        if SIGNATURE not in members:
            self.problems.append("signature.json is missing: it is not signed")
            return
        data = self.reader.read_small(archive, usable[SIGNATURE]) if SIGNATURE in usable else None
        document = None if data is None else self.reader.decode(SIGNATURE, data)
        if document is None:
            return
        check = check_signature_document(document, self.manifest, DOMAIN_EVIDENCE)
        self.problems.extend(check.problems)
        self.key_id = check.key_id

    def _key_chain(
        self, archive: zipfile.ZipFile, usable: Mapping[str, zipfile.ZipInfo], ledger: str
    ) -> KeyChain | None:
        """The key chain from ``keys/``, first key first; ``None`` if it cannot be built
        or its first key is not a trusted one."""
        records: dict[str, KeyRecord] = {}
        for name, info in usable.items():
            if not name.startswith(KEYS):
                continue
            data = self.reader.read_small(archive, info)
            value = None if data is None else self.reader.decode(name, data)
            if value is None:
                continue
            try:
                record = KeyRecord.from_dict(value)
            except KeyringError as exc:
                self.problems.append(f"{name} is not a key record: {exc}")
                continue
            if name != f"{KEYS}{record.key_id}.json":
                self.problems.append(f"{name} holds key {record.key_id}")
                continue
            records[record.key_id] = record
        firsts = [record for record in records.values() if record.previous is None]
        if len(firsts) != 1:
            self.problems.append(
                f"keys/ holds {len(firsts)} first keys (previous null), not one: "
                "the checkpoint cannot be checked"
            )
            return None
        first = firsts[0]
        if self.trusted is not None and first.key_id not in self.trusted:
            self.untrusted.append(
                f"the ledger's first key is {first.key_id}, not a trusted key: the bundle "
                "does not come from the trusted ledger"
            )
            return None
        following = {record.previous: record for record in records.values() if record.previous}
        chain = KeyChain(ledger, self.trusted)
        current: KeyRecord | None = first
        while current is not None:
            try:
                chain.add(current)
            except KeyringError as exc:
                self.problems.append(f"keys/: {exc}")
                return None
            current = following.get(current.key_id)
        for key_id in sorted(set(records) - {record.key_id for record in chain.records}):
            self.problems.append(f"keys/{key_id}.json is not part of the key chain")
        self.trust = trust_statement(chain, self.trusted)
        return chain

    def _check_checkpoint(
        self,
        archive: zipfile.ZipFile,
        members: Mapping[str, zipfile.ZipInfo],
        usable: Mapping[str, zipfile.ZipInfo],
        chain: KeyChain | None,
    ) -> None:
        assert self.manifest is not None  # noqa: S101 - checked before
        value = self.manifest["checkpoint"]
        try:
            checkpoint = Checkpoint.from_dict(value)
        except CheckpointError as exc:
            self.problems.append(f"manifest.json: {exc}")
            return
        self.checkpoint = checkpoint
        if CHECKPOINT in usable:
            data = self.reader.read_small(archive, usable[CHECKPOINT])
            if data is not None and data != canonical.encode(value):
                self.problems.append("checkpoint.json is not the checkpoint the manifest names")
        if checkpoint.ledger != self.manifest["ledger"]:
            self.problems.append(
                f"the checkpoint is of ledger {checkpoint.ledger[:64]}, the manifest names "
                f"ledger {self.manifest['ledger'][:64]}"
            )
        elif chain is not None:
            try:
                checkpoint.check(chain)
            except (CheckpointError, KeyringError) as exc:
                self.problems.append(f"the checkpoint does not verify: {exc}")

    def _entry_problem(self, text: str) -> None:
        self.entry_problems += 1
        if self.entry_problems <= MAX_REPORTED:
            self.problems.append(text)

    def _check_entries(
        self, archive: zipfile.ZipFile, usable: Mapping[str, zipfile.ZipInfo]
    ) -> dict[int, dict[str, Any]]:
        """Every entry's bytes against its leaf hash, and its proof against the root;
        return the entries the documents name, parsed."""
        assert self.manifest is not None  # noqa: S101 - checked before
        listed: list[list[Any]] = self.manifest["entries"]
        wanted = {item["seq"] for item in self.manifest["documents"]}
        details: dict[int, dict[str, Any]] = {}
        if ENTRIES not in usable or PROOFS not in usable:
            self.problems.append(
                "the entries cannot be checked without entries.jsonl and proofs.jsonl"
            )
            return details
        try:
            with archive.open(usable[ENTRIES]) as lines, archive.open(usable[PROOFS]) as proofs:
                self._walk(listed, iter_lines(lines), iter_lines(proofs), wanted, details)
        except ZIP_ERRORS as exc:
            self.problems.append(f"entries.jsonl or proofs.jsonl cannot be read: {exc}")
        if self.entry_problems > MAX_REPORTED:
            self.problems.append(
                f"… and {self.entry_problems - MAX_REPORTED:,} more problems with entries"
            )
        return details

    def _walk(
        self,
        listed: list[list[Any]],
        lines: Iterator[bytes | None],
        proofs: Iterator[bytes | None],
        wanted: set[int],
        details: dict[int, dict[str, Any]],
    ) -> None:
        checkpoint = self.checkpoint
        for number, (seq, leaf_hex) in enumerate(listed, 1):
            line, proof = next(lines, _END), next(proofs, _END)
            for name, got in ((ENTRIES, line), (PROOFS, proof)):
                if got is _END:
                    self.problems.append(
                        f"{name} ends after {number - 1:,} lines; the manifest lists "
                        f"{len(listed):,} entries (entries were removed)"
                    )
                elif got is None:
                    self.problems.append(f"{name} line {number} is cut off or too long")
            if not isinstance(line, bytes) or not isinstance(proof, bytes):
                return
            leaf = bytes.fromhex(leaf_hex)
            good = self._check_line(number, seq, leaf, line[:-1], seq in wanted, details)
            if self._check_proof(number, seq, leaf, proof[:-1], checkpoint) and good:
                self.verified += 1
        for name, rest in ((ENTRIES, lines), (PROOFS, proofs)):
            if next(rest, _END) is not _END:
                self.problems.append(
                    f"{name} holds more lines than the manifest lists entries (entries were added)"
                )

    def _check_line(
        self,
        number: int,
        seq: int,
        leaf: bytes,
        line: bytes,
        wanted: bool,
        details: dict[int, dict[str, Any]],
    ) -> bool:
        fields = entry.chain_fields(line)
        if fields is None or fields.seq != seq:
            found = "not an entry" if fields is None else f"entry {fields.seq}"
            self._entry_problem(
                f"entries.jsonl line {number} is {found}; the manifest lists entry {seq} "
                "there: an entry was removed, added or reordered"
            )
            return False
        if merkle.leaf_hash(line) != leaf:
            self._entry_problem(
                f"entry {seq} does not hash to the leaf hash the manifest lists: "
                "the entry was changed"
            )
            return False
        try:
            value = entry.parse(line)
        except InvalidEntry as exc:
            self._entry_problem(f"entry {seq} is not a valid entry: {exc}")
            return False
        if wanted:
            details[seq] = value
        return True

    def _check_proof(
        self, number: int, seq: int, leaf: bytes, line: bytes, checkpoint: Checkpoint | None
    ) -> bool:
        try:
            value = canonical.decode_canonical(line)
        except canonical.CanonicalError as exc:
            self._entry_problem(f"proofs.jsonl line {number} is not canonical JSON: {exc}")
            return False
        if not isinstance(value, dict) or set(value) != {"path", "seq"} or value["seq"] != seq:
            self._entry_problem(
                f"proofs.jsonl line {number} is not the proof of entry {seq} "
                '({"path": [...], "seq": n})'
            )
            return False
        if checkpoint is None:
            return False
        if seq >= checkpoint.size:
            self._entry_problem(f"entry {seq} is beyond the checkpoint (size {checkpoint.size})")
            return False
        path = value["path"]
        if not isinstance(path, list) or not all(
            isinstance(h, str) and HEX64.fullmatch(h) for h in path
        ):
            self._entry_problem(f"the proof of entry {seq} is not a list of hashes")
            return False
        try:
            merkle.verify_inclusion(
                leaf, seq, checkpoint.size, [bytes.fromhex(h) for h in path], checkpoint.root
            )
        except ProofError as exc:
            self._entry_problem(
                f"the inclusion proof of entry {seq} does not lead to the checkpoint's root ({exc})"
            )
            return False
        return True

    def _check_documents(
        self,
        archive: zipfile.ZipFile,
        members: Mapping[str, zipfile.ZipInfo],
        usable: Mapping[str, zipfile.ZipInfo],
        details: Mapping[int, dict[str, Any]],
    ) -> None:
        assert self.manifest is not None  # noqa: S101 - checked before
        seqs = {item[0] for item in self.manifest["entries"]}
        present = {n[len(DOCUMENTS) :]: i for n, i in members.items() if n.startswith(DOCUMENTS)}
        for listed in self.manifest["documents"]:
            name, seq = listed["name"], listed["seq"]
            info = present.pop(name, None)
            if info is None:
                self.problems.append(f"documents/{name} is in the manifest but missing")
                continue
            if info.filename not in usable:
                continue
            if not self.reader.check_member(archive, info, listed["bytes"], listed["sha256"]):
                continue
            if seq not in seqs:
                self.problems.append(
                    f"documents/{name} is named by entry {seq}, which is not in the bundle"
                )
                continue
            value = details.get(seq)
            if value is None:  # the entry itself failed, and was reported
                continue
            if listed["kind"] == "file":
                if not names_sha256(value["detail"], listed["sha256"]):
                    self.problems.append(
                        f"entry {seq} does not name the SHA-256 of documents/{name}"
                    )
            else:
                self._check_release(archive, info, name, value)
        for name in sorted(present):
            self.problems.append(f"documents/{name} is not in the manifest (a document was added)")

    def _check_release(
        self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, value: dict[str, Any]
    ) -> None:
        """A release bundle among the documents: valid on its own (§10.4) and the one the
        entry records."""
        with tempfile.TemporaryDirectory(prefix="sbx-evidence-") as folder:
            copy = Path(folder) / "bundle.zip"
            try:
                with archive.open(info) as source, open(copy, "wb") as target:
                    while chunk := source.read(CHUNK):
                        target.write(chunk)
            except ZIP_ERRORS as exc:
                self.problems.append(f"documents/{name} cannot be read: {exc}")
                return
            report = verify_bundle(copy, max_bytes=self.max_bytes)
        if not report.ok or report.manifest_sha256 is None or report.key_id is None:
            shown = "; ".join(report.problems[:3])
            self.problems.append(f"documents/{name} is not a valid release bundle: {shown}")
            return
        if (problem := release_problem(value, report.manifest_sha256, report.key_id)) is not None:
            self.problems.append(f"documents/{name}: {problem}")
