"""Exfiltration suite: an applicant tries to take data out of a sandbox through an export,
and the airlock's automated checks stop every attempt.

The applicant holds a record-level view of synthetic citizens (keyed pseudonyms, masked
phones, age bands, districts; k = 5). The airlock knows the view's rows through an index
of fingerprints, and the names of the people in the raw data. Each attack writes files
the way an applicant's code would and asserts that the report blocks the export, by the
check that should catch it:

- the view's rows copied out, as they are, re-ordered and renamed, or a few columns;
- re-encoded: base64 and hex inside text, UTF-16 and GBK text;
- hidden in a zip inside a tar.gz, in an Excel workbook, in a notebook's outputs, in
  JSON, transposed, after the end of a PNG, in a Parquet file named ``.png``;
- identifiers and names sprinkled in a report, the view's pseudonyms;
- a table of tiny cells; a zip bomb; an encrypted zip;
- counts that differ from an earlier release's by a few people: a slightly wider
  population, totals after a table whose small cells were suppressed, and another
  applicant's release of the same counts, spelled differently.

The last tests are the other side: a proper aggregate table, a plot and a short report
pass (the plot with a finding for the reviewer only).
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import tarfile
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from sandbox.airlock import (
    CheckName,
    CheckReport,
    ExportContext,
    ReleasedTable,
    Severity,
    build_row_index,
    check_export,
    load_airlock,
    released_tables,
)
from sandbox.synthetic import batch
from sandbox.views.disclosure import load_disclosure
from sandbox.views.fields import FieldRule
from sandbox.views.record import RecordViewSpec, build_record_view
from sandbox.views.treatments import SensitivityClass, Treatment, load_treatments
from tests.conftest import REPO_ROOT
from tests.xlsx import write_xlsx

DISCLOSURE = load_disclosure(REPO_ROOT / "policies" / "disclosure.yaml")
RULES = load_airlock(REPO_ROOT / "policies" / "airlock.yaml", DISCLOSURE).rules("L2")
TREATMENTS = load_treatments(REPO_ROOT / "policies" / "treatments.yaml")
KEY = bytes(range(32))
PSEUDONYMS = ("name", "id_number")


@pytest.fixture(scope="module")
def raw() -> pa.Table:
    return batch(2000, np.random.default_rng(31))


@pytest.fixture(scope="module")
def view(raw: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """The view the applicant was granted, built by the real view builder."""
    folder = tmp_path_factory.mktemp("view")
    source = folder / "raw.parquet"
    pq.write_table(raw, source)
    classes = {
        "name": SensitivityClass.DIRECT_IDENTIFIER,
        "id_number": SensitivityClass.DIRECT_IDENTIFIER,
        "phone": SensitivityClass.DIRECT_IDENTIFIER,
        "sex": SensitivityClass.QUASI_IDENTIFIER,
        "birth_date": SensitivityClass.QUASI_IDENTIFIER,
        "age": SensitivityClass.QUASI_IDENTIFIER,
        "address": SensitivityClass.QUASI_IDENTIFIER,
        "occupation": SensitivityClass.QUASI_IDENTIFIER,
        "diagnosis": SensitivityClass.SENSITIVE_ATTRIBUTE,
        "income": SensitivityClass.SENSITIVE_ATTRIBUTE,
        "visits": SensitivityClass.ORDINARY,
        "last_visit": SensitivityClass.QUASI_IDENTIFIER,
    }
    spec = RecordViewSpec(
        "L1",
        classes,
        (
            FieldRule("name", Treatment.PSEUDONYMIZE),
            FieldRule("id_number", Treatment.PSEUDONYMIZE),
            FieldRule("phone", Treatment.MASK),
            FieldRule("sex", Treatment.KEEP),
            FieldRule("age", Treatment.GENERALIZE, {"to": "band", "width": 10}),
            FieldRule("address", Treatment.GENERALIZE, {"to": "district"}),
            FieldRule("diagnosis", Treatment.KEEP),
            FieldRule("income", Treatment.TOP_BOTTOM_CODE, {"low": 5_000, "high": 200_000}),
            FieldRule("visits", Treatment.KEEP),
        ),
        k=5,
    )
    destination = folder / "view.parquet"
    build_record_view(source, spec, TREATMENTS, key=KEY, destination=destination)
    return pq.read_table(destination)


@pytest.fixture(scope="module")
def context(raw: pa.Table, view: pa.Table) -> ExportContext:
    assert view.num_rows > 1500  # most records survive k-anonymity: plenty to steal
    index = build_row_index([view])
    return ExportContext(RULES, (index,), names=frozenset(raw.column("name").to_pylist()))


@pytest.fixture(scope="module")
def plain(view: pa.Table) -> pa.Table:
    """The view without its pseudonyms: what an attacker who knows they are caught takes."""
    return view.drop_columns(list(PSEUDONYMS))


def csv_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue()


def check(tmp_path: Path, files: dict[str, bytes], context: ExportContext) -> CheckReport:
    paths = []
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return check_export(paths, context, root=tmp_path)


def released(folder: Path, number: int, files: dict[str, bytes]) -> tuple[ReleasedTable, ...]:
    """What the gateway keeps of an approved export: its frequency tables, labelled."""
    folder.mkdir(parents=True)
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    tables = released_tables(paths, root=folder, rules=RULES)
    return tuple(replace(t, source=f"release {number}: {t.source}") for t in tables)


def assert_stopped(report: CheckReport, *checks: CheckName) -> None:
    assert report.blocked, "the export was not stopped"
    assert set(checks) <= {f.check for f in report.blocking}, [f.to_dict() for f in report.findings]


# ---------------------------------------------------------------------- rows
def test_rows_of_the_view_copied_to_csv(
    tmp_path: Path, view: pa.Table, context: ExportContext
) -> None:
    report = check(tmp_path, {"results.csv": csv_bytes(view)}, context)
    assert_stopped(report, CheckName.ROW_LEVEL, CheckName.PSEUDONYMS)
    row_level = next(f for f in report.findings if f.check is CheckName.ROW_LEVEL)
    assert f"{view.num_rows} of {view.num_rows} rows" in row_level.reason


def test_rows_reordered_and_renamed(
    tmp_path: Path, plain: pa.Table, context: ExportContext
) -> None:
    frame = plain.to_pandas().sample(frac=1.0, random_state=3)
    frame = frame[list(reversed(frame.columns))]
    frame.columns = [f"feature_{n}" for n in range(len(frame.columns))]
    report = check(tmp_path, {"features.csv": frame.to_csv(index=False).encode()}, context)
    assert_stopped(report, CheckName.ROW_LEVEL)


def test_a_few_columns_with_a_derived_one(
    tmp_path: Path, plain: pa.Table, context: ExportContext
) -> None:
    frame = plain.select(["diagnosis", "income", "age"]).to_pandas()
    frame["income"] = frame["income"].astype(float)  # 12345 written as 12345.0
    frame["log_income"] = np.log(frame["income"])  # a column of the applicant's own
    report = check(tmp_path, {"model_input.csv": frame.to_csv().encode()}, context)
    assert_stopped(report, CheckName.ROW_LEVEL)


@pytest.mark.parametrize("encoding", ["base64", "hex", "utf-16", "gbk"])
def test_rows_reencoded(
    tmp_path: Path, plain: pa.Table, context: ExportContext, encoding: str
) -> None:
    data = csv_bytes(plain.slice(0, 300))
    if encoding == "base64":
        files = {"notes.txt": b"checksum block:\n" + base64.encodebytes(data)}
    elif encoding == "hex":
        files = {"notes.md": b"# appendix\n\n" + data.hex().encode() + b"\n"}
    else:
        files = {"table.csv": data.decode().encode(encoding)}
    report = check(tmp_path, files, context)
    assert_stopped(report, CheckName.ROW_LEVEL)


def test_rows_in_a_zip_in_a_tar_gz(tmp_path: Path, plain: pa.Table, context: ExportContext) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/rows.csv", csv_bytes(plain))
    outer = io.BytesIO()
    with tarfile.open(fileobj=outer, mode="w:gz") as archive:
        info = tarfile.TarInfo("bundle/figures.zip")
        info.size = len(inner.getvalue())
        archive.addfile(info, io.BytesIO(inner.getvalue()))
    report = check(tmp_path, {"bundle.tar.gz": outer.getvalue()}, context)
    assert_stopped(report, CheckName.ROW_LEVEL)
    where = {f.file for f in report.findings if f.check is CheckName.ROW_LEVEL}
    assert where == {"bundle.tar.gz!bundle/figures.zip!data/rows.csv"}


def test_rows_in_an_excel_workbook(tmp_path: Path, plain: pa.Table, context: ExportContext) -> None:
    rows = [plain.column_names] + [
        ["" if v is None else str(v) for v in row.values()] for row in plain.to_pylist()
    ]
    path = write_xlsx(tmp_path / "summary.xlsx", rows)
    report = check_export([path], context)
    assert_stopped(report, CheckName.ROW_LEVEL)
    assert any(f.location.startswith("sheet 'Sheet1'") for f in report.findings)


@pytest.mark.parametrize("mime", ["text/plain", "text/html"])
def test_rows_in_a_notebook_output(
    tmp_path: Path, plain: pa.Table, context: ExportContext, mime: str
) -> None:
    frame = plain.slice(0, 200).to_pandas()
    shown = frame.to_string() if mime == "text/plain" else frame.to_html()
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Analysis\n"]},
            {
                "cell_type": "code",
                "metadata": {},
                "execution_count": 1,
                "source": ["df.head(200)"],
                "outputs": [
                    {
                        "output_type": "execute_result",
                        "execution_count": 1,
                        "metadata": {},
                        "data": {mime: shown.splitlines(keepends=True)},
                    }
                ],
            },
        ],
    }
    report = check(tmp_path, {"analysis.ipynb": json.dumps(notebook).encode()}, context)
    assert_stopped(report, CheckName.ROW_LEVEL)
    assert all(
        f.location.startswith("cell 2, output 1")
        for f in report.findings
        if f.check is CheckName.ROW_LEVEL
    )


@pytest.mark.parametrize("orient", ["records", "columns", "split", "values"])
def test_rows_in_json(tmp_path: Path, plain: pa.Table, context: ExportContext, orient: str) -> None:
    text = plain.slice(0, 300).to_pandas().to_json(orient=orient, force_ascii=False)
    report = check(tmp_path, {"result.json": text.encode()}, context)
    assert_stopped(report, CheckName.ROW_LEVEL)


def test_rows_transposed(tmp_path: Path, plain: pa.Table, context: ExportContext) -> None:
    frame = plain.slice(0, 40).to_pandas().T
    report = check(tmp_path, {"wide.csv": frame.to_csv().encode()}, context)
    assert_stopped(report, CheckName.ROW_LEVEL)
    assert any("swapped" in f.reason for f in report.findings)


def test_parquet_named_png(tmp_path: Path, plain: pa.Table, context: ExportContext) -> None:
    buffer = io.BytesIO()
    pq.write_table(plain, buffer)
    report = check(tmp_path, {"figure1.png": buffer.getvalue()}, context)
    assert_stopped(report, CheckName.FILE_TYPE, CheckName.ROW_LEVEL)
    assert report.files[0].kind == "parquet"


def test_rows_after_the_end_of_a_png(
    tmp_path: Path, plain: pa.Table, context: ExportContext
) -> None:
    hidden = png(40, 20) + csv_bytes(plain.slice(0, 100))
    report = check(tmp_path, {"plot.png": hidden}, context)
    assert_stopped(report, CheckName.IMAGE, CheckName.ROW_LEVEL)


# ---------------------------------------------------------------------- identifiers
def test_identifiers_sprinkled_in_a_report(
    tmp_path: Path, raw: pa.Table, context: ExportContext
) -> None:
    person = raw.slice(7, 1).to_pylist()[0]
    report_text = (
        "# Findings\n\nThe cohort is described below.\n\n"
        f"A case worth a closer look: ID {person['id_number']}, reachable on "
        f"{person['phone'][:3]} {person['phone'][3:7]} {person['phone'][7:]}.\n"
        "Payments went to card 6222 0212 3456 7899 (see ops@example.com).\n"
    )
    report = check(tmp_path, {"report.md": report_text.encode()}, context)
    assert_stopped(report, CheckName.IDENTIFIERS)
    reason = next(f.reason for f in report.findings if f.check is CheckName.IDENTIFIERS)
    assert "resident ID" in reason and "mobile" in reason and "e-mail" in reason
    assert person["id_number"] not in json.dumps(report.to_dict(), ensure_ascii=False)


def test_names_from_the_source_data(tmp_path: Path, raw: pa.Table, context: ExportContext) -> None:
    names = raw.column("name").to_pylist()[:5]
    text = "Interviewed: " + "、".join(names) + "。\n"
    report = check(tmp_path, {"notes.txt": text.encode()}, context)
    assert_stopped(report, CheckName.IDENTIFIERS)
    assert "names of people" in report.blocking[0].reason


def test_pseudonyms_leave_as_a_list(tmp_path: Path, view: pa.Table, context: ExportContext) -> None:
    pseudonyms = view.column("id_number").to_pylist()[:50]
    hexed = [p.translate(str.maketrans("ghijklmnop", "0123456789")) for p in pseudonyms]
    report = check(tmp_path, {"ids.txt": "\n".join(hexed).encode()}, context)
    assert_stopped(report, CheckName.PSEUDONYMS)
    assert "pseudonyms of the granted views" in report.blocking[0].reason


# ---------------------------------------------------------------------- cells
def test_a_table_of_tiny_cells(tmp_path: Path, plain: pa.Table, context: ExportContext) -> None:
    frame = plain.to_pandas()
    tiny = frame.groupby(["address", "age", "diagnosis"]).size().reset_index(name="count")
    assert (tiny["count"] < 10).any()
    report = check(tmp_path, {"crosstab.csv": tiny.to_csv(index=False).encode()}, context)
    assert_stopped(report, CheckName.SMALL_CELLS)


# ---------------------------------------------------------------------- releases
def test_counts_of_a_slightly_wider_population(
    tmp_path: Path, plain: pa.Table, context: ExportContext
) -> None:
    frame = plain.to_pandas()
    adults = frame[frame["age"] != "10-19"].groupby("address").size().reset_index(name="count")
    earlier = released(tmp_path / "r1", 1, {"adults.csv": adults.to_csv(index=False).encode()})
    everyone = frame.groupby("address").size().reset_index(name="count")  # the teenagers too
    files = {"people.csv": everyone.to_csv(index=False).encode()}
    assert check(tmp_path, files, context).passed  # alone, nothing is wrong with it
    report = check(tmp_path, files, replace(context, releases=earlier))
    assert_stopped(report, CheckName.DIFFERENCING)
    (finding,) = report.blocking
    assert "release 1: adults.csv" in finding.reason and "'address'" in finding.reason
    shown = json.dumps([f.to_dict() for f in report.findings], ensure_ascii=False)
    assert not any(str(n) in shown for n in everyone["count"]) and "市南区" not in shown


def test_totals_after_a_table_with_small_cells_suppressed(
    tmp_path: Path, plain: pa.Table, context: ExportContext
) -> None:
    frame = plain.to_pandas()
    bands = frame.groupby(["address", "age"]).size().reset_index(name="count")
    bands["count"] = bands["count"].where(bands["count"] >= 10).astype("Int64")
    suppressed = bands.to_csv(index=False, na_rep="*").encode()  # what passed before
    assert "*" in suppressed.decode()
    earlier = released(tmp_path / "r2", 2, {"bands.csv": suppressed})
    totals = frame.groupby("address").size().reset_index(name="count")
    files = {"totals.csv": totals.to_csv(index=False).encode()}
    report = check(tmp_path, files, replace(context, releases=earlier))
    assert_stopped(report, CheckName.DIFFERENCING)
    assert "the earlier table's totals over 'age'" in report.blocking[0].reason
    # the same totals after a table that suppressed nothing: nothing to subtract
    by_sex = frame.groupby(["address", "sex"]).size().reset_index(name="count")
    whole = released(tmp_path / "r3", 3, {"by_sex.csv": by_sex.to_csv(index=False).encode()})
    report = check(tmp_path, files, replace(context, releases=whole))
    assert report.passed and CheckName.DIFFERENCING in report.checks


def test_another_applicants_release_spelled_differently(
    tmp_path: Path, plain: pa.Table, context: ExportContext
) -> None:
    frame = plain.to_pandas()
    theirs = frame.groupby(["address", "sex"]).size().reset_index(name="N")
    theirs.columns = ["District", "Sex", "N"]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(theirs, preserve_index=False), buffer)
    earlier = released(tmp_path / "other", 4, {"counts.parquet": buffer.getvalue()})
    few_visits = frame[frame["visits"] <= 8]  # leaves out the few who came nine times or more
    ours = few_visits.groupby(["address", "sex"]).size().reset_index(name="people")
    ours.columns = ["district ", "SEX", "people"]
    ours["district "] = " " + ours["district "] + " "
    files = {"visits.csv": ours.to_csv(index=False).encode()}
    report = check(tmp_path, files, replace(context, releases=earlier))
    assert_stopped(report, CheckName.DIFFERENCING)
    assert "cells by 'district', 'sex'" in report.blocking[0].reason


# ---------------------------------------------------------------------- archives
def test_a_zip_bomb(tmp_path: Path, context: ExportContext) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("zeros.csv", b"0" * (16 << 20))
    assert len(buffer.getvalue()) < 100_000
    report = check(tmp_path, {"results.zip": buffer.getvalue()}, context)
    assert_stopped(report, CheckName.ARCHIVE)
    assert "unpacks to" in report.blocking[0].reason


def test_a_gzip_bomb(tmp_path: Path, context: ExportContext) -> None:
    report = check(tmp_path, {"log.txt.gz": gzip.compress(b"\0" * (16 << 20))}, context)
    assert_stopped(report, CheckName.ARCHIVE)


def test_an_encrypted_zip(tmp_path: Path, plain: pa.Table, context: ExportContext) -> None:
    report = check(tmp_path, {"secret.zip": encrypted_zip("rows.csv", csv_bytes(plain))}, context)
    assert_stopped(report, CheckName.ARCHIVE)
    assert "encrypted" in report.blocking[0].reason


# ---------------------------------------------------------------------- what passes
def test_a_proper_aggregate_table_passes(
    tmp_path: Path, plain: pa.Table, context: ExportContext
) -> None:
    frame = plain.to_pandas()
    table = frame.groupby(["sex", "diagnosis"]).agg(
        count=("income", "size"), mean_income=("income", "mean")
    )
    assert (table["count"] >= 10).all()
    report = check(
        tmp_path, {"by_sex.csv": table.reset_index().to_csv(index=False).encode()}, context
    )
    assert report.passed, [f.to_dict() for f in report.findings]
    # magnitudes without their largest contributions are left to the reviewer
    assert {f.check for f in report.for_review} == {CheckName.DOMINANCE}
    assert report.files[0].tables == 1 and report.files[0].rows == len(table)


def test_a_plot_passes_with_an_image_finding(tmp_path: Path, context: ExportContext) -> None:
    report = check(tmp_path, {"figures/income.png": png(64, 48)}, context)
    assert report.passed
    assert [(f.check, f.severity) for f in report.findings] == [(CheckName.IMAGE, Severity.REVIEW)]


def test_a_short_report_passes(tmp_path: Path, context: ExportContext) -> None:
    text = (
        "# Clinic visits by district\n\n"
        "Visits rose in every district between 2024 and 2026; the table gives the number\n"
        "of people per district in the view.\n\n"
        "| district | people |\n|---|---|\n| 市南区 | 212 |\n| 崂山区 | 198 |\n| 黄岛区 | 205 |\n\n"
        "Method: counts from the aggregated view, cells under 10 suppressed.\n"
    )
    report = check(tmp_path, {"README.md": text.encode()}, context)
    assert report.passed and not report.findings, [f.to_dict() for f in report.findings]
    assert report.files[0].tables == 1  # the Markdown table was read as a table


# ---------------------------------------------------------------------- helpers
def png(width: int, height: int) -> bytes:
    """A grey-scale PNG with a text chunk, as plotting libraries write them."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    pixels = b"".join(b"\0" + bytes((x * 4) % 256 for x in range(width)) for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"tEXt", b"Software\0plotting library 3.11")
        + chunk(b"IDAT", zlib.compress(pixels))
        + chunk(b"IEND", b"")
    )


def encrypted_zip(name: str, data: bytes) -> bytes:
    """A zip whose member carries the encrypted flag (Python writes no encrypted zips; the
    flag is what tells a reader the member is encrypted)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    raw = bytearray(buffer.getvalue())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        position = raw.find(signature)
        flags = struct.unpack_from("<H", raw, position + offset)[0]
        struct.pack_into("<H", raw, position + offset, flags | 0x1)
    return bytes(raw)
