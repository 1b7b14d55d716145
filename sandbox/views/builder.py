"""The view builder: from a dataset version in the vault to a view, its signed manifest
and its ``view.build`` entry in the ledger.

The builder is the one holder of a :class:`sandbox.vault.VaultReader`. For each build it
decrypts the version into a private scratch folder (0700, removed afterwards), builds the
view the spec asks for, signs the manifest and records it. Pseudonym keys are derived per
grant from the builder's own secret (HKDF-SHA256, info ``sbx/pseudonym/v1 <grant>``), so a
grant's views share pseudonyms with each other and with no other grant's, and no key per
grant needs storing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from audit.store import write_atomic
from sandbox.vault import VaultReader
from sandbox.views.aggregate import AggregateViewSpec, Released, build_aggregate_view
from sandbox.views.disclosure import DisclosurePolicy
from sandbox.views.fields import MIN_KEY_BYTES, ViewSpecError, quoted, source_connection
from sandbox.views.manifest import ManifestSigner, file_sha256
from sandbox.views.private import Budget, PrivateViewSpec, build_private_view
from sandbox.views.record import RecordViewSpec, build_record_view
from sandbox.views.treatments import TreatmentPolicy

Record = Callable[[dict[str, Any]], None]
Spec = RecordViewSpec | AggregateViewSpec | PrivateViewSpec
SECRET_FILE = "pseudonym.secret"  # noqa: S105 - a file name, not a secret
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
PARQUET_MAGIC = b"PAR1"
MAX_RAW_VALUES = 1_000_000  # names the airlock looks for, held in memory


@dataclass(frozen=True)
class BuiltView:
    kind: str
    path: Path  # the view, Parquet
    manifest_path: Path
    manifest_sha256: str
    report: Any


class ViewBuilder:
    def __init__(
        self,
        folder: Path,
        vault: Path,
        treatments: TreatmentPolicy,
        disclosure: DisclosurePolicy,
        record: Record,
        *,
        budget: Budget | None = None,
        memory_limit: str = "512MB",
    ) -> None:
        """``folder``: the builder's own (keys, scratch), reachable by nobody else;
        ``vault``: the vault's folder, which the builder alone opens for reading."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        self.folder = folder
        self.vault = VaultReader(vault)
        self.treatments = treatments
        self.disclosure = disclosure
        self.record = record
        self.budget = budget
        self.memory_limit = memory_limit
        self.signer = ManifestSigner(folder, record)
        secret = folder / SECRET_FILE
        if not secret.exists():
            write_atomic(secret, os.urandom(MIN_KEY_BYTES), mode=0o600)
        self._secret = secret.read_bytes()

    def pseudonym_key(self, grant: str) -> bytes:
        return HKDF(
            algorithm=hashes.SHA256(),
            length=MIN_KEY_BYTES,
            salt=None,
            info=f"sbx/pseudonym/v1 {grant}".encode(),
        ).derive(self._secret)

    def build(
        self, *, grant: str, version: str, spec: Spec, name: str, out: Path, actor: str
    ) -> BuiltView:
        """Build view ``name`` of ``version`` for ``grant`` into ``out``: ``<name>.parquet``
        and ``<name>.manifest.json``."""
        if not _NAME.fullmatch(name):
            raise ViewSpecError("a view name is 1-100 letters, digits, dots, dashes or underscores")
        stored = self.vault.stored(version)
        out.mkdir(parents=True, exist_ok=True)
        destination = out / f"{name}.parquet"
        manifest_path = out / f"{name}.manifest.json"
        scratch = Path(tempfile.mkdtemp(prefix="build-", dir=self.folder))
        try:
            # The view reaches ``out`` only once it is signed and recorded; the grant's
            # release state is saved only then too (on leaving the ``with``).
            with self._releases(grant, version) as released:
                source = self._decrypt(version, scratch)
                partial = scratch / destination.name
                kind, report = self._build(source, spec, grant, partial, released)
                manifest = {
                    "kind": kind,
                    "grant": grant,
                    "name": name,
                    "built_at": datetime.now(UTC).isoformat(),
                    "source": {
                        "dataset": stored.dataset,
                        "version": stored.version,
                        "sha256": stored.sha256,
                    },
                    "output": {
                        "file": destination.name,
                        "sha256": file_sha256(partial),
                        "bytes": partial.stat().st_size,
                    },
                    "spec": _as_data(spec),
                    "report": _as_data(report),
                    "policies": {
                        "treatments": self.treatments.digest,
                        "disclosure": self.disclosure.digest,
                    },
                    "signer": self.signer.key_id,
                }
                signed = scratch / manifest_path.name
                digest = self.signer.write(manifest, signed)
                self.record(
                    {
                        "action": "view.build",
                        "actor": actor,
                        "object": f"grant:{grant}",
                        "detail": {
                            "view": name,
                            "kind": kind,
                            "dataset": stored.dataset,
                            "version": stored.version,
                            "manifest_sha256": digest,
                            "output_sha256": manifest["output"]["sha256"],
                        },
                    }
                )
                os.replace(partial, destination)
                os.replace(signed, manifest_path)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return BuiltView(kind, destination, manifest_path, digest, report)

    def raw_index(self, version: str, *, actor: str = "system:airlock") -> bytes:
        """The airlock's index of the raw rows of ``version`` (only hashes: see
        :mod:`sandbox.airlock.rowindex`), as bytes to keep, so that an export that copies
        raw records a view never showed is found too. The reading is recorded."""
        from sandbox.airlock.rowindex import build_row_index  # (the airlock imports views)

        scratch = Path(tempfile.mkdtemp(prefix="index-", dir=self.folder))
        try:
            source = self._decrypt(version, scratch)
            index = build_row_index([source], label=f"the raw data of version {version}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        stored = self.vault.stored(version)
        self.record(
            {
                "action": "airlock.index",
                "actor": actor,
                "object": f"dataset:{stored.dataset}",
                "detail": {"version": stored.version, "records": index.records},
            }
        )
        return index.to_bytes()

    def raw_values(
        self,
        version: str,
        columns: Sequence[str],
        *,
        limit: int = MAX_RAW_VALUES,
        actor: str = "system:airlock",
    ) -> frozenset[str]:
        """The distinct values of ``columns`` in the raw data of ``version`` (at most
        ``limit``), for the airlock to look for in an export: names of people, which no
        pattern recognises. They are returned, never written; the reading is recorded."""
        scratch = Path(tempfile.mkdtemp(prefix="values-", dir=self.folder))
        values: set[str] = set()
        try:
            source = self._decrypt(version, scratch)
            with source_connection(source, scratch / "source", self.memory_limit) as found:
                connection, names, _ = found
                for column in (c for c in columns if c in names):
                    rows = connection.execute(
                        f"SELECT DISTINCT CAST({quoted(column)} AS VARCHAR) FROM source "  # noqa: S608 - a quoted column name
                        f"WHERE {quoted(column)} IS NOT NULL LIMIT ?",
                        [max(limit - len(values), 0)],
                    ).fetchall()
                    values.update(str(row[0]) for row in rows)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        stored = self.vault.stored(version)
        self.record(
            {
                "action": "airlock.values",
                "actor": actor,
                "object": f"dataset:{stored.dataset}",
                "detail": {
                    "version": stored.version,
                    "columns": sorted(columns),
                    "values": len(values),
                },
            }
        )
        return frozenset(values)

    def _decrypt(self, version: str, scratch: Path) -> Path:
        blocks = self.vault.blocks(version)
        first = next(blocks, b"")
        suffix = ".parquet" if first.startswith(PARQUET_MAGIC) else ".csv"
        source = scratch / f"source{suffix}"
        with os.fdopen(os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(first)
            for block in blocks:
                out.write(block)
        return source

    @contextmanager
    def _releases(self, grant: str, version: str) -> Iterator[Released]:
        """What the grant's aggregated views of ``version`` have published, locked for the
        build and saved only if the build succeeds."""
        folder = self.folder / "releases" / hashlib.sha256(grant.encode()).hexdigest()[:32]
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / f"{version}.json"
        with (folder / f"{version}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            released = Released.from_json(path.read_bytes()) if path.exists() else Released()
            before = released.to_json()
            yield released
            if released.to_json() != before:
                write_atomic(path, released.to_json(), mode=0o600)

    def _build(
        self,
        source: Path,
        spec: Spec,
        grant: str,
        destination: Path,
        released: Released,
    ) -> tuple[str, Any]:
        if isinstance(spec, RecordViewSpec):
            key = self.pseudonym_key(grant)
            report: Any = build_record_view(
                source,
                spec,
                self.treatments,
                key=key,
                destination=destination,
                memory_limit=self.memory_limit,
            )
            return "record", report
        if isinstance(spec, AggregateViewSpec):
            report = build_aggregate_view(
                source,
                spec,
                self.treatments,
                self.disclosure,
                destination=destination,
                released=released,
                memory_limit=self.memory_limit,
            )
            return "aggregate", report
        if self.budget is None:
            raise ViewSpecError("this builder has no privacy budget: private views are off")
        report = build_private_view(
            source,
            spec,
            self.treatments,
            self.budget,
            grant=grant,
            destination=destination,
            memory_limit=self.memory_limit,
        )
        return "private", report


def _as_data(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value
