"""The operation agreement as a document (R12): made from an approved application, kept as
canonical JSON, signed by both organizations, shown as a PDF.

The document states the parties, the providers, the purpose and scenario, the scope
(datasets and fields, with the view each field gets and why it was asked for), the
method, the period, both parties' duties, the security measures the applicant committed
to and the confidentiality terms (``policies/agreement.yaml``, whose digest it carries).
Its bytes are the ledger's canonical JSON; its SHA-256 is the agreement's identity in the
ledger. A signature is Ed25519 over ``sbx/agreement/v1\\n || canonical(document)`` with
the organization's key, whose public half is in the ledger (``organization.key``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import canonical
from audit.errors import KeyringError
from audit.signing import b64decode, check_signature, key_id_of
from gateway.agreements.terms import Terms
from gateway.applications.snapshots import ApplicationDetail

DOMAIN_AGREEMENT = b"sbx/agreement/v1\n"
KIND = "sbx.operation-agreement"
PARTIES = ("applicant", "operator")


def party(organization: Any) -> dict[str, str]:
    return {
        "id": organization.id,
        "name": organization.name,
        "credit_code": organization.credit_code,
    }


def agreement_document(
    detail: ApplicationDetail,
    *,
    number: str,
    applicant: Any,
    operator: Any,
    providers: Mapping[str, str],
    terms: Terms,
    issued_on: date,
) -> dict[str, Any]:
    """The agreement for the approved application of ``detail``."""
    application = detail.application
    form = application.form
    justification = {
        (requested.dataset_id, item.name): item.justification
        for requested in form.datasets
        for item in requested.fields
    }
    scope = [
        {
            "dataset_id": plan.dataset_id,
            "name": plan.name,
            "provider_id": plan.provider_id,
            "level": plan.level,
            "conditional": plan.conditional,
            "fields": [
                {
                    "name": field.name,
                    "sensitivity": field.sensitivity,
                    "view": str(field.view),
                    "treatments": list(field.treatments),
                    "justification": justification.get((plan.dataset_id, field.name), ""),
                }
                for field in plan.fields
            ],
        }
        for plan in detail.plans
    ]
    return {
        "kind": KIND,
        "version": 1,
        "number": number,
        "issued_on": issued_on.isoformat(),
        "application": {"id": application.id, "round": application.round},
        "parties": {"applicant": party(applicant), "operator": party(operator)},
        "providers": [{"id": key, "name": name} for key, name in sorted(providers.items())],
        "title": form.title,
        "purpose": form.purpose,
        "scenario": form.scenario,
        "period": {"starts_on": form.starts_on.isoformat(), "ends_on": form.ends_on.isoformat()},
        "scope": scope,
        "method": terms.method,
        "duties": {
            "applicant": [dict(term) for term in terms.applicant_duties],
            "operator": [dict(term) for term in terms.operator_duties],
        },
        "security": {
            "measures": form.security_measures,
            "confidentiality": [dict(term) for term in terms.confidentiality],
        },
        "terms_digest": terms.digest,
    }


def document_bytes(document: Mapping[str, Any]) -> bytes:
    return canonical.encode(dict(document))


def document_sha256(document: Mapping[str, Any]) -> str:
    return hashlib.sha256(document_bytes(document)).hexdigest()


def signature_problems(
    document: Mapping[str, Any],
    signatures: Mapping[str, Mapping[str, str]],
    published: Mapping[str, str],
) -> list[str]:
    """Why the agreement's signatures do not hold (empty: both hold). ``signatures`` maps
    each party to its ``key_id``, ``public_key`` and ``signature``; ``published`` maps key
    ids to the public keys the ledger published for the party's organization."""
    problems = []
    body = dict(document)
    for name in PARTIES:
        signed = signatures.get(name)
        if not signed:
            problems.append(f"the {name} has not signed")
            continue
        key_id, public = signed.get("key_id", ""), signed.get("public_key", "")
        try:
            raw = b64decode(public, "public key")
            key = Ed25519PublicKey.from_public_bytes(raw)
        except (KeyringError, ValueError):
            problems.append(f"the {name}'s public key is not an Ed25519 key")
            continue
        if key_id_of(raw) != key_id:
            problems.append(f"the {name}'s key id does not match its public key")
        elif published.get(key_id) != public:
            problems.append(f"the {name}'s key {key_id} was not published in the ledger")
        elif not check_signature(key, DOMAIN_AGREEMENT, body, signed.get("signature")):
            problems.append(f"the {name}'s signature does not hold")
    return problems
