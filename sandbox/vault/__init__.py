"""The encrypted vault of raw dataset versions (see :mod:`sandbox.vault.store`)."""

from sandbox.vault.keys import VaultKeyError
from sandbox.vault.store import StoredVersion, Vault, VaultError, VaultReader
from sandbox.vault.stream import StreamError

__all__ = ["StoredVersion", "StreamError", "Vault", "VaultError", "VaultKeyError", "VaultReader"]
