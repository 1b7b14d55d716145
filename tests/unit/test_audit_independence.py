"""audit/ stands alone: a regulator runs it with the standard library and cryptography."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

AUDIT = REPO_ROOT / "audit"
ALLOWED_THIRD_PARTY = {"cryptography"}


def imported_top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_audit_imports_only_itself_the_standard_library_and_cryptography() -> None:
    offenders = {}
    for path in sorted(AUDIT.rglob("*.py")):
        foreign = {
            name
            for name in imported_top_level_names(path)
            if name != "audit"
            and name not in sys.stdlib_module_names
            and name not in ALLOWED_THIRD_PARTY
        }
        if foreign:
            offenders[str(path.relative_to(REPO_ROOT))] = sorted(foreign)
    assert offenders == {}


def test_the_scan_finds_imports_it_must_refuse(tmp_path: Path) -> None:
    # The check above is only as good as this parser: it must see every import form.
    sample = tmp_path / "sample.py"
    sample.write_text("import gateway.cli\nfrom sandbox import x\nimport numpy as np\n")
    assert imported_top_level_names(sample) == {"gateway", "sandbox", "numpy"}
