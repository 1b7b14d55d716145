"""Configuration: defaults, SBX_ environment variables, sbx.toml, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SBX_CONFIG", "SBX_DATA_DIR", "SBX_LEDGER__CHECKPOINT_EVERY", "SBX_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.data_dir == Path("var")
    assert settings.ledger_dir == Path("var/ledger")
    assert settings.ledger.options().checkpoint_every == 1000
    assert settings.database == "sqlite:///var/sbx.db"


def test_a_database_url_replaces_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBX_DATABASE_URL", "postgresql+psycopg://sbx@db/sbx")
    assert load_settings().database == "postgresql+psycopg://sbx@db/sbx"


def test_environment_overrides_toml_which_overrides_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "sbx.toml").write_text(
        'data_dir = "/srv/sbx"\n[ledger]\ncheckpoint_every = 50\nsegment_entries = 99\n'
    )
    settings = load_settings()
    assert settings.data_dir == Path("/srv/sbx")
    assert (settings.ledger.checkpoint_every, settings.ledger.segment_entries) == (50, 99)
    monkeypatch.setenv("SBX_LEDGER__CHECKPOINT_EVERY", "7")
    assert load_settings().ledger.checkpoint_every == 7
    assert load_settings(data_dir=Path("elsewhere")).data_dir == Path("elsewhere")


def test_config_named_by_sbx_config_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBX_CONFIG", "/nonexistent/sbx.toml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings()


@pytest.mark.parametrize(
    "toml",
    [
        "[ledger]\ncheckpoint_every = 0\n",
        "[ledger]\nno_such_setting = 1\n",
        "unknown_top_level = true\n",
        '[ledger]\ncheckpoint_interval = "soon"\n',
    ],
)
def test_bad_values_are_refused(tmp_path: Path, toml: str) -> None:
    (tmp_path / "sbx.toml").write_text(toml)
    with pytest.raises(ValidationError):
        load_settings()


def test_data_dir_is_created_owner_only(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "state")
    assert not settings.data_dir.exists()  # loading reads, it does not create
    settings.prepare_data_dir()
    assert settings.data_dir.is_dir()
    assert settings.data_dir.stat().st_mode & 0o077 == 0
