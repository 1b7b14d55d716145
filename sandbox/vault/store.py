"""The vault: raw dataset versions at rest, encrypted, content-addressed and fingerprinted.

Layout under the vault's folder (0700; every file 0600)::

    keys/<key id>.key, keys/ACTIVE        master keys (sandbox.vault.keys)
    versions/<version id>.json            what is known of a version: its dataset, size,
                                          SHA-256 of the plaintext, the stream's prefix,
                                          and its data key wrapped under a master key
    objects/<sha256>/<version id>         the sealed stream (sandbox.vault.stream)

A version is written once. Its object is named by the SHA-256 of its plaintext, computed
while the upload streams through, and a read checks both every chunk's tag and, at the
end, that same digest. Storing a version records ``vault.store`` in the ledger with the
fingerprint; rotating the master key records ``vault.rotate``.

The capabilities are split: :class:`Vault` stores and rotates, and is what the control
plane gets; :class:`VaultReader` decrypts, and only the view builder (``sandbox/views``)
may hold one (``tests/unit/test_vault.py`` checks the imports). On the machine, the folder
belongs to the service's user and nobody else can enter it; sandboxes run under uids of
their own and never see it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from audit.store import fsync_dir, write_atomic
from sandbox.vault.keys import MasterKeys
from sandbox.vault.stream import DEFAULT_CHUNK, KEY_BYTES, new_prefix, open_sealed, seal

Record = Callable[[dict[str, Any]], None]
READ_BLOCK = 1 << 20
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class VaultError(Exception):
    """A version that is absent, already stored, or whose bytes are not what was stored."""


@dataclass(frozen=True)
class StoredVersion:
    version: str
    dataset: str
    sha256: str  # of the plaintext: the version's fingerprint, also in the ledger
    size: int  # bytes of plaintext
    chunk_size: int
    prefix: str  # hex, the stream's nonce prefix
    key_id: str  # the master key its data key is wrapped under
    wrapped_key: str  # hex

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredVersion:
        return cls(**data)

    @property
    def associated(self) -> bytes:
        """What every chunk of the stream is bound to."""
        return f"sbx-vault/v1 {self.dataset} {self.version}".encode()


class _Folder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = MasterKeys(root / "keys")
        self.versions = root / "versions"
        self.objects = root / "objects"

    def prepare(self) -> None:
        for folder in (self.root, self.versions, self.objects):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        self.keys.ensure()

    def manifest(self, version: str) -> Path:
        return self.versions / f"{_checked(version, 'version')}.json"

    def stored(self, version: str) -> StoredVersion:
        try:
            return StoredVersion.from_dict(json.loads(self.manifest(version).read_bytes()))
        except FileNotFoundError:
            raise VaultError(f"no version {version} in the vault") from None

    def object(self, stored: StoredVersion) -> Path:
        return self.objects / stored.sha256 / stored.version


class Vault:
    """Stores dataset versions and rotates the master key (the control plane's side)."""

    def __init__(self, root: Path, record: Record, *, chunk_size: int = DEFAULT_CHUNK) -> None:
        self._folder = _Folder(root)
        self.record = record
        self.chunk_size = chunk_size
        self._folder.prepare()

    def put(
        self, blocks: Iterable[bytes], *, dataset: str, version: str, actor: str
    ) -> StoredVersion:
        """Encrypt and store ``blocks`` (the version's bytes, streamed in blocks of any
        size) as ``version`` of ``dataset``; record its fingerprint. Nothing is kept if the
        stream fails part-way or the ledger refuses the entry."""
        _checked(dataset, "dataset")
        manifest = self._folder.manifest(version)
        if manifest.exists():
            raise VaultError(f"version {version} is stored already; versions are written once")
        folder = self._folder
        key_id = folder.keys.ensure()
        data_key, prefix = os.urandom(KEY_BYTES), new_prefix()
        draft = StoredVersion(version, dataset, "", 0, self.chunk_size, prefix.hex(), key_id, "")
        digest = hashlib.sha256()
        size = 0

        def measured() -> Iterator[bytes]:
            nonlocal size
            for block in blocks:
                digest.update(block)
                size += len(block)
                yield block

        partial = folder.objects / f".{version}.partial"
        try:
            with os.fdopen(os.open(partial, _NEW_FILE, 0o600), "wb") as out:
                for chunk in seal(data_key, prefix, draft.associated, measured(), self.chunk_size):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            wrapped = folder.keys.wrap(key_id, data_key, version)
            stored = StoredVersion(
                version,
                dataset,
                digest.hexdigest(),
                size,
                self.chunk_size,
                prefix.hex(),
                key_id,
                wrapped.hex(),
            )
            home = folder.object(stored).parent
            home.mkdir(mode=0o700, exist_ok=True)
            os.replace(partial, folder.object(stored))
            fsync_dir(home)
            self.record(
                {
                    "action": "vault.store",
                    "actor": actor,
                    "object": f"dataset:{dataset}",
                    "detail": {"version": version, "sha256": stored.sha256, "bytes": size},
                }
            )
            write_atomic(manifest, json.dumps(stored.to_dict()).encode(), mode=0o600)
        except BaseException:
            partial.unlink(missing_ok=True)
            if not manifest.exists():
                _remove_object(folder, version)
            raise
        return stored

    def versions(self) -> list[StoredVersion]:
        return [
            StoredVersion.from_dict(json.loads(path.read_bytes()))
            for path in sorted(self._folder.versions.glob("*.json"))
        ]

    def discard(self, version: str, *, actor: str, reason: str) -> None:
        """Remove a stored version that nothing refers to (its catalog record could not be
        written), recording ``vault.discard``; a version already gone is left alone."""
        folder = self._folder
        manifest = folder.manifest(version)
        if not manifest.exists():
            return
        stored = folder.stored(version)
        self.record(
            {
                "action": "vault.discard",
                "actor": actor,
                "object": f"dataset:{stored.dataset}",
                "detail": {"version": version, "sha256": stored.sha256, "reason": reason},
            }
        )
        _remove_object(folder, version)
        manifest.unlink()
        fsync_dir(folder.versions)

    def rotate_master_key(self, *, actor: str) -> str:
        """A new master key; every data key re-wrapped under it, then the old keys deleted.
        Data is not re-encrypted. Safe to run again after a crash. Returns the new key's id."""
        keys = self._folder.keys
        new = keys.new_key()
        for stored in self.versions():
            if stored.key_id == new:
                continue
            data_key = keys.unwrap(stored.key_id, bytes.fromhex(stored.wrapped_key), stored.version)
            rewrapped = StoredVersion(
                **{
                    **stored.to_dict(),
                    "key_id": new,
                    "wrapped_key": keys.wrap(new, data_key, stored.version).hex(),
                }
            )
            write_atomic(
                self._folder.manifest(stored.version),
                json.dumps(rewrapped.to_dict()).encode(),
                mode=0o600,
            )
        retired = [key for key in keys.ids() if key != new]
        self.record(
            {
                "action": "vault.rotate",
                "actor": actor,
                "object": "vault",
                "detail": {"key": new, "retired": retired, "versions": len(self.versions())},
            }
        )
        for key_id in retired:
            keys.delete(key_id)
        return new


class VaultReader:
    """Decrypts stored versions. Only the view builder may hold one."""

    def __init__(self, root: Path) -> None:
        self._folder = _Folder(root)

    def stored(self, version: str) -> StoredVersion:
        return self._folder.stored(version)

    def blocks(self, version: str) -> Iterator[bytes]:
        """The plaintext of ``version``, chunk by chunk, each checked before it is
        yielded; :class:`VaultError` if any chunk or the whole does not match."""
        stored = self._folder.stored(version)
        data_key = self._folder.keys.unwrap(
            stored.key_id, bytes.fromhex(stored.wrapped_key), stored.version
        )
        digest = hashlib.sha256()
        size = 0
        try:
            with self._folder.object(stored).open("rb") as sealed:
                chunks = open_sealed(
                    data_key,
                    bytes.fromhex(stored.prefix),
                    stored.associated,
                    iter(lambda: sealed.read(READ_BLOCK), b""),
                    stored.chunk_size,
                )
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    yield chunk
        except FileNotFoundError:
            raise VaultError(f"the object of version {version} is missing") from None
        except ValueError as exc:
            raise VaultError(f"version {version} is damaged: {exc}") from None
        if digest.hexdigest() != stored.sha256 or size != stored.size:
            raise VaultError(f"version {version} does not match its fingerprint")

    def copy_to(self, version: str, destination: BinaryIO) -> None:
        for chunk in self.blocks(version):
            destination.write(chunk)


def _checked(name: str, what: str) -> str:
    if not _ID.fullmatch(name):
        raise VaultError(f"a {what} id is 1-128 letters, digits, dots, dashes or underscores")
    return name


def _remove_object(folder: _Folder, version: str) -> None:
    for path in folder.objects.glob(f"*/{version}"):
        path.unlink(missing_ok=True)
