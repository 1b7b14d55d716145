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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from audit import LedgerOptions

DEFAULT_CONFIG_FILE = Path("sbx.toml")
SOURCE_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_POLICIES = SOURCE_ROOT / "policies"
SANDBOX_PYTHON = SOURCE_ROOT / ".venv-sandbox"  # made by `make install`


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


class SandboxSettings(BaseModel):
    """The notebook sandboxes: where the hub is, how sandboxes run, what they may use."""

    model_config = ConfigDict(extra="forbid")

    hub_url: str = Field(
        "http://127.0.0.1:8001", description="public URL of JupyterHub, where browsers are sent"
    )
    hub_api_url: str = Field(
        "http://127.0.0.1:8081/hub/api",
        description="JupyterHub's REST API, as the gateway reaches it (to stop servers)",
    )
    gateway_url: str = Field(
        "http://127.0.0.1:8000", description="the gateway's URL as the hub and sandboxes reach it"
    )
    runtime: Literal["bwrap", "docker"] = Field(
        "bwrap", description="isolation runtime: bubblewrap (one machine) or Docker"
    )
    python: Path = Field(
        SANDBOX_PYTHON,
        description="the sandbox's own Python environment (Jupyter server and kernels)",
    )
    stage_dir: Path = Field(
        Path("/run/sbx"), description="where the runtime mounts what sandboxes see"
    )
    uid_base: int = Field(
        200_000, ge=1000, description="first Unix uid of the pool (one uid per applicant)"
    )
    gid_base: int = Field(
        210_000, ge=1000, description="first Unix gid of the pool (one gid per grant)"
    )
    pool_size: int = Field(10_000, ge=1, le=1_000_000, description="uids and gids in each pool")
    memory_mib: int = Field(2048, ge=64, description="memory of one sandbox, in MiB")
    pids: int = Field(256, ge=16, description="processes and threads of one sandbox")
    disk_mib: int = Field(2048, ge=16, description="writable workspace of one sandbox, in MiB")
    tmp_mib: int = Field(
        256, ge=1, description="size of the temporary folder of one sandbox, in MiB"
    )
    cpus: float = Field(1.0, gt=0, le=256, description="CPUs of one sandbox")
    idle_minutes: int = Field(
        60, ge=1, description="a sandbox without activity for this long is stopped"
    )
    poll_seconds: int = Field(
        3, ge=1, le=300, description="how often the hub asks whether a session is still allowed"
    )
    docker_image: str = Field(
        "sbx-sandbox:latest", description="the sandbox image (runtime docker)"
    )
    docker_network: str = Field(
        "sbx-hub",
        description="the hub's Docker network, which sandbox servers join (runtime docker)",
    )

    def limits(self) -> dict[str, int | float]:
        """What one sandbox may use, in bytes, processes and CPUs."""
        return {
            "memory_bytes": self.memory_mib << 20,
            "pids": self.pids,
            "disk_bytes": self.disk_mib << 20,
            "tmp_bytes": self.tmp_mib << 20,
            "cpus": self.cpus,
        }


class Settings(BaseSettings):
    """Everything an sbx deployment can configure."""

    model_config = SettingsConfigDict(
        env_prefix="SBX_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(Path("var"), description="where sbx keeps its state, keys and ledger")
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
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
# Defaults that depend on where the source is, as the reference page names them.
SHOWN_DEFAULTS = {
    SHIPPED_POLICIES: "the shipped `policies/`",
    SANDBOX_PYTHON: "`.venv-sandbox` in the source tree",
}


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
            if isinstance(default, Path) and default in SHOWN_DEFAULTS:
                shown = SHOWN_DEFAULTS[default]
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
