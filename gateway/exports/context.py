"""What the airlock's checks need to know about a grant, read from what the grant has.

- the security level: the strictest level of the datasets its views come from (as their
  catalog entries in force say; the strictest the policy knows when one cannot be read);
- an index of the rows of its record-level views, built once per views folder, and one of
  the raw rows of each dataset version they came from (made by the view builder, the
  vault's only reader), both kept beside the exports (as sensitive as the views, and
  kept like them);
- the values of its datasets' direct identifiers that no pattern recognises (people's
  names), read from the raw data by the view builder for each check and never kept;
- its privacy budget left, when it has one;
- the tables earlier releases of the same datasets took out, for this applicant and any
  other, for the differencing check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.catalog.entry import FieldType
from gateway.catalog.service import entry_in_force
from gateway.db.models import Dataset, PrivacyBudget, ReleasedTable
from gateway.identity.model import Conflict
from sandbox.airlock import (
    AirlockPolicy,
    ExportContext,
    RowIndex,
    RowIndexError,
    build_row_index,
)
from sandbox.airlock import ReleasedTable as ComparableTable
from sandbox.views.treatments import SensitivityClass

log = logging.getLogger(__name__)
MICRO = 1_000_000


@dataclass(frozen=True)
class GrantViews:
    """The views of a grant as their manifests describe them."""

    folder: Path
    manifests: tuple[Path, ...]
    datasets: tuple[dict[str, Any], ...]  # {"dataset", "version", "sha256"}, sorted
    record_views: tuple[Path, ...]  # the record-level views' Parquet files

    @property
    def dataset_ids(self) -> tuple[str, ...]:
        return tuple(sorted({str(item["dataset"]) for item in self.datasets}))


def grant_views(views_root: Path, views: str) -> GrantViews:
    folder = views_root / views
    manifests, datasets, records = [], {}, []
    for path in sorted(folder.glob("*.manifest.json")) if folder.is_dir() else ():
        try:
            signed = json.loads(path.read_bytes())
            manifest = signed["manifest"]
            source = manifest["source"]
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("a view manifest cannot be read: %s", path)
            continue
        manifests.append(path)
        key = (str(source["dataset"]), str(source["version"]))
        datasets[key] = {"dataset": key[0], "version": key[1], "sha256": str(source["sha256"])}
        output = folder / str(manifest.get("output", {}).get("file", ""))
        if manifest.get("kind") == "record" and output.is_file():
            records.append(output)
    return GrantViews(
        folder,
        tuple(manifests),
        tuple(datasets[key] for key in sorted(datasets)),
        tuple(records),
    )


def strictest_level(session: Session, policy: AirlockPolicy, dataset_ids: Sequence[str]) -> str:
    order = list(policy.levels)
    found = []
    for dataset_id in dataset_ids:
        dataset = session.get(Dataset, dataset_id)
        try:
            level = entry_in_force(session, dataset).level if dataset is not None else None
        except Conflict:  # no entry approved yet: the strictest, below
            level = None
        found.append(order.index(level) if level in order else len(order) - 1)
    return order[max(found, default=len(order) - 1)]


def row_index(views: GrantViews, cache: Path) -> tuple[RowIndex, ...]:
    """The index of the grant's record-level views, from ``cache`` when it was built for
    the same files."""
    if not views.record_views:
        return ()
    stamp = "-".join(
        f"{path.name}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
        for path in views.record_views
    )
    stored = cache / f"{views.folder.name}.index"
    stamp_file = cache / f"{views.folder.name}.stamp"
    try:
        if stamp_file.read_text() == stamp:
            return (RowIndex.from_bytes(stored.read_bytes()),)
    except (OSError, RowIndexError):
        pass  # built again below
    index = build_row_index(views.record_views, label=f"the views of {views.folder.name}")
    for path, data in ((stored, index.to_bytes()), (stamp_file, stamp.encode())):
        _write_private(path, data)
    return (index,)


def raw_indexes(
    views: GrantViews, cache: Path, make: Callable[[str], bytes] | None
) -> tuple[RowIndex, ...]:
    """An index of the raw rows of each dataset version the grant's views came from,
    made once per version by ``make`` (the view builder, the vault's only reader) and kept
    in ``cache``; none without ``make``."""
    if make is None:
        return ()
    found = []
    for item in views.datasets:
        version = str(item["version"])
        stored = cache / f"raw-{hashlib.sha256(version.encode()).hexdigest()[:32]}.index"
        try:
            found.append(RowIndex.from_bytes(stored.read_bytes()))
            continue
        except (OSError, RowIndexError):
            pass  # made below
        data = make(version)
        _write_private(stored, data)
        found.append(RowIndex.from_bytes(data))
    return tuple(found)


def name_columns(session: Session, dataset_id: str) -> list[str]:
    """The fields of the dataset's entry in force that hold people's names or other direct
    identifiers no pattern recognises: text direct identifiers without an identifier kind."""
    dataset = session.get(Dataset, dataset_id)
    try:
        entry = entry_in_force(session, dataset) if dataset is not None else None
    except Conflict:
        return []
    if entry is None:
        return []
    return [
        field.name
        for field in entry.fields
        if field.sensitivity is SensitivityClass.DIRECT_IDENTIFIER
        and field.identifier is None
        and field.type is FieldType.STRING
    ]


def source_names(
    session: Session,
    views: GrantViews,
    read: Callable[[str, Sequence[str]], frozenset[str]] | None,
) -> frozenset[str]:
    """The values of those fields in the raw data of the grant's dataset versions, read by
    ``read`` (the view builder) for this check only: held in memory, never kept."""
    if read is None:
        return frozenset()
    found: set[str] = set()
    for item in views.datasets:
        columns = name_columns(session, str(item["dataset"]))
        if columns:
            found |= read(str(item["version"]), columns)
    return frozenset(found)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        out.write(data)
    os.replace(partial, path)


def earlier_releases(session: Session, dataset_ids: Sequence[str]) -> tuple[ComparableTable, ...]:
    """Every table released from any of ``dataset_ids``, once each."""
    if not dataset_ids:
        return ()
    rows = session.execute(
        select(ReleasedTable.id, ReleasedTable.export_id, ReleasedTable.table)
        .where(ReleasedTable.dataset_id.in_(dataset_ids))
        .order_by(ReleasedTable.id)
    ).all()
    seen, tables = set(), []
    for _, export_id, text in rows:
        if (export_id, text) in seen:
            continue
        seen.add((export_id, text))
        tables.append(ComparableTable.from_dict(json.loads(text)))
    return tuple(tables)


def epsilon_left(session: Session, grant_id: str) -> float | None:
    budget = session.get(PrivacyBudget, grant_id)
    if budget is None:
        return None
    return (budget.total_micro - budget.spent_micro) / MICRO


def export_context(
    session: Session,
    policy: AirlockPolicy,
    *,
    grant_id: str,
    views: GrantViews,
    index_cache: Path,
    raw_index: Callable[[str], bytes] | None = None,
    raw_values: Callable[[str, Sequence[str]], frozenset[str]] | None = None,
) -> ExportContext:
    dataset_ids = views.dataset_ids
    level = strictest_level(session, policy, dataset_ids)
    return ExportContext(
        rules=policy.rules(level),
        indexes=row_index(views, index_cache) + raw_indexes(views, index_cache, raw_index),
        names=source_names(session, views, raw_values),
        epsilon_left=epsilon_left(session, grant_id),
        policy_digest=policy.digest,
        releases=earlier_releases(session, dataset_ids),
    )
