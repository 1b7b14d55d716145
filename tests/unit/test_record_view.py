"""Record-level desensitized views: treatments, pseudonyms, k-anonymity, l-diversity."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.identifiers import Kind, find_identifiers
from sandbox.identifiers.resident_id import check_character
from sandbox.views.fields import PSEUDONYM_ALPHABET
from sandbox.views.record import (
    FieldRule,
    RecordViewSpec,
    ViewSpecError,
    build_record_view,
)
from sandbox.views.treatments import SensitivityClass, Treatment, load_treatments
from tests.conftest import REPO_ROOT

POLICY = load_treatments(REPO_ROOT / "policies" / "treatments.yaml")
D, Q, S, ORD = (
    SensitivityClass.DIRECT_IDENTIFIER,
    SensitivityClass.QUASI_IDENTIFIER,
    SensitivityClass.SENSITIVE_ATTRIBUTE,
    SensitivityClass.ORDINARY,
)
CLASSES = {
    "name": D,
    "id_number": D,
    "phone": D,
    "age": Q,
    "sex": Q,
    "address": Q,
    "birth_date": Q,
    "diagnosis": S,
    "income": S,
    "visits": ORD,
}
KEY = bytes(range(32))
DISTRICTS = ["山东省青岛市市南区香港中路", "山东省青岛市崂山区海尔路", "山东省青岛市黄岛区长江路"]


def citizens(rows: int = 300, seed: int = 7) -> pa.Table:
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for n in range(rows):
        born = date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 50))
        head = f"370202{born:%Y%m%d}{n % 1000:03d}"
        rare = n < 3  # three people alone in their district: k-anonymity must drop them
        records.append(
            {
                "name": f"张{n}",
                "id_number": head + check_character(head),
                "phone": f"13{rng.randrange(10**9):09d}",
                "age": 2026 - born.year,
                "sex": rng.choice("男女"),
                "address": ("山东省青岛市即墨区蓝鳌路" if rare else rng.choice(DISTRICTS))
                + f"{rng.randrange(1, 300)}号",
                "birth_date": born,
                "diagnosis": rng.choice(["高血压", "糖尿病", "哮喘"]),
                "income": rng.randrange(0, 90_000),
                "visits": rng.randrange(0, 12),
            }
        )
    return pa.Table.from_pylist(records)


def spec(**changes: Any) -> RecordViewSpec:
    fields = (
        FieldRule("name", Treatment.DROP),
        FieldRule("id_number", Treatment.PSEUDONYMIZE),
        FieldRule("phone", Treatment.MASK),
        FieldRule("age", Treatment.GENERALIZE, {"to": "band", "width": 20}),
        FieldRule("sex", Treatment.KEEP),
        FieldRule("address", Treatment.GENERALIZE, {"to": "district"}),
        FieldRule("diagnosis", Treatment.KEEP),
        FieldRule("income", Treatment.TOP_BOTTOM_CODE, {"low": 1000, "high": 50000}),
        FieldRule("visits", Treatment.KEEP),
    )
    values: dict[str, Any] = {"level": "L1", "classes": CLASSES, "fields": fields, "k": 5}
    return RecordViewSpec(**(values | changes))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "citizens.parquet"
    pq.write_table(citizens(), path)
    return path


def test_the_view_shows_treated_fields_only_and_no_one_alone(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "view.parquet"
    report = build_record_view(source, spec(), POLICY, key=KEY, destination=out)
    view = pq.read_table(out).to_pylist()
    raw = citizens().to_pylist()
    assert report.columns == tuple(view[0]) and "name" not in view[0]
    assert report.quasi_identifiers == ("age", "sex", "address")
    assert report.rows_in == 300 and report.rows_out == len(view) and report.rows_suppressed >= 3
    groups = Counter((r["age"], r["sex"], r["address"]) for r in view)
    assert min(groups.values()) == report.k_achieved >= 5
    assert {r["address"] for r in view} <= {d[: d.index("区") + 1] for d in DISTRICTS}
    assert all(re.fullmatch(r"\d{2}-\d{2}", r["age"]) for r in view)
    assert all(re.fullmatch(r"\d{3}\*{4}\d{4}", r["phone"]) for r in view)
    assert all(1000 <= r["income"] <= 50000 for r in view)
    text = " ".join(str(value) for row in view for value in row.values())
    assert not [f for f in find_identifiers(text) if f.kind in (Kind.RESIDENT_ID, Kind.MOBILE)]
    assert not {r["id_number"] for r in raw} & {r["id_number"] for r in view}
    expected = {
        hmac.new(KEY, r["id_number"].encode(), hashlib.sha256)
        .hexdigest()
        .translate(PSEUDONYM_ALPHABET)
        for r in raw
    }
    assert {r["id_number"] for r in view} <= expected  # HMAC-SHA256 under the grant's key


def test_two_grants_cannot_link_their_pseudonyms(source: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    build_record_view(source, spec(), POLICY, key=KEY, destination=one)
    build_record_view(source, spec(), POLICY, key=bytes(32), destination=two)
    first = {r["id_number"] for r in pq.read_table(one).to_pylist()}
    second = {r["id_number"] for r in pq.read_table(two).to_pylist()}
    assert first and second and not first & second


def test_l_diversity_drops_groups_whose_sensitive_value_is_shared_by_all(
    tmp_path: Path,
) -> None:
    table = citizens()
    diagnosis = [
        "哮喘" if address.startswith("山东省青岛市黄岛区") else d
        for address, d in zip(
            table.column("address").to_pylist(), table.column("diagnosis").to_pylist(), strict=True
        )
    ]
    source = tmp_path / "uniform.parquet"
    pq.write_table(table.set_column(7, "diagnosis", pa.array(diagnosis)), source)
    out = tmp_path / "view.parquet"
    report = build_record_view(source, spec(l_diversity=2), POLICY, key=KEY, destination=out)
    view = pq.read_table(out).to_pylist()
    assert "山东省青岛市黄岛区" not in {r["address"] for r in view}  # everyone there: 哮喘
    assert report.l_achieved is not None and report.l_achieved >= 2
    plain = build_record_view(source, spec(), POLICY, key=KEY, destination=tmp_path / "p.parquet")
    assert report.rows_out < plain.rows_out


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"fields": (FieldRule("id_number", Treatment.KEEP),)}, "id_number: a direct_identifier"),
        ({"level": "L4"}, "at level L4"),
        ({"level": "L2", "fields": (FieldRule("diagnosis", Treatment.KEEP),)}, "diagnosis"),
        ({"classes": {k: v for k, v in CLASSES.items() if k != "visits"}}, "without a sensitivity"),
        ({"fields": (FieldRule("salary", Treatment.KEEP),)}, "not a column"),
        ({"fields": (FieldRule("age", Treatment.GENERALIZE, {"to": "decade"}),)}, "one of year"),
        (
            {"fields": (FieldRule("age", Treatment.GENERALIZE, {"to": "band", "width": 0}),)},
            "width",
        ),
        (
            {"fields": (FieldRule("income", Treatment.TOP_BOTTOM_CODE, {"low": 9, "high": 1}),)},
            "low is above high",
        ),
        ({"fields": (FieldRule("name", Treatment.DROP),)}, "no column"),
        ({"k": 0}, "at least 1"),
        (
            {"fields": (FieldRule("income", Treatment.TOP_BOTTOM_CODE, {"low": 1, "high": "x"}),)},
            "finite number",
        ),
    ],
)
def test_a_spec_the_policy_does_not_allow_builds_nothing(
    source: Path, tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    out = tmp_path / "view.parquet"
    with pytest.raises(ViewSpecError, match=reason):
        build_record_view(source, spec(**changes), POLICY, key=KEY, destination=out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["citizens.parquet"]  # no spill left


def test_a_short_key_is_refused(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ViewSpecError, match="at least 32 bytes"):
        build_record_view(source, spec(), POLICY, key=b"short", destination=tmp_path / "v")


@settings(max_examples=25, deadline=None)
@given(st.integers(40, 200), st.integers(0, 10**6), st.integers(2, 8))
def test_every_group_left_has_at_least_k_records(rows: int, seed: int, k: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "t.parquet"
        pq.write_table(citizens(rows, seed), source)
        out = Path(folder) / "v.parquet"
        report = build_record_view(source, spec(k=k), POLICY, key=KEY, destination=out)
        view = pq.read_table(out).to_pylist()
        groups = Counter((r["age"], r["sex"], r["address"]) for r in view)
        assert all(size >= k for size in groups.values())
        assert report.rows_out == len(view) and report.rows_in == rows


@pytest.mark.parametrize(
    ("address", "district"),
    [
        ("山东省青岛市市南区香港中路10号", "山东省青岛市市南区"),
        ("山东省青岛市平度市正阳路3号", "山东省青岛市平度市"),
        ("青岛市崂山区沙子口街道城市花园1号", "青岛市崂山区"),
        ("北京市朝阳区建国路1号", "北京市朝阳区"),
        ("市北区延安三路5号", "市北区"),
        ("某县城关镇", "某县"),
        ("无地址", None),
    ],
)
def test_addresses_are_cut_after_their_district(
    tmp_path: Path, address: str, district: str | None
) -> None:
    source = tmp_path / "a.parquet"
    pq.write_table(pa.table({"address": [address] * 3}), source)
    only = RecordViewSpec(
        level="L1",
        classes={"address": Q},
        fields=(FieldRule("address", Treatment.GENERALIZE, {"to": "district"}),),
        k=1,
    )
    out = tmp_path / "v.parquet"
    build_record_view(source, only, POLICY, key=KEY, destination=out)
    assert pq.read_table(out).column("address").to_pylist() == [district] * 3


def test_the_compiled_pseudonyms_are_the_sql_reference_exactly(
    source: Path, tmp_path: Path
) -> None:
    from sandbox.views import pseudonyms

    assert pseudonyms.native is not None, "the kernel is built with the package here"
    spec = RecordViewSpec("L1", CLASSES, (FieldRule("id_number", Treatment.PSEUDONYMIZE),), k=1)
    built = {}
    for compiled in (True, False):
        out = tmp_path / f"{compiled}.parquet"
        build_record_view(source, spec, POLICY, key=KEY, destination=out, compiled=compiled)
        built[compiled] = pq.read_table(out).column("id_number").to_pylist()
    assert built[True] == built[False] and len(built[True]) == 300


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.text(max_size=80)), min_size=1, max_size=40),
    st.binary(min_size=32, max_size=100),
)
def test_the_kernel_and_the_macro_agree_on_any_text(values: list[str | None], key: bytes) -> None:
    import duckdb

    from sandbox.views import pseudonyms

    answers = []
    for compiled in (True, False):
        connection = duckdb.connect()
        pseudonyms.install(connection, key, compiled=compiled)
        connection.execute("CREATE TABLE t (n INTEGER, v VARCHAR)")
        connection.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
        answers.append(connection.execute("SELECT sbx_pseudonym(v) FROM t ORDER BY n").fetchall())
        connection.close()
    assert answers[0] == answers[1]
    expected = [
        None
        if v is None
        else hmac.new(
            key if len(key) <= 64 else hashlib.sha256(key).digest(), v.encode(), hashlib.sha256
        )
        .hexdigest()
        .translate(PSEUDONYM_ALPHABET)
        for v in values
    ]
    assert [row[0] for row in answers[0]] == expected
