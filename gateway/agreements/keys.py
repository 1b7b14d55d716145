"""Each organization's signing key, kept by the platform (R12: agreements are signed by
both organizations).

An organization's Ed25519 key is made on its first signature in
``<data_dir>/keys/organizations/<organization id>.pem`` (0600). Its public half is
published in the ledger (``organization.key``, with the key id and the base64 key) in the
same write as the first signature made with it, with a row of ``organization_keys``; a
key whose publication did not commit is published again before it signs. So every
signature can be checked against the ledger alone, offline, for as long as the ledger
lives. The platform holds the keys on the organizations' behalf: a signature says that a
named member of the organization, signed in, signed, which the ledger records beside it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from audit.keystore import load_or_create_private
from audit.signing import b64encode, key_id_of, public_raw, sign
from gateway.db.models import OrganizationKey

ORGANIZATION = re.compile(r"^[0-9a-f]{32}$")
Record = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Signature:
    key_id: str
    public_key: str  # base64 of the raw Ed25519 public key
    value: str  # base64 Ed25519 signature


class OrganizationKeys:
    def __init__(self, folder: Path, record: Record) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder = folder
        self.record = record

    def sign(
        self,
        session: Session,
        organization_id: str,
        domain: bytes,
        body: dict[str, Any],
        *,
        actor: str,
    ) -> Signature:
        """``organization_id``'s signature over ``domain || canonical(body)``, its key
        published first if it is not yet (in ``session``'s write job)."""
        if not ORGANIZATION.match(organization_id):
            raise ValueError(f"not an organization id: {organization_id[:64]!r}")
        private: Ed25519PrivateKey = load_or_create_private(
            self.folder / f"{organization_id}.pem", lambda _: None
        )
        raw = public_raw(private.public_key())
        key_id, public = key_id_of(raw), b64encode(raw)
        if session.get(OrganizationKey, key_id) is None:
            session.add(
                OrganizationKey(key_id=key_id, organization_id=organization_id, public_key=public)
            )
            self.record(
                {
                    "action": "organization.key",
                    "actor": actor,
                    "object": f"org:{organization_id}",
                    "outcome": "ok",
                    "detail": {"key_id": key_id, "public_key": public},
                }
            )
        return Signature(key_id, public, sign(private, domain, body))
