"""The compiled decision index gives Casbin's own answer to every request."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.authz.decisions import Decisions
from gateway.authz.policy import Grant, PolicyFiles, build_enforcer, read_policy_files
from tests.conftest import REPO_ROOT

POLICIES = REPO_ROOT / "policies"


def every_request(enforcer: object) -> list[tuple[str, str, str, str]]:
    """Every (subject, domain, object, action) that the policy and grants name, plus one
    of each that they do not."""
    policy = enforcer.get_policy()  # type: ignore[attr-defined]
    grouping = enforcer.get_grouping_policy()  # type: ignore[attr-defined]
    subjects = {line[0] for line in policy} | {line[0] for line in grouping}
    subjects |= {line[1] for line in grouping} | {"user:nobody"}
    domains = {line[1] for line in policy} | {line[2] for line in grouping} | {"org:elsewhere"}
    objects = {line[2] for line in policy} | {"nothing"}
    actions = {line[3] for line in policy} | {"do"}
    return list(
        itertools.product(sorted(subjects), sorted(domains), sorted(objects), sorted(actions))
    )


def assert_same_answers(
    enforcer: object, requests: list[tuple[str, str, str, str]] | None = None
) -> int:
    decisions = Decisions.compile(enforcer)  # type: ignore[arg-type]
    requests = every_request(enforcer) if requests is None else requests
    differing = [
        request
        for request in requests
        if decisions.allows(*request) != enforcer.enforce(*request)  # type: ignore[attr-defined]
    ]
    assert differing == []
    return len(requests)


SHIPPED_GRANTS = [
    Grant("user:ann", "applicant", "org:acme"),
    Grant("user:pei", "provider_steward", "org:water"),
    Grant("user:rev", "reviewer", "org:operator"),
    Grant("user:app", "approver", "org:operator"),
    Grant("user:reg", "regulator", "org:authority"),
    Grant("user:adm", "admin", "org:operator"),
    Grant("user:two", "admin", "org:operator"),  # an admin who is also an approver
    Grant("user:two", "approver", "org:operator"),
    Grant("user:many", "applicant", "org:acme"),  # roles in two organizations
    Grant("user:many", "reviewer", "org:operator"),
]


def shipped_enforcer() -> object:
    return build_enforcer(read_policy_files(POLICIES), SHIPPED_GRANTS)


SHIPPED_SUBJECTS = sorted({request[0] for request in every_request(shipped_enforcer())})


@pytest.mark.parametrize("subject", SHIPPED_SUBJECTS)
def test_the_shipped_policy_is_decided_as_casbin_decides_it(subject: str) -> None:
    """Every combination (Casbin takes about a millisecond each, so one subject a test)."""
    enforcer = shipped_enforcer()
    requests = [request for request in every_request(enforcer) if request[0] == subject]
    assert assert_same_answers(enforcer, requests) == len(requests) > 1000


def test_every_subject_of_the_shipped_policy_is_compared() -> None:
    users = {grant.user for grant in SHIPPED_GRANTS} | {"user:nobody"}
    roles = {f"role:{grant.role}" for grant in SHIPPED_GRANTS}
    assert set(SHIPPED_SUBJECTS) == users | roles
    assert len(every_request(shipped_enforcer())) > 30_000


def test_roles_count_only_in_the_organization_that_granted_them() -> None:
    decisions = Decisions.compile(build_enforcer(read_policy_files(POLICIES), SHIPPED_GRANTS))
    assert decisions.allows("user:many", "org:acme", "application", "submit")
    assert not decisions.allows("user:many", "org:operator", "application", "submit")
    assert decisions.allows("user:many", "org:operator", "application", "review")
    assert not decisions.allows("user:many", "org:acme", "application", "review")
    assert decisions.roles_of("user:many", "org:acme") == ("role:applicant",)
    # A deny line of one role wins over the allow of another role held with it.
    assert decisions.allows("user:app", "org:operator", "application", "approve")
    assert not decisions.allows("user:two", "org:operator", "application", "approve")
    # Nothing is allowed that no line allows.
    assert not decisions.allows("user:nobody", "org:acme", "catalog", "read")
    assert not decisions.allows("user:ann", "org:acme", "catalog", "delete")


# ------------------------------------------------------------------ random policies

NAMES = st.sampled_from
roles = NAMES(["role:r0", "role:r1", "role:r2", "role:r3"])
domains = NAMES(["org:d0", "org:d1", "*"])
policy_line = st.tuples(
    st.one_of(roles, NAMES(["user:u0", "user:u1"])),
    domains,
    NAMES(["o0", "o1", "o2"]),
    NAMES(["a0", "a1", "a2"]),
    NAMES(["allow", "deny"]),
)
grant_line = st.tuples(st.one_of(NAMES(["user:u0", "user:u1", "user:u2"]), roles), roles, domains)


@settings(max_examples=150, deadline=None)
@given(
    policy=st.lists(policy_line, min_size=1, max_size=25, unique=True),
    grants=st.lists(grant_line, max_size=12, unique=True),
)
def test_random_policies_and_role_chains_are_decided_as_casbin_decides_them(
    policy: list[tuple[str, ...]],
    grants: list[tuple[str, str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    files = read_policy_files(POLICIES)
    text = "\n".join(", ".join(("p", *line)) for line in policy) + "\n"
    random_files = PolicyFiles(
        files.folder, {**files.texts, "policy.csv": text.encode()}, files.duties
    )
    enforcer = build_enforcer(random_files)
    grants = [g for g in grants if g[0] != g[1]]
    if grants:
        enforcer.add_grouping_policies([list(g) for g in grants])
    assert_same_answers(enforcer)


def test_decisions_are_safe_to_share_between_threads() -> None:
    decisions = Decisions.compile(build_enforcer(read_policy_files(POLICIES), SHIPPED_GRANTS))
    requests = [
        (sub, dom, obj, act)
        for sub, dom, obj, act in every_request(
            build_enforcer(read_policy_files(POLICIES), SHIPPED_GRANTS)
        )
    ][:20_000]
    expected = [decisions.allows(*request) for request in requests]
    results: list[list[bool]] = []

    def decide() -> None:
        results.append([decisions.allows(*request) for request in requests])

    threads = [threading.Thread(target=decide) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 8
    assert any(expected) and not all(expected)
