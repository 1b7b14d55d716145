"""What the airlock's checks report: findings, what each file was understood as, and the
report of one export, as plain frozen dataclasses with ``to_dict``/``from_dict``.

A finding names its check, the file (members of archives and decoded blobs as
``outer.zip!inner.csv`` and ``notes.txt#base64@line 4``), where in the file, and a short
sentence saying why. Reasons never repeat the values that made a check fire (no
identifier, no name, no row): a report can be stored and shown to the applicant without
itself disclosing anything.

A finding either blocks the export or asks the reviewer to look (an image has no text the
checks can read). The report passes when nothing blocks; a human still reviews every
export that passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class CheckName(StrEnum):
    FILE_TYPE = "file_type"
    FILE_SIZE = "file_size"
    ARCHIVE = "archive"  # nesting, member count, expansion, encrypted members
    UNREADABLE = "unreadable"
    ENCODED = "encoded"  # re-encoded content nested too deep, or too much of it
    IMAGE = "image"
    IDENTIFIERS = "identifiers"
    ROW_LEVEL = "row_level"
    SMALL_CELLS = "small_cells"
    DOMINANCE = "dominance"
    GROUP_DISCLOSURE = "group_disclosure"  # zero cells and full cells
    DEGREES_OF_FREEDOM = "degrees_of_freedom"
    PSEUDONYMS = "pseudonyms"
    DP_BUDGET = "dp_budget"
    # the export's frequency tables against the grant's earlier releases (differencing.py);
    # a report lists it among its checks only when earlier releases were given
    DIFFERENCING = "differencing"


class Severity(StrEnum):
    BLOCK = "block"  # the export cannot go to review as it is
    REVIEW = "review"  # the reviewer must look at this; it does not block by itself


class FileKind(StrEnum):
    CSV = "csv"
    TSV = "tsv"
    TEXT = "text"
    JSON = "json"
    JSON_LINES = "jsonl"
    NOTEBOOK = "notebook"
    HTML = "html"
    SVG = "svg"
    EXCEL = "excel"
    PARQUET = "parquet"
    ARROW = "arrow"
    ZIP = "zip"
    TAR = "tar"
    GZIP = "gzip"
    PNG = "png"
    JPEG = "jpeg"
    GIF = "gif"
    PDF = "pdf"
    OFFICE = "office"  # Word and PowerPoint: not understood
    OTHER_ARCHIVE = "other_archive"  # 7z, rar, bzip2, xz: not opened
    BINARY = "binary"  # anything else


IMAGE_KINDS = frozenset({FileKind.PNG, FileKind.JPEG, FileKind.GIF, FileKind.SVG})


@dataclass(frozen=True)
class Finding:
    check: CheckName
    file: str
    location: str  # within the file: "column 'phone'", "line 12", "cell 3, output 1"
    reason: str
    severity: Severity = Severity.BLOCK

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": str(self.check),
            "file": self.file,
            "location": self.location,
            "reason": self.reason,
            "severity": str(self.severity),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            CheckName(data["check"]),
            str(data["file"]),
            str(data["location"]),
            str(data["reason"]),
            Severity(data["severity"]),
        )


@dataclass(frozen=True)
class FileSummary:
    """What one file (or archive member, or decoded blob) was understood as."""

    file: str
    kind: FileKind
    bytes: int
    sha256: str
    tables: int = 0
    rows: int = 0  # over all its tables
    texts: int = 0
    images: int = 0
    members: int = 0  # files inside it (archives), blobs decoded from it

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "kind": str(self.kind),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "tables": self.tables,
            "rows": self.rows,
            "texts": self.texts,
            "images": self.images,
            "members": self.members,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileSummary:
        return cls(
            str(data["file"]),
            FileKind(data["kind"]),
            int(data["bytes"]),
            str(data["sha256"]),
            int(data["tables"]),
            int(data["rows"]),
            int(data["texts"]),
            int(data["images"]),
            int(data["members"]),
        )


@dataclass(frozen=True)
class CheckReport:
    level: str
    findings: tuple[Finding, ...]
    files: tuple[FileSummary, ...]
    checks: tuple[CheckName, ...]  # the checks that ran
    policy_digest: str = ""  # SHA-256 of the airlock and disclosure policy files
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.BLOCK)

    @property
    def for_review(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.REVIEW)

    @property
    def blocked(self) -> bool:
        return bool(self.blocking)

    @property
    def passed(self) -> bool:
        """No finding blocks: the export may go to a human reviewer."""
        return not self.blocked

    def fired(self) -> set[CheckName]:
        """The checks with at least one finding."""
        return {finding.check for finding in self.findings}

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "passed": self.passed,
            "findings": [finding.to_dict() for finding in self.findings],
            "files": [summary.to_dict() for summary in self.files],
            "checks": [str(check) for check in self.checks],
            "policy_digest": self.policy_digest,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckReport:
        return cls(
            str(data["level"]),
            tuple(Finding.from_dict(item) for item in data["findings"]),
            tuple(FileSummary.from_dict(item) for item in data["files"]),
            tuple(CheckName(item) for item in data["checks"]),
            str(data.get("policy_digest", "")),
            tuple(str(note) for note in data.get("notes", ())),
        )
