"""Release bundles: written deterministically, every tampering reported, checked against
the ledger, and through `sbx verify-bundle`."""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from audit import Ledger, canonical
from audit.bundle import (
    DOMAIN_RELEASE,
    bundle_manifest,
    ledger_problems,
    main,
    verify_bundle,
    write_bundle,
)
from audit.signing import b64encode, key_id_of, public_raw, sign

Members = dict[str, bytes]
OPERATOR = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()


def public_of(private: Ed25519PrivateKey) -> tuple[str, str]:
    raw = public_raw(private.public_key())
    return key_id_of(raw), b64encode(raw)


def signature_for(manifest: dict[str, Any], private: Ed25519PrivateKey) -> dict[str, str]:
    key_id, public = public_of(private)
    return {
        "key_id": key_id,
        "public_key": public,
        "signature": sign(private, DOMAIN_RELEASE, manifest),
    }


@pytest.fixture
def files(tmp_path: Path) -> list[tuple[str, Path]]:
    (tmp_path / "out" / "图表").mkdir(parents=True)
    (tmp_path / "out" / "a.csv").write_bytes(b"district,count\nshinan,120\n")
    (tmp_path / "out" / "图表" / "b.png").write_bytes(bytes(range(256)) * 64)
    return [
        ("图表/b.png", tmp_path / "out" / "图表" / "b.png"),
        ("a.csv", tmp_path / "out" / "a.csv"),
    ]


def make_bundle(
    destination: Path, files: list[tuple[str, Path]], private: Ed25519PrivateKey = OPERATOR
) -> tuple[dict[str, Any], str]:
    manifest = bundle_manifest({"export": "e-9", "organization": "青岛数据公司"}, files)
    return manifest, write_bundle(destination, manifest, signature_for(manifest, private), files)


@pytest.fixture
def bundle(tmp_path: Path, files: list[tuple[str, Path]]) -> Path:
    make_bundle(tmp_path / "release.zip", files)
    return tmp_path / "release.zip"


def repack(source: Path, change: Callable[[Members], Members], **options: Any) -> Path:
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    target = source.with_name("tampered.zip")
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in change(members).items():
            archive.writestr(name, data, **options)
    return target


def test_a_bundle_round_trips_byte_for_byte(tmp_path: Path, files: list[tuple[str, Path]]) -> None:
    manifest, digest = make_bundle(tmp_path / "one.zip", files)
    _, again = make_bundle(tmp_path / "two.zip", files)
    data = (tmp_path / "one.zip").read_bytes()
    assert data == (tmp_path / "two.zip").read_bytes()
    assert digest == again == hashlib.sha256(data).hexdigest()
    assert [f["name"] for f in manifest["files"]] == ["a.csv", "图表/b.png"]
    assert (manifest["format"], manifest["version"], manifest["export"]) == (
        "sbx-release-bundle",
        1,
        "e-9",
    )
    with zipfile.ZipFile(tmp_path / "one.zip") as archive:
        assert archive.namelist() == [
            "manifest.json",
            "signature.json",
            "README.txt",
            "files/a.csv",
            "files/图表/b.png",
        ]
        assert archive.read("manifest.json") == canonical.encode(manifest)
        assert "验证" in archive.read("README.txt").decode()
    key_id, public = public_of(OPERATOR)
    report = verify_bundle(tmp_path / "one.zip", trusted_keys={key_id: public})
    assert report.ok, report.problems
    assert (report.key_id, report.public_key, report.trusted) == (key_id, public, True)
    assert report.manifest == manifest
    assert report.manifest_sha256 == hashlib.sha256(canonical.encode(manifest)).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.zip", "out", "two.zip"]


def test_a_file_changed_after_the_manifest_is_refused_and_nothing_is_left(
    tmp_path: Path, files: list[tuple[str, Path]]
) -> None:
    manifest = bundle_manifest({}, files)
    files[1][1].write_bytes(b"district,count\nshinan,121\n")
    with pytest.raises(ValueError, match="changed since the manifest"):
        write_bundle(tmp_path / "r.zip", manifest, signature_for(manifest, OPERATOR), files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def with_signature(change: Callable[[dict[str, Any]], None]) -> Callable[[Members], Members]:
    def edit(members: Members) -> Members:
        document = json.loads(members["signature.json"])
        change(document)
        return {**members, "signature.json": canonical.encode(document)}

    return edit


def with_manifest(members: Members) -> Members:
    manifest = json.loads(members["manifest.json"])
    manifest["export"] = "e-10"
    return {**members, "manifest.json": canonical.encode(manifest)}


def other_signature(document: dict[str, Any]) -> None:
    document["signature"] = sign(OPERATOR, DOMAIN_RELEASE, {"export": "e-1"})


def other_key_id(document: dict[str, Any]) -> None:
    document["key_id"] = public_of(STRANGER)[0]


TAMPERING: dict[str, tuple[Callable[[Members], Members], str]] = {
    "changed byte": (
        lambda m: {**m, "files/a.csv": m["files/a.csv"].replace(b"120", b"121")},
        "files/a.csv does not have the SHA-256",
    ),
    "extra file": (lambda m: {**m, "files/c.csv": b"x\n"}, "files/c.csv is not in the manifest"),
    "removed file": (
        lambda m: {k: v for k, v in m.items() if k != "files/a.csv"},
        "files/a.csv is in the manifest but missing",
    ),
    "renamed member": (
        lambda m: {("files/A.csv" if k == "files/a.csv" else k): v for k, v in m.items()},
        "files/A.csv is not in the manifest",
    ),
    "swapped signature": (with_signature(other_signature), "signature does not verify"),
    "edited manifest": (with_manifest, "signature does not verify"),
    "key id of another key": (with_signature(other_key_id), "does not match the public key"),
    "climbing member": (lambda m: {**m, "../evil.sh": b"rm -rf /"}, "points outside the bundle"),
    "absolute member": (lambda m: {**m, "/etc/cron.d/x": b"x"}, "points outside the bundle"),
    "unknown member": (lambda m: {**m, "notes.txt": b"x"}, "unexpected member 'notes.txt'"),
    "no signature": (
        lambda m: {k: v for k, v in m.items() if k != "signature.json"},
        "signature.json is missing",
    ),
    "manifest not canonical": (
        lambda m: {**m, "manifest.json": m["manifest.json"] + b" "},
        "manifest.json is not canonical JSON",
    ),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_tampering_is_reported(bundle: Path, case: str) -> None:
    change, expected = TAMPERING[case]
    report = verify_bundle(repack(bundle, change))
    assert not report.ok
    assert any(expected in problem for problem in report.problems), report.problems


def test_a_key_not_among_the_trusted_ones_is_reported(
    tmp_path: Path, files: list[tuple[str, Path]]
) -> None:
    make_bundle(tmp_path / "r.zip", files, STRANGER)
    assert verify_bundle(tmp_path / "r.zip").ok  # it is signed, just not by whom we trust
    key_id, public = public_of(OPERATOR)
    report = verify_bundle(tmp_path / "r.zip", trusted_keys={key_id: public})
    assert report.problems == (f"key {public_of(STRANGER)[0]} is not one of the trusted keys",)


def test_zip_bombs_are_refused_unread(bundle: Path) -> None:
    expanding = repack(
        bundle, lambda m: {**m, "files/a.csv": bytes(8 << 20)}, compress_type=zipfile.ZIP_DEFLATED
    )
    problems = verify_bundle(expanding).problems
    assert any("would expand from" in p and "zip bomb" in p for p in problems), problems
    # Two directory records pointing at the same compressed data (one stream, many files).
    data = bytearray(bundle.read_bytes())
    with zipfile.ZipFile(bundle) as archive:
        first, second = archive.getinfo("files/a.csv"), archive.getinfo("files/图表/b.png")
    record = data.rfind(b"PK\x01\x02")  # the last directory record: the last member's
    assert data[record + 46 :].startswith("files/图表/b.png".encode())
    assert struct.unpack_from("<L", data, record + 42)[0] == second.header_offset
    struct.pack_into("<L", data, record + 42, first.header_offset)
    overlapping = bundle.with_name("overlap.zip")
    overlapping.write_bytes(bytes(data))
    problems = verify_bundle(overlapping).problems
    assert any("overlap: refused as a zip bomb" in p for p in problems), problems
    assert any("members would expand" in p for p in verify_bundle(bundle, max_bytes=100).problems)


@pytest.mark.parametrize("cut", ["not a zip", "truncated"])
def test_what_is_not_a_whole_zip_is_reported(bundle: Path, cut: str) -> None:
    data = bundle.read_bytes()
    bundle.write_bytes(b"district,count\n" if cut == "not a zip" else data[: len(data) // 2])
    report = verify_bundle(bundle)
    assert not report.ok
    assert report.problems == ("release.zip is not a readable zip file: File is not a zip file",), (
        report.problems
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("/etc/passwd", "absolute path"),
        ("C:/x.csv", "absolute path"),
        ("../x.csv", ". or .. part"),
        ("a/../../x.csv", ". or .. part"),
        ("a\\x.csv", "backslash"),
        ("", "must not be empty"),
        ("a//x.csv", "empty part"),
        ("a/", "empty part"),
        ("a\nx.csv", "unprintable"),
        ("x" * 256, "longer than 255"),
    ],
)
def test_bad_names_are_refused(tmp_path: Path, name: str, reason: str) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ValueError, match=reason):
        bundle_manifest({}, [(name, tmp_path / "f")])


def test_repeated_names_and_reserved_keys_are_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ValueError, match="given twice"):
        bundle_manifest({}, [("f", tmp_path / "f"), ("f", tmp_path / "f")])
    with pytest.raises(ValueError, match="must not set files, version"):
        bundle_manifest({"version": 2, "files": []}, [])
    with pytest.raises(ValueError, match="floats are not allowed"):
        bundle_manifest({"rows": 1.5}, [])


def record_release(ledger_dir: Path, bundle: Path, *, released: bool) -> None:
    report = verify_bundle(bundle)
    with Ledger(ledger_dir) as ledger:
        ledger.append(
            action="organization.key",
            actor="user:li.wei",
            object="org:0123456789abcdef0123456789abcdef",
            detail={"key_id": report.key_id, "public_key": report.public_key},
        )
        if released:
            ledger.append(
                action="export.release",
                actor="user:li.wei",
                object="export:e-9",
                detail={"key_id": report.key_id, "manifest_sha256": report.manifest_sha256},
            )


def test_the_ledger_vouches_for_a_release_it_recorded(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record_release(tmp_path / "ledger", bundle, released=True)
    check = ledger_problems(tmp_path / "ledger", verify_bundle(bundle))
    assert check.problems == ()
    assert (check.key_seq, check.release_seq) == (1, 2)
    # The regulator's way, with the audit package alone.
    assert main([str(bundle), "--ledger", str(tmp_path / "ledger")]) == 0
    assert "key published at seq 1, release recorded at seq 2" in capsys.readouterr().out
    record_release(tmp_path / "other", bundle, released=False)
    check = ledger_problems(tmp_path / "other", verify_bundle(bundle))
    assert check.key_seq == 1
    assert check.release_seq is None
    assert len(check.problems) == 1
    assert "records no release of manifest" in check.problems[0]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    from gateway.cli import app

    return app


def test_verify_bundle_command(app: typer.Typer, tmp_path: Path, bundle: Path) -> None:
    record_release(tmp_path / "ledger", bundle, released=True)
    runner = CliRunner()
    key_id, public = public_of(OPERATOR)

    def sbx(*args: str) -> Any:
        return runner.invoke(app, ["--data-dir", str(tmp_path / "var"), "verify-bundle", *args])

    result = sbx(str(bundle), "--ledger", str(tmp_path / "ledger"), "--key", f"{key_id}={public}")
    assert result.exit_code == 0, result.output
    assert "OK" in result.stdout
    assert "图表/b.png" in result.stdout
    assert key_id in result.stdout
    assert "key published at seq 1, release recorded at seq 2" in result.stdout
    tampered = repack(bundle, TAMPERING["changed byte"][0])
    result = sbx(str(tampered))
    assert result.exit_code == 1
    assert "FAILED" in result.stdout
    assert "files/a.csv does not have the SHA-256" in result.stdout
    result = sbx(str(tmp_path / "missing.zip"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert sbx(str(bundle), "--key", "not-a-key").exit_code == 2
