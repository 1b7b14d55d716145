"""The treatments policy: which treatment each sensitivity class may undergo per level."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sandbox.identifiers import Kind
from sandbox.views.treatments import (
    SensitivityClass,
    Treatment,
    TreatmentPolicyError,
    load_treatments,
)
from tests.conftest import REPO_ROOT

SHIPPED = REPO_ROOT / "policies" / "treatments.yaml"
DIRECT, QUASI = SensitivityClass.DIRECT_IDENTIFIER, SensitivityClass.QUASI_IDENTIFIER


def test_the_shipped_policy_decides_every_class_at_every_level() -> None:
    policy = load_treatments(SHIPPED)
    assert list(policy.levels) == ["L1", "L2", "L3", "L4"]
    assert len(policy.allowed) == 4 * len(SensitivityClass)
    assert policy.allows(DIRECT, "L1", Treatment.PSEUDONYMIZE)
    assert not policy.allows(DIRECT, "L3", Treatment.MASK)
    assert policy.refusal(QUASI, "L3", Treatment.KEEP) == (
        "a quasi_identifier field at level L3 may undergo drop, generalize, suppress, not keep"
    )
    assert policy.refusal(QUASI, "L9", Treatment.DROP) == "there is no security level 'L9'"
    assert not any(policy.allows(cls, "L4", Treatment.KEEP) for cls in SensitivityClass)
    assert policy.class_of(Kind.RESIDENT_ID) is DIRECT and policy.class_of(Kind.EMAIL) is DIRECT
    assert policy.labels[QUASI]["zh-CN"] == "准标识符" and not policy.levels["L4"].record_level
    assert len(policy.digest) == 64


def edited(tmp_path: Path, change: object) -> Path:
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    change(data)  # type: ignore[operator]
    path = tmp_path / "treatments.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["allowed"]["direct_identifier"]["L1"].append("keep"), "never kept"),
        (
            lambda d: d["allowed"]["ordinary"].__setitem__("L4", ["keep"]),
            "no record-level views",
        ),
        (lambda d: d["allowed"]["quasi_identifier"].pop("L2"), "L2 is missing"),
        (lambda d: d["allowed"]["ordinary"]["L1"].append("publish"), "unknown treatments"),
        (lambda d: d["allowed"]["ordinary"].__setitem__("L5", []), "unknown levels"),
        (lambda d: d["allowed"].__setitem__("secret", {}), "unknown classes"),
        (lambda d: d["classes"].pop("ordinary"), "classes must be exactly"),
        (lambda d: d["classes"]["ordinary"].pop("en"), "needs a label in en"),
        (
            lambda d: d["classes"]["ordinary"].__setitem__("detected_as", ["iban"]),
            "unknown identifier",
        ),
        (lambda d: d["levels"]["L4"].__setitem__("record_level", "no"), "true or false"),
        (lambda d: d.__setitem__("levels", {}), "at least one"),
        (lambda d: d["allowed"]["ordinary"].__setitem__("L1", "keep"), "must be a list"),
    ],
)
def test_a_policy_that_breaks_a_rule_is_refused_with_the_place(
    tmp_path: Path, change: object, reason: str
) -> None:
    with pytest.raises(TreatmentPolicyError, match=reason):
        load_treatments(edited(tmp_path, change))


def test_a_file_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "treatments.yaml"
    path.write_text("allowed: [unclosed\n", encoding="utf-8")
    with pytest.raises(TreatmentPolicyError, match="not YAML"):
        load_treatments(path)
    path.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(TreatmentPolicyError, match="the document must be a mapping"):
        load_treatments(path)
