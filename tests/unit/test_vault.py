"""The vault: streaming encryption, fingerprints, tampering, rotation, access."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.vault import StoredVersion, Vault, VaultError, VaultKeyError, VaultReader
from sandbox.vault.stream import TAG_BYTES, StreamError, new_prefix, open_sealed, seal, sealed_size
from tests.conftest import REPO_ROOT

CHUNK = 64  # small chunks, so that a few hundred bytes span many of them


class Records(list[dict[str, Any]]):
    refuse = False

    def __call__(self, fields: dict[str, Any]) -> None:
        if self.refuse:
            raise OSError("the ledger's disk is full")
        self.append(fields)


def stored_vault(tmp_path: Path, chunk: int = CHUNK) -> tuple[Vault, VaultReader, Records]:
    records = Records()
    root = tmp_path / "vault"
    return Vault(root, records, chunk_size=chunk), VaultReader(root), records


def blocks(data: bytes, size: int = 100) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=700), st.integers(1, 97), st.integers(1, 130))
def test_any_stream_comes_back_as_it_went_in(data: bytes, chunk: int, block: int) -> None:
    key, prefix = os.urandom(32), new_prefix()
    sealed = b"".join(seal(key, prefix, b"ad", blocks(data, block), chunk))
    assert len(sealed) == sealed_size(len(data), chunk)
    assert b"".join(open_sealed(key, prefix, b"ad", blocks(sealed, block), chunk)) == data


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7])
def test_a_version_is_stored_fingerprinted_and_read_back(tmp_path: Path, size: int) -> None:
    import hashlib

    vault, reader, records = stored_vault(tmp_path)
    data = os.urandom(size)
    stored = vault.put(blocks(data), dataset="water", version="water-1", actor="user:u")
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == size
    assert b"".join(reader.blocks("water-1")) == data
    assert records == [
        {
            "action": "vault.store",
            "actor": "user:u",
            "object": "dataset:water",
            "detail": {"version": "water-1", "sha256": stored.sha256, "bytes": size},
        }
    ]
    sealed = (tmp_path / "vault" / "objects" / stored.sha256 / "water-1").read_bytes()
    if size >= 16:
        assert data[:16] not in sealed  # at rest, nothing of the plaintext shows


def test_versions_are_written_once_and_ids_are_checked(tmp_path: Path) -> None:
    vault, _, records = stored_vault(tmp_path)
    vault.put([b"one"], dataset="water", version="v1", actor="user:u")
    with pytest.raises(VaultError, match="written once"):
        vault.put([b"two"], dataset="water", version="v1", actor="user:u")
    for bad in ("", "../escape", "a/b", "x" * 200):
        with pytest.raises(VaultError, match="id is"):
            vault.put([b"x"], dataset="water", version=bad, actor="user:u")
    with pytest.raises(VaultError, match="no version"):
        list(VaultReader(tmp_path / "vault").blocks("v2"))
    assert len(records) == 1


def test_a_failed_upload_or_a_refused_entry_leaves_nothing(tmp_path: Path) -> None:
    vault, reader, records = stored_vault(tmp_path)

    def broken() -> Iterator[bytes]:
        yield b"x" * 500
        raise ConnectionResetError("the upload was cut")

    with pytest.raises(ConnectionResetError):
        vault.put(broken(), dataset="water", version="v1", actor="user:u")
    records.refuse = True
    with pytest.raises(OSError, match="disk is full"):
        vault.put([b"y" * 500], dataset="water", version="v2", actor="user:u")
    root = tmp_path / "vault"
    assert vault.versions() == [] and records == []
    assert [p for p in (root / "objects").rglob("*") if p.is_file()] == []


def damage(path: Path, change: Any) -> None:
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(change(data)))


@pytest.mark.parametrize(
    "how",
    [
        "flip a byte",
        "drop the last chunk",
        "swap two chunks",
        "repeat a chunk",
        "append a byte",
        "empty",
    ],
)
def test_a_changed_object_is_refused(tmp_path: Path, how: str) -> None:
    vault, reader, _ = stored_vault(tmp_path)
    stored = vault.put([os.urandom(4 * CHUNK + 9)], dataset="d", version="v1", actor="user:u")
    path = tmp_path / "vault" / "objects" / stored.sha256 / "v1"
    whole = CHUNK + TAG_BYTES

    def change(data: bytearray) -> bytes:
        if how == "flip a byte":
            data[whole + 3] ^= 1
        elif how == "drop the last chunk":
            del data[4 * whole :]
        elif how == "swap two chunks":
            data[:whole], data[whole : 2 * whole] = data[whole : 2 * whole], data[:whole]
        elif how == "repeat a chunk":
            data[whole:whole] = data[:whole]
        elif how == "append a byte":
            data += b"\x00"
        else:
            data.clear()
        return bytes(data)

    damage(path, change)
    with pytest.raises(VaultError, match="damaged"):
        b"".join(reader.blocks("v1"))


def test_objects_and_keys_do_not_open_for_another_version(tmp_path: Path) -> None:
    vault, reader, _ = stored_vault(tmp_path)
    one = vault.put([b"a" * 300], dataset="d", version="v1", actor="user:u")
    two = vault.put([b"b" * 300], dataset="d", version="v2", actor="user:u")
    root = tmp_path / "vault"
    # v2's object in place of v1's: its chunks are bound to v2 and its own prefix.
    (root / "objects" / one.sha256 / "v1").write_bytes(
        (root / "objects" / two.sha256 / "v2").read_bytes()
    )
    with pytest.raises(VaultError, match="damaged"):
        b"".join(reader.blocks("v1"))
    # v2's wrapped data key in v1's manifest: it is bound to v2.
    manifest = root / "versions" / "v1.json"
    moved = StoredVersion(**{**one.to_dict(), "wrapped_key": two.wrapped_key})
    manifest.write_text(__import__("json").dumps(moved.to_dict()))
    with pytest.raises(VaultKeyError, match="does not open"):
        b"".join(reader.blocks("v1"))


def test_rotation_rewraps_data_keys_without_touching_the_data(tmp_path: Path) -> None:
    vault, reader, records = stored_vault(tmp_path)
    contents = {f"v{n}": os.urandom(200 + n) for n in range(3)}
    for version, data in contents.items():
        vault.put([data], dataset="d", version=version, actor="user:u")
    objects = tmp_path / "vault" / "objects"
    before = {p: p.read_bytes() for p in objects.rglob("*") if p.is_file()}
    keys = tmp_path / "vault" / "keys"
    (old,) = [p.stem for p in keys.glob("*.key")]
    new = vault.rotate_master_key(actor="system:cli")
    assert new != old and [p.stem for p in keys.glob("*.key")] == [new]
    assert {p: p.read_bytes() for p in objects.rglob("*") if p.is_file()} == before
    assert {s.key_id for s in vault.versions()} == {new}
    for version, data in contents.items():
        assert b"".join(reader.blocks(version)) == data
    rotation = records[-1]
    assert rotation["action"] == "vault.rotate"
    assert rotation["detail"] == {"key": new, "retired": [old], "versions": 3}
    assert vault.rotate_master_key(actor="system:cli") != new  # and again


def test_only_the_owner_can_enter_the_vault() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")  # CI and this machine run as root
    base = Path(tempfile.mkdtemp(prefix="sbx-vault-"))  # not under pytest's 0700 folder
    try:
        os.chmod(base, 0o755)  # noqa: S103 - open on purpose: the vault must close itself
        vault, _, _ = stored_vault(base)
        stored = vault.put([b"secret rows"], dataset="d", version="v1", actor="user:u")
        root = base / "vault"
        for folder in (root, root / "keys", root / "versions", root / "objects"):
            assert folder.stat().st_mode & 0o777 == 0o700, folder
        files = [p for p in root.rglob("*") if p.is_file()]
        assert files and all(p.stat().st_mode & 0o777 == 0o600 for p in files)
        control = base / "open.txt"
        control.write_text("anyone may read this")
        control.chmod(0o644)  # noqa: S103 - the positive control

        def as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(command, user=65534, capture_output=True, text=True, check=False)

        assert as_nobody("cat", str(control)).stdout == "anyone may read this"
        for folder in (root, root / "keys", root / "versions"):
            denied = as_nobody("ls", str(folder))
            assert denied.returncode != 0 and "Permission denied" in denied.stderr
        for path in (root / "keys" / "ACTIVE", root / "objects" / stored.sha256 / "v1"):
            denied = as_nobody("cat", str(path))
            assert denied.returncode != 0 and "Permission denied" in denied.stderr
    finally:
        shutil.rmtree(base)


def test_memory_stays_at_a_few_chunks_whatever_the_size(tmp_path: Path) -> None:
    chunk = 1 << 20
    vault, reader, _ = stored_vault(tmp_path, chunk)
    block = os.urandom(1 << 20)
    tracemalloc.start()
    try:
        vault.put((block for _ in range(48)), dataset="d", version="big", actor="user:u")
        _, stored_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = sum(len(chunk) for chunk in reader.blocks("big"))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 48 << 20
    assert stored_peak < 8 * chunk and read_peak < 8 * chunk, (stored_peak, read_peak)


def test_a_stream_cut_at_a_chunk_boundary_is_refused() -> None:
    key, prefix = os.urandom(32), new_prefix()
    sealed = list(seal(key, prefix, b"ad", [b"z" * (3 * CHUNK)], CHUNK))
    assert len(sealed) == 4  # three full chunks and an empty last one
    with pytest.raises(StreamError, match="last chunk"):
        b"".join(open_sealed(key, prefix, b"ad", sealed[:3], CHUNK))


def test_only_the_view_builder_imports_the_reader() -> None:
    allowed = {REPO_ROOT / "sandbox" / "vault", REPO_ROOT / "sandbox" / "views"}
    offenders = []
    for package in ("gateway", "sandbox", "audit", "bench", "scripts"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            if any(folder in path.parents for folder in allowed):
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.ImportFrom):
                    names = [alias.name for alias in node.names]
                if "VaultReader" in names or (
                    isinstance(node, ast.Attribute) and node.attr == "VaultReader"
                ):
                    offenders.append(str(path.relative_to(REPO_ROOT)))
    assert offenders == []
