"""Where a witness reads a ledger's signed statements (:mod:`audit.witness`): a ledger
folder, only read, or a gateway's ``/api/v1/ledger`` API over HTTPS.

Both answer in the gateway's shapes — the latest checkpoint (FORMAT.md §4), the key chain
(``{"ledger", "keys"}``, §5.1) and consistency proofs (§8.4) — so that the witness checks
them alike. A folder's proofs are computed from its entries, not from its index; the
gateway's client is the standard library's: certificates verified (against ``ca_file``
if given), the token read from the environment, redirects not followed, so that the
token goes nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from http.client import HTTPException
from pathlib import Path
from typing import Any, Protocol

from audit import merkle
from audit.checkpoint import Checkpoint
from audit.errors import LedgerError
from audit.keystore import introduced_chain, load_records
from audit.proofs import ConsistencyProof
from audit.store import read_last_checkpoint

TOKEN_ENV = "SBX_TOKEN"  # noqa: S105 - the variable's name, not a token
API_PREFIX = "/api/v1"
MAX_ANSWER = 4 << 20  # bytes; a proof or a key chain is a few kilobytes
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
ANY_SIZE = 1 << 62  # a tree size no ledger reaches: every key an entry introduces counts


class SourceUnreachable(Exception):
    """The source gave no usable answer (network, TLS, HTTP refusal, missing folder)."""


class NoCheckpoint(Exception):
    """The ledger has signed no checkpoint."""


class ProofUnavailable(Exception):
    """The ledger cannot prove consistency between the sizes asked for."""


class Source(Protocol):
    """Where a witness reads the ledger's signed statements, in the shapes of the
    gateway's ``/ledger`` API (FORMAT.md §4, §5.1, §8.4). Methods raise
    :class:`SourceUnreachable`, :class:`NoCheckpoint` or :class:`ProofUnavailable`."""

    def describe(self) -> str: ...

    def checkpoint(self) -> Any:
        """The latest signed checkpoint."""

    def keys(self) -> Any:
        """``{"ledger": <id>, "keys": [<key record>, …]}``, first key to newest."""

    def consistency(self, old: int, new: int) -> Any:
        """A consistency proof between the ledger's checkpoints of sizes ``old``, ``new``."""


class LedgerFolder:
    """A ledger folder (FORMAT.md §6), only read: it may be a copy or on read-only media.
    Proofs are computed from the entries themselves, not from the index."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"ledger folder {self.path}"

    def _ledger_id(self) -> str:
        try:
            header = json.loads((self.path / "LEDGER.json").read_bytes())
        except FileNotFoundError:
            raise SourceUnreachable(
                f"{self.path} is not a ledger folder (no LEDGER.json)"
            ) from None
        except (OSError, ValueError) as exc:
            raise SourceUnreachable(f"{self.path}/LEDGER.json cannot be read: {exc}") from None
        if not isinstance(header, dict) or header.get("format") != "sbx-ledger":
            raise SourceUnreachable(f"{self.path}/LEDGER.json is not an sbx ledger header")
        return str(header.get("ledger"))

    def checkpoint(self) -> Any:
        self._ledger_id()
        try:
            latest, _ = read_last_checkpoint(self.path, repair=False)
        except (OSError, LedgerError) as exc:
            raise SourceUnreachable(f"the checkpoint log cannot be read: {exc}") from None
        if latest is None:
            raise NoCheckpoint(f"{self.path} holds no checkpoint")
        return latest.to_dict()

    def keys(self) -> Any:
        """The keys that entries introduce (the key files say where to look)."""
        ledger = self._ledger_id()
        folder = self.path / "keys"
        try:
            wanted = {record.from_size - 1 for record in load_records(folder)}
            found = dict(_entries_at(self.path, wanted))
            records = introduced_chain(folder, ANY_SIZE, lambda seq: found.get(seq, b""))
        except OSError as exc:
            raise SourceUnreachable(f"the key records cannot be read: {exc}") from None
        return {"ledger": ledger, "keys": [record.to_dict() for record in records]}

    def consistency(self, old: int, new: int) -> Any:
        try:
            data = (self.path / "checkpoints.log").read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            checkpoints = [Checkpoint.decode(line) for line in complete.split(b"\n") if line]
        except (OSError, LedgerError) as exc:
            raise SourceUnreachable(f"the checkpoint log cannot be read: {exc}") from None
        by_size = {checkpoint.size: checkpoint for checkpoint in checkpoints}
        for size in (old, new):
            if size not in by_size:
                raise ProofUnavailable(f"the ledger has no checkpoint of size {size}")
        try:
            path = consistency_path(_leaves(self.path), old, new)
        except OSError as exc:
            raise SourceUnreachable(f"the entries cannot be read: {exc}") from None
        return ConsistencyProof(old=by_size[old], new=by_size[new], path=path).to_dict()


def _lines(folder: Path) -> Iterator[bytes]:
    """Every complete entry line of the segments, in order (an incomplete final line, a
    write cut short, is not an entry)."""
    segments = sorted(
        path
        for path in (folder / "segments").glob("*.log")
        if len(path.stem) == 20 and path.stem.isdigit()
    )
    for segment in segments:
        with open(segment, "rb") as handle:
            rest = b""
            while chunk := handle.read(1 << 20):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                yield from lines


def _entries_at(folder: Path, seqs: set[int]) -> Iterator[tuple[int, bytes]]:
    if not seqs:
        return
    last = max(seqs)
    for seq, line in enumerate(_lines(folder)):
        if seq in seqs:
            yield seq, line
        if seq >= last:
            return


def _leaves(folder: Path) -> Iterator[bytes]:
    sha256 = hashlib.sha256
    for line in _lines(folder):
        yield sha256(b"\x00" + line).digest()


def consistency_path(leaves: Iterable[bytes], old: int, new: int) -> list[bytes]:
    """The RFC 9162 consistency proof from ``old`` to ``new`` over a stream of leaf
    hashes, in one pass with O(log n) memory: find which perfect subtrees the proof
    needs, then keep each as the stream completes it (a stack of pending left siblings,
    as :class:`audit.merkle.CompactRange` folds them, without its per-leaf calls)."""
    needed: set[tuple[int, int]] = set()

    def note(level: int, index: int) -> bytes:
        needed.add((level, index))
        return bytes(merkle.HASH_SIZE)

    merkle.consistency_proof_from(note, old, new)
    found: dict[tuple[int, int], bytes] = {}
    pending: list[bytes] = []
    sha256 = hashlib.sha256
    count = 0
    for leaf in leaves:
        if count == new:
            break
        if (0, count) in needed:
            found[0, count] = leaf
        digest, level, index = leaf, 0, count
        while index & 1:  # a right child completes its parent
            digest = sha256(b"\x01" + pending.pop() + digest).digest()
            level, index = level + 1, index >> 1
            if (level, index) in needed:
                found[level, index] = digest
        pending.append(digest)
        count += 1
    if count < new:
        raise ProofUnavailable(
            f"the ledger holds {count} entries, fewer than its checkpoint of size {new} covers"
        )
    return merkle.consistency_proof_from(lambda level, index: found[level, index], old, new)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could carry the token to another host: answer it as an error."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Gateway:
    """A gateway's ``/api/v1/ledger`` API, over HTTPS with a personal API token."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base = api_base(url)
        self._token = token
        self._timeout = timeout
        context = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file else None)
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _NoRedirects()
        )

    def describe(self) -> str:
        return f"gateway {self.base}"

    def checkpoint(self) -> Any:
        status, answer = self._get("/ledger/checkpoint")
        if status == 404 and _answered(answer):
            raise NoCheckpoint(_detail(answer))
        return self._expect(status, answer)

    def keys(self) -> Any:
        return self._expect(*self._get("/ledger/keys"))

    def consistency(self, old: int, new: int) -> Any:
        query = urllib.parse.urlencode({"old": old, "new": new})
        status, answer = self._get(f"/ledger/consistency?{query}")
        if status in (404, 409, 422) and _answered(answer):
            raise ProofUnavailable(_detail(answer))
        return self._expect(status, answer)

    def _get(self, path: str) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - api_base admits https (and loopback http)
            self.base + path,
            headers={
                "Accept": "application/json",
                "Authorization": f"Bearer {self._token}",
                "User-Agent": "sbx-witness/1",
            },
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                status, body = response.status, response.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as exc:
            status, body = exc.code, _read_quietly(exc)
            if 300 <= status < 400:
                raise SourceUnreachable(
                    f"{self.base} redirects to {exc.headers.get('Location')}; give the final "
                    "address with --url (a witness does not follow redirects)"
                ) from None
        except (OSError, HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise SourceUnreachable(f"{self.base}: {reason}") from None
        if len(body) > MAX_ANSWER:
            raise SourceUnreachable(f"{self.base}{path}: the answer is too large")
        try:
            return status, json.loads(body)
        except ValueError:
            raise SourceUnreachable(f"{self.base}{path}: HTTP {status}, not JSON") from None

    def _expect(self, status: int, answer: Any) -> Any:
        if status == 200:
            return answer
        detail = _detail(answer)
        if status == 401:
            reason = f"the gateway refused the token (HTTP 401: {detail})"
        elif status == 403:
            reason = (
                f"the token's account may not read the ledger (HTTP 403: {detail}); "
                "use a regulator's token"
            )
        else:
            reason = f"HTTP {status}: {detail}"
        raise SourceUnreachable(f"{self.base}: {reason}")


def _read_quietly(error: urllib.error.HTTPError) -> bytes:
    try:
        return error.read(MAX_ANSWER + 1)
    except (OSError, HTTPException):
        return b""
    finally:
        error.close()


def _answered(answer: Any) -> bool:
    """Whether a 4xx is the ledger's own answer, not a path the server does not know (an
    address that is not a gateway must not read as a ledger that lost its checkpoints)."""
    return _detail(answer) != "Not Found"


def _detail(answer: Any) -> str:
    if isinstance(answer, dict) and isinstance(answer.get("detail"), str):
        return str(answer["detail"])
    return json.dumps(answer, ensure_ascii=False)[:300]


def api_base(url: str) -> str:
    """``https://host[:port][/path]`` → its ``/api/v1``. Plain http only to this machine."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"--url must be an https:// address, not {url!r}")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise ValueError("--url must be https:// (plain http only to this machine)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("--url takes the gateway's address only, without query or credentials")
    path = parts.path.rstrip("/")
    if not path.endswith(API_PREFIX):
        path += API_PREFIX
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def open_source(
    *,
    ledger: str | os.PathLike[str] | None = None,
    url: str | None = None,
    token_env: str = TOKEN_ENV,
    ca_file: str | os.PathLike[str] | None = None,
    timeout: float = 30.0,
    environ: Mapping[str, str] = os.environ,
) -> Source:
    """The source the arguments name; :class:`ValueError` with the reason if unusable."""
    if ledger is not None and url is None:
        return LedgerFolder(ledger)
    if ledger is not None or url is None:
        raise ValueError("give either --ledger DIR or --url URL")
    api_base(url)  # refuse a bad address before asking for a token
    token = environ.get(token_env, "").strip()
    if not token:
        raise ValueError(
            f"set the environment variable {token_env} to a personal API token (sbx_…) "
            "of a regulator"
        )
    if ca_file is not None and not Path(ca_file).is_file():
        raise ValueError(f"--ca-file {ca_file} does not exist")
    if timeout <= 0:
        raise ValueError("--timeout must be positive")
    try:
        return Gateway(url, token, ca_file=ca_file, timeout=timeout)
    except ssl.SSLError as exc:
        raise ValueError(f"--ca-file {ca_file} holds no usable certificate: {exc}") from None
