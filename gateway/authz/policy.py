"""The access-control policy: Casbin's model and policy files, checked, loaded and hashed.

Casbin is the source of truth for what the files mean (:func:`build_enforcer`); requests
are decided by the compiled index in :mod:`gateway.authz.decisions`, which must give
Casbin's answer for every request (a test checks all of them). The files live in
``policies/``: ``model.conf``, ``policy.csv`` and ``duties.toml``.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import casbin
from casbin.model import Model
from casbin.persist.adapter import Adapter, load_policy_line

from gateway.authz.errors import PolicyError

POLICY_FILES = ("model.conf", "policy.csv", "duties.toml")
EFFECTS = ("allow", "deny")
ANY_DOMAIN = "*"
ROLE_PREFIX = "role:"


@dataclass(frozen=True)
class Grant:
    """A role held by a user in an organization: ``g, user:<id>, role:<name>, org:<id>``."""

    user: str
    role: str
    organization: str

    def line(self) -> list[str]:
        return [self.user, f"{ROLE_PREFIX}{self.role}", self.organization]


@dataclass(frozen=True)
class Duties:
    """Which actions (``object:action``) separation of duties applies to."""

    decisions: frozenset[str]
    reviews: frozenset[str]
    data_content: frozenset[str]
    two_person: frozenset[str]
    roles_by_organization_type: dict[str, frozenset[str]] = field(hash=False)


@dataclass(frozen=True)
class PolicyFiles:
    """The policy folder's files as read, with the digest that identifies this version."""

    folder: Path
    texts: dict[str, bytes] = field(hash=False)
    duties: Duties

    @property
    def digest(self) -> str:
        """SHA-256 over each file's name and bytes: changes when any file changes."""
        hasher = hashlib.sha256()
        for name in POLICY_FILES:
            data = self.texts[name]
            hasher.update(f"{name}\0{len(data)}\0".encode())
            hasher.update(data)
        return hasher.hexdigest()

    def file_digests(self) -> dict[str, str]:
        return {name: hashlib.sha256(data).hexdigest() for name, data in self.texts.items()}


def read_policy_files(folder: Path) -> PolicyFiles:
    """Read and check the policy folder; :class:`PolicyError` says what is wrong where."""
    texts: dict[str, bytes] = {}
    for name in POLICY_FILES:
        try:
            texts[name] = (folder / name).read_bytes()
        except OSError as exc:
            raise PolicyError(f"{folder / name}: cannot be read ({exc.strerror or exc})") from None
    duties = _parse_duties(folder / "duties.toml", texts["duties.toml"])
    roles = {role for allowed in duties.roles_by_organization_type.values() for role in allowed}
    _check_policy_lines(folder / "policy.csv", texts["policy.csv"], roles)
    return PolicyFiles(folder=folder, texts=texts, duties=duties)


def _check_policy_lines(path: Path, data: bytes, roles: set[str]) -> None:
    """Casbin skips lines it does not understand without a word; refuse them instead."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 at byte {exc.start}") from None
    seen: dict[tuple[str, ...], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = [token.strip() for token in line.split(",")]
        where = f"{path}:{number}"
        if tokens[0] != "p" or len(tokens) != 6:
            raise PolicyError(f"{where}: expected 'p, role, domain, object, action, allow|deny'")
        _, subject, _, obj, act, effect = tokens
        if not all(tokens):
            raise PolicyError(f"{where}: empty field")
        if effect not in EFFECTS:
            raise PolicyError(f"{where}: effect must be allow or deny, not {effect!r}")
        if not subject.startswith(ROLE_PREFIX) or subject[len(ROLE_PREFIX) :] not in roles:
            raise PolicyError(f"{where}: {subject!r} is not a role named in duties.toml")
        if ":" in obj or ":" in act:
            raise PolicyError(f"{where}: object and action may not contain ':'")
        if tuple(tokens) in seen:
            raise PolicyError(f"{where}: repeats line {seen[tuple(tokens)]}")
        seen[tuple(tokens)] = number


def _parse_duties(path: Path, data: bytes) -> Duties:
    try:
        raw = tomllib.loads(data.decode("utf-8"))
        lists = {
            name: frozenset(_strings(raw[name], f"{name}"))
            for name in ("decisions", "reviews", "data_content", "two_person")
        }
        by_type = {
            str(kind): frozenset(_strings(roles, f"roles_by_organization_type.{kind}"))
            for kind, roles in raw["roles_by_organization_type"].items()
        }
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, AttributeError) as exc:
        raise PolicyError(f"{path}: {exc}") from None
    if not lists["two_person"] <= lists["decisions"]:
        raise PolicyError(f"{path}: every two_person action must also be a decision")
    return Duties(roles_by_organization_type=by_type, **lists)


def _strings(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise PolicyError(f"{name} must be a list of non-empty strings")
    return value


class _TextAdapter(Adapter):  # type: ignore[misc]
    """Casbin's policy from the bytes that were checked and hashed, not re-read from disk."""

    def __init__(self, text: str) -> None:
        self.text = text

    def load_policy(self, model: Model) -> None:
        for line in self.text.splitlines():
            load_policy_line(line.strip(), model)


def build_enforcer(files: PolicyFiles, grants: Iterable[Grant] = ()) -> casbin.Enforcer:
    """A Casbin enforcer of the files' model and policy plus the users' role grants."""
    model = Model()
    model.load_model_from_text(files.texts["model.conf"].decode("utf-8"))
    enforcer = casbin.Enforcer(model, _TextAdapter(files.texts["policy.csv"].decode("utf-8")))
    enforcer.enable_auto_save(False)  # grants live in the database, not in the file
    lines = [grant.line() for grant in grants]
    if lines:
        enforcer.add_grouping_policies(lines)
    return enforcer
