"""The worked example of audit/FORMAT.md §9 is computed here from the rules of the format,
with hashlib and cryptography only, and every value the document shows must match.

If the format changes, this test says which figure in the document went stale; the
values printed by ``python tests/unit/test_format_example.py`` are the ones to paste.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import merkle
from audit.checkpoint import Checkpoint
from audit.signing import KeyChain, KeyRecord

FORMAT_MD = Path(__file__).resolve().parents[2] / "audit" / "FORMAT.md"
LEDGER_ID = "00112233445566778899aabbccddeeff"
SEED = hashlib.sha256(b"sbx FORMAT.md worked example").digest()
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds


def canonical(value: Any) -> bytes:
    """FORMAT.md §2, as an independent implementation would write it."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def example() -> dict[str, str]:
    private = Ed25519PrivateKey.from_private_bytes(SEED)
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key_id = hashlib.sha256(public).hexdigest()
    key_record = {
        "alg": "Ed25519",
        "created": T0,
        "from_size": 1,
        "key_id": key_id,
        "ledger": LEDGER_ID,
        "previous": None,
        "public_key": b64(public),
        "v": 1,
    }
    bodies = [
        {
            "action": "ledger.create",
            "actor": "system:ledger",
            "detail": {"key": key_record, "ledger": LEDGER_ID},
            "object": f"ledger:{LEDGER_ID}",
            "outcome": "ok",
        },
        {
            "action": "grant.approve",
            "actor": "user:li.wei",
            "detail": {"organization": "青岛市大数据发展管理局", "request_id": "r-7"},
            "object": "grant:g-1",
            "outcome": "ok",
        },
        {
            "action": "export.request",
            "actor": "user:zhang.min",
            "detail": {"files": 2},
            "object": "export:e-9",
            "outcome": "denied",
        },
    ]
    lines, leaves = [], []
    prev = "0" * 64
    for seq, body in enumerate(bodies):
        line = canonical({**body, "prev": prev, "seq": seq, "time": T0 + seq * 1_000_000, "v": 1})
        leaf = hashlib.sha256(b"\x00" + line).digest()
        lines.append(line)
        leaves.append(leaf)
        prev = leaf.hex()
    n01 = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    root3 = hashlib.sha256(b"\x01" + n01 + leaves[2]).digest()
    unsigned = {
        "key_id": key_id,
        "ledger": LEDGER_ID,
        "prev": "0" * 64,
        "root": root3.hex(),
        "size": 3,
        "time": T0 + 2_000_000,
        "v": 1,
    }
    message = b"sbx/checkpoint/v1\n" + canonical(unsigned)
    checkpoint_line = canonical({**unsigned, "sig": b64(private.sign(message))})
    return {
        "public_key": b64(public),
        "key_id": key_id,
        "entry0": lines[0].decode(),
        "entry1": lines[1].decode(),
        "entry2": lines[2].decode(),
        "leaf0": leaves[0].hex(),
        "leaf1": leaves[1].hex(),
        "leaf2": leaves[2].hex(),
        "node01": n01.hex(),
        "root3": root3.hex(),
        "signed_message_sha256": hashlib.sha256(message).hexdigest(),
        "checkpoint": checkpoint_line.decode(),
        "checkpoint_digest": hashlib.sha256(checkpoint_line).hexdigest(),
    }


def test_the_example_follows_the_library() -> None:
    """The independent computation above and audit/ agree on every value."""
    values = example()
    leaves = [bytes.fromhex(values[f"leaf{i}"]) for i in range(3)]
    assert merkle.root(leaves).hex() == values["root3"]
    assert merkle.inclusion_proof(leaves, 1) == [leaves[0], leaves[2]]
    assert merkle.leaf_hash(values["entry1"].encode()) == leaves[1]
    checkpoint = Checkpoint.decode(values["checkpoint"].encode())
    assert checkpoint.digest() == values["checkpoint_digest"]
    record = json.loads(values["entry0"])["detail"]["key"]
    keys = KeyChain(LEDGER_ID, {values["key_id"]})
    keys.add(KeyRecord.from_dict(record))
    checkpoint.check(keys)  # raises if the signature does not hold


def test_format_md_shows_the_computed_values() -> None:
    text = FORMAT_MD.read_text(encoding="utf-8")
    stale = [name for name, value in example().items() if value not in text]
    assert not stale, f"FORMAT.md §9 is out of date for: {', '.join(stale)}"


def test_format_md_sections_are_numbered_in_order() -> None:
    numbers = [int(n) for n in re.findall(r"^## (\d+)\.", FORMAT_MD.read_text(), re.M)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 9


if __name__ == "__main__":
    for name, value in example().items():
        print(f"{name}:\n{value}\n")
