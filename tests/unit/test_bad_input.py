"""Bad input gets a clear refusal: nothing half-written, no traceback, never a crash."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from audit import InvalidEntry, Ledger, LedgerError, LedgerOptions, canonical
from audit.verify import verify
from gateway.cli import app
from tests.conftest import REPO_ROOT
from tests.tarfiles import build_tar, read_members


def folder_digest(path: Path) -> str:
    """A hash of every file's name and bytes under ``path``."""
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        if item.is_file() and item.name != "lock":
            digest.update(str(item.relative_to(path)).encode() + b"\0" + item.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("bad-input") / "ledger"
    with Ledger(path, LedgerOptions(max_entry_bytes=4096)) as opened:
        opened.append(action="seed.entry", actor="user:a", object="o:1")
        opened.checkpoint()
        yield opened


cyclic: dict[str, Any] = {}
cyclic["self"] = cyclic

REFUSED = [
    ({"detail": {"ratio": 0.5}}, "floats are not allowed"),
    ({"detail": {"x": [1, float("nan")]}}, "floats are not allowed"),
    ({"detail": {"x": float("inf")}}, "floats are not allowed"),
    ({"detail": {"n": 2**53}}, "outside the safe range"),
    ({"detail": {"n": -(2**60)}}, "outside the safe range"),
    ({"detail": {1: "x"}}, "keys must be strings"),
    ({"detail": {"when": b"bytes"}}, "not a JSON value"),
    ({"detail": {"s": {1, 2}}}, "not a JSON value"),
    ({"detail": ["a", "list"]}, "detail must be a JSON object"),
    ({"detail": "text"}, "detail must be a JSON object"),
    ({"detail": cyclic}, "refers to itself"),
    ({"detail": {"name": "a\ud800b"}}, "surrogate"),
    ({"actor": "x\udfff"}, "surrogate"),
    ({"action": ""}, "action must be a non-empty string"),
    ({"actor": None}, "actor must be a non-empty string"),
    ({"object": 7}, "object must be a non-empty string"),
    ({"outcome": "x" * 257}, "longer than 256"),
    ({"action": "ledger.create"}, "the ledger's own"),
    ({"action": "ledger.key.rotate"}, "the ledger's own"),
    ({"detail": {"blob": "x" * 5000}}, "larger than the limit of 4096"),
    ({"detail": {"blob": "青" * 1500}}, "larger than the limit of 4096"),  # bytes, not chars
]


@pytest.mark.parametrize(("change", "message"), REFUSED)
def test_invalid_entries_are_refused_with_a_reason_and_nothing_is_written(
    ledger: Ledger, change: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {"action": "a.b", "actor": "user:u", "object": "o:1", **change}
    before, size = folder_digest(ledger.path), ledger.size
    with pytest.raises(InvalidEntry, match=message):
        ledger.append(**fields)
    with pytest.raises(InvalidEntry, match=message):
        ledger.append_many([{"action": "fine.one", "actor": "u", "object": "o"}, fields])
    assert (folder_digest(ledger.path), ledger.size) == (before, size)


def test_append_many_refuses_unknown_fields_and_writes_none_of_the_batch(ledger: Ledger) -> None:
    before = folder_digest(ledger.path)
    good = {"action": "fine.one", "actor": "u", "object": "o"}
    for bad in ({**good, "seq": 5}, {**good, "prev": "0" * 64}, {"action": "a", "actor": "u"}):
        with pytest.raises(InvalidEntry, match="unexpected entry fields"):
            ledger.append_many([good, bad])
    assert folder_digest(ledger.path) == before
    assert ledger.append_many([]) == []


def test_the_ledger_still_writes_after_every_refusal(ledger: Ledger) -> None:
    receipt = ledger.append(action="after.refusals", actor="user:u", object="o", detail={"n": 1})
    assert receipt.seq == ledger.size - 1
    assert verify(ledger.path).ok


# ---------------------------------------------------------------- canonical decoding


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a":1,"a":2}', "duplicate key"),
        (b'{"a":1.0}', "floats are not allowed"),
        (b'{"a":NaN}', "NaN is not allowed"),
        (b'{"a":Infinity}', "Infinity is not allowed"),
        (b'{"a":"\xff"}', "not UTF-8"),
        (b'{"a":', "not JSON"),
        (b"", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_bytes_that_are_not_canonical_json_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(canonical.CanonicalError, match=message):
        canonical.decode(data)


@pytest.mark.parametrize(
    "data", [b'{"b":1,"a":2}', b'{"a": 1}', b'{"a":"\\u00e9"}', b' {"a":1}', b'{"a":1}\n']
)
def test_valid_json_in_another_form_is_not_canonical(data: bytes) -> None:
    canonical.decode(data)  # valid JSON...
    with pytest.raises(canonical.CanonicalError, match="not in canonical form"):
        canonical.decode_canonical(data)  # ...but not the one form a record may take


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoding_random_bytes_never_raises_anything_else(data: bytes) -> None:
    try:
        value = canonical.decode_canonical(data)
    except canonical.CanonicalError:
        return
    assert canonical.encode(value) == data


# ---------------------------------------------------------------- archives


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("archive")
    with Ledger(folder / "ledger", LedgerOptions(checkpoint_every=4)) as source:
        for number in range(12):
            source.append(action="a.b", actor="user:u", object=f"o:{number}")
        source.export(2, 9, folder / "good.tar")
    return (folder / "good.tar").read_bytes()


def rebuilt(data: bytes, edit: Any) -> bytes:
    return build_tar(edit([(info.name, body) for info, body in read_members(data)]))


def archive_cases(good: bytes) -> dict[str, bytes]:
    last = read_members(good)[-1][0]
    entries_at = next(i for i, (n, _) in enumerate(read_members(good)) if "/entries/" in n.name)
    return {
        "empty file": b"",
        "random bytes": bytes(range(256)) * 40,
        "truncated in the middle": good[: len(good) // 2],
        "truncated inside the last member": good[: last.offset_data + last.size // 2],
        "gzip header, nothing else": b"\x1f\x8b\x08\x00" + b"\0" * 20,
        "an empty tar": build_tar([]),
        "manifest not first": rebuilt(good, lambda items: items[1:] + items[:1]),
        "no manifest": rebuilt(good, lambda items: items[1:]),
        "manifest is not json": rebuilt(good, lambda items: [(items[0][0], b"{oops")] + items[1:]),
        "manifest is a list": rebuilt(good, lambda items: [(items[0][0], b"[]\n")] + items[1:]),
        "entries missing": rebuilt(good, lambda items: items[:entries_at]),
        "a member twice": rebuilt(good, lambda items: items + items[-1:]),
        "a foreign member": rebuilt(good, lambda items: [*items, ("sbx-archive/x.txt", b"hi")]),
        "a member outside the root": rebuilt(good, lambda items: [*items, ("../etc/x", b"hi")]),
        "entries cut to a torn line": rebuilt(
            good, lambda items: [*items[:-1], (items[-1][0], items[-1][1][:-5])]
        ),
    }


def test_malformed_archives_are_reported_not_raised(tmp_path: Path, archive: bytes) -> None:
    assert verify_bytes(tmp_path, "good.tar", archive).ok
    for name, data in archive_cases(archive).items():
        report = verify_bytes(tmp_path, "case.tar", data)
        assert not report.ok, name
        assert report.problem is not None and report.problem.reason, name


def verify_bytes(folder: Path, name: str, data: bytes) -> Any:
    path = folder / name
    path.write_bytes(data)
    return verify(path)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(position=st.integers(0, 10**9), value=st.integers(1, 255))
def test_any_changed_byte_of_an_archive_is_caught(
    tmp_path: Path, archive: bytes, position: int, value: int
) -> None:
    data = bytearray(archive)
    at = position % len(data)
    data[at] ^= value
    report = verify_bytes(tmp_path, "flipped.tar", bytes(data))
    if report.ok:
        # Only bytes no reader looks at may change unnoticed: tar padding and header
        # fields that do not name, size or place a member.
        assert read_members(bytes(data)) == read_members(archive) or all(
            (a.name, a.size, body_a) == (b.name, b.size, body_b)
            for (a, body_a), (b, body_b) in zip(
                read_members(bytes(data)), read_members(archive), strict=True
            )
        )


# ---------------------------------------------------------------- the command lines


def run(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def test_standalone_verifier_exit_codes(tmp_path: Path, archive: bytes) -> None:
    missing = run("-m", "audit.verify", str(tmp_path / "nothing-here"))
    assert (missing.returncode, "does not exist" in missing.stderr) == (2, True)
    (tmp_path / "good.tar").write_bytes(archive)
    (tmp_path / "witness.txt").write_text("this is not a checkpoint\n")
    witness = run("-m", "audit.verify", str(tmp_path / "good.tar"), "--witness", "witness.txt")
    assert witness.returncode == 2
    assert "cannot read witness file" in witness.stderr
    witness = run("-m", "audit.verify", str(tmp_path / "good.tar"), "--witness", str(tmp_path))
    assert witness.returncode == 2
    (tmp_path / "bad.tar").write_bytes(archive[: len(archive) // 2])
    broken = run("-m", "audit.verify", str(tmp_path / "bad.tar"), "--json")
    assert broken.returncode == 1
    assert '"ok": false' in broken.stdout
    usage = run("-m", "audit.verify")
    assert usage.returncode == 2
    for result in (missing, witness, broken, usage):
        assert "Traceback" not in result.stderr, result.stderr


def test_sbx_cli_refuses_bad_requests_with_a_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sbx = [
        "-c",
        "import sys; from gateway.cli import main; sys.exit(main())",
    ]
    environment = {**os.environ, "SBX_DATA_DIR": str(data), "PYTHONPATH": str(REPO_ROOT)}

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *sbx, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=environment,
        )

    created = call("audit", "append", "--action", "a.b", "--actor", "u", "--object", "o")
    assert created.returncode == 0, created.stderr
    before = folder_digest(data / "ledger")
    cases = [
        (
            ("audit", "append", "--action", "a", "--actor", "u", "--object", "o", "--detail", "1"),
            "must be a JSON object",
        ),
        (
            ("audit", "append", "--action", "ledger.x", "--actor", "u", "--object", "o"),
            "the ledger's own",
        ),
        (("audit", "append", "--action", "a", "--actor", "", "--object", "o"), "non-empty"),
        (("audit", "prove", "inclusion", "999999"), "no entry 999999"),
        (("audit", "prove", "inclusion", "-3"), ""),
        (("audit", "prove", "consistency", "3", "2"), ""),
        (("audit", "export", "--from", "5", "--to", "2", str(tmp_path / "x.tar")), "empty"),
        (("audit", "export", "--from", "0", "--to", "99", str(tmp_path / "x.tar")), "no entry 99"),
        (("audit", "tail", "-n", "-1"), ""),
        (("audit", "verify", "--archive", str(tmp_path / "none.tar")), "does not exist"),
    ]
    runner = CliRunner()  # the same commands in this process: a traceback is an exception
    for args, message in cases:
        result = runner.invoke(app, list(args), env={"SBX_DATA_DIR": str(data)})
        said = " ".join((result.stdout + result.stderr).replace("│", " ").split())
        assert result.exit_code in (1, 2), (args, result.exit_code, said)
        assert message in said, (args, said)
        assert result.exception is None or isinstance(result.exception, SystemExit), args
    assert folder_digest(data / "ledger") == before
    assert not (tmp_path / "x.tar").exists()


def test_a_closed_ledger_refuses_appends_one_at_a_time_and_in_batches(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger")
    ledger.append(action="fine.one", actor="u", object="o")
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.append(action="late.one", actor="u", object="o")
    with pytest.raises(LedgerError, match="closed"):
        ledger.append_many([{"action": "late.many", "actor": "u", "object": "o"}])
