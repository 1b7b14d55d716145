"""The airlock's checks, each firing and not firing, its policy file and its report."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from sandbox.airlock import (
    AirlockPolicyError,
    AirlockRules,
    CheckName,
    CheckReport,
    ExportContext,
    FileKind,
    FileSummary,
    Finding,
    Severity,
    build_row_index,
    check_export,
    dp_budget_findings,
    load_airlock,
)
from sandbox.identifiers import Kind
from sandbox.identifiers.resident_id import check_character
from sandbox.views.disclosure import load_disclosure
from tests.conftest import REPO_ROOT
from tests.xlsx import write_xlsx

DISCLOSURE = load_disclosure(REPO_ROOT / "policies" / "disclosure.yaml")
POLICY = load_airlock(REPO_ROOT / "policies" / "airlock.yaml", DISCLOSURE)
RULES = POLICY.rules("L2")
HEAD = "37020219850101123"
RESIDENT_ID = HEAD + check_character(HEAD)


def run(
    tmp_path: Path, files: dict[str, bytes | str], rules: AirlockRules = RULES, **context: object
) -> CheckReport:
    paths = []
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        paths.append(path)
    return check_export(paths, ExportContext(rules, **context), root=tmp_path)  # type: ignore[arg-type]


def fired(report: CheckReport) -> set[CheckName]:
    return {f.check for f in report.blocking}


# ---------------------------------------------------------------------- the policy file
def test_every_level_merges_the_disclosure_rules() -> None:
    assert set(POLICY.levels) == {"L1", "L2", "L3", "L4"}
    l2 = POLICY.rules("L2")
    assert (l2.disclosure.min_cell, l2.disclosure.dominance_n, l2.disclosure.dominance_k) == (
        10,
        2,
        0.9,
    )
    assert l2.disclosure.p_percent == 0.1 and l2.min_degrees_of_freedom == 10
    assert l2.zero_cells and l2.full_cells and Kind.EMAIL in l2.identifier_kinds
    l4 = POLICY.rules("L4")
    assert "zip" not in l4.extensions and l4.min_degrees_of_freedom == 20
    assert l4.disclosure.min_cell == 20
    assert AirlockRules.from_dict(l4.to_dict()) == l4
    with pytest.raises(AirlockPolicyError, match="no security level"):
        POLICY.rules("L9")


def write_policy(tmp_path: Path, change: dict[str, object]) -> Path:
    data = yaml.safe_load((REPO_ROOT / "policies" / "airlock.yaml").read_text())
    for place, value in change.items():
        target = data
        *parents, last = place.split(".")
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
    path = tmp_path / "airlock.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"levels.L5": {}}, "unknown: L5"),
        ({"levels.L4": None}, "missing: L4"),
        ({"defaults.max_file_bytes": None}, "no value for max_file_bytes"),
        ({"defaults.colour": "red"}, "unknown rules colour"),
        ({"levels.L3": {"speed": 1}}, "levels.L3: unknown rules speed"),
        ({"levels.L2": {"row_match_rows": 0}}, "row_match_rows must be a whole number"),
        ({"levels.L2": {"archive_depth": True}}, "archive_depth must be a whole number"),
        ({"levels.L2": {"archive_expansion": 0.5}}, "archive_expansion must be a number"),
        ({"levels.L2": {"zero_cells": "yes"}}, "zero_cells must be true or false"),
        ({"levels.L2": {"extensions": [".csv"]}}, "extensions must be a list"),
        ({"levels.L2": {"identifier_kinds": ["passport"]}}, "identifier_kinds are among"),
        ({"levels.L2": {"max_file_bytes": 1 << 40}}, "larger than max_export_bytes"),
        ({"levels.L2": {"encoded_min_chars": 8}}, "encoded_min_chars must be at least 16"),
        ({"levels.L2": []}, "levels.L2 must be a mapping"),
        ({"extra": 1}, "only defaults and levels"),
    ],
)
def test_the_policy_loader_names_what_is_wrong(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(AirlockPolicyError, match=message):
        load_airlock(write_policy(tmp_path, change), DISCLOSURE)


def test_a_policy_that_is_not_yaml_or_not_there(tmp_path: Path) -> None:
    path = tmp_path / "airlock.yaml"
    path.write_text("levels: [unclosed")
    with pytest.raises(AirlockPolicyError, match="not YAML"):
        load_airlock(path, DISCLOSURE)
    with pytest.raises(AirlockPolicyError, match="cannot be read"):
        load_airlock(tmp_path / "missing.yaml", DISCLOSURE)


# ---------------------------------------------------------------------- the report
def test_the_report_round_trips_and_passes_on_review_findings_only() -> None:
    review = Finding(CheckName.IMAGE, "a.png", "", "an image", Severity.REVIEW)
    summary = FileSummary("a.png", FileKind.PNG, 10, "00" * 32, images=1)
    report = CheckReport("L2", (review,), (summary,), (CheckName.IMAGE,), "d", ("n",))
    assert report.passed and not report.blocked and report.for_review == (review,)
    assert CheckReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    blocked = replace(report, findings=(review, replace(review, severity=Severity.BLOCK)))
    assert blocked.blocked and not blocked.passed and len(blocked.blocking) == 1


def test_the_report_lists_its_checks_and_what_it_lacked(tmp_path: Path) -> None:
    report = run(tmp_path, {"a.txt": "hello"})
    assert CheckName.DIFFERENCING not in report.checks  # no earlier releases were given
    assert CheckName.ROW_LEVEL in report.checks and report.level == "L2"
    assert report.notes == (
        "no row index was given: rows were not compared with any data",
        "no names from the source data were given",
        "no earlier releases were given: differencing did not run",
    )


# ---------------------------------------------------------------------- file type and size
def test_file_types(tmp_path: Path) -> None:
    assert fired(run(tmp_path, {"tool.exe": b"MZ\x90\x00"})) == {CheckName.FILE_TYPE}
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("a.txt", "hello")
    report = run(tmp_path, {"table.csv": zipped.getvalue()})
    assert fired(report) == {CheckName.FILE_TYPE}
    assert "the content is zip" in report.blocking[0].reason
    # text of one kind under the name of another is still text
    assert run(tmp_path, {"notes.txt": '{"a": 1}'}).passed


def test_file_sizes(tmp_path: Path) -> None:
    small = replace(RULES, max_file_bytes=100, max_export_bytes=150, max_parse_bytes=50)
    report = run(tmp_path, {"big.csv": "a,b\n" + "1,2\n" * 40}, small)
    assert fired(report) == {CheckName.FILE_SIZE}
    assert report.files == ()  # a file too large is not read
    report = run(tmp_path, {"a.txt": "x" * 90, "b.txt": "y" * 90}, small)
    assert any(f.file == "(export)" for f in report.blocking)
    report = run(tmp_path, {"c.json": json.dumps(["x"] * 20)}, small)  # read whole: 50 bytes
    assert fired(report) == {CheckName.FILE_SIZE}
    assert run(tmp_path, {"d.csv": "a,b\n1,2\n"}, small).passed


def test_unreadable_files(tmp_path: Path) -> None:
    assert fired(run(tmp_path, {"a.json": "{broken"})) == {CheckName.UNREADABLE}
    with_pdf = replace(RULES, extensions=RULES.extensions | {"pdf"})
    report = run(tmp_path, {"paper.pdf": b"%PDF-1.7 ..."}, with_pdf)
    assert fired(report) == {CheckName.UNREADABLE} and "not understood" in report.blocking[0].reason
    report = run(tmp_path, {"rows.csv": "a,b\n1,2\n3,4,5\n"})
    assert fired(report) == {CheckName.UNREADABLE}
    assert "1 rows do not have the table's number of fields" in report.blocking[0].reason


def test_links_do_not_leave(tmp_path: Path) -> None:
    target = tmp_path / "real.txt"
    target.write_text("x")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    report = check_export([link], ExportContext(RULES))
    assert fired(report) == {CheckName.UNREADABLE}


# ---------------------------------------------------------------------- nesting
def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def test_archives_nested_too_deep(tmp_path: Path) -> None:
    data = b"hello"
    for level in range(RULES.archive_depth):
        data = zipped(f"level{level}.zip" if level else "a.txt", data)
    assert run(tmp_path, {"ok.zip": data}).passed
    report = run(tmp_path, {"deep.zip": zipped("more.zip", data)})
    assert (
        fired(report) == {CheckName.ARCHIVE}
        and "nested more than 3 deep" in report.blocking[0].reason
    )


def test_a_workbook_that_unpacks_too_far(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "book.xlsx", [["a", "b"], ["1", "2"]])
    assert check_export([path], ExportContext(RULES)).passed
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/media/padding.bin", b"\0" * (4 << 20))
    report = check_export([path], ExportContext(RULES))
    assert fired(report) == {CheckName.ARCHIVE} and "unpacks to" in report.blocking[0].reason


def test_encodings_nested_too_deep(tmp_path: Path) -> None:
    data = b"a,b\n" + b"1,2\n" * 30
    for _ in range(RULES.encoded_depth):
        data = base64.encodebytes(data)
    assert run(tmp_path, {"ok.txt": data}).passed
    report = run(tmp_path, {"deep.txt": base64.encodebytes(data)})
    assert fired(report) == {CheckName.ENCODED}


# ---------------------------------------------------------------------- identifiers and names
def test_identifiers_in_columns_headers_and_text(tmp_path: Path) -> None:
    table = f"name,contact\nA,{RESIDENT_ID}\nB,138 1234 5678\nC,a.b@example.com\n"
    report = run(tmp_path, {"t.csv": table})
    (finding,) = report.blocking
    assert finding.check is CheckName.IDENTIFIERS
    assert finding.location == "column 'contact', first in row 1"
    assert {"1 resident ID numbers", "1 mobile numbers", "1 e-mail addresses"} == set(
        finding.reason.split(", ")
    )
    header = run(tmp_path, {"h.csv": f"x,{RESIDENT_ID}\n1,2\n"})
    assert header.blocking[0].location == "header"
    text = run(tmp_path, {"r.md": f"# Report\n\nSee 9137 0200 MA3C 0Q0X 12 and {RESIDENT_ID}.\n"})
    assert text.blocking[0].location == "line 3"


def test_what_is_not_an_identifier(tmp_path: Path) -> None:
    clean = (
        "order,mean,phone\n"
        "20240105123456789,35678.13812345678,138****5678\n"  # an order number, a mean, a mask
        "20240105123456790,1.3812345678,139****0000\n"
    )
    assert run(tmp_path, {"t.csv": clean}).passed
    no_email = replace(RULES, identifier_kinds=RULES.identifier_kinds - {Kind.EMAIL})
    assert run(tmp_path, {"r.md": "Contact: team@example.com\n"}, no_email).passed


def test_names_from_the_source_data(tmp_path: Path) -> None:
    names = frozenset({"王伟", "李娜", "x"})  # one-letter names are too short to look for
    report = run(tmp_path, {"t.csv": "who,score\n王伟,1\n李娜,2\n"}, names=names)
    assert fired(report) == {CheckName.IDENTIFIERS}
    assert report.blocking[0].reason == "2 values are names of people in the source data"
    assert fired(run(tmp_path, {"n.txt": "访谈对象：王伟。"}, names=names)) == {
        CheckName.IDENTIFIERS
    }
    # a name inside a longer value or word is not the name
    assert run(tmp_path, {"t.csv": "road,score\n王伟路,1\nx,2\n"}, names=names).passed
    assert run(tmp_path, {"n.txt": "王伟路 is a street"}, names=names).passed


# ---------------------------------------------------------------------- pseudonyms
def test_pseudonyms(tmp_path: Path) -> None:
    pseudonym = "ghijklmnopabcdef" * 4
    report = run(tmp_path, {"t.csv": f"id,x\n{pseudonym},1\n{pseudonym[::-1]},2\n"})
    assert fired(report) == {CheckName.PSEUDONYMS}
    assert report.blocking[0].reason == "2 values have the form of keyed pseudonyms"
    index = build_row_index([{"id": [pseudonym], "x": ["7"]}])
    hexed = pseudonym.translate(str.maketrans("ghijklmnop", "0123456789"))
    report = run(tmp_path, {"ids.csv": f"key,n\n{hexed},1\n"}, indexes=(index,))
    assert "1 of the 1 looked up are pseudonyms of the granted views" in report.blocking[0].reason
    assert run(tmp_path, {"t.csv": "word,x\nsomething ordinary,1\n" + "ab,2\n"}).passed
    sha = "a3f1" * 16  # a file digest: hex, but no pseudonym of the views
    assert run(tmp_path, {"t.csv": f"digest,x\n{sha},1\n"}, indexes=(index,)).passed


# ---------------------------------------------------------------------- row-level data
def test_row_level_threshold(tmp_path: Path) -> None:
    view = {
        "district": ["市南区", "崂山区", "黄岛区", "市北区"] * 25,
        "income": [str(10_000 + 37 * n) for n in range(100)],
        "visits": [str(n % 7) for n in range(100)],
    }
    index = build_row_index([view])
    rows = [",".join(v[n] for v in view.values()) for n in range(0, 100, 4)]  # all 市南区
    two = run(tmp_path, {"a.csv": "x,y,z\n" + "\n".join(rows[:2]) + "\n"}, indexes=(index,))
    assert two.passed  # under row_match_rows (3 at L2)
    three = run(tmp_path, {"b.csv": "x,y,z\n" + "\n".join(rows[:3]) + "\n"}, indexes=(index,))
    assert fired(three) == {CheckName.ROW_LEVEL}
    assert three.blocking[0].reason == "3 of 3 rows are whole records of the granted views"
    strict = replace(RULES, row_match_rows=2)
    assert fired(
        run(tmp_path, {"a.csv": "x,y,z\n" + "\n".join(rows[:2])}, strict, indexes=(index,))
    )


# ---------------------------------------------------------------------- cells
def test_small_cells(tmp_path: Path) -> None:
    table = "district,sex,count\n市南区,男,120\n市南区,女,3\n崂山区,男,98\n崂山区,女,*\n"
    report = run(tmp_path, {"t.csv": table})
    assert fired(report) == {CheckName.SMALL_CELLS}
    assert report.blocking[0].location == "table, row 2"
    assert report.blocking[0].reason.startswith("1 cells count fewer than 10")
    big = table.replace(",3\n", ",30\n")
    assert run(tmp_path, {"t.csv": big}).passed  # the suppressed cell is left alone
    l1 = POLICY.rules("L1")  # minimum cell 5 at L1
    assert fired(run(tmp_path, {"t.csv": table.replace(",3\n", ",6\n")}, l1)) == set()


def test_cross_tables(tmp_path: Path) -> None:
    table = "district,男,女,合计\n市南区,120,4,124\n崂山区,98,101,199\n"
    report = run(tmp_path, {"x.csv": table})
    assert fired(report) == {CheckName.SMALL_CELLS}
    assert run(tmp_path, {"x.csv": table.replace(",4,124", ",40,160")}).passed


def test_dominance(tmp_path: Path) -> None:
    dominated = (
        "district,count,sum_income,max_income\n市南区,20,1000000,950000\n崂山区,30,300000,20000\n"
    )
    report = run(tmp_path, {"d.csv": dominated})
    assert fired(report) == {CheckName.DOMINANCE}
    assert report.blocking[0].location == "table, row 1"
    balanced = dominated.replace("950000", "60000")
    assert run(tmp_path, {"d.csv": balanced}).passed
    # p%: the rest of the total is under 10% of the largest
    second = "district,count,sum_income,max_income,second_income\n市南区,20,1000,600,350\n"
    assert fired(run(tmp_path, {"p.csv": second})) == {CheckName.DOMINANCE}
    means = "district,count,mean_income\n市南区,20,5000\n崂山区,30,6000\n"
    report = run(tmp_path, {"m.csv": means})
    assert report.passed and [f.severity for f in report.findings] == [Severity.REVIEW]


def test_zero_and_full_cells(tmp_path: Path) -> None:
    zero = "district,diagnosis,count\n市南区,哮喘,0\n市南区,无,40\n崂山区,哮喘,30\n崂山区,无,50\n"
    report = run(tmp_path, {"z.csv": zero})
    assert CheckName.GROUP_DISCLOSURE in fired(report)
    assert any("count zero" in f.reason for f in report.blocking)
    full = "district,diagnosis,count\n市南区,哮喘,40\n崂山区,哮喘,30\n崂山区,无,50\n"
    report = run(tmp_path, {"f.csv": full})
    assert fired(report) == {CheckName.GROUP_DISCLOSURE}
    assert "everybody in the group has that attribute" in report.blocking[0].reason
    lenient = replace(RULES, zero_cells=False, full_cells=False)
    assert run(tmp_path, {"z.csv": zero, "f.csv": full}, lenient).passed
    both = "district,diagnosis,count\n市南区,哮喘,40\n市南区,无,45\n崂山区,哮喘,30\n崂山区,无,50\n"
    assert run(tmp_path, {"b.csv": both}).passed


def test_degrees_of_freedom(tmp_path: Path) -> None:
    summary = (
        "                 OLS Regression Results\nNo. Observations:  12\nDf Residuals:       5\n"
    )
    report = run(tmp_path, {"model.txt": summary})
    assert fired(report) == {CheckName.DEGREES_OF_FREEDOM}
    assert report.blocking[0].location == "line 3"
    assert run(tmp_path, {"model.txt": summary.replace(" 5\n", " 50\n")}).passed
    r_output = "Residual standard error: 1.2 on 4 degrees of freedom\n"
    assert fired(run(tmp_path, {"r.txt": r_output})) == {CheckName.DEGREES_OF_FREEDOM}
    table = "model,df_resid,r2\nm1,8,0.4\nm2,80,0.3\n"
    assert fired(run(tmp_path, {"m.csv": table})) == {CheckName.DEGREES_OF_FREEDOM}


# ---------------------------------------------------------------------- images and budget
def test_images_are_for_the_reviewer_or_not_allowed(tmp_path: Path) -> None:
    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    with_gif = replace(RULES, extensions=RULES.extensions | {"gif"})
    report = run(tmp_path, {"a.gif": gif}, with_gif)
    assert report.passed and [f.check for f in report.for_review] == [CheckName.IMAGE]
    assert fired(run(tmp_path, {"a.gif": gif})) == {CheckName.FILE_TYPE}
    svg = '<svg xmlns="http://www.w3.org/2000/svg"><text>Visits</text></svg>'
    report = run(tmp_path, {"chart.svg": svg})
    assert report.passed and report.files[0].texts == 1


@pytest.mark.parametrize(
    ("left", "declared", "reason"),
    [
        (-0.1, 0.0, "spent more than its privacy budget"),
        (1.0, 2.0, "spent epsilon 2; the grant has 1 left"),
        (None, 0.5, "remaining budget is not known"),
        (10.0, 4.0, "more than the level's whole budget of 3"),
        (1.0, float("nan"), "not a number of at least 0"),
        (None, 0.0, None),
        (1.0, 0.5, None),
    ],
)
def test_dp_budget(left: float | None, declared: float, reason: str | None) -> None:
    findings = dp_budget_findings(
        ExportContext(RULES, epsilon_left=left, epsilon_declared=declared)
    )
    if reason is None:
        assert findings == []
    else:
        (finding,) = findings
        assert finding.check is CheckName.DP_BUDGET and reason in finding.reason
