"""Signed view manifests: what a view is, where it came from and what was done to it.

A manifest states the view's kind, grant and spec, the fingerprints of its source and of
the Parquet file built, what the builder achieved (k, cells suppressed, epsilon spent)
and the digests of the policies in force. It is stored beside the view as::

    {"manifest": {...}, "key_id": <hex>, "signature": <base64 Ed25519>}

signed over ``sbx/view-manifest/v1\\n || canonical(manifest)`` (the ledger's canonical
JSON; a float is written as its shortest decimal string, since canonical JSON has no
floats). The SHA-256 of the stored file goes to the ledger with the ``view.build`` entry,
and the builder's public key went to the ledger when the key was made (``view.key``), so
a manifest can be checked offline against the ledger alone.

The signing key is made on first use in the builder's folder (0600).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit import canonical
from audit.errors import KeyringError
from audit.keystore import load_or_create_private
from audit.signing import b64encode, check_signature, key_id_of, public_raw, sign
from audit.store import write_atomic

DOMAIN_VIEW_MANIFEST = b"sbx/view-manifest/v1\n"
KEY_FILE = "view-signing.key"
Record = Callable[[dict[str, Any]], None]


class ManifestError(ValueError):
    """A manifest that cannot be read, or whose signature does not hold."""


def plain(value: Any) -> Any:
    """``value`` with floats as decimal strings and tuples as lists: canonical JSON."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return repr(value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [plain(item) for item in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    return value


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ManifestSigner:
    def __init__(self, folder: Path, record: Record, *, actor: str = "system:view-builder") -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)

        def publish(private: Ed25519PrivateKey) -> None:
            raw = public_raw(private.public_key())
            record(
                {
                    "action": "view.key",
                    "actor": actor,
                    "object": f"key:{key_id_of(raw)}",
                    "detail": {"public_key": b64encode(raw)},
                }
            )

        try:
            self._key = load_or_create_private(folder / KEY_FILE, publish)
        except KeyringError as exc:
            raise ManifestError(str(exc)) from None
        self.public_key: Ed25519PublicKey = self._key.public_key()
        self.key_id = key_id_of(public_raw(self.public_key))

    def write(self, manifest: Mapping[str, Any], destination: Path) -> str:
        """Sign ``manifest``, store it at ``destination`` and return the file's SHA-256."""
        body = plain(manifest)
        signed = {
            "manifest": body,
            "key_id": self.key_id,
            "signature": sign(self._key, DOMAIN_VIEW_MANIFEST, body),
        }
        data = canonical.encode(signed)
        write_atomic(destination, data, mode=0o644)
        return hashlib.sha256(data).hexdigest()


def read_manifest(path: Path, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The manifest stored at ``path``, once its signature has been checked."""
    try:
        signed = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: cannot be read: {exc}") from None
    if not isinstance(signed, dict) or not isinstance(signed.get("manifest"), dict):
        raise ManifestError(f"{path}: not a signed manifest")
    if signed.get("key_id") != key_id_of(public_raw(public_key)):
        raise ManifestError(f"{path}: signed by another key")
    body: dict[str, Any] = signed["manifest"]
    if not check_signature(public_key, DOMAIN_VIEW_MANIFEST, body, signed.get("signature")):
        raise ManifestError(f"{path}: the signature does not hold")
    return body
