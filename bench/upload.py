"""Uploads: a dataset streamed through the catalog, checked and sealed in the vault.

Synthetic citizens written as CSV (two sizes, the second twice the first) are uploaded
through ``CatalogService.upload`` exactly as the API does it: streamed to the private
scratch folder in 1 MiB blocks, checked against the entry (schema, quality report with
checksums of every ID number, PII scan), encrypted into the vault, removed. Each upload
runs in a process of its own, which reports its wall time and peak resident memory: the
memory must stay flat when the file doubles (nothing is loaded whole). The baseline is
the time to copy the same file to disk and read it back once with DuckDB (the least any
checked upload must do).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import VAR, Results, Table, human_bytes, peak_memory

SIZES = (5_000_000, 10_000_000)
QUICK_SIZES = (500_000, 1_000_000)
BLOCK = 1 << 20


def csv_of(rows: int) -> Path:
    import duckdb

    from sandbox.synthetic import write_citizens

    target = VAR / f"citizens-{rows}.csv"
    if not target.exists():
        source = write_citizens(VAR / f"citizens-{rows}.parquet", rows)
        partial = target.with_suffix(".partial")
        duckdb.read_parquet(str(source)).write_csv(str(partial), header=True)
        partial.replace(target)
    return target


def upload(path: Path) -> dict[str, Any]:
    """In this process: a fresh platform, a published CSV entry, the upload of ``path``."""
    from gateway.api import open_services
    from gateway.catalog.entry import DataFormat
    from gateway.cli.demo_data import ENTRY
    from gateway.db.models import OrganizationType
    from gateway.settings import load_settings
    from sandbox.identifiers.credit_code import check_character

    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=VAR))
    services = open_services(load_settings(data_dir=folder))
    try:
        identity, catalog = services.identity, services.catalog
        assert catalog is not None
        made = identity.bootstrap_admin(operator_name="运营", credit_code="91370200MA3C0Q0X12")
        assert made is not None
        admin = made[0].actor()
        head = "11370200MB0000001"
        provider = identity.create_organization(
            admin,
            kind=OrganizationType.PROVIDER,
            name="提供方",
            credit_code=head + check_character(head),
        )
        people = {}
        for role, organization in (
            ("provider_steward", provider.id),
            ("reviewer", made[0].organization_id),
            ("approver", made[0].organization_id),
        ):
            account, _ = identity.create_user(
                admin,
                organization_id=organization,
                username=role.replace("_", "."),
                display_name=role,
                roles=(role,),
            )
            people[role] = account.actor()
        entry = ENTRY.model_copy(update={"format": DataFormat.CSV})
        dataset = catalog.register(people["provider_steward"], entry, "bench")
        catalog.review(people["reviewer"], dataset.id, 1, recommends=True, opinion="bench")
        catalog.decide(people["approver"], dataset.id, 1, approve=True, reason="bench")
        started = time.perf_counter()
        version = catalog.upload(people["provider_steward"], dataset.id, _blocks(path))
        seconds = time.perf_counter() - started
    finally:
        services.close()
        shutil.rmtree(folder, ignore_errors=True)
    peak = peak_memory()
    return {"seconds": seconds, "peak": peak, "rows": version.rows, "warnings": version.warnings}


def baseline(path: Path) -> dict[str, Any]:
    """In this process: copy ``path`` in 1 MiB blocks, then count its rows with DuckDB."""
    import duckdb

    folder = Path(tempfile.mkdtemp(prefix="copy-", dir=VAR))
    try:
        started = time.perf_counter()
        copy = folder / "copy.csv"
        with copy.open("wb") as out:
            for block in _blocks(path):
                out.write(block)
        rows = duckdb.read_csv(str(copy)).count("*").fetchall()[0][0]
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    peak = peak_memory()
    return {"seconds": seconds, "peak": peak, "rows": rows, "warnings": 0}


def _blocks(path: Path) -> Any:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(BLOCK), b"")


def measure(kind: str, path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.upload", kind, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(results: Results, *, quick: bool) -> None:
    VAR.mkdir(parents=True, exist_ok=True)
    table = Table(
        "Uploads: CSV streamed, checked (schema, quality, ID checksums, PII scan), "
        "sealed in the vault",
        ["rows", "file", "what", "seconds", "MB/s", "peak memory"],
    )
    peaks = []
    for rows in QUICK_SIZES if quick else SIZES:
        path = csv_of(rows)
        size = path.stat().st_size
        for kind in ("upload", "baseline"):
            figures = measure(kind, path)
            if kind == "upload":
                peaks.append(figures["peak"])
                if figures["rows"] != rows:
                    raise RuntimeError(f"the upload counted {figures['rows']} rows, not {rows}")
            table.add(
                f"{rows:,}",
                human_bytes(size),
                "upload" if kind == "upload" else "copy + one DuckDB read",
                f"{figures['seconds']:.1f}",
                f"{size / figures['seconds'] / 1e6:,.0f}",
                human_bytes(figures["peak"]),
            )
    table.notes.append(
        f"upload peak memory when the file doubles: {human_bytes(peaks[0])} → "
        f"{human_bytes(peaks[1])} ({peaks[1] / peaks[0]:.2f}x)"
    )
    results.table(table)


if __name__ == "__main__":
    action = upload if sys.argv[1] == "upload" else baseline
    print(json.dumps(action(Path(sys.argv[2]))))
