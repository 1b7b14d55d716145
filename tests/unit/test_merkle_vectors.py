"""The proof verifiers agree with every RFC 6962/9162 vector in ../shared/testvectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from audit import merkle
from audit.errors import ProofError
from tests.conftest import shared_dir

VECTORS = shared_dir() / "testvectors" / "rfc6962"


def _cases(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).rglob("*.json"))


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(case: dict[str, Any]) -> list[bytes]:
    return [_b64(p) for p in case.get("proof") or []]


def test_vectors_are_present() -> None:
    # Guard against the parametrised tests silently running on nothing.
    assert len(_cases("inclusion")) > 50, f"inclusion vectors missing under {VECTORS}"
    assert len(_cases("consistency")) > 50, f"consistency vectors missing under {VECTORS}"


@pytest.mark.parametrize("path", _cases("inclusion"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_inclusion_vector(path: Path) -> None:
    case = json.loads(path.read_text())

    def check() -> None:
        merkle.verify_inclusion(
            _b64(case["leafHash"]),
            case["leafIdx"],
            case["treeSize"],
            _proof(case),
            _b64(case["root"]),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("path", _cases("consistency"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_consistency_vector(path: Path) -> None:
    case = json.loads(path.read_text())

    def check() -> None:
        merkle.verify_consistency(
            case["size1"],
            case["size2"],
            _b64(case["root1"]),
            _b64(case["root2"]),
            _proof(case),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()
