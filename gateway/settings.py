"""The one configuration object of sbx.

Values come, highest priority first, from: arguments passed to :func:`load_settings`,
``SBX_*`` environment variables (nested with ``__``, e.g. ``SBX_LEDGER__CHECKPOINT_EVERY``),
the TOML file named by ``SBX_CONFIG`` or ``./sbx.toml`` when present, and the defaults below.
Nothing is read at import time: callers load settings and pass them on.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from audit import LedgerOptions

DEFAULT_CONFIG_FILE = Path("sbx.toml")
SHIPPED_POLICIES = Path(__file__).resolve().parent.parent / "policies"


class LedgerSettings(BaseModel):
    """How the audit ledger checkpoints and segments (see audit/FORMAT.md)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint_every: int = Field(
        1000, ge=1, description="sign a checkpoint at least every N entries"
    )
    checkpoint_interval: float = Field(
        10.0, gt=0, description="…and at least every T seconds while entries are unsigned"
    )
    segment_entries: int = Field(1_000_000, ge=1, description="entries per segment before sealing")
    max_entry_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024, description="largest entry accepted, in bytes"
    )
    lock_timeout: float = Field(30.0, gt=0, description="seconds to wait for another writer")

    def options(self) -> LedgerOptions:
        return LedgerOptions(
            checkpoint_every=self.checkpoint_every,
            checkpoint_interval=self.checkpoint_interval,
            segment_entries=self.segment_entries,
            max_entry_bytes=self.max_entry_bytes,
            lock_timeout=self.lock_timeout,
        )


class WebSettings(BaseModel):
    """The browser console: sessions and their cookies."""

    model_config = ConfigDict(extra="forbid")

    secure_cookies: bool = Field(
        True,
        description="send cookies only over HTTPS (browsers treat http://localhost as secure); "
        "turn off only for a plain-HTTP test deployment reached by another host name",
    )
    session_idle_minutes: int = Field(
        30, ge=1, le=24 * 60, description="a browser session ends after this long unused"
    )
    session_hours: int = Field(
        12, ge=1, le=7 * 24, description="…and at the latest this long after sign-in"
    )

    @property
    def idle(self) -> timedelta:
        return timedelta(minutes=self.session_idle_minutes)

    @property
    def lifetime(self) -> timedelta:
        return timedelta(hours=self.session_hours)


class Settings(BaseSettings):
    """Everything an sbx deployment can configure."""

    model_config = SettingsConfigDict(
        env_prefix="SBX_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(Path("var"), description="where sbx keeps its state, keys and ledger")
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    policies_dir: Path = Field(
        SHIPPED_POLICIES, description="folder of the access model, policy and duties files"
    )
    operator_credit_code: str = Field(
        "91370200MA3C0Q0X12",
        description="unified social credit code of the operator organization made on first run",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the control plane's database, e.g. "
        "postgresql+psycopg://sbx@db/sbx (default: SQLite in the data directory)",
    )

    @field_validator("operator_credit_code")
    @classmethod
    def _credit_code(cls, value: str) -> str:
        from sandbox.identifiers.credit_code import normalize_credit_code

        return normalize_credit_code(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = os.environ.get("SBX_CONFIG")
        path = Path(config) if config else DEFAULT_CONFIG_FILE
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        elif config:
            raise FileNotFoundError(f"SBX_CONFIG names {path}, which does not exist")
        return tuple(sources)

    @property
    def ledger_dir(self) -> Path:
        return self.data_dir / "ledger"

    @property
    def database(self) -> str:
        """The database URL in force: the configured one, or ``<data_dir>/sbx.db``."""
        return self.database_url or f"sqlite:///{self.data_dir / 'sbx.db'}"

    def prepare_data_dir(self) -> Path:
        """Create the data directory (owner-only) on first run and return it."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.data_dir


def load_settings(**overrides: Any) -> Settings:
    """Read the configuration; ``overrides`` win over every other source."""
    return Settings(**overrides)


# ---------------------------------------------------------------------- reference page
REFERENCE_START = "<!-- settings:start (generated by `make docs`) -->"
REFERENCE_END = "<!-- settings:end -->"


def reference_table() -> str:
    """Every setting as a markdown table row: name, environment variable, default, meaning."""
    rows = ["| setting | environment | default | meaning |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
                continue
            dotted = f"{prefix}{name}"
            environment = "SBX_" + dotted.upper().replace(".", "__")
            default = field.get_default(call_default_factory=True)
            shown = "(none)" if default is None else str(default)
            if isinstance(default, Path) and default == SHIPPED_POLICIES:
                shown = "the shipped `policies/`"
            meaning = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{dotted}` | `{environment}` | {shown} | {meaning} |")

    walk(Settings, "")
    return "\n".join(rows)


def write_reference(path: Path) -> None:
    """Replace the generated table between the markers of ``path`` with the current one."""
    text = path.read_text()
    head, rest = text.split(REFERENCE_START, 1)
    _, tail = rest.split(REFERENCE_END, 1)
    path.write_text(f"{head}{REFERENCE_START}\n{reference_table()}\n{REFERENCE_END}{tail}")
