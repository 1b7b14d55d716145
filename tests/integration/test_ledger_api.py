"""``/api/v1/ledger``: the checkpoint, the key chain and the proofs, read by a regulator
and an administrator, refused to others; every proof it returns verifies with ``audit``
alone against the key chain it publishes; bad input is a 4xx with a reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from audit import Checkpoint, ConsistencyProof, InclusionProof
from audit.signing import KeyChain, KeyRecord
from gateway.db.models import OrganizationType
from tests.integration.test_api_abuse import API, Gateway
from tests.integration.test_identity import credit_code


class LedgerGateway(Gateway):
    """The abuse tests' gateway with a regulator (Chen, of the city's big-data bureau)
    whose token a witness uses, and a signed checkpoint."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        super().__init__(database_url, data_dir)
        bureau = self.identity.create_organization(
            self.admin.actor(),
            kind=OrganizationType.REGULATOR,
            name="市大数据局",
            credit_code=credit_code(4),
        )
        self.chen, _ = self.member(bureau.id, "chen", "regulator")
        self.tokens["chen"] = self.identity.issue_token(self.chen.actor(), name="witness")[1]
        self.ledger.checkpoint()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Gateway]]:
    folder = tmp_path_factory.mktemp("ledger-api")
    made = LedgerGateway(f"sqlite:///{folder / 'sbx.db'}", folder / "var")
    with TestClient(made.app) as client:
        yield client, made
    made.close()


def get(platform: tuple[TestClient, Gateway], who: str, path: str, **params: Any) -> Any:
    client, made = platform
    return client.get(f"{API}/ledger{path}", params=params, headers=made.headers(who))


def pinned_chain(answer: dict[str, Any], first_key: str) -> KeyChain:
    chain = KeyChain(answer["ledger"], {first_key})
    for record in answer["keys"]:
        chain.add(KeyRecord.from_dict(record))
    return chain


def test_regulators_and_administrators_read_the_checkpoint_and_keys(platform: Any) -> None:
    _, made = platform
    first_key = made.ledger.keychain().records[0].key_id
    for who in ("chen", "admin"):
        keys = get(platform, who, "/keys")
        assert keys.status_code == 200, keys.text
        assert keys.json()["ledger"] == made.ledger.ledger_id
        first = keys.json()["keys"][0]
        assert "endorsement" not in first  # the first key's record, exactly as kept
        assert first == made.ledger.keychain().records[0].to_dict()
        answer = get(platform, who, "/checkpoint")
        assert answer.status_code == 200, answer.text
        checkpoint = Checkpoint.from_dict(answer.json())
        checkpoint.check(pinned_chain(keys.json(), first_key))
        assert checkpoint == made.ledger.latest_checkpoint()


@pytest.mark.parametrize("path", ["/checkpoint", "/keys", "/entries/0/proof", "/consistency"])
def test_others_are_refused_and_the_refusal_is_recorded(platform: Any, path: str) -> None:
    client, made = platform
    refused = get(platform, "ann", path, old=1)
    assert refused.status_code == 403
    assert refused.json()["detail"]
    anonymous = client.get(f"{API}/ledger{path}", params={"old": 1})
    assert anonymous.status_code == 401
    denied = [e for e in made.entries() if e["action"] == "request.denied"]
    assert denied[-2]["detail"]["action"] == "audit_trail:read"
    assert denied[-2]["actor"] == f"user:{made.ann.id}"


def test_inclusion_and_consistency_proofs_verify_with_the_published_keys(platform: Any) -> None:
    _, made = platform
    first_key = made.ledger.keychain().records[0].key_id
    older = made.ledger.latest_checkpoint()
    assert older is not None
    rotated = made.ledger.rotate_key()  # the proofs span two keys, the second endorsed
    made.ledger.append(action="dataset.read", actor="user:x", object="dataset:1")
    newer = made.ledger.checkpoint()
    keys = get(platform, "chen", "/keys").json()
    assert [k["key_id"] for k in keys["keys"]] == [first_key, rotated.key_id]
    assert keys["keys"][1]["endorsement"] == rotated.endorsement
    chain = pinned_chain(keys, first_key)
    assert newer.key_id == rotated.key_id != older.key_id
    for seq, tree_size in ((0, None), (older.size - 1, older.size), (newer.size - 1, None)):
        params = {} if tree_size is None else {"tree_size": tree_size}
        answer = get(platform, "chen", f"/entries/{seq}/proof", **params)
        assert answer.status_code == 200, answer.text
        proof = InclusionProof.from_dict(answer.json())
        proof.verify(chain)
        assert proof.entry == made.ledger.read_entry(seq)
        assert proof.checkpoint.size == (tree_size or newer.size)

    answer = get(platform, "chen", "/consistency", old=older.size)
    assert answer.status_code == 200, answer.text
    proof = ConsistencyProof.from_dict(answer.json())
    proof.verify(chain)
    assert (proof.old, proof.new) == (older, newer)
    same = get(platform, "chen", "/consistency", old=newer.size, new=newer.size)
    ConsistencyProof.from_dict(same.json()).verify(chain)
    assert same.json()["path"] == []


def test_bad_requests_are_refused_with_a_reason(platform: Any) -> None:
    _, made = platform
    size = made.ledger.size
    latest = made.ledger.latest_checkpoint()
    assert latest is not None
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        (f"/entries/{size + 5}/proof", {}, 404, f"no entry {size + 5}: the ledger has"),
        ("/entries/3/proof", {"tree_size": 3}, 422, "a tree of size 3 holds entries 0 … 2"),
        ("/entries/1/proof", {"tree_size": latest.size + 10}, 404, "there is no checkpoint"),
        ("/entries/-1/proof", {}, 422, "greater than or equal to 0"),
        ("/entries/x/proof", {}, 422, "valid integer"),
        ("/entries/0/proof", {"tree_size": 0}, 422, "greater than or equal to 1"),
        (f"/entries/{2**60}/proof", {}, 422, "less than or equal to"),
        ("/consistency", {}, 422, "Field required"),
        ("/consistency", {"old": 0}, 422, "greater than or equal to 1"),
        ("/consistency", {"old": -4}, 422, "greater than or equal to 1"),
        ("/consistency", {"old": 5, "new": 2}, 422, "old (5) must not be greater than new (2)"),
        ("/consistency", {"old": latest.size + 1}, 404, f"no checkpoint of size {latest.size + 1}"),
        ("/consistency", {"old": 1, "new": latest.size + 7}, 404, "there is no checkpoint"),
    ]
    before = made.ledger.size
    for path, params, code, reason in cases:
        answer = get(platform, "chen", path, **params)
        assert answer.status_code == code, (path, params, answer.text)
        assert reason in str(answer.json()["detail"]), (path, params, answer.text)
        assert "sbx audit" not in str(answer.json()["detail"])
    assert made.ledger.size == before  # a refused read records nothing
