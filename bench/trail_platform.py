"""A simulated platform for the trail benchmark: the entries a busy sbx writes.

The operator, providers, application units (a few big ones, many small) and regulators
with their people; datasets registered, reviewed, approved and uploaded; applications
through check, consent, review and approval; agreements signed by both parties; grants
with their views and budgets; sandbox sessions with their executed cells (most of the
ledger, as on the real platform); exports checked, reviewed, approved, released and
downloaded; sign-ins, refusals, objections, suspensions and reports — each with the
action and the detail the gateway's services write. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any


class Platform:
    """A simulated platform: its people and objects, and the entries they cause."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.operator = self.new_id()
        self.people: dict[str, str] = {}  # user id -> organization id
        self.by_org: dict[str, list[str]] = {}
        self.stewards: dict[str, list[str]] = {}  # provider org -> stewards
        self.providers: list[str] = []
        self.units: list[str] = []  # application units
        self.unit_weights: list[float] = []
        self.regulators: list[str] = []
        self.reviewers: list[str] = []
        self.approvers: list[str] = []
        self.admin = ""
        self.datasets: list[tuple[str, str]] = []  # (dataset id, provider org)
        self.grants: list[dict[str, Any]] = []  # active grants
        self.sessions_open: list[str] = []
        self.objections: list[tuple[str, str]] = []
        self.suspended: list[dict[str, Any]] = []
        self.agreements = 0

    def new_id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    @staticmethod
    def entry(
        actor: str, action: str, obj: str, detail: dict[str, Any], outcome: str = "ok"
    ) -> dict[str, Any]:
        return {
            "actor": actor,
            "action": action,
            "object": obj,
            "outcome": outcome,
            "detail": detail,
        }

    def sha(self) -> str:
        return f"{self.rng.getrandbits(256):064x}"

    # -------------------------------------------------------------- people
    def organization(self, kind: str, name: str) -> Iterator[dict[str, Any]]:
        org = self.new_id()
        code = f"9137020{self.rng.randrange(10**10):010d}X"
        yield self.entry(
            f"user:{self.admin}",
            "organization.create",
            f"org:{org}",
            {"credit_code": code, "name": name, "type": kind},
        )
        yield self.entry(
            f"user:{self.admin}",
            "organization.verification",
            f"org:{org}",
            {"previous": "unverified", "reason": "营业执照已核验", "status": "verified"},
        )
        self.by_org[org] = []
        if kind == "provider":
            self.providers.append(org)
        elif kind == "application_unit":
            self.units.append(org)
            self.unit_weights.append(1 / (len(self.units) ** 0.8))  # a few big users
        elif kind == "regulator":
            self.regulators.append(org)
        self._last_org = org

    def user(self, org: str, role: str, name: str) -> Iterator[dict[str, Any]]:
        user = self.new_id()
        self.people[user] = org
        self.by_org.setdefault(org, []).append(user)
        yield self.entry(
            f"user:{self.admin}",
            "user.create",
            f"user:{user}",
            {"organization": org, "roles": [role], "username": name},
        )
        yield self.entry(f"user:{user}", "user.password", f"user:{user}", {})
        if role == "provider_steward":
            self.stewards.setdefault(org, []).append(user)
        elif role == "reviewer":
            self.reviewers.append(user)
        elif role == "approver":
            self.approvers.append(user)

    def setup(self) -> Iterator[dict[str, Any]]:
        self.admin = self.new_id()
        self.people[self.admin] = self.operator
        self.by_org[self.operator] = [self.admin]
        yield self.entry(
            "system:gateway",
            "policy.load",
            f"policy:{self.sha()}",
            {"digest": self.sha(), "previous": None},
        )
        yield self.entry(
            "system:gateway",
            "user.bootstrap",
            f"user:{self.admin}",
            {"organization": self.operator, "roles": ["admin"], "username": "admin"},
        )
        for n in range(6):
            yield from self.user(self.operator, "reviewer", f"reviewer.{n}")
        for n in range(4):
            yield from self.user(self.operator, "approver", f"approver.{n}")
        for n in range(40):
            yield from self.organization("provider", f"青岛市第{n}委办局")
            for m in range(2):
                yield from self.user(self._last_org, "provider_steward", f"steward.{n}.{m}")
        for n in range(3):
            yield from self.organization("regulator", f"监管机构{n}")
            for m in range(2):
                yield from self.user(self._last_org, "regulator", f"regulator.{n}.{m}")
        for n in range(400):
            yield from self.organization("application_unit", f"数据科技有限公司{n}")
            for m in range(1 + self.rng.randrange(8)):
                yield from self.user(self._last_org, "applicant", f"applicant.{n}.{m}")
        for _ in range(60):
            yield from self.dataset()

    # -------------------------------------------------------------- lifecycles
    def dataset(self) -> Iterator[dict[str, Any]]:
        provider = self.rng.choice(self.providers)
        steward = f"user:{self.rng.choice(self.stewards[provider])}"
        dataset = self.new_id()
        obj = f"dataset:{dataset}"
        yield self.entry(
            steward,
            "catalog.register",
            obj,
            {"entry_sha256": self.sha(), "name": "目录", "reason": "首次登记", "revision": 1},
        )
        reviewer, approver = self.rng.choice(self.reviewers), self.rng.choice(self.approvers)
        yield self.entry(
            f"user:{reviewer}", "catalog.review", obj, {"recommends": True, "revision": 1}
        )
        yield self.entry(
            f"user:{approver}",
            "catalog.approve",
            obj,
            {"less_open": [], "on_time": True, "reason": "同意发布", "revision": 1},
        )
        version, digest = self.new_id(), self.sha()
        if self.rng.random() < 0.1:
            yield self.entry(
                steward,
                "dataset.upload",
                obj,
                {"problems": ["第 3 列类型不符"], "filename": "data.csv"},
                "refused",
            )
        size = self.rng.randrange(10**5, 10**9)
        yield self.entry(
            steward, "vault.store", obj, {"bytes": size, "sha256": digest, "version": version}
        )
        yield self.entry(
            steward,
            "dataset.upload",
            obj,
            {
                "filename": "data.parquet",
                "number": 1,
                "revision": 1,
                "rows": size // 40,
                "sha256": digest,
                "version": version,
                "warnings": 0,
            },
        )
        self.datasets.append((dataset, provider))

    def application(self) -> Iterator[dict[str, Any]]:
        unit = self.rng.choices(self.units, self.unit_weights)[0]
        applicant = f"user:{self.rng.choice(self.by_org[unit])}"
        application = self.new_id()
        obj = f"application:{application}"
        reviewer = f"user:{self.rng.choice(self.reviewers)}"
        approver = f"user:{self.rng.choice(self.approvers)}"
        chosen = self.rng.sample(self.datasets, min(len(self.datasets), 1 + self.rng.randrange(3)))
        yield self.entry(applicant, "application.create", obj, {})
        yield self.entry(
            applicant,
            "application.attach",
            obj,
            {"kind": "commitment", "sha256": self.sha(), "size": 12104},
        )
        yield self.entry(
            applicant,
            "application.submit",
            obj,
            {"due_on": "2026-12-03", "round": 1, "status": "formal"},
        )
        if self.rng.random() < 0.1:
            yield self.entry(
                reviewer,
                "application.check_refuse",
                obj,
                {"reasons": ["安全措施未说明"], "round": 1, "status": "refused", "on_time": True},
            )
            return
        yield self.entry(
            reviewer,
            "application.check",
            obj,
            {"due_on": "2026-12-03", "on_time": True, "round": 1, "status": "consent"},
        )
        for dataset, provider in chosen:
            steward = f"user:{self.rng.choice(self.stewards[provider])}"
            yield self.entry(
                steward,
                "application.consent",
                obj,
                {
                    "dataset": dataset,
                    "due_on": "2026-12-10",
                    "on_time": True,
                    "round": 1,
                    "status": "review",
                },
            )
        yield self.entry(
            reviewer,
            "application.review",
            obj,
            {
                "due_on": "2026-12-03",
                "on_time": True,
                "recommends": True,
                "risk": "medium",
                "round": 1,
                "status": "approval",
            },
        )
        if self.rng.random() < 0.15:
            yield self.entry(
                approver,
                "application.reject",
                obj,
                {"reasons": ["用途不明确"], "round": 1, "status": "refused"},
            )
            return
        yield self.entry(
            approver,
            "application.approve",
            obj,
            {"on_time": True, "round": 1, "status": "approved"},
        )
        agreement = self.new_id()
        self.agreements += 1
        sha = self.sha()
        yield self.entry(
            applicant,
            "agreement.create",
            f"agreement:{agreement}",
            {
                "application": application,
                "number": f"SBX-2026-{self.agreements:05d}",
                "sha256": sha,
                "terms": self.sha(),
            },
        )
        for party, who, org in (
            ("applicant", applicant, unit),
            ("operator", approver, self.operator),
        ):
            yield self.entry(
                who,
                "agreement.sign",
                f"agreement:{agreement}",
                {
                    "key_id": self.sha(),
                    "organization": org,
                    "party": party,
                    "sha256": sha,
                    "signature": "c2lnbmF0dXJl" * 7,
                    "status": "signed",
                },
            )
        grant = self.new_id()
        for dataset, _ in chosen:
            yield self.entry(
                approver,
                "view.build",
                f"grant:{grant}",
                {
                    "dataset": dataset,
                    "kind": self.rng.choice(["record", "aggregate"]),
                    "manifest_sha256": self.sha(),
                    "output_sha256": self.sha(),
                    "version": self.new_id(),
                    "view": "view",
                },
            )
        private = self.rng.random() < 0.3
        if private:
            yield self.entry(
                "system:view-builder",
                "privacy.budget.open",
                f"grant:{grant}",
                {"epsilon_micro": 3000000},
            )
        members = self.rng.sample(
            self.by_org[unit], min(len(self.by_org[unit]), 1 + self.rng.randrange(3))
        )
        yield self.entry(
            approver,
            "grant.create",
            f"grant:{grant}",
            {
                "agreement": agreement,
                "agreement_sha256": sha,
                "ends_at": "2027-05-26T00:00:00+08:00",
                "gid": 210000 + self.agreements,
                "members": members,
                "organization": unit,
                "starts_at": "2026-11-26T11:21:28+00:00",
                "title": "研究项目",
                "views": grant,
            },
        )
        sessions = max(1, int(self.rng.expovariate(1 / 150)))
        self.grants.append(
            {
                "id": grant,
                "org": unit,
                "members": members,
                "private": private,
                "sessions": sessions,
                "datasets": chosen,
            }
        )

    def session(self) -> Iterator[dict[str, Any]]:
        if not self.grants:
            return
        grant = self.rng.choice(self.grants)
        user = self.rng.choice(grant["members"])
        session = self.new_id()
        obj = f"session:{session}"
        actor = f"user:{user}"
        yield self.entry(
            actor, "sandbox.open", f"grant:{grant['id']}", {"hub_user": f"u{user[:8]}"}
        )
        yield self.entry(
            actor,
            "sandbox.start",
            obj,
            {"gid": 210000, "grant": grant["id"], "hub_user": f"u{user[:8]}", "uid": 200000},
        )
        for cell in range(min(400, 1 + int(self.rng.expovariate(1 / 20)))):
            code = self.rng.choice(CELLS)
            yield self.entry(
                actor,
                "sandbox.execute",
                obj,
                {
                    "code": code,
                    "grant": grant["id"],
                    "kernel": "k1",
                    "kind": "execute",
                    "message": f"cell-{cell}",
                    "session": session,
                    "sha256": self.sha(),
                },
            )
            if grant["private"] and self.rng.random() < 0.02:
                yield self.entry(
                    "system:view-builder",
                    "privacy.spend",
                    f"grant:{grant['id']}",
                    {
                        "epsilon_micro": 100000,
                        "left_micro": 2000000,
                        "purpose": {"destination": "figures.parquet", "queries": ["people"]},
                        "spend": self.new_id(),
                    },
                )
        if self.rng.random() < 0.12:
            yield from self.export(grant, actor, session)
        yield self.entry(
            "system:hub",
            "sandbox.stop",
            obj,
            {"grant": grant["id"], "reason": "idle", "user": user},
        )
        grant["sessions"] -= 1
        if grant["sessions"] <= 0:
            self.grants.remove(grant)

    def export(self, grant: dict[str, Any], actor: str, session: str) -> Iterator[dict[str, Any]]:
        export = self.new_id()
        obj = f"export:{export}"
        files = [{"bytes": 427, "name": "results/table.csv", "sha256": self.sha()}]
        yield self.entry(
            actor, "export.request", obj, {"files": files, "grant": grant["id"], "session": session}
        )
        dataset = grant["datasets"][0][0]
        if self.rng.random() < 0.3:
            yield self.entry(
                "system:airlock",
                "airlock.index",
                f"dataset:{dataset}",
                {"records": 100000, "version": self.new_id()},
            )
        blocked = self.rng.random() < 0.1
        yield self.entry(
            actor,
            "export.submit",
            obj,
            {
                "blocking": int(blocked),
                "fired": {},
                "for_review": 0,
                "grant": grant["id"],
                "level": "L2",
                "passed": not blocked,
                "policy_digest": self.sha(),
                "risk": "normal",
                "status": "blocked" if blocked else "review",
            },
        )
        if blocked:
            return
        reviewer, approver = self.rng.choice(self.reviewers), self.rng.choice(self.approvers)
        approve = self.rng.random() < 0.9
        yield self.entry(
            f"user:{reviewer}",
            "export.review",
            obj,
            {
                "approve": approve,
                "reasons": "汇总表，无标识符",
                "risk": "normal",
                "stage": "review",
                "status": "approval" if approve else "rejected",
            },
        )
        if not approve:
            return
        yield self.entry(
            f"user:{approver}",
            "export.approve",
            obj,
            {
                "approve": True,
                "reasons": "同意导出",
                "risk": "normal",
                "stage": "approval",
                "status": "released",
            },
        )
        yield self.entry(
            f"user:{approver}",
            "export.release",
            obj,
            {
                "files": [{"name": "results/table.csv", "sha256": self.sha()}],
                "grant": grant["id"],
                "key_id": self.sha(),
                "manifest_sha256": self.sha(),
                "organization": self.operator,
                "signature": "c2ln" * 22,
            },
        )
        for _ in range(self.rng.randrange(3)):
            yield self.entry(actor, "export.download", obj, {"manifest_sha256": self.sha()})

    def sign_in(self) -> Iterator[dict[str, Any]]:
        user = self.rng.choice(list(self.people))
        actor = f"user:{user}"
        if self.rng.random() < 0.05:
            yield self.entry(
                actor,
                "session.login",
                actor,
                {"client": "10.0.0.8", "reason": "wrong password"},
                "failed",
            )
            return
        yield self.entry(actor, "session.login", actor, {"client": "10.0.0.8"})
        browser = self.new_id()
        yield self.entry(
            actor,
            "session.open",
            f"session:{browser}",
            {"client": "Mozilla/5.0", "expires": "2026-11-27T11:21:28+00:00"},
        )
        yield self.entry(actor, "session.close", f"session:{browser}", {"reason": "signed out"})

    def refusal(self) -> Iterator[dict[str, Any]]:
        user = self.rng.choice(list(self.people))
        org = self.people[user]
        yield self.entry(
            f"user:{user}",
            "request.denied",
            "request",
            {
                "action": "audit_trail:read",
                "organization": org,
                "reason": "your roles do not allow read on audit_trail",
                "roles": ["applicant"],
                "status": 403,
            },
            "denied",
        )

    def objection(self) -> Iterator[dict[str, Any]]:
        unit = self.rng.choice(self.units)
        dataset, provider = self.rng.choice(self.datasets)
        objection = self.new_id()
        yield self.entry(
            f"user:{self.rng.choice(self.by_org[unit])}",
            "objection.create",
            f"objection:{objection}",
            {"dataset": dataset, "due_on": "2026-12-03", "version": None},
        )
        steward = self.rng.choice(self.stewards[provider])
        yield self.entry(
            f"user:{steward}", "objection.answer", f"objection:{objection}", {"on_time": True}
        )

    def suspension(self) -> Iterator[dict[str, Any]]:
        if self.grants:
            grant = self.rng.choice(self.grants)
            approver = f"user:{self.rng.choice(self.approvers)}"
            yield self.entry(
                approver, "grant.suspend", f"grant:{grant['id']}", {"reason": "核查", "sessions": 0}
            )
            yield self.entry(
                approver, "grant.resume", f"grant:{grant['id']}", {"reason": "核查完毕"}
            )

    def report(self) -> Iterator[dict[str, Any]]:
        org = self.rng.choice(self.regulators)
        reader = self.rng.choice(self.by_org[org])
        yield self.entry(
            f"user:{reader}",
            "report.operations",
            "report:operations",
            {"format": "pdf", "from": "2026-10-01", "to": "2026-10-31", "sha256": self.sha()},
        )


CELLS = (
    'import pandas as pd\nview = pd.read_parquet("/data/records.parquet")\nview.head()\n',
    'table = view.groupby("district")["visits"].sum().reset_index()\n',
    'table.to_csv("results/visits_by_district.csv", index=False)\n',
    "view.describe()\n",
    'import matplotlib.pyplot as plt\nplt.hist(view["age"], bins=20)\n',
)

# what happens next, and how often
EVENTS: tuple[tuple[str, float], ...] = (
    ("session", 0.50),
    ("sign_in", 0.40),
    ("application", 0.012),
    ("dataset", 0.0015),
    ("refusal", 0.06),
    ("objection", 0.003),
    ("suspension", 0.001),
    ("report", 0.002),
)


def platform_entries(seed: int = 20261126) -> Iterator[dict[str, Any]]:
    """An endless, deterministic stream of the entries a busy platform writes."""
    platform = Platform(seed)
    yield from platform.setup()
    for _ in range(30):
        yield from platform.application()
    names = [name for name, _ in EVENTS]
    weights = [weight for _, weight in EVENTS]
    while True:
        for name in platform.rng.choices(names, weights, k=256):
            yield from getattr(platform, name)()
