"""Record-level desensitized views: the view builder against plain pandas.

On generated synthetic citizens (:mod:`bench.citizens`), one record-level view: keyed
pseudonyms (HMAC-SHA256) for ID number and name, the phone masked, age in 10-year bands,
birth date and last visit to the month, address to the district, income top- and
bottom-coded, k-anonymity (k = 5) over sex, age band, birth month, district and last
visit month with suppression, written to Parquet. The same treatments are written in
plain pandas as the baseline. Each build runs in a process of its own, which reports its
own wall time and peak resident memory; both must keep the same rows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, VAR, Results, Table, human_bytes

K = 5
KEY = bytes(range(32))
SIZES = (10_000_000, 20_000_000)
QUICK_SIZES = (1_000_000, 2_000_000)
TARGET_ROWS_PER_S = 1_500_000
TARGET_SPEEDUP = 4.0
TARGET_MEMORY = 1 << 30
QUASI = ("sex", "age", "birth_date", "address", "last_visit")


def spec() -> Any:
    from sandbox.views.record import FieldRule, RecordViewSpec
    from sandbox.views.treatments import SensitivityClass as C
    from sandbox.views.treatments import Treatment as T

    classes = {
        "name": C.DIRECT_IDENTIFIER,
        "id_number": C.DIRECT_IDENTIFIER,
        "phone": C.DIRECT_IDENTIFIER,
        "sex": C.QUASI_IDENTIFIER,
        "birth_date": C.QUASI_IDENTIFIER,
        "age": C.QUASI_IDENTIFIER,
        "address": C.QUASI_IDENTIFIER,
        "occupation": C.QUASI_IDENTIFIER,
        "diagnosis": C.SENSITIVE_ATTRIBUTE,
        "income": C.SENSITIVE_ATTRIBUTE,
        "visits": C.ORDINARY,
        "last_visit": C.QUASI_IDENTIFIER,
    }
    fields = (
        FieldRule("name", T.PSEUDONYMIZE),
        FieldRule("id_number", T.PSEUDONYMIZE),
        FieldRule("phone", T.MASK),
        FieldRule("sex", T.KEEP),
        FieldRule("birth_date", T.GENERALIZE, {"to": "month"}),
        FieldRule("age", T.GENERALIZE, {"to": "band", "width": 10}),
        FieldRule("address", T.GENERALIZE, {"to": "district"}),
        FieldRule("diagnosis", T.KEEP),
        FieldRule("income", T.TOP_BOTTOM_CODE, {"low": 5_000, "high": 200_000}),
        FieldRule("visits", T.KEEP),
        FieldRule("last_visit", T.GENERALIZE, {"to": "month"}),
    )
    return RecordViewSpec(level="L1", classes=classes, fields=fields, k=K)


# ---------------------------------------------------------------------- the two builders
def build_with_sbx(source: Path, out: Path) -> int:
    from sandbox.views.record import build_record_view
    from sandbox.views.treatments import load_treatments

    policy = load_treatments(ROOT / "policies" / "treatments.yaml")
    report = build_record_view(source, spec(), policy, key=KEY, destination=out)
    return report.rows_out


def build_with_pandas(source: Path, out: Path) -> int:
    import pandas as pd

    from sandbox.views.fields import DISTRICT, PSEUDONYM_ALPHABET

    frame = pd.read_parquet(source)

    def pseudonym(values: pd.Series) -> list[str]:
        return [
            hmac.new(KEY, v.encode(), hashlib.sha256).hexdigest().translate(PSEUDONYM_ALPHABET)
            for v in values
        ]

    view = pd.DataFrame(
        {
            "name": pseudonym(frame["name"]),
            "id_number": pseudonym(frame["id_number"]),
            "phone": frame["phone"].str[:3] + "****" + frame["phone"].str[-4:],
            "sex": frame["sex"],
            "birth_date": pd.to_datetime(frame["birth_date"]).dt.strftime("%Y-%m"),
            "age": (frame["age"] // 10 * 10).astype(str)
            + "-"
            + (frame["age"] // 10 * 10 + 9).astype(str),
            "address": frame["address"].str.extract(DISTRICT, expand=False),
            "diagnosis": frame["diagnosis"],
            "income": frame["income"].clip(5_000, 200_000),
            "visits": frame["visits"],
            "last_visit": pd.to_datetime(frame["last_visit"]).dt.strftime("%Y-%m"),
        }
    )
    del frame
    sizes = view.groupby(list(QUASI), dropna=False)["sex"].transform("size")
    view = view[sizes >= K]
    view.to_parquet(out, index=False)
    return len(view)


BUILDERS = {"sbx": build_with_sbx, "pandas": build_with_pandas}


def child(builder: str, source: Path, out: Path) -> None:
    """Run one build and print what it took as JSON (the parent reads it)."""
    started = time.perf_counter()
    rows = BUILDERS[builder](source, out)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rows": rows, "seconds": seconds, "peak": peak}))


def measure(builder: str, source: Path, out: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.views", builder, str(source), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out.unlink(missing_ok=True)
    return result


# ---------------------------------------------------------------------- the bench entry point
def run(results: Results, *, quick: bool) -> None:
    from bench.citizens import write_citizens

    VAR.mkdir(parents=True, exist_ok=True)
    sizes = QUICK_SIZES if quick else SIZES
    table = Table(
        "Record-level view: pseudonyms, mask, bands, months, districts, k = 5, to Parquet",
        ["rows", "builder", "seconds", "rows/s", "peak memory", "rows kept", "vs pandas"],
    )
    measured: dict[tuple[int, str], dict[str, Any]] = {}
    for rows in sizes:
        source = write_citizens(VAR / f"citizens-{rows}.parquet", rows)
        builders = ("sbx", "pandas") if rows == sizes[0] else ("sbx",)
        for builder in builders:
            measured[(rows, builder)] = measure(builder, source, VAR / f"view-{builder}.parquet")
    for (rows, builder), figures in measured.items():
        baseline = measured.get((rows, "pandas"))
        speedup = baseline["seconds"] / figures["seconds"] if baseline else None
        table.add(
            f"{rows:,}",
            builder,
            f"{figures['seconds']:.1f}",
            f"{rows / figures['seconds']:,.0f}",
            human_bytes(figures["peak"]),
            f"{figures['rows']:,}",
            f"{speedup:.1f}x" if speedup and builder != "pandas" else "",
        )
    first, second = (measured[(rows, "sbx")] for rows in sizes)
    same = measured[(sizes[0], "sbx")]["rows"] == measured[(sizes[0], "pandas")]["rows"]
    rate = sizes[0] / first["seconds"]
    speedup = measured[(sizes[0], "pandas")]["seconds"] / first["seconds"]
    table.notes += [
        f"targets at {sizes[0]:,} rows: ≥ {TARGET_ROWS_PER_S:,} rows/s "
        f"[{'MET' if rate >= TARGET_ROWS_PER_S else 'MISSED'}: {rate:,.0f}]; "
        f"≥ {TARGET_SPEEDUP:g}x pandas [{'MET' if speedup >= TARGET_SPEEDUP else 'MISSED'}: "
        f"{speedup:.1f}x]; peak memory < {human_bytes(TARGET_MEMORY)} "
        f"[{'MET' if first['peak'] < TARGET_MEMORY else 'MISSED'}: {human_bytes(first['peak'])}]",
        f"memory when the table doubles: {human_bytes(first['peak'])} → "
        f"{human_bytes(second['peak'])} ({second['peak'] / first['peak']:.2f}x)",
        f"the same rows kept by both builders: {'yes' if same else 'NO'}",
    ]
    results.table(table)
    if not same:
        raise RuntimeError("the view builder and the pandas baseline kept different rows")


if __name__ == "__main__":
    child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
