"""The demo's dataset, taken through the whole path as the platform's people would:

1. the provider's steward registers synthetic citizens' health records in the catalog;
2. a reviewer gives an opinion and an approver publishes the entry;
3. the steward uploads 100,000 rows: checked against the entry, measured for quality,
   sealed in the vault; the plaintext file is removed;
4. the view builder makes, for a demo grant, a record-level desensitized view, an
   aggregated view and a differentially private one, each with a signed manifest whose
   hash is in the ledger (the privacy budget comes from ``policies/disclosure.yaml``);
5. the approver grants the applicant a sandbox on those views for 90 days (the grant
   the console's "Open sandbox" button opens);
6. the applicant objects to a quality problem and the steward answers it.

Every step goes through the same services, and so the same ledger, as the console and
the API. This grant is made by hand, with a fixed demo id (the operator's path for an
agreement signed elsewhere); :mod:`gateway.cli.demo_path` then takes an application for
the same dataset through review, agreement and grant.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from rich.table import Table

from gateway.api.deps import Services
from gateway.authz import Actor
from gateway.budget import PrivacyBudgets
from gateway.catalog.entry import (
    CatalogEntry,
    CatalogField,
    DataFormat,
    Openness,
    Share,
    UpdateCycle,
)
from gateway.cli.common import console, short
from gateway.settings import Settings
from sandbox.synthetic import FIELDS, write_citizens
from sandbox.views.aggregate import AggregateViewSpec
from sandbox.views.builder import BuiltView, ViewBuilder
from sandbox.views.disclosure import load_disclosure
from sandbox.views.fields import FieldRule
from sandbox.views.private import PrivateQuery, PrivateViewSpec, Statistic
from sandbox.views.record import RecordViewSpec
from sandbox.views.treatments import Treatment as T

DEMO_ROWS = 100_000
DEMO_GRANT = "demo-grant"
DEMO_GRANT_TITLE = "海岸线数据 × 市场主体 演示授权"
DEMO_GRANT_DAYS = 90
LEVEL = "L2"
ENTRY = CatalogEntry(
    name="居民健康档案（合成数据）",
    description="青岛市居民基本健康档案与就诊摘要。演示用合成数据，不含任何真实个人信息。",
    fields=[
        CatalogField.model_validate(
            {"name": n, "type": t, "description": d, "sensitivity": c, "identifier": k}
        )
        for n, t, d, c, k in FIELDS
    ],
    update_cycle=UpdateCycle.MONTHLY,
    format=DataFormat.PARQUET,
    share=Share.CONDITIONAL,
    open=Openness.NOT_OPEN,
    level=LEVEL,
    usage_conditions="仅限经批准的健康研究，在数据沙箱内以脱敏或汇总形式使用，成果经审核后导出。",
    legal_basis={
        "share": "《中华人民共和国个人信息保护法》第二十八条（敏感个人信息）",
        "open": "《青岛市公共数据管理办法》：涉及个人隐私的公共数据不予开放",
    },
)
CLASSES = {field.name: field.sensitivity for field in ENTRY.fields}
DISTRICT = FieldRule("address", T.GENERALIZE, {"to": "district"})
AGE_BAND = FieldRule("age", T.GENERALIZE, {"to": "band", "width": 10})
RECORD = RecordViewSpec(
    LEVEL,
    CLASSES,
    (
        FieldRule("name", T.PSEUDONYMIZE),
        FieldRule("id_number", T.PSEUDONYMIZE),
        FieldRule("phone", T.MASK),
        FieldRule("sex", T.KEEP),
        AGE_BAND,
        DISTRICT,
        FieldRule("birth_date", T.DROP),
        FieldRule("occupation", T.DROP),
        FieldRule("diagnosis", T.AGGREGATE_ONLY),
        FieldRule("income", T.TOP_BOTTOM_CODE, {"low": 5_000, "high": 200_000}),
        FieldRule("visits", T.KEEP),
        FieldRule("last_visit", T.GENERALIZE, {"to": "month"}),
    ),
    k=5,
)
AGGREGATE = AggregateViewSpec(  # five-year bands: the oldest cells are small
    LEVEL,
    CLASSES,
    (
        DISTRICT,
        FieldRule("age", T.GENERALIZE, {"to": "band", "width": 5}),
        FieldRule("diagnosis", T.KEEP),
    ),
    ("income", "visits"),
)
PRIVATE = PrivateViewSpec(
    LEVEL,
    CLASSES,
    (
        PrivateQuery("people", Statistic.COUNT, 0.1),
        PrivateQuery(
            "income_by_sex",
            Statistic.MEAN,
            0.2,
            "income",
            (0, 500_000),
            group_by="sex",
            categories=("男", "女"),
        ),
        PrivateQuery("visits", Statistic.HISTOGRAM, 0.2, "visits", (0, 20), bins=10),
    ),
)


def ship_dataset(settings: Settings, services: Services, actors: dict[str, Actor]) -> str | None:
    """Take the demo dataset through the catalog; its id (None without a catalog)."""
    catalog = services.catalog
    if catalog is None:
        return None
    steward, applicant = actors["provider_steward"], actors["applicant"]
    console.print("\n[bold]a dataset through the whole path[/] (each step recorded):")
    dataset = catalog.register(steward, ENTRY, "演示：首次登记")
    catalog.review(
        actors["reviewer"],
        dataset.id,
        1,
        recommends=True,
        opinion="字段分级、处理方式与限制依据齐全",
    )
    catalog.decide(actors["approver"], dataset.id, 1, approve=True, reason="同意发布")
    console.print(f"  catalog: {ENTRY.name} registered, reviewed, approved ({dataset.id})")
    source = write_citizens(settings.data_dir / "demo" / "citizens.parquet", DEMO_ROWS)
    try:
        version = catalog.upload(steward, dataset.id, _blocks(source), filename=source.name)
    finally:
        source.unlink(missing_ok=True)  # the raw data lives in the vault alone
    quality = version.quality
    console.print(
        f"  upload: {version.rows:,} rows sealed in the vault, sha256 {short(version.sha256)}; "
        f"quality: {len(quality['warnings'])} warnings, resident ID checksums "
        f"{_checksum(quality):.1%} valid"
    )
    disclosure = load_disclosure(settings.policies_dir / "disclosure.yaml")
    budgets = PrivacyBudgets(services.writes)
    budgets.open(DEMO_GRANT, disclosure.rules(LEVEL).epsilon_budget)
    builder = ViewBuilder(
        settings.data_dir / "builder",
        settings.data_dir / "vault",
        catalog.treatments,
        disclosure,
        services.writes.record,
        budget=budgets,
    )
    out = settings.data_dir / "views" / DEMO_GRANT
    built = [
        builder.build(
            grant=DEMO_GRANT, version=version.id, spec=spec, name=name, out=out, actor="system:demo"
        )
        for name, spec in (
            ("citizens", RECORD),
            ("by_district_age", AGGREGATE),
            ("figures", PRIVATE),
        )
    ]
    _show_views(built, out)
    grant_demo(services, actors)
    objection = catalog.object(
        applicant, dataset.id, "部分记录的最近就诊日期晚于建档日期，请核实。"
    )
    catalog.answer(steward, objection.id, "已核实：为补录数据，下一版本更正。")
    console.print(f"  objection raised and answered (due {objection.due_on}, five working days)")
    return dataset.id


def grant_demo(services: Services, actors: dict[str, Actor]) -> None:
    """The approver grants the demo applicant a sandbox on the views, for 90 days from now."""
    sandboxes = services.sandboxes
    if sandboxes is None:
        return
    applicant = actors["applicant"]
    starts = sandboxes.clock()
    grant = sandboxes.create_grant(
        actors["approver"],
        grant_id=DEMO_GRANT,
        title=DEMO_GRANT_TITLE,
        organization_id=applicant.organization.removeprefix("org:"),
        members=[applicant.user.removeprefix("user:")],
        views=DEMO_GRANT,
        starts_at=starts,
        ends_at=starts + timedelta(days=DEMO_GRANT_DAYS),
    )
    console.print(
        f"  grant: {grant.id} 「{grant.title}」 for {', '.join(grant.member_names)}, "
        f"{grant.status.value} until {grant.ends_at:%Y-%m-%d} (gid {grant.gid})"
    )


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(1 << 20), b"")


def _checksum(quality: dict[str, object]) -> float:
    fields = quality.get("fields")
    for field in fields if isinstance(fields, list) else []:
        if field.get("name") == "id_number" and field.get("checksum_valid") is not None:
            return float(field["checksum_valid"])
    return 0.0


def _show_views(built: list[BuiltView], out: Path) -> None:
    table = Table(title=f"views of grant {DEMO_GRANT} in {out}")
    for column in ("view", "kind", "what the builder achieved", "manifest sha256"):
        table.add_column(column)
    for view in built:
        report = view.report
        if view.kind == "record":
            achieved = (
                f"{report.rows_out:,} rows, k = {report.k_achieved} (asked {report.k}), "
                f"{report.rows_suppressed:,} suppressed"
            )
        elif view.kind == "aggregate":
            achieved = (
                f"{report.cells:,} cells, {report.primary_suppressed} withheld by the rules, "
                f"{report.secondary_suppressed} beside them"
            )
        else:
            achieved = f"epsilon {report.epsilon_spent:g} spent, {report.epsilon_left:g} left"
        table.add_row(view.path.name, view.kind, achieved, short(view.manifest_sha256))
    console.print(table)
