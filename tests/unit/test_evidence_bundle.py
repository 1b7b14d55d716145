"""Evidence bundles over real ledgers: written deterministically, verified on their own, against
the ledger, and on a machine that has nothing but Python, cryptography and the audit
package; every kind of tampering is reported with its reason and exit status."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from packaging.requirements import Requirement
from typer.testing import CliRunner

from audit import Ledger, LedgerOptions, canonical
from audit.bundle import DOMAIN_RELEASE, bundle_manifest, verify_bundle, write_bundle
from audit.evidence import (
    DOMAIN_EVIDENCE,
    Document,
    Written,
    ledger_match,
    main,
    verify_evidence,
    write_evidence,
)
from audit.signing import b64encode, key_id_of, public_raw, sign
from audit.verify import entries_between
from tests.conftest import REPO_ROOT
from tests.unit.test_audit_independence import ALLOWED_THIRD_PARTY

Members = dict[str, bytes]
OPERATOR = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()


@dataclass
class Made:
    """A ledger, the bundle of some of its entries and what went into it."""

    ledger: Path
    bundle: Path
    written: Written
    first_key: str
    seqs: list[int]
    agreement_seq: int
    release_seq: int


def signature_for(
    private: Ed25519PrivateKey, domain: bytes, body: dict[str, Any]
) -> dict[str, str]:
    raw = public_raw(private.public_key())
    return {
        "key_id": key_id_of(raw),
        "public_key": b64encode(raw),
        "signature": sign(private, domain, body),
    }


def release_bundle(folder: Path) -> tuple[Path, str, str]:
    """A release bundle signed by the operator: its path, manifest digest and key id."""
    (folder / "out").mkdir()
    (folder / "out" / "counts.csv").write_bytes(b"district,count\nshinan,120\n")
    files = [("results/counts.csv", folder / "out" / "counts.csv")]
    manifest = bundle_manifest({"export": "e-9"}, files)
    signature = signature_for(OPERATOR, DOMAIN_RELEASE, manifest)
    write_bundle(folder / "release.zip", manifest, signature, files)
    report = verify_bundle(folder / "release.zip")
    assert report.manifest_sha256 is not None and report.key_id is not None
    return folder / "release.zip", report.manifest_sha256, report.key_id


def make(folder: Path, *, rotate: bool = True) -> Made:
    folder.mkdir(parents=True)
    agreement = folder / "agreement.json"
    agreement.write_bytes(canonical.encode({"number": "SBX-2026-00001", "parties": ["甲", "乙"]}))
    digest = hashlib.sha256(agreement.read_bytes()).hexdigest()
    release, manifest_sha256, key_id = release_bundle(folder)
    with Ledger(folder / "ledger", LedgerOptions(checkpoint_every=5)) as ledger:

        def add(action: str, obj: str, **detail: Any) -> int:
            return ledger.append(action=action, actor="user:li", object=obj, detail=detail).seq

        seqs = [add("grant.create", "grant:g-1", title="海岸线 × 市场主体")]
        for n in range(12):
            add("noise.other", f"grant:g-{n % 3 + 2}", n=n)
            if n % 3 == 0:
                seqs.append(add("sandbox.execute", "session:s-1", grant="g-1", cell=n))
        agreement_seq = add("agreement.create", "agreement:a-1", sha256=digest, grant="g-1")
        if rotate:
            ledger.rotate_key()
        release_seq = add(
            "export.release",
            "export:e-9",
            grant="g-1",
            manifest_sha256=manifest_sha256,
            key_id=key_id,
        )
        seqs += [agreement_seq, release_seq]
        first_key = ledger.keychain().records[0].key_id
        written = write_evidence(
            ledger,
            folder / "evidence.zip",
            entries=seqs,
            documents=[
                Document("agreements/SBX-2026-00001.json", agreement, agreement_seq),
                Document("exports/e-9.zip", release, release_seq, kind="release-bundle"),
            ],
            scope={"grant": "g-1"},
            created_by="user:regulator",
            created=1_795_000_000_000_000,
            body={"id": "ev-1"},
        )
    return Made(
        folder / "ledger",
        folder / "evidence.zip",
        written,
        first_key,
        seqs,
        agreement_seq,
        release_seq,
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    return make(tmp_path_factory.mktemp("evidence") / "platform")


def members_of(bundle: Path) -> Members:
    with zipfile.ZipFile(bundle) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def repack(
    source: Path, target: Path, change: Callable[[Members], Members], **options: Any
) -> Path:
    changed = change(members_of(source))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate names some cases make
        with zipfile.ZipFile(target, "w") as archive:
            for name, data in changed.items():
                archive.writestr(name.split("\0")[0], data, **options)
    return target


def manifest_of(members: Members) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(members["manifest.json"])
    return value


def lines_of(members: Members, name: str) -> list[bytes]:
    return members[name].splitlines(keepends=True)


# ---------------------------------------------------------------------- a good bundle


def test_a_bundle_verifies_and_says_what_it_holds(
    made: Made, capsys: pytest.CaptureFixture[str]
) -> None:
    report = verify_evidence(made.bundle, trusted_keys=[made.first_key])
    assert report.ok, (report.problems, report.untrusted)
    assert report.entries == len(made.seqs) == made.written.entries
    assert report.trust == f"first key {made.first_key} is pinned"
    assert report.exit_code() == 0
    manifest = report.manifest
    assert manifest is not None
    assert manifest["scope"] == {"grant": "g-1"} and manifest["id"] == "ev-1"
    assert [seq for seq, _ in manifest["entries"]] == sorted(made.seqs)
    assert [(d["name"], d["kind"], d["seq"]) for d in manifest["documents"]] == [
        ("agreements/SBX-2026-00001.json", "file", made.agreement_seq),
        ("exports/e-9.zip", "release-bundle", made.release_seq),
    ]
    members = members_of(made.bundle)
    assert list(members)[:5] == [
        "manifest.json",
        "signature.json",
        "README.txt",
        "checkpoint.json",
        "entries.jsonl",
    ]
    assert len([name for name in members if name.startswith("keys/")]) == 2  # rotated once
    assert "证据包" in members["README.txt"].decode()
    # entries.jsonl holds the ledger's exact lines; the checkpoint is one the ledger signed
    lines = {seq: line for seq, line in entries_between(made.ledger, 0, max(made.seqs) + 1)}
    assert lines_of(members, "entries.jsonl") == [lines[seq] + b"\n" for seq in made.seqs]
    assert members["checkpoint.json"] + b"\n" in (made.ledger / "checkpoints.log").read_bytes()
    assert report.manifest_sha256 == made.written.manifest_sha256
    assert hashlib.sha256(made.bundle.read_bytes()).hexdigest() == made.written.sha256
    assert (
        main([str(made.bundle), "--trusted-key", made.first_key, "--ledger", str(made.ledger)]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith(f"OK: evidence bundle {made.bundle} verifies")
    assert "exports/e-9.zip  release-bundle" in out
    assert "the checkpoint is the ledger's" in out


def test_the_same_ledger_and_scope_give_the_same_bytes(made: Made, tmp_path: Path) -> None:
    copy = tmp_path / "ledger"
    shutil.copytree(made.ledger, copy)
    with Ledger(copy) as ledger:
        again = write_evidence(
            ledger,
            tmp_path / "again.zip",
            entries=made.seqs,
            documents=[
                Document(
                    "agreements/SBX-2026-00001.json",
                    made.ledger.parent / "agreement.json",
                    made.agreement_seq,
                ),
                Document(
                    "exports/e-9.zip",
                    made.ledger.parent / "release.zip",
                    made.release_seq,
                    kind="release-bundle",
                ),
            ],
            scope={"grant": "g-1"},
            created_by="user:regulator",
            created=1_795_000_000_000_000,
            body={"id": "ev-1"},
        )
    assert again == made.written
    assert (tmp_path / "again.zip").read_bytes() == made.bundle.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.zip", "ledger"]  # no leftovers


def test_the_writer_refuses_documents_no_entry_names(made: Made, tmp_path: Path) -> None:
    copy = tmp_path / "ledger"
    shutil.copytree(made.ledger, copy)
    stray = tmp_path / "stray.pdf"
    stray.write_bytes(b"%PDF-1.7 not named anywhere")
    release = made.ledger.parent / "release.zip"
    cases = [
        ([Document("x.pdf", stray, made.agreement_seq)], "does not name the SHA-256"),
        ([Document("x.pdf", stray, 2)], "entry 2 is not in the bundle"),
        ([Document("../x.pdf", stray, made.agreement_seq)], ". or .. part"),
        (
            [Document("e.zip", release, made.agreement_seq, kind="release-bundle")],
            "not a successful export.release",
        ),
    ]
    with Ledger(copy) as ledger:
        for documents, reason in cases:
            with pytest.raises(ValueError, match=re.escape(reason)):
                write_evidence(
                    ledger,
                    tmp_path / "e.zip",
                    entries=made.seqs,
                    documents=documents,
                    scope={},
                    created_by="user:r",
                    created=0,
                )
        with pytest.raises(ValueError, match="must not set entries"):
            write_evidence(
                ledger,
                tmp_path / "e.zip",
                entries=[1],
                scope={},
                created_by="u",
                created=0,
                body={"entries": []},
            )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger", "stray.pdf"]


# ---------------------------------------------------------------------- tampering


def edit_entry(members: Members) -> Members:
    lines = lines_of(members, "entries.jsonl")
    lines[1] = lines[1].replace(b'"cell":0', b'"cell":9')
    return {**members, "entries.jsonl": b"".join(lines)}


def drop_middle(members: Members) -> Members:
    entries, proofs = lines_of(members, "entries.jsonl"), lines_of(members, "proofs.jsonl")
    del entries[2], proofs[2]
    return {**members, "entries.jsonl": b"".join(entries), "proofs.jsonl": b"".join(proofs)}


def drop_middle_everywhere(members: Members) -> Members:
    manifest = manifest_of(members)
    del manifest["entries"][2]
    return {**drop_middle(members), "manifest.json": canonical.encode(manifest)}


def alter_proof(members: Members) -> Members:
    proofs = lines_of(members, "proofs.jsonl")
    proof = json.loads(proofs[3])
    proof["path"][0] = hashlib.sha256(b"forged").hexdigest()
    proofs[3] = canonical.encode(proof) + b"\n"
    return {**members, "proofs.jsonl": b"".join(proofs)}


def alter_checkpoint(everywhere: bool) -> Callable[[Members], Members]:
    def change(members: Members) -> Members:
        checkpoint = json.loads(members["checkpoint.json"])
        checkpoint["root"] = hashlib.sha256(b"another tree").hexdigest()
        changed = {**members, "checkpoint.json": canonical.encode(checkpoint)}
        if everywhere:
            manifest = manifest_of(members)
            manifest["checkpoint"] = checkpoint
            changed["manifest.json"] = canonical.encode(manifest)
        return changed

    return change


def swap_document(members: Members) -> Members:
    name = "documents/agreements/SBX-2026-00001.json"
    return {**members, name: members[name].replace("甲".encode(), "丙".encode())}


def alter_manifest(members: Members) -> Members:
    manifest = manifest_of(members)
    manifest["scope"] = {"grant": "g-2"}
    return {**members, "manifest.json": canonical.encode(manifest)}


def signed_by(private: Ed25519PrivateKey, members: Members, manifest: dict[str, Any]) -> Members:
    document = {
        "algorithm": "Ed25519",
        "domain": "sbx/evidence/v1",
        **signature_for(private, DOMAIN_EVIDENCE, manifest),
    }
    return {
        **members,
        "manifest.json": canonical.encode(manifest),
        "signature.json": canonical.encode(document),
    }


def drop_first_key(members: Members) -> Members:
    return {
        name: data
        for name, data in members.items()
        if not (name.startswith("keys/") and json.loads(data)["previous"] is None)
    }


def without(name: str) -> Callable[[Members], Members]:
    return lambda m: {k: v for k, v in m.items() if k != name}


TAMPERING: dict[str, tuple[Callable[[Members], Members], str, int]] = {
    "entry changed": (
        edit_entry,
        "does not hash to the leaf hash the manifest lists: the entry was changed",
        1,
    ),
    "entry removed from the middle": (drop_middle, "the manifest lists entry", 1),
    "entry removed from the middle and the manifest": (
        drop_middle_everywhere,
        "the signature does not verify",
        1,
    ),
    "proof path altered": (alter_proof, "does not lead to the checkpoint's root", 1),
    "checkpoint altered": (
        alter_checkpoint(False),
        "checkpoint.json is not the checkpoint the manifest names",
        1,
    ),
    "checkpoint altered in the manifest too": (alter_checkpoint(True), "has a bad signature", 1),
    "document swapped": (swap_document, "does not have the SHA-256 the manifest says", 1),
    "manifest altered": (alter_manifest, "the signature does not verify", 1),
    "signed by a stranger": (
        lambda m: signed_by(STRANGER, m, manifest_of(m)),
        "which is not one of the ledger's keys",
        3,
    ),
    "unsigned": (without("signature.json"), "signature.json is missing", 1),
    "first key removed": (drop_first_key, "keys/ holds 0 first keys (previous null), not one", 1),
    "climbing member": (lambda m: {**m, "../evil.sh": b"rm -rf /"}, "points outside the bundle", 1),
    "absolute member": (lambda m: {**m, "/etc/cron.d/x": b"x"}, "points outside the bundle", 1),
    "unknown member": (lambda m: {**m, "notes.txt": b"x"}, "unexpected member 'notes.txt'", 1),
    "extra document": (
        lambda m: {**m, "documents/x.pdf": b"%PDF"},
        "documents/x.pdf is not in the manifest",
        1,
    ),
    "duplicate member": (
        lambda m: {**m, "entries.jsonl\0dup": m["entries.jsonl"]},
        "appears twice",
        1,
    ),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_tampering_is_reported_with_its_reason(made: Made, tmp_path: Path, case: str) -> None:
    change, expected, code = TAMPERING[case]
    tampered = repack(made.bundle, tmp_path / "tampered.zip", change)
    report = verify_evidence(tampered, trusted_keys=[made.first_key])
    assert report.exit_code() == code, (report.problems, report.untrusted)
    assert any(expected in problem for problem in (*report.problems, *report.untrusted)), (
        report.problems,
        report.untrusted,
    )
    if case == "entry removed from the middle":
        seqs = sorted(made.seqs)
        assert (
            f"entries.jsonl line 3 is entry {seqs[3]}; the manifest lists entry {seqs[2]} there: "
            "an entry was removed, added or reordered"
        ) in report.problems
        assert "entries.jsonl ends after 6 lines; the manifest lists 7 entries" in str(
            report.problems
        )


def test_a_whole_bundle_from_another_ledger_is_not_trusted(made: Made, tmp_path: Path) -> None:
    forged = make(tmp_path / "forger", rotate=False)  # self-consistent, signed by its own chain
    assert verify_evidence(forged.bundle).ok  # on trust, it holds together…
    report = verify_evidence(forged.bundle, trusted_keys=[made.first_key])  # …but not pinned
    assert report.exit_code() == 3
    assert report.untrusted == (
        f"the ledger's first key is {forged.first_key}, not a trusted key: the bundle does not "
        "come from the trusted ledger",
    )
    assert main([str(forged.bundle), "--trusted-key", made.first_key]) == 3
    # …and its checkpoint is not the real ledger's
    match = ledger_match(made.ledger, verify_evidence(forged.bundle))
    assert not match.ok and "the folder holds ledger" in match.problems[0]
    assert main([str(forged.bundle), "--ledger", str(made.ledger)]) == 4


def test_a_nested_release_bundle_is_checked_and_tied_to_its_entry(
    made: Made, tmp_path: Path
) -> None:
    members = members_of(made.bundle)
    nested = tmp_path / "nested.zip"
    nested.write_bytes(members["documents/exports/e-9.zip"])
    edited = repack(
        nested, tmp_path / "edited.zip", lambda m: {**m, "files/results/counts.csv": b"x\n"}
    )
    data = edited.read_bytes()
    members["documents/exports/e-9.zip"] = data
    manifest = manifest_of(members)
    manifest["documents"][1].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    shutil.copytree(made.ledger, tmp_path / "ledger")
    with Ledger(tmp_path / "ledger") as ledger:  # the ledger's own key: only the content speaks
        _, private = ledger.signing_key()
    tampered = repack(
        made.bundle, tmp_path / "t.zip", lambda _: signed_by(private, members, manifest)
    )
    report = verify_evidence(tampered, trusted_keys=[made.first_key])
    assert report.problems == (
        "documents/exports/e-9.zip is not a valid release bundle: files/results/counts.csv is "
        "2 bytes, the manifest says 26",
    )


def test_zip_bombs_and_broken_zips_are_refused_unread(made: Made, tmp_path: Path) -> None:
    expanding = repack(
        made.bundle,
        tmp_path / "bomb.zip",
        lambda m: {**m, "documents/agreements/SBX-2026-00001.json": bytes(8 << 20)},
        compress_type=zipfile.ZIP_DEFLATED,
    )
    problems = verify_evidence(expanding).problems
    assert any("would expand from" in p and "zip bomb" in p for p in problems), problems
    data = bytearray(made.bundle.read_bytes())
    with zipfile.ZipFile(made.bundle) as archive:
        first, last = archive.infolist()[3], archive.infolist()[-1]
    record = data.rfind(b"PK\x01\x02")  # the last directory record points at the first's data
    struct.pack_into("<L", data, record + 42, first.header_offset)
    (tmp_path / "overlap.zip").write_bytes(bytes(data))
    problems = verify_evidence(tmp_path / "overlap.zip").problems
    assert any("overlap: refused as a zip bomb" in p for p in problems), (last.filename, problems)
    assert any(
        "members would expand" in p for p in verify_evidence(made.bundle, max_bytes=100).problems
    )
    (tmp_path / "cut.zip").write_bytes(made.bundle.read_bytes()[: len(data) // 3])
    report = verify_evidence(tmp_path / "cut.zip")
    assert report.problems == ("cut.zip is not a readable zip file: File is not a zip file",)
    assert report.exit_code() == 1


def test_the_command_line_tells_outcomes_apart(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = repack(made.bundle, tmp_path / "t.zip", edit_entry)
    assert main([str(tampered), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["exit"] == 1
    assert any("the entry was changed" in p for p in report["problems"])
    assert main([str(made.bundle), "--json", "--ledger", str(made.ledger)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ledger_match"]["ok"] and report["trust"].endswith(
        "taken on trust (pin it with --trusted-key)"
    )
    assert main([str(tmp_path / "missing.zip")]) == 2
    assert main([str(made.bundle), "--trusted-key", "not-an-id"]) == 2
    assert main([str(made.bundle), "--ledger", str(tmp_path / "nowhere")]) == 2
    assert "is not a ledger folder" in capsys.readouterr().err
    assert (
        main([str(repack(made.bundle, tmp_path / "s.zip", TAMPERING["signed by a stranger"][0]))])
        == 3
    )
    assert "NOT TRUSTED" in capsys.readouterr().out


def test_a_ledger_that_lost_its_latest_checkpoint_does_not_vouch(
    made: Made, tmp_path: Path
) -> None:
    copy = tmp_path / "ledger"
    shutil.copytree(made.ledger, copy)
    log = copy / "checkpoints.log"
    checkpoint = members_of(made.bundle)["checkpoint.json"]
    os.chmod(log, 0o644)
    log.write_bytes(log.read_bytes().replace(checkpoint + b"\n", b""))
    match = ledger_match(copy, verify_evidence(made.bundle))
    assert match.position is None  # found by the root of the first entries instead…
    assert match.problems == (  # …which hold, but nothing in the ledger covers them now
        f"the ledger's latest checkpoint (size {match.latest_size}) does not cover the bundle's "
        f"(size {json.loads(checkpoint)['size']})",
    )


def test_sbx_verify_evidence(made: Made, tmp_path: Path) -> None:
    from gateway.cli import app

    runner = CliRunner()

    def sbx(*args: str) -> Any:
        return runner.invoke(app, ["--data-dir", str(tmp_path / "var"), "verify-evidence", *args])

    result = sbx(str(made.bundle), "--trusted-key", made.first_key, "--ledger", str(made.ledger))
    assert result.exit_code == 0, result.output
    assert "OK" in result.stdout and "exports/e-9.zip" in result.stdout
    assert f"first key {made.first_key} is pinned" in result.stdout
    tampered = repack(made.bundle, tmp_path / "t.zip", swap_document)
    result = sbx(str(tampered))
    assert result.exit_code == 1 and "does not have the SHA-256" in result.stdout
    stranger = repack(made.bundle, tmp_path / "s.zip", TAMPERING["signed by a stranger"][0])
    assert sbx(str(stranger)).exit_code == 3
    assert sbx(str(tmp_path / "missing.zip")).exit_code == 2
    assert sbx(str(made.bundle), "--trusted-key", "x").exit_code == 2


# ---------------------------------------------------------------------- a clean machine


def runtime_distributions(names: set[str]) -> set[str]:
    """The installed distributions ``names`` need at run time, themselves included."""
    found: set[str] = set()
    waiting = list(names)
    while waiting:
        name = waiting.pop()
        if name in found:
            continue
        found.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                waiting.append(requirement.name)
    return found


def clean_python(folder: Path) -> Path:
    """A Python with nothing importable but the standard library, the third-party
    packages audit/ may use (and what they need) and a copy of audit/ — a regulator's
    machine. Returns its interpreter."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(folder / "python")], check=True
    )
    (site,) = (folder / "python" / "lib").glob("python3*/site-packages")
    for name in runtime_distributions(ALLOWED_THIRD_PARTY):
        for top in {Path(str(f)).parts[0] for f in metadata.distribution(name).files or ()} - {
            ".."
        }:
            source = Path(str(metadata.distribution(name).locate_file(top)))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    shutil.copytree(
        REPO_ROOT / "audit",
        folder / "regulator" / "audit",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (site / "regulator.pth").write_text(f"{folder / 'regulator'}\n")
    return folder / "python" / "bin" / "python"


def test_the_verifier_runs_on_a_clean_machine(made: Made, tmp_path: Path) -> None:
    python = clean_python(tmp_path)
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), "-I", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    probe = run("-c", PROBE)
    assert probe.stdout.split("\n")[:2] == [
        f"{tmp_path}/regulator/audit/__init__.py",
        "True True True True",
    ], probe.stderr
    result = run(
        "-m",
        "audit.evidence",
        str(made.bundle),
        "--trusted-key",
        made.first_key,
        "--ledger",
        str(made.ledger),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"OK: evidence bundle {made.bundle} verifies")
    tampered = repack(made.bundle, tmp_path / "t.zip", swap_document)
    result = run("-m", "audit.evidence", str(tampered), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert any("does not have the SHA-256" in p for p in json.loads(result.stdout)["problems"])
    assert "Traceback" not in result.stderr


# Where `audit` comes from on that machine (the copy), and that sbx's other packages and
# the gateway's dependencies cannot be imported there at all.
PROBE = """
import importlib.util, audit
print(audit.__file__)
names = ("gateway", "sandbox", "fastapi", "sqlalchemy")
print(*(importlib.util.find_spec(name) is None for name in names))
"""
