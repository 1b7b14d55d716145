"""The vault's master keys, and the wrapping of data keys under them.

Every dataset version is encrypted under a data key of its own; the data key is stored
only wrapped (AES-256-GCM) under a master key, bound to its version by the associated
data, so that a wrapped key copied to another version does not open. Rotating the master
key re-wraps the data keys (a few bytes each) and never re-encrypts data.

Master keys live in ``<vault>/keys/``: one file per key, 32 random bytes, mode 0600 in a
0700 folder, made on first use, and ``ACTIVE`` naming the one new data keys are wrapped
under. A key is deleted once nothing is wrapped under it. A deployment that keeps master
keys in a KMS or HSM replaces this class; nothing else in the vault sees a master key.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit.store import fsync_dir, write_atomic
from sandbox.vault.stream import KEY_BYTES

NONCE_BYTES = 12
ACTIVE = "ACTIVE"


class VaultKeyError(Exception):
    """A master key is missing or a wrapped key does not open under it."""


class MasterKeys:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def ensure(self) -> str:
        """The active key's id, making the folder and a first key if there are none."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        active = self.folder / ACTIVE
        if active.exists():
            return active.read_text().strip()
        return self.new_key()

    def new_key(self) -> str:
        """Make a master key and make it the active one; its id."""
        key_id = secrets.token_hex(8)
        write_atomic(self.folder / f"{key_id}.key", os.urandom(KEY_BYTES), mode=0o600)
        write_atomic(self.folder / ACTIVE, key_id.encode() + b"\n", mode=0o600)
        return key_id

    def ids(self) -> list[str]:
        return sorted(path.stem for path in self.folder.glob("*.key"))

    def delete(self, key_id: str) -> None:
        if key_id == self.ensure():
            raise VaultKeyError("the active master key cannot be deleted")
        path = self.folder / f"{key_id}.key"
        if path.exists():
            # Overwrite before unlinking (best effort: the file system may keep copies).
            with path.open("r+b") as handle:
                handle.write(os.urandom(KEY_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            path.unlink()
            fsync_dir(self.folder)

    def _key(self, key_id: str) -> bytes:
        try:
            key = (self.folder / f"{key_id}.key").read_bytes()
        except FileNotFoundError:
            raise VaultKeyError(f"no master key {key_id}") from None
        if len(key) != KEY_BYTES:
            raise VaultKeyError(f"master key {key_id} is damaged")
        return key

    def wrap(self, key_id: str, data_key: bytes, bound_to: str) -> bytes:
        """``data_key`` sealed under master key ``key_id`` for the version ``bound_to``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self._key(key_id)).encrypt(nonce, data_key, bound_to.encode())

    def unwrap(self, key_id: str, wrapped: bytes, bound_to: str) -> bytes:
        nonce, sealed = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
        try:
            return AESGCM(self._key(key_id)).decrypt(nonce, sealed, bound_to.encode())
        except InvalidTag:
            raise VaultKeyError(
                f"the data key of {bound_to} does not open under {key_id}"
            ) from None
