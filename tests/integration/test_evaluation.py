"""The contribution evaluation and the operator's annual evaluation through the API (R15),
over the history test_reports makes (applications, objections, a grant with a session,
cells, exports and feedback) and a second provider whose only upload is clean: every
count and score exactly, for the period and not outside it; the year's figures month by
month; the files (CSV read back, PDF text read back, each file recorded); the
authority's verdict (regulators only, rectify then re-evaluate, recorded in the ledger);
bad input refused with a reason.

One test on each database: the history takes a grant with built views (most of the
test's time), and every part below reads the same history. Then the pure parts: every
sequence of verdicts, and a chart's SVG."""

from __future__ import annotations

import csv
import io
import re
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

from gateway.db.models import OrganizationType, Verdict
from gateway.reports.charts import Chart, Series, scale_top, svg
from gateway.reports.contributions import COLUMNS
from gateway.reports.evaluation import (
    MONTHLY,
    NEXT,
    VerdictRecord,
    mermaid,
    rectify_by,
    verdict_refusal,
)
from tests.conftest import REPO_ROOT
from tests.integration import test_catalog
from tests.integration.test_catalog import Platform
from tests.integration.test_reports import ALL, REASONS, add_organization, make_history

platform = test_catalog.platform
WATER = {**test_catalog.ENTRY, "name": "供水水质监测", "description": "各水厂出厂水水质"}
COUNTS_ZERO = dict.fromkeys(
    (
        "uploads",
        "clean_uploads",
        "objections_raised",
        "objections_on_time",
        "objections_late",
        "objections_overdue",
        "ratings",
        "rating_total",
        "applications",
        "grants",
        "sessions",
        "cells",
        "exports",
        "released",
        "feedback",
        "notes",
    ),
    0,
)


# ------------------------------------------------------------------ reading a PDF's text
def _literals(stream: bytes) -> Iterator[bytes]:
    """The string literals of a content stream, their escapes undone (PDF 32000 §7.3.4.2)."""
    escapes = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}
    at = 0
    while (start := stream.find(b"(", at)) != -1:
        out, j, depth = bytearray(), start + 1, 1
        while True:
            char = stream[j]
            if char == 0x5C:  # a backslash
                following = stream[j + 1]
                if 0x30 <= following <= 0x37:
                    digits = re.match(rb"[0-7]{1,3}", stream[j + 1 : j + 4])
                    assert digits is not None
                    out.append(int(digits.group(), 8) & 0xFF)
                    j += 1 + len(digits.group())
                    continue
                out.append(escapes.get(following, following))
                j += 2
                continue
            depth += {0x28: 1, 0x29: -1}.get(char, 0)
            if depth == 0:
                break
            out.append(char)
            j += 1
        yield bytes(out)
        at = j + 1


def _objects(pdf: bytes) -> dict[int, int]:
    """Where each object starts, from the cross-reference table (PDF 32000 §7.5.4)."""
    found = re.search(rb"startxref\s+(\d+)", pdf[-64:])
    assert found, "no startxref"
    table = pdf[int(found.group(1)) :]
    header = re.match(rb"xref\s+(\d+) (\d+)\s+", table)
    assert header, "no cross-reference table"
    first, count = int(header.group(1)), int(header.group(2))
    entries = re.findall(rb"(\d{10}) \d{5} ([nf])", table)[:count]
    return {first + n: int(at) for n, (at, kind) in enumerate(entries) if kind == b"n"}


def _stream(pdf: bytes, start: int) -> bytes:
    """The (inflated) stream of the object at ``start``, read by its ``/Length``."""
    begin = pdf.index(b"stream", start)
    length = re.search(rb"/Length (\d+)", pdf[start:begin])
    assert length, "a stream without its length"
    begin += len(b"stream") + (2 if pdf[begin + 6 : begin + 8] == b"\r\n" else 1)
    data = pdf[begin : begin + int(length.group(1))]
    return zlib.decompress(data) if b"/FlateDecode" in pdf[start:begin] else data


def pdf_text(pdf: bytes) -> str:
    """The text an fpdf2 document shows, one drawn string a line: each page's content
    stream, its two-byte codes read through the font's ToUnicode map."""
    objects = _objects(pdf)
    heads = {n: pdf[at : pdf.index(b"endobj", at)] for n, at in objects.items()}
    codes: dict[int, str] = {}
    for head in heads.values():
        if (mapping := re.search(rb"/ToUnicode (\d+) 0 R", head)) is not None:
            cmap = _stream(pdf, objects[int(mapping.group(1))])
            for code, text in re.findall(rb"<([0-9A-F]{4})> <([0-9A-F]+)>", cmap):
                codes[int(code, 16)] = bytes.fromhex(text.decode()).decode("utf-16-be")
    assert codes, "no ToUnicode map"
    lines = []
    for head in heads.values():
        if re.search(rb"/Type /Page\b", head) and (
            contents := re.search(rb"/Contents (\d+) 0 R", head)
        ):
            for literal in _literals(_stream(pdf, objects[int(contents.group(1))])):
                pairs = zip(literal[::2], literal[1::2], strict=False)
                lines.append("".join(codes.get(high << 8 | low, "?") for high, low in pairs))
    assert lines, "no page content"
    return "\n".join(lines)


# ------------------------------------------------------------------ the history
def clean_csv(rows: int) -> bytes:
    """Visits with every value present: no warning from the quality check."""
    lines = test_catalog.visits_csv(rows).decode().splitlines()
    return ("\n".join([lines[0], *(line + "复诊" for line in lines[1:])]) + "\n").encode()


def add_water(platform: Platform) -> str:
    """A second provider publishing a dataset and uploading it once, cleanly; its id."""
    add_organization(platform, "water", OrganizationType.PROVIDER, 8)
    platform.user("water.steward", "water", "provider_steward")
    made = platform.call(
        "water.steward", "POST", "/datasets", json={"entry": WATER, "reason": "首次登记"}
    )
    assert made.status_code == 201, made.text
    dataset = made.json()["id"]
    opinion = {"recommends": True, "opinion": "分级合理"}
    path = f"/datasets/{dataset}/revisions/1"
    assert platform.call("reviewer", "POST", f"{path}/opinion", json=opinion).status_code == 200
    decision = {"approve": True, "reason": "同意发布"}
    assert platform.call("approver", "POST", f"{path}/decision", json=decision).status_code == 200
    uploaded = platform.call(
        "water.steward",
        "POST",
        f"/datasets/{dataset}/versions?filename=water.csv",
        content=clean_csv(30),
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["warnings"] == 0, uploaded.json()
    return str(dataset)


def health_warnings(platform: Platform, dataset: str) -> int:
    versions = platform.call("provider_steward", "GET", f"/datasets/{dataset}/versions")
    assert versions.status_code == 200, versions.text
    [version] = versions.json()
    return int(version["warnings"])


# ------------------------------------------------------------------ contributions
def check_the_contributions(platform: Platform, health: str, water: str) -> dict[str, Any]:
    shown = platform.call("regulator", "GET", "/reports/contributions", params=ALL)
    assert shown.status_code == 200, shown.text
    report = shown.json()
    assert report["period"] == ALL
    assert health_warnings(platform, health) > 0  # the clinic's upload: one with warnings
    health_counts = {
        **COUNTS_ZERO,
        "uploads": 1,
        "clean_uploads": 0,
        "objections_raised": 2,
        "objections_on_time": 1,
        "objections_overdue": 1,
        "ratings": 2,  # both pieces of feedback rate the dataset 3
        "rating_total": 6,
        "applications": 3,
        "grants": 1,
        "sessions": 1,
        "cells": 2,  # the command is no cell
        "exports": 2,
        "released": 1,
        "feedback": 2,
        "notes": 2,
    }
    water_counts = {**COUNTS_ZERO, "uploads": 1, "clean_uploads": 1}
    health_scores = {
        "quality.uploads": 0,
        "quality.objections": 50,  # 1 on time of 1 answered + 1 overdue
        "quality.ratings": 50,  # (3 - 1) / 4
        **dict.fromkeys(
            ["use.applications", "use.grants", "use.sessions", "use.cells", "use.exports"], 100
        ),
        **dict.fromkeys(["value.released", "value.feedback", "value.notes"], 100),
        "quality": 33,
        "use": 100,
        "value": 100,
        "contribution": 78,  # (33 + 100 + 100) / 3 = 77.7
    }
    water_scores = {
        "quality.uploads": 100,
        "quality.objections": None,
        "quality.ratings": None,
        **dict.fromkeys(
            ["use.applications", "use.grants", "use.sessions", "use.cells", "use.exports"], 0
        ),
        **dict.fromkeys(["value.released", "value.feedback", "value.notes"], 0),
        "quality": 100,
        "use": 0,
        "value": 0,
        "contribution": 33,
    }
    for level, ids in (
        ("providers", [platform.organizations["provider"], platform.organizations["water"]]),
        ("datasets", [health, water]),
    ):
        rows = report[level]
        assert [row["id"] for row in rows] == ids  # the highest contribution first
        assert [row["counts"] for row in rows] == [health_counts, water_counts], level
        assert [row["scores"] for row in rows] == [health_scores, water_scores], level
        assert rows[1]["provider"] == "water 单位" and rows[0]["provider"] == "青岛市卫生健康委员会"
    highest = {key: health_counts[key] for key in report["highest"]["providers"]}
    assert report["highest"] == {"providers": highest, "datasets": highest}

    october = platform.call(
        "approver", "GET", "/reports/contributions?from=2026-10-01&to=2026-10-31"
    ).json()
    [first, second] = october["providers"]
    assert first["counts"] == {**COUNTS_ZERO, "objections_overdue": 1}  # due 12 October
    assert first["scores"]["quality"] == first["scores"]["contribution"] == 0
    assert first["scores"]["use"] is None and second["scores"]["contribution"] is None

    for who in ("applicant", "provider_steward"):
        assert platform.call(who, "GET", "/reports/contributions").status_code == 403
        assert platform.call(who, "GET", "/reports/contributions.csv").status_code == 403
    for query in ("from=2026-11-30&to=2026-11-01", "from=2026-11", "from=2026-02-30&to=2026-03-01"):
        wrong = platform.call("approver", "GET", f"/reports/contributions?{query}")
        assert wrong.status_code == 422 and wrong.json()["detail"], (query, wrong.text)
    return dict(report)


def check_the_contribution_files(platform: Platform, report: dict[str, Any]) -> None:
    got = platform.call("regulator", "GET", "/reports/contributions.csv", params=ALL)
    assert got.status_code == 200 and got.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(got.content.decode("utf-8-sig"))))
    assert tuple(rows[0]) == COLUMNS
    expected = [
        (level, row["id"], row["name"], str(row["scores"]["contribution"]))
        for level in ("providers", "datasets")
        for row in report[level]
    ]
    assert [(r["level"], r["id"], r["name"], r["contribution"]) for r in rows] == expected
    assert rows[0]["cells"] == "2" and rows[1]["quality.objections"] == ""  # none: blank

    pdf = platform.call("regulator", "GET", "/reports/contributions.pdf", params=ALL)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert "contributions-2026-09-01-2026-11-30.pdf" in pdf.headers["content-disposition"]
    text = pdf_text(pdf.content)
    for shown in (
        "数据贡献评价 / Data contribution evaluation",
        "提供单位数据贡献评分 Providers' contribution scores",  # the chart's title
        "评价期 Period: 2026-09-01 至 2026-11-30（北京时间 China time）",
        "青岛市卫生健康委员会",
        "供水水质监测",
        report["sha256"],
    ):
        assert shown in text, shown
    recorded = [e for e in platform.entries() if e["action"] == "report.contributions"]
    assert [(e["outcome"], e["detail"]["format"]) for e in recorded] == [
        ("ok", "csv"),
        ("ok", "pdf"),
    ]
    assert {e["detail"]["sha256"] for e in recorded} == {report["sha256"]}


# ------------------------------------------------------------------ the annual evaluation
def check_the_year(platform: Platform) -> dict[str, Any]:
    shown = platform.call("approver", "GET", "/reports/evaluation", params={"year": 2026})
    assert shown.status_code == 200, shown.text
    evaluation = shown.json()
    figures = evaluation["figures"]
    months = [f"2026-{n:02d}" for n in range(1, 13)]
    assert figures["applications_by_month"] == {m: 3 if m == "2026-09" else 0 for m in months}
    assert figures["grants_by_month"] == {m: 1 if m == "2026-11" else 0 for m in months}
    assert figures["exports_by_month"] == {m: 2 if m == "2026-11" else 0 for m in months}
    whole = platform.call("approver", "GET", "/reports/operations?from=2026-01-01&to=2026-12-31")
    year_report = {k: v for k, v in whole.json().items() if k not in ("period", "sha256")}
    assert {k: figures[k] for k in year_report} == year_report  # the operation report's
    for month, last in (("09", 30), ("10", 31), ("11", 30)):  # month by month too
        query = f"/reports/operations?from=2026-{month}-01&to=2026-{month}-{last}"
        counted = platform.call("approver", "GET", query).json()
        assert (
            counted["applications"]["submitted"],
            counted["grants"]["made"],
            counted["exports"]["requested"],
        ) == tuple(figures[f"{kind}_by_month"][f"2026-{month}"] for kind in MONTHLY)
    assert figures["refusal_reasons"] == dict.fromkeys(REASONS, 1)
    assert figures["deadlines"]["formal_met"] == 2 and figures["exports_by_risk"]["normal"] == 2
    assert evaluation["verdicts"] == [] and evaluation["year"] == 2026
    default = platform.call("approver", "GET", "/reports/evaluation").json()
    assert default["year"] == 2026  # the year of the last full month (October)
    earlier = platform.call("approver", "GET", "/reports/evaluation?year=2025").json()
    assert sum(earlier["figures"]["applications_by_month"].values()) == 0

    for query in ("year=1999", "year=2027", "year=abc", "year=20266"):  # today: 2026-11-02
        wrong = platform.call("approver", "GET", f"/reports/evaluation?{query}")
        assert wrong.status_code == 422 and wrong.json()["detail"], (query, wrong.text)
    assert platform.call("applicant", "GET", "/reports/evaluation").status_code == 403
    return dict(evaluation)


def check_the_verdicts(platform: Platform, evaluation: dict[str, Any]) -> None:
    """Regulators only; rectify within 30 calendar days, then pass or fail; recorded."""
    path = "/reports/evaluation/2026/verdict"
    rectify = {"verdict": "rectify", "reasons": "审核超期说明不完整，需补充整改方案"}
    for who in ("approver", "applicant"):
        refused = platform.call(who, "POST", path, json=rectify)
        assert refused.status_code == 403, refused.text
    for body, where in (
        ({"verdict": "maybe", "reasons": "x"}, path),
        ({"verdict": "pass", "reasons": ""}, path),
        ({"verdict": "pass", "reasons": "  \t "}, path),
        ({"verdict": "pass"}, path),
        (rectify, "/reports/evaluation/2027/verdict"),
        (rectify, "/reports/evaluation/1999/verdict"),
    ):
        wrong = platform.call("regulator", "POST", where, json=body)
        assert wrong.status_code == 422 and wrong.json()["detail"], (body, where, wrong.text)

    given = platform.call("regulator", "POST", path, json=rectify)
    assert given.status_code == 201, given.text
    first = given.json()
    assert (first["round"], first["verdict"], first["rectify_by"]) == (1, "rectify", "2026-12-02")
    assert first["figures_sha256"] == evaluation["sha256"] and first["decider"] == "regulator"
    again = platform.call("regulator", "POST", path, json=rectify)
    assert again.status_code == 409 and "counts as a fail" in again.json()["detail"]
    passed = {"verdict": "pass", "reasons": "整改方案已落实，复评通过"}
    second = platform.call("regulator", "POST", path, json=passed)
    assert second.status_code == 201 and second.json()["round"] == 2, second.text
    assert second.json()["rectify_by"] is None
    over = platform.call("regulator", "POST", path, json={"verdict": "fail", "reasons": "x"})
    assert over.status_code == 409 and "is over" in over.json()["detail"]
    shown = platform.call("approver", "GET", "/reports/evaluation?year=2026").json()
    assert [(v["round"], v["verdict"]) for v in shown["verdicts"]] == [(1, "rectify"), (2, "pass")]
    assert shown["sha256"] == evaluation["sha256"]  # the verdicts are not figures

    entries = [e for e in platform.entries() if e["action"] == "evaluation.verdict"]
    assert [e["outcome"] for e in entries] == ["ok", "ok"]  # refusals at the door: below
    assert entries[0]["object"] == "evaluation:2026"
    assert entries[0]["detail"].pop("request")["path"] == f"/api/v1{path}"
    assert entries[0]["detail"] == {
        "year": 2026,
        "round": 1,
        "verdict": "rectify",
        "reasons": rectify["reasons"],
        "rectify_by": "2026-12-02",
        "figures_sha256": evaluation["sha256"],
    }
    regulator = platform.call("regulator", "GET", "/me").json()["id"]
    assert {e["actor"] for e in entries} == {f"user:{regulator}"}
    denied = [
        e
        for e in platform.entries()
        if e["outcome"] == "denied" and e["detail"].get("action") == "evaluation:judge"
    ]
    assert len(denied) == 2  # the approver's and the applicant's


def check_the_evaluation_files(platform: Platform, evaluation: dict[str, Any]) -> None:
    got = platform.call("regulator", "GET", "/reports/evaluation.csv?year=2026")
    assert got.status_code == 200 and got.content.startswith(b"\xef\xbb\xbfsection,item,value")
    rows = list(csv.reader(io.StringIO(got.content.decode("utf-8-sig"))))
    parsed: dict[str, dict[str, str]] = {}
    for section, item, value in rows[1:]:
        parsed.setdefault(section, {})[item] = value
    figures = {s: {i: str(v) for i, v in items.items()} for s, items in evaluation.items()}
    assert {s: parsed[s] for s in figures} == figures
    assert parsed["verdict_1"]["verdict"] == "rectify"
    assert parsed["verdict_1"]["rectify_by"] == "2026-12-02"
    assert parsed["verdict_2"]["reasons"] == "整改方案已落实，复评通过"

    pdfs = [platform.call("regulator", "GET", "/reports/evaluation.pdf?year=2026") for _ in "12"]
    assert pdfs[0].status_code == 200 and pdfs[0].content == pdfs[1].content
    text = pdf_text(pdfs[0].content)
    for shown in (
        "运营单位年度评估 / Operator's annual evaluation",
        "第1轮 Round 1：限期整改 Rectify（2026-11-02，regulator）",
        "整改期限 Rectify by: 2026-12-02",
        "第2轮 Round 2：通过评估 Pass（2026-11-02，regulator）",
        "2026年各月业务量 Volumes per month, 2026",  # the charts' titles
        "各环节办理时限 Stage deadlines",
        "提交申请 Applications submitted",  # a legend
        "9月 Sep",  # a month on the axis
        REASONS[0],
        "2026-09",
    ):
        assert shown in text, shown
    recorded = [e["detail"] for e in platform.entries() if e["action"] == "report.evaluation"]
    assert [(d["format"], d["year"], d["verdicts"]) for d in recorded] == [
        ("csv", 2026, 2),
        ("pdf", 2026, 2),
        ("pdf", 2026, 2),
    ]


def test_contributions_and_the_annual_evaluation_count_what_was_done(platform: Platform) -> None:
    health, _ = make_history(platform)
    water = add_water(platform)
    add_organization(platform, "regulator", OrganizationType.REGULATOR, 5)
    platform.user("regulator", "regulator", "regulator")
    report = check_the_contributions(platform, health, water)
    check_the_contribution_files(platform, report)
    evaluation = check_the_year(platform)
    check_the_verdicts(platform, evaluation)
    figures = {key: value for key, value in evaluation["figures"].items()}
    check_the_evaluation_files(platform, figures)


# ------------------------------------------------------------------ pure parts
def test_every_sequence_of_verdicts_follows_the_rules_and_the_diagram_is_current() -> None:
    def record(verdict: Verdict, round_: int) -> VerdictRecord:
        return VerdictRecord(
            2026, round_, verdict, "理由", None, "0" * 64, "user:r", "r", datetime.now(UTC)
        )

    for first in Verdict:
        assert verdict_refusal([], first) is None  # any verdict comes first
        for second in Verdict:
            refusal = verdict_refusal([record(first, 1)], second)
            allowed = first is Verdict.RECTIFY and second is not Verdict.RECTIFY
            assert (refusal is None) is allowed, (first, second, refusal)
            assert (second in NEXT[first]) is allowed
    assert rectify_by(date(2026, 12, 15)) == date(2027, 1, 14)  # calendar days, over the year
    documented = (REPO_ROOT / "docs" / "explanation" / "reports.md").read_text()
    assert f"```mermaid\n{mermaid()}\n```" in documented, "the verdict diagram is stale"


def test_a_chart_is_the_same_svg_every_time_and_escapes_its_texts() -> None:
    chart = Chart(
        "reasons",
        "bar",
        ("理由", "Reasons"),
        ("理由", "Reason"),
        ("次数", "Times"),
        (("<script>alert(1)</script>", "<script>alert(1)</script>"), ("未盖章", "No seal")),
        (Series(("次数", "Times"), (7, 3)),),
    )
    drawn = svg(chart, "en")
    assert drawn == svg(chart, "en") and drawn != svg(chart, "zh")
    assert "<script" not in drawn and "&lt;script&gt;" in drawn
    assert drawn.count("<rect") == 1 + 2  # the legend's swatch and two bars
    assert '<title id="reasons-title">Reasons</title>' in drawn
    assert "Times: &lt;script&gt;alert(1)&lt;/script&gt; 7, No seal 3" in drawn  # the desc
    assert scale_top(7) == (8, 2) and scale_top(0) == (1, 1) and scale_top(101) == (150, 50)
    assert [n for n in range(1, 2000) if scale_top(n)[0] < n] == []
