"""The evidence bundle format (FORMAT.md §11): its names, the rules of its manifest,
and how a document is tied to the entry that names it. Shared by the writer
(:mod:`audit.evidence`) and the verifier (:mod:`audit.evidencecheck`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from audit.signedzip import HEX64, name_problem

DOMAIN_EVIDENCE = b"sbx/evidence/v1\n"
EVIDENCE_FORMAT = "sbx-evidence"
EVIDENCE_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
README = "README.txt"
CHECKPOINT = "checkpoint.json"
ENTRIES = "entries.jsonl"
PROOFS = "proofs.jsonl"
KEYS = "keys/"
DOCUMENTS = "documents/"
DOCUMENT_KINDS = ("file", "release-bundle")
RESERVED_KEYS = (
    "checkpoint",
    "created",
    "created_by",
    "documents",
    "entries",
    "format",
    "ledger",
    "members",
    "scope",
    "version",
)
MAX_MANIFEST_BYTES = 256 << 20  # a million entries' seqs and leaf hashes take 80 MiB
MAX_LINE_BYTES = 16 << 20  # one entry or proof
EXIT_OK, EXIT_ALTERED, EXIT_USAGE, EXIT_UNTRUSTED, EXIT_LEDGER = 0, 1, 2, 3, 4
HOLDS = (
    "an evidence bundle holds only manifest.json, signature.json, README.txt, "
    "checkpoint.json, entries.jsonl, proofs.jsonl, keys/<key id>.json and documents/<name>"
)
_DOCUMENT_MEMBERS = {"bytes", "kind", "name", "seq", "sha256"}
_END = object()


# ---------------------------------------------------------------------- the format


def in_evidence(name: str) -> bool:
    """Whether ``name`` may be a member of an evidence bundle."""
    if name in (MANIFEST, SIGNATURE, README, CHECKPOINT, ENTRIES, PROOFS):
        return True
    if name.startswith(KEYS):
        return name.endswith(".json") and bool(HEX64.fullmatch(name[len(KEYS) : -5]))
    return name.startswith(DOCUMENTS) and name_problem(name[len(DOCUMENTS) :]) is None


def names_sha256(detail: Any, digest: str) -> bool:
    """Whether ``digest`` is one of the strings in ``detail`` (at any depth)."""
    if isinstance(detail, str):
        return detail == digest
    if isinstance(detail, dict):
        return any(names_sha256(value, digest) for value in detail.values())
    if isinstance(detail, list):
        return any(names_sha256(value, digest) for value in detail)
    return False


def release_problem(value: Mapping[str, Any], manifest_sha256: str, key_id: str) -> str | None:
    """Why entry ``value`` does not record the release of a bundle with this manifest
    digest and key, or ``None`` if it does."""
    detail = value.get("detail")
    if (
        value.get("action") != "export.release"
        or value.get("outcome") != "ok"
        or not isinstance(detail, dict)
    ):
        return f"entry {value.get('seq')} is not a successful export.release"
    if detail.get("manifest_sha256") != manifest_sha256 or detail.get("key_id") != key_id:
        return (
            f"entry {value.get('seq')} records the release of another manifest or key "
            f"(not manifest {manifest_sha256} signed by key {key_id})"
        )
    return None


def manifest_problems(manifest: Any) -> list[str]:
    """What makes ``manifest`` not a version-1 evidence manifest (empty: nothing)."""
    if not isinstance(manifest, dict):
        return ["manifest.json is not a JSON object"]
    version = manifest.get("version")
    if manifest.get("format") != EVIDENCE_FORMAT or type(version) is not int or version != 1:
        return [
            f"manifest.json is not a version 1 evidence bundle manifest (format "
            f"{str(manifest.get('format'))[:64]!r}, version {str(version)[:16]})"
        ]
    if missing := sorted(set(RESERVED_KEYS) - set(manifest)):
        return [f"manifest.json lacks {', '.join(missing)}"]
    problems = []
    if not isinstance(manifest["ledger"], str) or not isinstance(manifest["created_by"], str):
        problems.append("manifest.json: ledger and created_by must be strings")
    if type(manifest["created"]) is not int:
        problems.append("manifest.json: created must be an integer (µs)")
    if not isinstance(manifest["scope"], dict):
        problems.append("manifest.json: scope must be an object")
    if not isinstance(manifest["checkpoint"], dict):
        problems.append("manifest.json: checkpoint must be an object")
    problems += _entries_problems(manifest["entries"])
    problems += _listed_problems(manifest["members"], "members", {"bytes", "name", "sha256"})
    problems += _listed_problems(manifest["documents"], "documents", _DOCUMENT_MEMBERS)
    if not problems:
        listed = {item["name"] for item in manifest["members"]}
        if {CHECKPOINT, ENTRIES, PROOFS} - listed or any(
            not in_evidence(name) or name.startswith(DOCUMENTS) for name in listed
        ):
            problems.append(
                "manifest.json: members must list checkpoint.json, entries.jsonl, "
                "proofs.jsonl and keys/<key id>.json, and nothing else"
            )
    return problems


def _entries_problems(entries: Any) -> list[str]:
    if not isinstance(entries, list):
        return ["manifest.json: entries must be a list of [seq, leaf hash]"]
    last = -1
    for item in entries:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or type(item[0]) is not int
            or not isinstance(item[1], str)
            or not HEX64.fullmatch(item[1])
        ):
            return [f"manifest.json: entry {str(item)[:80]} is not [seq, 64 hex digits]"]
        if item[0] <= last:
            return ["manifest.json does not list its entries by increasing seq, each once"]
        last = item[0]
    return []


def _listed_problems(items: Any, what: str, keys: set[str]) -> list[str]:
    if not isinstance(items, list):
        return [f"manifest.json: {what} must be a list"]
    problems = []
    names = []
    for number, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != keys:
            problems.append(f"manifest.json: {what} {number} must have exactly {sorted(keys)}")
            continue
        if (problem := name_problem(item["name"])) is not None:
            problems.append(f"manifest.json: {problem}")
            continue
        if type(item["bytes"]) is not int or item["bytes"] < 0:
            problems.append(f"manifest.json: bytes of {item['name']!r} is not a size")
        if not isinstance(item["sha256"], str) or not HEX64.fullmatch(item["sha256"]):
            problems.append(f"manifest.json: sha256 of {item['name']!r} is not 64 hex digits")
        if "kind" in keys and item["kind"] not in DOCUMENT_KINDS:
            problems.append(f"manifest.json: {item['name']!r} is of unknown kind")
        if "seq" in keys and (type(item["seq"]) is not int or item["seq"] < 0):
            problems.append(f"manifest.json: seq of {item['name']!r} is not a seq")
        names.append(item["name"])
    if len(set(names)) != len(names):
        problems.append(f"manifest.json lists a name among its {what} twice")
    elif names != sorted(names):
        problems.append(f"manifest.json does not list its {what} sorted by name")
    return problems


def iter_lines(handle: IO[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[bytes | None]:
    """The lines of a member, each with its line feed; ``None`` for a line longer than
    ``limit`` or cut off (and nothing after it)."""
    while line := handle.readline(limit + 1):
        if not line.endswith(b"\n"):
            yield None
            return
        yield line


@dataclass(frozen=True)
class LedgerMatch:
    """What :func:`ledger_match` found: ``ok`` only without problems."""

    problems: tuple[str, ...]
    entries: int = 0  # in the ledger
    latest_size: int | None = None  # of the ledger's latest checkpoint
    position: int | None = None  # the bundle's checkpoint's line in checkpoints.log
    trust: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if not self.ok:
            return "the checkpoint is not shown to be the ledger's"
        where = (
            f"checkpoint #{self.position} of its log"
            if self.position is not None
            else "the root of its entries"
        )
        return (
            f"the checkpoint is the ledger's ({where}); its latest checkpoint, of size "
            f"{self.latest_size:,}, extends it ({self.entries:,} entries verified)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "latest_size": self.latest_size,
            "ok": self.ok,
            "position": self.position,
            "problems": list(self.problems),
            "trust": self.trust,
        }
