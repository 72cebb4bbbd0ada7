"""inference-service configuration: ``INFERENCE_SERVICE_*`` environment variables (and flags)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import attrs

from aiaas_core import (
    ConfigError,
    ConfigProblem,
    HashKey,
    KeyedHasher,
    Secret,
    load_settings,
    setting,
)

__all__ = ["ENV_PREFIX", "SERVICE_NAME", "Settings", "load"]

SERVICE_NAME: Final = "inference-service"
ENV_PREFIX: Final = "INFERENCE_SERVICE_"
HASH_KEY_VERSION: Final = "v1"


def _check_port(_inst: object, _attr: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {value}")


def _at_least_one(_inst: object, attr: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attr.name} must be >= 1, got {value}")


def _positive(_inst: object, attr: attrs.Attribute[Any], value: timedelta) -> None:
    if value <= timedelta(0):
        raise ValueError(f"{attr.name} must be a positive duration, got {value}")


def _device(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    if value not in {"auto", "cpu"} and not value.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")


@attrs.frozen
class Settings:
    """What inference-service reads from its environment."""

    host: str = setting(default="127.0.0.1", help="address to listen on")
    port: int = setting(default=8080, help="TCP port to listen on", validator=_check_port)
    database_url: Secret | None = setting(
        default=None,
        help="PostgreSQL URL of the platform database (aiaas-db schema); unset: start aiaas-db's"
        " local PostgreSQL, migrate and seed it (local development)",
    )
    api_key_hash_key: Secret | None = setting(
        default=None,
        help="HMAC key (32+ bytes) the api_keys digests were made with; required with"
        " DATABASE_URL, derived from the seed secret in local mode",
    )
    model: str = setting(default="all-MiniLM-L6-v2", help="the public model id served")
    device: str = setting(
        default="auto", help="auto (CUDA when present), cpu, cuda[:N]", validator=_device
    )
    max_batch_size: int = setting(default=32, help="most inputs per batch", validator=_at_least_one)
    max_queue: int = setting(
        default=1024, help="queued inputs before 429 Overloaded", validator=_at_least_one
    )
    request_timeout: timedelta = setting(
        default=timedelta(seconds=30),
        help="deadline of one embeddings request",
        validator=_positive,
    )
    region: str = setting(default="local", help="region recorded on usage events")
    usage_buffer: int = setting(
        default=10_000,
        help="usage events held while the database is slow or down; more are dropped (counted)",
        validator=_at_least_one,
    )
    usage_batch: int = setting(default=500, help="usage events per insert", validator=_at_least_one)
    usage_flush_interval: timedelta = setting(
        default=timedelta(milliseconds=200),
        help="longest wait before buffered usage events are written",
        validator=_positive,
    )
    graceful_timeout: timedelta = setting(
        default=timedelta(seconds=30),
        help="how long accepted requests and the usage flush may take after SIGTERM",
        validator=_positive,
    )
    local_data_dir: Path | None = setting(
        default=None,
        help="where the local PostgreSQL keeps its data (local mode); unset: a throwaway cluster",
    )
    tracing: bool = setting(default=True, help="export traces over OTLP (OTEL_* variables)")

    def hasher(self) -> KeyedHasher | None:
        """The keyed hasher for API key digests, when a hash key is configured."""
        if self.api_key_hash_key is None:
            return None
        return KeyedHasher(
            [HashKey.from_text(HASH_KEY_VERSION, self.api_key_hash_key)], HASH_KEY_VERSION
        )


def load(environ: Mapping[str, str] | None, overrides: Mapping[str, object]) -> Settings:
    """Load and cross-check the settings; raises :class:`aiaas_core.ConfigError`."""
    settings = load_settings(Settings, prefix=ENV_PREFIX, environ=environ, overrides=overrides)
    problems: list[ConfigProblem] = []
    if settings.database_url is not None and settings.api_key_hash_key is None:
        problems.append(
            ConfigProblem(
                "api_key_hash_key",
                "missing",
                None,
                "the HMAC key the api_keys digests were made with",
                f"set {ENV_PREFIX}API_KEY_HASH_KEY (the key aiaas-db used), or unset"
                f" {ENV_PREFIX}DATABASE_URL for local mode",
            )
        )
    else:
        try:
            settings.hasher()
        except ValueError as exc:
            problems.append(
                ConfigProblem(
                    "api_key_hash_key",
                    f"env {ENV_PREFIX}API_KEY_HASH_KEY",
                    "**********",
                    f"a usable HMAC key ({exc})",
                    'make one with: python -c "import secrets; print(secrets.token_hex(32))"',
                )
            )
    if problems:
        raise ConfigError(problems=problems)
    return settings
