"""Policy decisions: the compiled index against Casbin's own ``enforce``, in one run.

A synthetic policy in the shipped model (``policies/model.conf``) with 1,000 and 10,000
policy lines (roles x objects x actions, a tenth of them deny lines) and one role grant
per user in each of 50 organizations. Both deciders answer the same random requests (about
nine in ten allowed, the rest refused by a deny line); the answers must agree. Reported:
the median and p99 time of one decision, and the time to compile the index (paid once per
policy or grant change).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from bench.common import Results, Table, percentile
from gateway.authz.decisions import Decisions
from gateway.authz.policy import PolicyFiles, build_enforcer, read_policy_files

ROOT = Path(__file__).resolve().parents[1]
FULL_LINES = (1_000, 10_000)
QUICK_LINES = (1_000,)
ORGANIZATIONS = 50
USERS = 2_000
INDEX_SAMPLES = 20_000
CASBIN_SAMPLES = {1_000: 300, 10_000: 60}


def synthetic_policy(lines: int) -> tuple[str, list[list[str]], list[tuple[str, str, str, str]]]:
    """``(policy.csv text, grants, requests)`` with ``lines`` policy lines."""
    rng = random.Random(lines)
    roles = [f"role:r{n}" for n in range(100)]
    objects = [f"o{n}" for n in range(max(1, lines // 1000))]
    actions = [f"a{n}" for n in range(10)]
    rows = [
        (role, "*", obj, act, "deny" if rng.random() < 0.1 else "allow")
        for role in roles
        for obj in objects
        for act in actions
    ][:lines]
    text = "".join(f"p, {', '.join(row)}\n" for row in rows)
    grants = [[f"user:u{n}", rng.choice(roles), f"org:{n % ORGANIZATIONS}"] for n in range(USERS)]
    requests = [
        (f"user:u{n}", f"org:{n % ORGANIZATIONS}", rng.choice(objects), rng.choice(actions))
        for n in (rng.randrange(USERS) for _ in range(INDEX_SAMPLES))
    ]
    return text, grants, requests


def _per_call(decide: object, requests: list[tuple[str, str, str, str]]) -> list[float]:
    times = []
    clock = time.perf_counter_ns
    for request in requests:
        started = clock()
        decide(*request)  # type: ignore[operator]
        times.append((clock() - started) / 1000)
    return sorted(times)


def run(results: Results, *, quick: bool) -> None:
    shipped = read_policy_files(ROOT / "policies")
    table = Table(
        "Policy decisions (one thread)",
        [
            "policy lines",
            "grants",
            "index p50 (µs)",
            "index p99 (µs)",
            "Casbin enforce p50 (µs)",
            "Casbin enforce p99 (µs)",
            "speed-up (p50)",
            "compile index (ms)",
            "allowed",
        ],
    )
    for lines in QUICK_LINES if quick else FULL_LINES:
        text, grants, requests = synthetic_policy(lines)
        files = PolicyFiles(
            shipped.folder, {**shipped.texts, "policy.csv": text.encode()}, shipped.duties
        )
        enforcer = build_enforcer(files)
        enforcer.add_grouping_policies(grants)
        started = time.perf_counter()
        decisions = Decisions.compile(enforcer)
        compile_ms = (time.perf_counter() - started) * 1000
        sample = requests[: CASBIN_SAMPLES[lines] // (3 if quick else 1)]
        for request in sample:
            if decisions.allows(*request) != enforcer.enforce(*request):
                raise AssertionError(f"the index and Casbin disagree on {request}")
        index_times = _per_call(decisions.allows, requests)
        casbin_times = _per_call(enforcer.enforce, sample)
        allowed = sum(decisions.allows(*request) for request in requests) / len(requests)
        index_p50 = percentile(index_times, 50)
        casbin_p50 = percentile(casbin_times, 50)
        table.add(
            f"{lines:,}",
            f"{len(grants):,}",
            f"{index_p50:.2f}",
            f"{percentile(index_times, 99):.2f}",
            f"{casbin_p50:,.0f}",
            f"{percentile(casbin_times, 99):,.0f}",
            f"{casbin_p50 / index_p50:,.0f}x",
            f"{compile_ms:,.0f}",
            f"{allowed:.0%}",
        )
    table.notes.append(
        f"index: {INDEX_SAMPLES:,} random requests; Casbin: the first "
        f"{' and '.join(f'{n:,}' for n in CASBIN_SAMPLES.values())} of them (it is slow), each "
        "answer compared with the index's; target: index p50 < 10 µs at 10,000 lines"
    )
    results.table(table)
