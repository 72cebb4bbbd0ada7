"""world-service configuration: ``WORLD_SERVICE_*`` environment variables (and CLI flags)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

import attrs

from aiaas_core import (
    ApiKeyRecord,
    ConfigError,
    ConfigProblem,
    HashKey,
    KeyedHasher,
    Secret,
    load_settings,
    parse_api_key_entries,
    setting,
)
from aiaas_core import parse_api_key_entry as parse_key_entry

ENV_PREFIX: Final = "WORLD_SERVICE_"
HASH_KEY_VERSION: Final = "v1"
__all__ = ["ENV_PREFIX", "HASH_KEY_VERSION", "Settings", "load", "parse_key_entry"]


def _check_entries(_inst: object, _attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    # ``subject:key_id:role[+role]:digest`` entries, aiaas-core's format: keyed digests, never
    # secrets; a bad one raises "entry N: ...".
    parse_api_key_entries(value)


def _check_switch_interval(_inst: object, _attr: attrs.Attribute[Any], value: timedelta) -> None:
    if not timedelta(0) <= value <= timedelta(seconds=1):
        raise ValueError(f"must be between 0 (Python's default) and 1s, got {value}")


def _check_port(_inst: object, _attr: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {value}")


@attrs.frozen
class Settings:
    """What world-service reads from its environment."""

    host: str = setting(default="127.0.0.1", help="address to listen on")
    port: int = setting(default=8080, help="TCP port to listen on", validator=_check_port)
    api_keys: tuple[str, ...] = setting(
        default=(),
        help="API keys allowed on the admin routes: subject:key_id:role[+role]:digest entries"
        " (keyed digests, never secrets); `world-service --issue-key admin` makes one",
        validator=_check_entries,
    )
    api_key_hash_key: Secret | None = setting(
        default=None, help="HMAC key (32+ bytes) the API key digests were made with"
    )
    graceful_timeout: timedelta = setting(
        default=timedelta(seconds=10),
        help="how long in-flight requests may take to finish after SIGTERM",
    )
    tracing: bool = setting(default=True, help="export traces over OTLP (OTEL_* variables)")
    gil_switch_interval: timedelta = setting(
        default=timedelta(milliseconds=1),
        help="the interpreter's GIL switch interval (Python's default is 5ms): how long the event"
        " loop may wait while the span exporter thread encodes a batch; 0 leaves Python's",
        validator=_check_switch_interval,
    )

    def hasher(self) -> KeyedHasher | None:
        """The keyed hasher for API key digests, when a hash key is configured."""
        if self.api_key_hash_key is None:
            return None
        return KeyedHasher(
            [HashKey.from_text(HASH_KEY_VERSION, self.api_key_hash_key)], HASH_KEY_VERSION
        )

    def key_records(self) -> list[ApiKeyRecord]:
        return parse_api_key_entries(self.api_keys)


def load(environ: Mapping[str, str] | None, overrides: Mapping[str, object]) -> Settings:
    """Load and cross-check the settings; raises :class:`aiaas_core.ConfigError`."""
    settings = load_settings(Settings, prefix=ENV_PREFIX, environ=environ, overrides=overrides)
    problems: list[ConfigProblem] = []
    if settings.api_keys and settings.api_key_hash_key is None:
        problems.append(
            ConfigProblem(
                "api_key_hash_key",
                "missing",
                None,
                "the HMAC key the API key digests were made with",
                f"set {ENV_PREFIX}API_KEY_HASH_KEY, or remove {ENV_PREFIX}API_KEYS",
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
