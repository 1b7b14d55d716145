"""The audit ledger's signed statements, for those who check the platform from outside
(regulators, auditors, a witness): the latest checkpoint, the key chain, and the proofs
that tie an entry to a checkpoint or an older checkpoint to a newer one. Everything here
is checked with ``audit/`` alone (``audit.proofs``, ``python -m audit.witness``); the
shapes are those of FORMAT.md §4, §5.1, §8.3 and §8.4. Thin over :class:`audit.Ledger`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from audit import Checkpoint, ConsistencyProof, InclusionProof, Ledger, ProofError
from gateway.api.deps import Requires, ServicesDep
from gateway.api.routes.organizations import PROBLEMS
from gateway.identity.model import Account

router = APIRouter(prefix="/ledger", tags=["ledger"], responses=PROBLEMS)
Reader = Annotated[Account, Depends(Requires("audit_trail", "read"))]
MAX_SIZE = 2**53 - 1  # the largest integer canonical JSON carries (FORMAT.md §2)
Seq = Annotated[int, Path(ge=0, le=MAX_SIZE, description="the entry's sequence number")]
TreeSize = Annotated[
    int | None,
    Query(ge=1, le=MAX_SIZE, description="size of a signed checkpoint (default: the latest)"),
]
OldSize = Annotated[int, Query(ge=1, le=MAX_SIZE, description="size of the older checkpoint")]
NewSize = Annotated[
    int | None,
    Query(ge=1, le=MAX_SIZE, description="size of the newer checkpoint (default: the latest)"),
]
Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


# ------------------------------------------------------------------ schemas
class CheckpointPublic(BaseModel):
    """A signed checkpoint, exactly as the ledger's checkpoint log holds it (FORMAT §4)."""

    key_id: Hex = Field(description="the key that signed it")
    ledger: str = Field(description="the ledger's id")
    prev: Hex = Field(description="SHA-256 of the checkpoint before it in the log")
    root: Hex = Field(description="Merkle root of the first `size` entries")
    sig: str = Field(description="Ed25519 signature, base64")
    size: int = Field(ge=1, description="entries covered: 0 … size − 1")
    time: int = Field(description="when it was signed, µs since 1970 (UTC)")
    v: Literal[1]


class KeyRecordPublic(BaseModel):
    """The public half of a signing key (FORMAT §5.1); the first key has no endorsement."""

    alg: Literal["Ed25519"]
    created: int = Field(description="µs since 1970 (UTC)")
    endorsement: str | None = Field(
        None, description="the previous key's signature over this record; absent for the first"
    )
    from_size: int = Field(ge=1, description="the smallest tree size it may sign")
    key_id: Hex = Field(description="SHA-256 of the raw public key")
    ledger: str
    previous: Hex | None = Field(description="the key it replaces; null for the first")
    public_key: str = Field(description="the raw 32-byte Ed25519 public key, base64")
    v: Literal[1]


class KeysPublic(BaseModel):
    ledger: str = Field(description="the ledger's id")
    keys: list[KeyRecordPublic] = Field(
        description="the key chain, first key (the one to pin) to newest"
    )


class InclusionProofPublic(BaseModel):
    """Entry ``seq`` is leaf ``seq`` of the checkpoint's tree (FORMAT §8.3)."""

    checkpoint: CheckpointPublic
    entry: str = Field(description="the entry's exact canonical JSON")
    leaf_hash: Hex
    path: list[Hex] = Field(description="the audit path, RFC 9162 §2.1.3")
    seq: int
    tree_size: int
    type: Literal["inclusion"]


class ConsistencyProofPublic(BaseModel):
    """The tree of ``old`` is a prefix of the tree of ``new`` (FORMAT §8.4)."""

    new: CheckpointPublic
    old: CheckpointPublic
    path: list[Hex] = Field(description="the consistency proof, RFC 9162 §2.1.4")
    type: Literal["consistency"]


# ------------------------------------------------------------------ routes
@router.get("/checkpoint", response_model=CheckpointPublic)
async def latest_checkpoint(found: ServicesDep, _: Reader) -> CheckpointPublic:
    """The latest signed checkpoint. A witness keeps it and later asks for a consistency
    proof from its size, which shows that nothing it covered was changed or removed."""
    checkpoint = await run_in_threadpool(found.ledger.latest_checkpoint)
    if checkpoint is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            "the ledger has signed no checkpoint yet; one follows its first entries within seconds",
        )
    return _checkpoint(checkpoint)


@router.get("/keys", response_model=KeysPublic, response_model_exclude_unset=True)
async def key_chain(found: ServicesDep, _: Reader) -> KeysPublic:
    """The ledger's signing keys in chain order, each endorsed by the one before; pin the
    first key's id (published by the operator) and check the others from it."""
    chain = await run_in_threadpool(found.ledger.keychain)
    return KeysPublic(
        ledger=chain.ledger,
        keys=[KeyRecordPublic(**record.to_dict()) for record in chain.records],
    )


@router.get("/entries/{seq}/proof", response_model=InclusionProofPublic)
async def inclusion_proof(
    seq: Seq, found: ServicesDep, _: Reader, tree_size: TreeSize = None
) -> InclusionProofPublic:
    """Proof that entry ``seq`` is in the tree of a signed checkpoint: the latest one
    (signed now if none covers the entry yet), or the one of ``tree_size``."""
    proof = await run_in_threadpool(_prove_inclusion, found.ledger, seq, tree_size)
    return InclusionProofPublic(**{**proof.to_dict(), "checkpoint": _checkpoint(proof.checkpoint)})


@router.get("/consistency", response_model=ConsistencyProofPublic)
async def consistency_proof(
    found: ServicesDep, _: Reader, old: OldSize, new: NewSize = None
) -> ConsistencyProofPublic:
    """Proof that the tree of the checkpoint of size ``old`` is a prefix of the tree of
    the checkpoint of size ``new`` (the latest by default): nothing was rewritten."""
    proof = await run_in_threadpool(_prove_consistency, found.ledger, old, new)
    return ConsistencyProofPublic(
        new=_checkpoint(proof.new),
        old=_checkpoint(proof.old),
        path=[node.hex() for node in proof.path],
        type="consistency",
    )


# ------------------------------------------------------------------ helpers
def _checkpoint(checkpoint: Checkpoint) -> CheckpointPublic:
    return CheckpointPublic(**checkpoint.to_dict())


def _prove_inclusion(ledger: Ledger, seq: int, tree_size: int | None) -> InclusionProof:
    size = ledger.size
    if seq >= size:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no entry {seq}: the ledger has {size} entries"
        )
    if tree_size is not None and tree_size <= seq:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"a tree of size {tree_size} holds entries 0 … {tree_size - 1}, not entry {seq}",
        )
    try:
        return ledger.prove_inclusion(seq, tree_size)
    except ProofError as exc:
        raise _unprovable(exc) from None


def _prove_consistency(ledger: Ledger, old: int, new: int | None) -> ConsistencyProof:
    if new is not None and old > new:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"old ({old}) must not be greater than new ({new})",
        )
    try:
        return ledger.prove_consistency(old, new)
    except ProofError as exc:
        raise _unprovable(exc) from None


def _unprovable(exc: ProofError) -> HTTPException:
    """A proof that cannot be made: no checkpoint or entry of that size is 404 (the
    ledger's message says which), anything else the ledger's present state refuses 409."""
    reason = str(exc).split("; see ")[0]  # the ledger's hint names a shell command
    missing = reason.startswith(("there is no checkpoint", "no entry"))
    code = status.HTTP_404_NOT_FOUND if missing else status.HTTP_409_CONFLICT
    return HTTPException(code, reason)
