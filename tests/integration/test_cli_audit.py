"""`sbx audit …` and `sbx demo` end to end, through the real CLI and a real ledger."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from typer.testing import CliRunner

from audit import ConsistencyProof, InclusionProof, Ledger
from audit.bundle import verify_bundle
from audit.entry import parse
from gateway.api import open_services
from gateway.api.deps import Services
from gateway.authz import Actor
from gateway.cli import app
from gateway.settings import load_settings
from sandbox.views.manifest import read_manifest

runner = CliRunner()


def sbx(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--data-dir", str(data_dir), *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "var"
    for number in range(5):
        code, out, err = sbx(
            data,
            "audit",
            "append",
            "--action",
            "dataset.read",
            "--actor",
            f"user:u{number}",
            "--object",
            "dataset:7",
            "--detail",
            '{"rows": 10, "名称": "企业登记"}',
        )
        assert code == 0, err
        assert f"appended seq {number + 1}" in out
    return data


def test_append_then_tail_shows_entries(data_dir: Path) -> None:
    code, out, _ = sbx(data_dir, "audit", "tail", "-n", "2", "--json")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [entry["seq"] for entry in lines] == [4, 5]
    assert lines[-1]["detail"]["名称"] == "企业登记"


def test_verify_is_zero_when_intact_and_names_the_bad_seq_when_not(data_dir: Path) -> None:
    code, out, _ = sbx(data_dir, "audit", "verify")
    assert code == 0, out
    assert "intact" in out
    segment = next((data_dir / "ledger" / "segments").glob("*.log"))
    lines = segment.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"user:u2", b"user:u9")
    segment.write_bytes(b"\n".join(lines))
    code, out, _ = sbx(data_dir, "audit", "verify", "--json")
    report = json.loads(out)
    assert code == 1
    assert report["ok"] is False
    assert report["problem"]["seq"] == 3
    code, out, _ = sbx(data_dir, "audit", "verify")
    assert code == 1
    assert "first bad seq: 3" in out


def test_proofs_print_documents_that_verify_on_their_own(data_dir: Path) -> None:
    code, out, _ = sbx(data_dir, "audit", "prove", "inclusion", "2", "--json")
    assert code == 0
    inclusion = InclusionProof.from_dict(json.loads(out))
    inclusion.verify()
    assert b'"seq":2' in inclusion.entry
    first_size = inclusion.checkpoint.size
    sbx(data_dir, "audit", "append", "--action", "a", "--actor", "u", "--object", "o")
    code, out, _ = sbx(data_dir, "audit", "checkpoint", "--json")
    assert code == 0
    assert json.loads(out)["size"] == first_size + 1
    code, out, _ = sbx(data_dir, "audit", "prove", "consistency", str(first_size), "--json")
    assert code == 0
    consistency = ConsistencyProof.from_dict(json.loads(out))
    consistency.verify()
    assert (consistency.old.size, consistency.new.size) == (first_size, first_size + 1)
    code, out, _ = sbx(data_dir, "audit", "prove", "inclusion", "2")
    assert code == 0
    assert "verified" in out


def test_export_writes_an_archive_the_verifier_accepts(data_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "evidence.tar.gz"
    code, out, err = sbx(data_dir, "audit", "export", "--from", "2", "--to", "4", str(archive))
    assert code == 0, err
    assert "entries 2..4" in out
    code, out, _ = sbx(data_dir, "audit", "verify", "--archive", str(archive), "--json")
    assert code == 0
    assert json.loads(out)["first_seq"] == 2
    code, _, err = sbx(data_dir, "audit", "export", str(archive))
    assert code == 2
    assert "already exists" in err


def test_keys_rotation_and_pinning(data_dir: Path) -> None:
    code, out, _ = sbx(data_dir, "audit", "keys", "--json")
    first_key = json.loads(out)[0]["key_id"]
    code, out, _ = sbx(data_dir, "audit", "rotate-key")
    assert code == 0
    assert "new signing key" in out
    code, out, _ = sbx(data_dir, "audit", "keys", "--json")
    assert len(json.loads(out)) == 2
    code, _, _ = sbx(data_dir, "audit", "verify", "--trusted-key", first_key)
    assert code == 0
    code, out, _ = sbx(data_dir, "audit", "verify", "--trusted-key", "ab" * 32)
    assert code == 1
    assert "not a trusted key" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "audit",
                "append",
                "--action",
                "a",
                "--actor",
                "u",
                "--object",
                "o",
                "--detail",
                "[1]",
            ],
            "must be a JSON object",
        ),
        (
            ["audit", "append", "--action", "a", "--actor", "u", "--object", "o", "--detail", "{x"],
            "not valid JSON",
        ),
        (
            [
                "audit",
                "append",
                "--action",
                "a",
                "--actor",
                "u",
                "--object",
                "o",
                "--detail",
                '{"n": 0.5}',
            ],
            "floats are not allowed",
        ),
    ],
)
def test_bad_input_is_a_usage_error_and_writes_nothing(
    data_dir: Path, args: list[str], message: str
) -> None:
    before = Ledger(data_dir / "ledger").size
    code, out, err = sbx(data_dir, *args)
    assert code == 2
    assert message in " ".join((out + err).replace("│", " ").split())
    assert Ledger(data_dir / "ledger").size == before


def test_errors_are_messages_not_tracebacks(data_dir: Path, tmp_path: Path) -> None:
    code, _, err = sbx(data_dir, "audit", "prove", "inclusion", "999")
    assert (code, "no entry 999" in err) == (1, True)
    code, _, err = sbx(data_dir, "audit", "prove", "consistency", "4711")
    assert (code, "no checkpoint of size 4711" in err) == (1, True)
    code, _, err = sbx(tmp_path / "empty", "audit", "verify")
    assert (code, "does not exist" in err) == (2, True)
    code, _, err = sbx(tmp_path / "empty", "audit", "tail")
    assert (code, "no ledger" in err) == (2, True)
    assert "Traceback" not in err


def sbx_process(
    *args: str, environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `sbx` script, so that what a user sees (a traceback, say) is seen."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("sbx")), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def test_demo_sets_up_a_user_of_every_role_and_proves_the_ledger(tmp_path: Path) -> None:
    environment = {**os.environ, "SBX_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200"}
    result = sbx_process("demo", "--no-serve", environment=environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("is intact") == 2  # the ledger and the archive
    assert list((tmp_path / "var" / "demo").glob("evidence-*.tar"))
    accounts = json.loads((tmp_path / "var" / "demo-accounts.json").read_text())
    assert (tmp_path / "var" / "demo-accounts.json").stat().st_mode & 0o077 == 0
    roles = {"admin", "reviewer", "approver", "provider_steward", "applicant", "regulator"}
    assert {account["role"] for account in accounts} == roles
    for account in accounts:
        assert account["username"] in result.stdout and account["password"] in result.stdout
    again = sbx_process("demo", "--no-serve", environment=environment)
    assert again.returncode == 0, again.stderr
    assert "setting up" not in again.stdout  # the accounts exist already
    assert all(account["password"] in again.stdout for account in accounts)
    services = open_services(load_settings(data_dir=tmp_path / "var"))
    try:
        for account in accounts:  # every demo user signs in at once, with their role
            signed_in = services.identity.authenticate(account["username"], account["password"])
            assert signed_in.roles == {account["role"]} and not signed_in.must_change_password
        kinds = {
            o.type.value
            for o in services.identity.list_organizations(
                services.identity.shell_actor("test")
            ).items
        }
        assert kinds == {"operator", "provider", "application_unit", "regulator"}
        regulator = next(a for a in accounts if a["role"] == "regulator")
        reader = services.identity.authenticate(regulator["username"], regulator["password"])
        _check_demo_dataset(services, reader.actor(), tmp_path / "var")
    finally:
        services.close()


def _check_demo_dataset(services: Services, reader: Actor, data_dir: Path) -> None:
    """The demo's dataset went the whole way: published, uploaded to the vault only, and
    turned into three views whose signed manifests are in the ledger; a result released
    from the agreement's grant, and the regulator's evidence of that grant verifying offline."""
    catalog = services.catalog
    assert catalog is not None
    (dataset,) = catalog.datasets(reader).items
    assert dataset.status.value == "published" and dataset.versions == 1
    (version,) = catalog.versions(reader, dataset.id)
    assert version.rows == 100_000 and version.quality["warnings"] == []
    assert not (data_dir / "demo" / "citizens.parquet").exists()  # the vault alone keeps it
    entries = [parse(line) for _, line in services.ledger.entries(1)]
    built = {
        (e["object"].removeprefix("grant:"), e["detail"]["view"]): e["detail"]
        for e in entries
        if e["action"] == "view.build"
    }
    assert set(built) == {
        ("demo-grant", "citizens"),
        ("demo-grant", "by_district_age"),
        ("demo-grant", "figures"),
        # the application's grant, made from its signed agreement
        ("demo-agreement", "health_records"),
        ("demo-agreement", "diagnoses_by_district"),
    }
    (key,) = [e["detail"]["public_key"] for e in entries if e["action"] == "view.key"]
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key))  # as the ledger has it
    for (grant, name), detail in built.items():
        path = data_dir / "views" / grant / f"{name}.manifest.json"
        assert read_manifest(path, public)["source"]["version"] == version.id
        assert hashlib.sha256(path.read_bytes()).hexdigest() == detail["manifest_sha256"]
    steps = [e["action"] for e in entries if e["action"].startswith(("application.", "agreement."))]
    assert steps == [
        "application.create",
        "application.attach",
        "application.submit",
        "application.check",
        "application.consent",
        "application.review",
        "application.approve",
        "agreement.create",
        "agreement.sign",
        "agreement.sign",
    ]
    (made,) = [e for e in entries if e["action"] == "grant.create" and "agreement" in e["detail"]]
    assert made["object"] == "grant:demo-agreement"
    # a result out of that grant's sandbox, through the airlock, released and verifiable
    exported = [e["action"] for e in entries if e["action"].startswith("export.")]
    assert exported == [
        "export.request",
        "export.submit",
        "export.review",
        "export.approve",
        "export.release",
        "export.download",
    ]
    (release,) = [e for e in entries if e["action"] == "export.release"]
    (bundle,) = (data_dir / "exports").glob("*/bundle.zip")
    report = verify_bundle(bundle)
    assert report.ok, report.problems
    assert report.manifest_sha256 == release["detail"]["manifest_sha256"]
    spends = [e for e in entries if e["action"] == "privacy.spend"]
    assert [e["outcome"] for e in spends] == ["ok"]
    assert any(e["action"] == "objection.answer" for e in entries)
    # the regulator's evidence of that grant, verified offline by the standalone verifier
    (taken,) = [e for e in entries if e["action"] == "evidence.create"]
    (evidence,) = (data_dir / "evidence").glob("*.zip")
    assert hashlib.sha256(evidence.read_bytes()).hexdigest() == taken["detail"]["sha256"]
    first_key = services.ledger.keychain().records[0].key_id
    checked = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "audit.evidence", str(evidence), "--trusted-key", first_key],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "export.release" in {e["action"] for e in entries if e["seq"] < taken["seq"]}


def test_a_damaged_checkpoint_log_stops_writers_with_a_message(data_dir: Path) -> None:
    log = data_dir / "ledger" / "checkpoints.log"
    last = json.loads(log.read_bytes().splitlines()[-1])
    del last["prev"]  # complete and parseable, but not a checkpoint: not a torn tail
    log.write_bytes(log.read_bytes() + json.dumps(last).encode() + b"\n")
    before = log.read_bytes()
    for args in (
        ["demo", "--no-serve"],
        ["audit", "append", "--action", "a.b", "--actor", "u", "--object", "o"],
    ):
        result = sbx_process("--data-dir", str(data_dir), *args)
        assert result.returncode == 1, result.stdout
        assert "the last checkpoint cannot be read" in result.stderr
        assert "Traceback" not in result.stderr
    assert log.read_bytes() == before
    code, out, _ = sbx(data_dir, "audit", "verify")
    assert code == 1
    assert "checkpoints.log line" in out
