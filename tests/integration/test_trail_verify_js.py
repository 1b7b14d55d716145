"""The console's in-browser verification (``gateway/web/static/trail.js``) in real
Chromium, against proofs, checkpoints and key chains that a real :class:`audit.Ledger`
makes: entries verify across key rotations, and every kind of tampering fails with its
own reason — a changed entry, a changed path hash, a wrong index, a changed checkpoint
root or size, a signature by another key, a key chain with a bad endorsement, a forked
or rolled-back ledger against what the browser witnessed. Its canonical JSON must be
byte for byte that of ``audit.canonical``, and its Merkle proofs must agree with
``audit.merkle``.

The page is served by Playwright's routing from an https origin (WebCrypto needs a
secure context); the ledger's "API" answers from the ledgers built here.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Page, Route

from audit import Ledger, LedgerOptions, ProofError, canonical, merkle
from audit.signing import DOMAIN_CHECKPOINT, DOMAIN_ENDORSEMENT, key_id_of, public_raw, sign
from gateway.trail.times import china_time
from gateway.web.pages.trail import detail_text
from tests.integration import test_console_browser

browser = test_console_browser.browser
ORIGIN = "https://trail.test"
SCRIPT = Path(__file__).resolve().parents[2] / "gateway" / "web" / "static" / "trail.js"
Json = dict[str, Any]

TRICKY_DETAILS: list[Json] = [
    {"organization": "青岛市大数据发展管理局", "request_id": "r-7"},
    {"text": 'quote " backslash \\ slash / tab \t newline \n return \r', "n": -(2**53 - 1)},
    {"controls": "".join(chr(c) for c in range(32)) + "\x7f\u2028\u2029\ufeff", "big": 2**53 - 1},
    {"\U0001f600": "astral", "\ue000": "private use", "\uffff": "last of the plane", "a": [{}]},
    {"nested": {"列表": [None, True, False, [[]], {"z": 0, "y": -1}]}, "": "empty key"},
]


# ---------------------------------------------------------------------- ledgers
@dataclass
class Ledgers:
    """``main``: 16 entries under three keys (rotations at entries 7 and 12), signed at
    sizes 7, 8, 12, 13 and 16. ``fork``: a copy of ``main`` at size 12 that went on with
    other entries (signed at 16 and 18); ``rolled_back``: a copy of ``main`` at size 12."""

    main: Ledger
    fork: Ledger
    rolled_back: Ledger
    private: dict[str, Ed25519PrivateKey]  # key id -> private key, for forging

    def key_ids(self) -> list[str]:
        return [record.key_id for record in self.main.keychain().records]


def private_keys(ledger: Ledger) -> dict[str, Ed25519PrivateKey]:
    found = {}
    for pem in (ledger.path / "keys" / "private").glob("*.pem"):
        key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        found[pem.stem] = key
    return found


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledgers]:
    root = tmp_path_factory.mktemp("ledgers")
    options = LedgerOptions(checkpoint_interval=3600)  # checkpoints only where made here
    main = Ledger(root / "main", options)
    for n, detail in enumerate(TRICKY_DETAILS + [{"n": 5}]):
        main.append(
            action="grant.approve", actor=f"user:u{n}", object=f"grant:g-{n}", detail=detail
        )
    main.checkpoint()  # size 7, the first key
    main.rotate_key()  # entry 7; size 8, the second key
    for n in range(4):
        main.append(action="export.request", actor="user:zhang", object=f"export:e-{n}")
    main.checkpoint()  # size 12
    shutil.copytree(main.path, root / "fork", ignore=shutil.ignore_patterns("lock"))
    shutil.copytree(main.path, root / "rolled-back", ignore=shutil.ignore_patterns("lock"))
    main.rotate_key()  # entry 12; size 13, the third key
    for n in range(3):
        main.append(action="export.review", actor="user:li", object=f"export:e-{n}")
    main.checkpoint()  # size 16
    fork = Ledger(root / "fork", options)
    for n in range(4):
        fork.append(action="export.approve", actor="user:mallory", object=f"export:x-{n}")
    fork.checkpoint()  # size 16, another root
    for n in range(2):
        fork.append(action="export.release", actor="user:mallory", object=f"export:x-{n}")
    fork.checkpoint()  # size 18
    rolled_back = Ledger(root / "rolled-back", options)
    assert [c.size for c in main.checkpoints()] == [7, 8, 12, 13, 16]
    yield Ledgers(main, fork, rolled_back, private_keys(main))
    for ledger in (main, fork, rolled_back):
        ledger.close(checkpoint=False)


# ---------------------------------------------------------------------- the browser side
@dataclass
class Server:
    """What the routed "API" answers: a ledger's keys, proofs and consistency proofs,
    each passed through a change a test makes (tampering)."""

    ledger: Ledger
    keys: Callable[[Json], Json] = lambda keys: keys
    proof: Callable[[int], Json] | None = None
    consistency: Callable[[int, int], Json | None] | None = None
    asked: list[str] = field(default_factory=list)

    def answer(self, route: Route) -> None:
        url = urlsplit(route.request.url)
        self.asked.append(url.path + (f"?{url.query}" if url.query else ""))
        if url.path == "/":
            body = '<!doctype html><meta charset="utf-8"><script src="/static/trail.js"></script>'
            route.fulfill(status=200, content_type="text/html; charset=utf-8", body=body)
        elif url.path == "/static/trail.js":
            route.fulfill(status=200, content_type="text/javascript", body=SCRIPT.read_text())
        elif url.path == "/api/v1/ledger/keys":
            chain = self.ledger.keychain()
            found = {"ledger": chain.ledger, "keys": [r.to_dict() for r in chain.records]}
            self.json(route, self.keys(found))
        elif url.path.startswith("/api/v1/ledger/entries/"):
            seq = int(url.path.split("/")[5])
            proof = self.proof(seq) if self.proof else proof_of(self.ledger, seq)
            self.json(route, proof)
        elif url.path == "/api/v1/ledger/consistency":
            query = parse_qs(url.query)
            old, new = int(query["old"][0]), int(query["new"][0])
            made = (self.consistency or consistency_of(self.ledger))(old, new)
            self.json(route, made)
        else:
            route.fulfill(status=404, body="not here")

    @staticmethod
    def json(route: Route, body: Json | None) -> None:
        if body is None:
            route.fulfill(status=404, content_type="application/json", body='{"detail":"none"}')
        else:
            route.fulfill(status=200, content_type="application/json", body=json.dumps(body))


def proof_of(ledger: Ledger, seq: int, tree_size: int | None = None) -> Json:
    return ledger.prove_inclusion(seq, tree_size).to_dict()


def consistency_of(ledger: Ledger) -> Callable[[int, int], Json | None]:
    def prove(old: int, new: int) -> Json | None:
        try:
            return ledger.prove_consistency(old, new).to_dict()
        except ProofError:
            return None  # the API answers 404: no checkpoint of that size

    return prove


@dataclass
class Browser:
    page: Page
    server: Server

    def verify(self, seq: int, shown: Json | None = None) -> Json:
        result: Json = self.page.evaluate(
            "([seq, shown]) => sbxTrail.verify(seq, {shown})", [seq, shown]
        )
        return result

    def reason(self, seq: int, shown: Json | None = None) -> str:
        result = self.verify(seq, shown)
        assert not result["ok"], result
        return str(result["code"])

    def forget(self) -> None:
        """A browser that has trusted nothing and witnessed nothing yet."""
        self.page.evaluate("localStorage.clear()")

    def stored(self, name: str) -> Any:
        return self.page.evaluate("(name) => JSON.parse(localStorage.getItem(name))", name)

    def call(self, expression: str, argument: Any = None) -> Any:
        return self.page.evaluate(expression, argument)


@pytest.fixture(scope="module")
def chromium(browser: Any, ledgers: Ledgers) -> Iterator[Browser]:
    context = browser.new_context()
    page = context.new_page()
    server = Server(ledgers.main)
    page.route(f"{ORIGIN}/**", lambda route: server.answer(route))
    page.goto(f"{ORIGIN}/")
    assert page.evaluate("isSecureContext && typeof sbxTrail.verify") == "function"
    yield Browser(page, server)
    context.close()


@pytest.fixture
def client(chromium: Browser, ledgers: Ledgers) -> Browser:
    """The browser, fresh, before the untouched main ledger."""
    chromium.server.ledger = ledgers.main
    chromium.server.keys = lambda keys: keys
    chromium.server.proof = None
    chromium.server.consistency = None
    chromium.server.asked.clear()
    chromium.forget()
    return chromium


def shown_of(ledger: Ledger, seq: int) -> Json:
    """What a console row shows of entry ``seq`` (as gateway/web/pages/trail.py renders it)."""
    entry = json.loads(ledger.read_entry(seq))
    return {
        "seq": str(seq),
        "time": china_time(entry["time"]),
        "actor": entry["actor"],
        "action": entry["action"],
        "object": entry["object"],
        "outcome": entry["outcome"],
        "detail": detail_text(entry["detail"]),
    }


def resigned(checkpoint: Json, private: Ed25519PrivateKey, **changes: Any) -> Json:
    body = {**checkpoint, **changes}
    del body["sig"]
    return {**body, "sig": sign(private, DOMAIN_CHECKPOINT, body)}


# ---------------------------------------------------------------------- canonical JSON
def test_canonical_json_is_byte_for_byte_that_of_the_ledger(client: Browser) -> None:
    values: list[Any] = [
        *TRICKY_DETAILS,
        {"b": [1, "x"], "a": "青岛"},
        {"\uffff": 1, "\U0001f600": 2, "\ue000": 3, "a": 4, "": 5, "A": 6, "é": 7, "\U00010000": 8},
        {"z": {}, "y": [], "x": [[[]]], "w": [None, True, False, 0, -0, 1]},
        "text",
        0,
        None,
        [],
        {},
    ]
    # Sent as ASCII JSON, so that both sides parse the same values.
    texts = [json.dumps(value) for value in values]
    encoded = client.call("(texts) => texts.map((t) => sbxTrail.canonical(JSON.parse(t)))", texts)
    assert encoded == [canonical.encode(value).decode() for value in values]
    # Python's canonical bytes parse back unchanged in the browser.
    again = client.call(
        "(texts) => texts.map((t) => sbxTrail.canonical(sbxTrail.parseCanonical(t)))", encoded
    )
    assert again == encoded

    not_canonical = [
        '{"a":1, "b":2}',  # a space
        '{"b":1,"a":2}',  # unsorted
        '{"\U0001f600":2,"\ue000":1}',  # sorted by UTF-16 units, not code points
        '{"a":1.0}',
        '{"a":1e3}',
        '{"a":9007199254740992}',  # beyond 2^53 - 1
        '{"a":1,"a":1}',  # a duplicate key
        '"\\u0041"',  # a needless escape
        '"\\u001F"',  # upper-case hex
        '"\\/"',
        '{"a":-0}',
        '"\\ud800"',  # a lone surrogate
        '{"\\udc00":1}',
        ' {"a":1}',
        "",
        "[1,]",
    ]
    refused = client.call(
        """(texts) => texts.map((t) => {
            try { sbxTrail.parseCanonical(t); return null; } catch (e) { return e.code; }
        })""",
        not_canonical,
    )
    assert refused == ["not-canonical"] * len(not_canonical)
    for text in not_canonical:
        with pytest.raises(canonical.CanonicalError):
            canonical.decode_canonical(text.encode("utf-8", "surrogatepass"))


def python_root(leaf: bytes, index: int, size: int, path: list[bytes]) -> str | None:
    try:
        return merkle.root_from_inclusion_proof(leaf, index, size, path).hex()
    except ProofError:
        return None


def python_consistent(old: int, new: int, old_root: bytes, root: bytes, path: list[bytes]) -> bool:
    try:
        merkle.verify_consistency(old, new, old_root, root, path)
    except ProofError:
        return False
    return True


def test_merkle_proofs_agree_with_the_ledger(client: Browser) -> None:
    """Every inclusion and consistency proof of trees of 1 to 17 leaves, and the same
    proofs at a wrong index or size, with a changed hash or with swapped roots: the
    browser's answer is the reference implementation's."""
    rng = random.Random(9162)
    leaves = [hashlib.sha256(rng.randbytes(8)).digest() for _ in range(17)]
    inclusion: list[list[Any]] = []
    consistency: list[list[Any]] = []
    roots: list[list[Any]] = []  # the reference's answers
    proofs: list[list[bool]] = []
    for size in range(1, len(leaves) + 1):
        tree = leaves[:size]
        root = merkle.root(tree)
        for index in range(size):
            path = merkle.inclusion_proof(tree, index)
            wrong = (index + 1) % size
            inclusion.append([tree[index].hex(), index, size, [h.hex() for h in path], wrong])
            roots.append(
                [
                    python_root(tree[index], index, size, path),
                    python_root(tree[index], wrong, size, path),
                    python_root(tree[index], index, size + 1, path),
                ]
            )
        for old in range(1, size + 1):
            path = merkle.consistency_proof(tree, old)
            old_root = merkle.root(tree[:old])
            bent = [bytes([path[0][0] ^ 1]) + path[0][1:], *path[1:]] if path else [root]
            consistency.append(
                [old, size, old_root.hex(), root.hex()]
                + [[h.hex() for h in path], [h.hex() for h in bent]]
            )
            proofs.append(
                [
                    python_consistent(old, size, old_root, root, path),
                    python_consistent(old, size, old_root, root, bent),
                    python_consistent(old, size, root, old_root, path),
                ]
            )
    answers = client.call(
        """async ([inclusion, consistency]) => {
            const answers = [];
            for (const [leaf, index, size, path, wrong] of inclusion) {
                answers.push([
                    await sbxTrail.rootFromInclusion(leaf, index, size, path),
                    await sbxTrail.rootFromInclusion(leaf, wrong, size, path),
                    await sbxTrail.rootFromInclusion(leaf, index, size + 1, path),
                ]);
            }
            for (const [old, size, oldRoot, root, path, bent] of consistency) {
                answers.push([
                    await sbxTrail.verifyConsistency(old, size, oldRoot, root, path),
                    await sbxTrail.verifyConsistency(old, size, oldRoot, root, bent),
                    await sbxTrail.verifyConsistency(old, size, root, oldRoot, path),
                ]);
            }
            return answers;
        }""",
        [inclusion, consistency],
    )
    assert len(inclusion) == len(consistency) == 153
    assert answers == roots + proofs
    assert all(root is not None for root, _, _ in roots)  # every proof leads to a root
    assert all(valid and not bent for valid, bent, _ in proofs)  # and a changed hash fails


# ---------------------------------------------------------------------- verified entries
def test_entries_verify_across_key_rotations(client: Browser, ledgers: Ledgers) -> None:
    first, second, third = ledgers.key_ids()
    for seq in (0, 3, 7, 11, 12, 15):
        result = client.verify(seq, shown_of(ledgers.main, seq))
        assert result["ok"], result
        assert result["params"]["size"] == 16 and result["params"]["key_id"] == third
        assert result["entry"] == ledgers.main.read_entry(seq).decode()
    assert client.stored("sbx.trail.trust")["key_id"] == first  # pinned at first use
    assert client.stored("sbx.trail.witness")["checkpoint"]["size"] == 16
    message = client.verify(4)
    latest = ledgers.main.latest_checkpoint()
    assert latest is not None and message["params"]["time"] == china_time(latest.time)

    # Older checkpoints, signed by the keys of their time, verify too; the browser asks
    # the ledger to show that its newer witness extends them.
    for seq, size, signer in ((2, 7, first), (9, 12, second), (12, 13, third)):
        client.server.proof = lambda s, size=size: proof_of(ledgers.main, s, size)
        result = client.verify(seq, shown_of(ledgers.main, seq))
        assert result["ok"] and result["params"]["key_id"] == signer, result
        assert result["params"]["witnessed"] == 16
        assert f"/api/v1/ledger/consistency?old={size}&new=16" in client.server.asked
    assert client.stored("sbx.trail.witness")["checkpoint"]["size"] == 16  # the largest stays

    # A browser that saw size 12 first later sees 16, and checks that 16 extends 12.
    client.forget()
    client.server.proof = lambda s: proof_of(ledgers.main, s, 12)
    assert client.verify(1)["ok"]
    client.server.proof = None
    client.server.asked.clear()
    assert client.verify(14)["ok"]
    assert client.server.asked[-1] == "/api/v1/ledger/consistency?old=12&new=16"
    assert client.stored("sbx.trail.witness")["checkpoint"]["size"] == 16


def test_what_the_page_shows_must_be_what_the_entry_says(client: Browser, ledgers: Ledgers) -> None:
    for name, value in (
        ("seq", "2"),
        ("time", "2000-01-01 08:00:00"),
        ("actor", "user:someone-else"),
        ("action", "grant.reject"),
        ("object", "grant:g-9"),
        ("outcome", "denied"),
        ("detail", detail_text({**TRICKY_DETAILS[0], "request_id": "r-8"})),
        ("detail", "not json"),
    ):
        shown = {**shown_of(ledgers.main, 1), name: value}
        result = client.verify(1, shown)
        assert not result["ok"] and result["code"] == "shown-differs", result
        assert result["params"]["fields"] == [name]
        assert result["entry"] == ledgers.main.read_entry(1).decode()  # what it does say


# ---------------------------------------------------------------------- tampering
def changed_entry(ledger: Ledger, seq: int, old: str, new: str) -> Callable[[int], Json]:
    def proof(s: int) -> Json:
        made = proof_of(ledger, s)
        assert old in made["entry"]
        return {**made, "entry": made["entry"].replace(old, new, 1)}

    return proof


def test_a_changed_entry_path_or_index_fails(client: Browser, ledgers: Ledgers) -> None:
    main = ledgers.main
    client.server.proof = changed_entry(main, 1, "r-7", "r-8")
    assert client.reason(1) == "leaf-hash"

    def recomputed(s: int) -> Json:  # the leaf hash made to match the changed bytes
        made = changed_entry(main, 1, "r-7", "r-8")(s)
        return {**made, "leaf_hash": merkle.leaf_hash(made["entry"].encode()).hex()}

    client.server.proof = recomputed
    assert client.reason(1) == "path"
    client.server.proof = changed_entry(main, 1, '"r-7"}', '"r-7" }')
    assert client.reason(1) == "entry-not-canonical"

    def bent_path(s: int) -> Json:
        made = proof_of(main, s)
        hashes = list(made["path"])
        hashes[1] = hashes[1][:-1] + ("0" if hashes[1][-1] != "0" else "1")
        return {**made, "path": hashes}

    client.server.proof = bent_path
    assert client.reason(5) == "path"
    client.server.proof = lambda s: {**proof_of(main, s), "path": proof_of(main, s)["path"][:-1]}
    assert client.reason(5) == "path"

    # The proof of another entry, for entry 6; the proof of entry 5 claiming to be of 6.
    client.server.proof = lambda s: proof_of(main, s - 1)
    assert client.reason(6) == "proof-other-entry"
    client.server.proof = lambda s: {**proof_of(main, s - 1), "seq": s}
    assert client.reason(6) == "entry-seq"
    # Entry 5 with the path of entry 4: the path of another index leads elsewhere.
    client.server.proof = lambda s: {**proof_of(main, s), "path": proof_of(main, s - 1)["path"]}
    assert client.reason(5) == "path"

    # A row's verification says what it checked, and nothing was stored as verified.
    assert client.stored("sbx.trail.witness")["checkpoint"]["size"] == 16


def test_a_changed_or_wrongly_signed_checkpoint_fails(client: Browser, ledgers: Ledgers) -> None:
    main = ledgers.main
    first, second, third = ledgers.key_ids()
    stranger = Ed25519PrivateKey.generate()

    def with_checkpoint(change: Callable[[Json], Json]) -> Callable[[int], Json]:
        def proof(s: int) -> Json:
            made = proof_of(main, s)
            checkpoint = change(copy.deepcopy(made["checkpoint"]))
            return {**made, "checkpoint": checkpoint, "tree_size": checkpoint["size"]}

        return proof

    other_root = merkle.leaf_hash(b"another tree").hex()
    cases: list[tuple[Callable[[Json], Json], str]] = [
        (lambda c: {**c, "root": other_root}, "signature"),
        (lambda c: {**c, "size": 15}, "signature"),
        (lambda c: {**c, "time": c["time"] + 1}, "signature"),
        (lambda c: resigned(c, stranger), "signature"),  # another key, the same key id
        (
            lambda c: resigned(c, stranger, key_id=key_id_of(public_raw(stranger.public_key()))),
            "unknown-key",
        ),
        (lambda c: resigned(c, ledgers.private[first], key_id=first), "key-not-allowed"),  # retired
        (lambda c: resigned(c, ledgers.private[second], key_id=second), "key-not-allowed"),
        (lambda c: {**c, "ledger": "0" * 32}, "checkpoint-ledger"),
        (lambda c: {**c, "v": 2}, "checkpoint-malformed"),
        (lambda c: {key: v for key, v in c.items() if key != "prev"}, "checkpoint-malformed"),
    ]
    for change, reason in cases:
        client.forget()
        client.server.proof = with_checkpoint(change)
        assert client.reason(3) == reason
    # The third key, which signed size 16, may not sign a size before its time.
    client.forget()
    client.server.proof = lambda s: {
        **proof_of(main, s, 12),
        "checkpoint": resigned(
            proof_of(main, s, 12)["checkpoint"], ledgers.private[third], key_id=third
        ),
    }
    assert client.reason(3) == "key-not-allowed"
    assert client.stored("sbx.trail.witness") is None  # nothing false was witnessed


def test_a_bad_key_chain_or_another_first_key_fails(client: Browser, ledgers: Ledgers) -> None:
    stranger = Ed25519PrivateKey.generate()

    def keys_with(change: Callable[[list[Json]], list[Json]]) -> Callable[[Json], Json]:
        return lambda found: {**found, "keys": change(copy.deepcopy(found["keys"]))}

    def endorsed_by_stranger(keys: list[Json]) -> list[Json]:
        body = {k: v for k, v in keys[1].items() if k != "endorsement"}
        keys[1]["endorsement"] = sign(stranger, DOMAIN_ENDORSEMENT, body)
        return keys

    def another_public_key(keys: list[Json]) -> list[Json]:
        raw = public_raw(stranger.public_key())
        keys[2]["public_key"] = base64.b64encode(raw).decode()
        return keys

    def public_key_with_its_id(keys: list[Json]) -> list[Json]:  # a stranger's key, unendorsed
        raw = public_raw(stranger.public_key())
        keys[2].update(public_key=base64.b64encode(raw).decode(), key_id=key_id_of(raw))
        return keys

    def starts_early(keys: list[Json]) -> list[Json]:
        keys[2]["from_size"] = 1
        return keys

    cases: list[tuple[Callable[[list[Json]], list[Json]], str]] = [
        (endorsed_by_stranger, "endorsement"),
        (
            lambda keys: [keys[0], {**keys[1], "created": keys[1]["created"] + 1}, keys[2]],
            "endorsement",
        ),
        (another_public_key, "key-id"),
        (public_key_with_its_id, "endorsement"),
        (starts_early, "key-starts-early"),
        (lambda keys: [keys[0], keys[2]], "key-chain"),  # a link left out
        (lambda keys: [keys[1], keys[2]], "key-chain"),  # the first key left out
        (lambda keys: [{**keys[0], "alg": "RSA"}, *keys[1:]], "keys-malformed"),
        (lambda keys: [], "keys-malformed"),
    ]
    for change, reason in cases:
        client.forget()
        client.server.keys = keys_with(change)
        assert client.reason(3) == reason, change

    # A first key other than the one the browser trusts: pinned at first use, or
    # entered by the regulator from the operator's publication.
    client.forget()
    client.server.keys = lambda found: found
    assert client.verify(3)["ok"]
    other = Ledger(ledgers.main.path.parent / "other", LedgerOptions(checkpoint_interval=3600))
    try:
        other.append(action="grant.approve", actor="user:u", object="grant:g")
        other.checkpoint()
        client.server.ledger = other
        assert client.reason(1) == "first-key"
    finally:
        other.close(checkpoint=False)
    client.forget()
    client.call(
        """(id) => localStorage.setItem(
            'sbx.trail.trust', JSON.stringify({key_id: id, ledger: null, source: 'entered'}))""",
        "ab" * 32,
    )
    client.server.ledger = ledgers.main
    assert client.reason(3) == "first-key"


def test_a_forked_or_rolled_back_ledger_fails_against_the_witness(
    client: Browser, ledgers: Ledgers
) -> None:
    assert client.verify(3)["ok"]  # the main ledger at size 16 is witnessed
    # The fork signed another tree of the same size.
    client.server.ledger = ledgers.fork
    client.server.proof = lambda s: proof_of(ledgers.fork, s, 16)
    assert client.reason(3) == "fork"
    # The fork's newer checkpoint: its tree of 16 is not the one witnessed.
    client.server.proof = None
    assert client.reason(3) == "fork"
    assert client.server.asked[-1] == "/api/v1/ledger/consistency?old=16&new=18"

    # The fork passes off the witnessed checkpoint as its own old one: the proof fails.
    witnessed = ledgers.main.latest_checkpoint()
    assert witnessed is not None

    def lying(old: int, new: int) -> Json:
        made = ledgers.fork.prove_consistency(old, new).to_dict()
        return {**made, "old": witnessed.to_dict()}

    client.server.consistency = lying
    assert client.reason(3) == "consistency"
    assert client.stored("sbx.trail.witness")["checkpoint"] == witnessed.to_dict()

    # A copy of the ledger from before size 16 cannot show that 16 extends it.
    client.server.consistency = None
    client.server.ledger = ledgers.rolled_back
    assert client.reason(3) == "rollback"
    assert client.server.asked[-1] == "/api/v1/ledger/consistency?old=12&new=16"

    # The browser that witnessed nothing yet takes the fork as it is (first use)...
    client.forget()
    client.server.ledger = ledgers.fork
    assert client.verify(14)["ok"]
    # ...and then the main ledger cannot show that it extends to the fork's 18 entries.
    client.server.ledger = ledgers.main
    assert client.reason(14) == "rollback"
