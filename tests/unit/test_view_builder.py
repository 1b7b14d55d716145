"""The view builder end to end: a dataset version in the vault becomes each kind of view
with a signed manifest whose hash is in the ledger; scratch plaintext does not outlive it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audit import canonical
from sandbox.vault import Vault
from sandbox.views.aggregate import AggregateViewSpec
from sandbox.views.builder import ViewBuilder
from sandbox.views.disclosure import load_disclosure
from sandbox.views.fields import FieldRule, ViewSpecError
from sandbox.views.manifest import ManifestError, read_manifest
from sandbox.views.private import PrivateQuery, PrivateViewSpec, Statistic
from sandbox.views.record import RecordViewSpec
from sandbox.views.treatments import SensitivityClass, Treatment, load_treatments
from tests.conftest import REPO_ROOT
from tests.unit.test_private_view import Purse

TREATMENTS = load_treatments(REPO_ROOT / "policies" / "treatments.yaml")
DISCLOSURE = load_disclosure(REPO_ROOT / "policies" / "disclosure.yaml")
CLASSES = {
    "id_number": SensitivityClass.DIRECT_IDENTIFIER,
    "district": SensitivityClass.QUASI_IDENTIFIER,
    "age": SensitivityClass.QUASI_IDENTIFIER,
    "income": SensitivityClass.SENSITIVE_ATTRIBUTE,
}
RECORD = RecordViewSpec(
    "L2",
    CLASSES,
    (
        FieldRule("id_number", Treatment.PSEUDONYMIZE),
        FieldRule("district", Treatment.GENERALIZE, {"to": "district"}),
        FieldRule("age", Treatment.GENERALIZE, {"to": "band", "width": 10}),
        FieldRule("income", Treatment.DROP),
    ),
    k=5,
)
AGGREGATE = AggregateViewSpec(
    "L2", CLASSES, (FieldRule("district", Treatment.GENERALIZE, {"to": "district"}),), ("income",)
)
PRIVATE = PrivateViewSpec("L2", CLASSES, (PrivateQuery("n", Statistic.COUNT, 0.4),))


class Setup:
    def __init__(self, root: Path, fmt: str = "parquet") -> None:
        self.entries: list[dict[str, Any]] = []
        self.vault = Vault(root / "vault", self.entries.append)
        source = root / f"people.{fmt}"
        table = pa.table(
            {
                "id_number": [f"37020219{n:010d}" for n in range(400)],
                "district": [
                    f"山东省青岛市{'市南区' if n % 2 else '崂山区'}路{n}号" for n in range(400)
                ],
                "age": [20 + n % 50 for n in range(400)],
                "income": [1000.0 + n for n in range(400)],
            }
        )
        if fmt == "parquet":
            pq.write_table(table, source)
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, source)
        self.stored = self.vault.put(
            [source.read_bytes()], dataset="people", version="v1", actor="user:p"
        )
        self.builder = ViewBuilder(
            root / "builder",
            root / "vault",
            TREATMENTS,
            DISCLOSURE,
            self.entries.append,
            budget=Purse(1.0),
        )
        self.out = root / "views"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_each_kind_of_view_is_built_signed_and_recorded(tmp_path: Path, fmt: str) -> None:
    setup = Setup(tmp_path, fmt)
    for name, spec, kind in (
        ("people", RECORD, "record"),
        ("by_district", AGGREGATE, "aggregate"),
        ("dp", PRIVATE, "private"),
    ):
        built = setup.builder.build(
            grant="g1", version="v1", spec=spec, name=name, out=setup.out, actor="user:r"
        )
        assert built.kind == kind
        manifest = read_manifest(built.manifest_path, setup.builder.signer.public_key)
        assert manifest["source"] == {
            "dataset": "people",
            "version": "v1",
            "sha256": setup.stored.sha256,
        }
        assert manifest["output"]["sha256"] == hashlib.sha256(built.path.read_bytes()).hexdigest()
        assert manifest["policies"]["treatments"] == TREATMENTS.digest
        entry = setup.entries[-1]
        assert entry["action"] == "view.build" and entry["object"] == "grant:g1"
        assert (
            entry["detail"]["manifest_sha256"]
            == hashlib.sha256(built.manifest_path.read_bytes()).hexdigest()
        )
        assert pq.read_table(built.path).num_rows > 0
    record = read_manifest(setup.out / "people.manifest.json", setup.builder.signer.public_key)
    assert record["report"]["k_achieved"] >= 5
    dp = read_manifest(setup.out / "dp.manifest.json", setup.builder.signer.public_key)
    assert dp["report"]["epsilon_spent"] == "0.4"
    keys = [e for e in setup.entries if e["action"] == "view.key"]
    assert len(keys) == 1 and keys[0]["object"] == f"key:{setup.builder.signer.key_id}"
    left = sorted(p.name for p in (tmp_path / "builder").iterdir())
    assert left == ["pseudonym.secret", "releases", "view-signing.key"]  # no plaintext left


def test_a_changed_manifest_or_another_key_is_refused(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    built = setup.builder.build(
        grant="g1", version="v1", spec=AGGREGATE, name="agg", out=setup.out, actor="user:r"
    )
    signed = json.loads(built.manifest_path.read_bytes())
    signed["manifest"]["report"]["cells"] = 1
    built.manifest_path.write_bytes(canonical.encode(signed))
    with pytest.raises(ManifestError, match="does not hold"):
        read_manifest(built.manifest_path, setup.builder.signer.public_key)
    other = Setup(tmp_path / "other")
    with pytest.raises(ManifestError, match="another key"):
        read_manifest(built.manifest_path, other.builder.signer.public_key)


def test_keys_survive_a_restart_and_grants_get_keys_of_their_own(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    again = ViewBuilder(
        tmp_path / "builder",
        tmp_path / "vault",
        TREATMENTS,
        DISCLOSURE,
        setup.entries.append,
    )
    assert again.signer.key_id == setup.builder.signer.key_id
    assert again.pseudonym_key("g1") == setup.builder.pseudonym_key("g1")
    assert setup.builder.pseudonym_key("g1") != setup.builder.pseudonym_key("g2")
    assert [e["action"] for e in setup.entries].count("view.key") == 1


def test_a_failed_build_leaves_no_view_and_no_plaintext(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    bad = RecordViewSpec("L2", CLASSES, (FieldRule("id_number", Treatment.KEEP),))
    with pytest.raises(ViewSpecError, match="direct_identifier"):
        setup.builder.build(
            grant="g1", version="v1", spec=bad, name="bad", out=setup.out, actor="user:r"
        )
    assert not (setup.out / "bad.parquet").exists()
    assert not list((tmp_path / "builder").glob("build-*"))
    with pytest.raises(ViewSpecError, match="view name"):
        setup.builder.build(
            grant="g1", version="v1", spec=AGGREGATE, name="../x", out=setup.out, actor="user:r"
        )
    no_budget = ViewBuilder(
        tmp_path / "nb",
        tmp_path / "vault",
        TREATMENTS,
        DISCLOSURE,
        setup.entries.append,
    )
    with pytest.raises(ViewSpecError, match="private views are off"):
        no_budget.build(
            grant="g1", version="v1", spec=PRIVATE, name="dp", out=setup.out, actor="user:r"
        )


def test_a_view_the_ledger_did_not_record_is_not_delivered(tmp_path: Path) -> None:
    setup = Setup(tmp_path)

    def refuse(entry: dict[str, Any]) -> None:
        if entry["action"] == "view.build":
            raise OSError("the ledger is down")
        setup.entries.append(entry)

    builder = ViewBuilder(tmp_path / "builder", tmp_path / "vault", TREATMENTS, DISCLOSURE, refuse)
    with pytest.raises(OSError, match="ledger"):
        builder.build(
            grant="g1", version="v1", spec=AGGREGATE, name="agg", out=setup.out, actor="u"
        )
    assert not setup.out.exists() or list(setup.out.iterdir()) == []
    assert not list((tmp_path / "builder" / "releases").rglob("*.json"))  # nothing remembered
