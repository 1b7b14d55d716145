"""``python -m bench [appends|verify|proofs|authz|http|views|upload|airlock|spawn|trail|all]
[--quick] [--rebuild] [--markdown FILE]``."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from bench.common import VAR, Results, Table, console, machine_info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of the audit ledger, policy decisions, the gateway's HTTP "
        "requests, the view builder, uploads, sandbox spawns and trail searches, each against "
        "a baseline measured in the same run. Results are written up in docs/benchmarks.md.",
    )
    parser.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=(
            "appends",
            "verify",
            "proofs",
            "authz",
            "http",
            "views",
            "upload",
            "airlock",
            "spawn",
            "trail",
            "all",
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (10^5 entries at most, 10^6 rows for views), 1 s per append run "
        "and 2 s per HTTP run",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the cached ledgers under var/bench/ instead of reusing them",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="runs per append configuration, median reported (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--markdown",
        metavar="FILE",
        type=Path,
        help="also write the machine facts and every table as markdown to FILE",
    )
    args = parser.parse_args(argv)

    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    results = Results()
    facts = Table("Machine", ["fact", "value"], left=2)
    for key, value in machine_info().items():
        facts.add(key, value)
    facts.add("command", command.strip())
    results.table(facts)

    started = time.perf_counter()
    if args.what in ("appends", "all"):
        from bench import appends

        console.rule("appends")
        appends.run(results, quick=args.quick, repeat=args.repeat)
    if args.what in ("verify", "all"):
        from bench import verification

        console.rule("verification")
        verification.run(results, quick=args.quick, rebuild=args.rebuild)
    if args.what in ("proofs", "all"):
        from bench import proofs

        console.rule("proofs")
        proofs.run(results, quick=args.quick, rebuild=args.rebuild)
    if args.what in ("authz", "all"):
        from bench import authz

        console.rule("policy decisions")
        authz.run(results, quick=args.quick)
    if args.what in ("http", "all"):
        from bench import http

        console.rule("HTTP requests")
        http.run(results, quick=args.quick)
    if args.what in ("views", "all"):
        from bench import views

        console.rule("views")
        views.run(results, quick=args.quick)
    if args.what in ("upload", "all"):
        from bench import upload

        console.rule("uploads")
        upload.run(results, quick=args.quick)
    if args.what in ("airlock", "all"):
        from bench import airlock

        console.rule("airlock")
        airlock.run(results, quick=args.quick)
    if args.what in ("spawn", "all"):
        from bench import spawn

        console.rule("sandbox spawns")
        spawn.run(results, quick=args.quick)
    if args.what in ("trail", "all"):
        from bench import trail

        console.rule("trail index")
        trail.run(results, quick=args.quick, rebuild=args.rebuild)
    elapsed = time.perf_counter() - started
    console.print(f"done in {elapsed:.0f} s (cached ledgers in {VAR})")

    if args.markdown is not None:
        text = "\n\n".join(t.markdown() for t in results.tables)
        args.markdown.write_text(f"{text}\n\nTotal run time: {elapsed:.0f} s.\n")
        console.print(f"markdown written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
