"""Loading a telemetry profile in layers: :func:`load_profile` (see :mod:`aiaas_telemetry._profile`
for the layers, the secrets and the problems it reports).

The built-in defaults (:data:`DEFAULT_PROFILE`), the OpenTelemetry environment variables read
(:data:`ENVIRONMENT_VARIABLES`), the profile document reader and the dotted overrides; the
profile model and its parser are :mod:`aiaas_telemetry._profile`'s.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import unquote

from aiaas_telemetry._profile import (
    _DEFAULT_DURATION_BUCKETS,
    _LOG_LEVELS,
    _PROPAGATORS,
    _PROTOCOLS,
    HTTP_DURATION_HISTOGRAM,
    ConfigOverride,
    TelemetryProfile,
    _number_problem,
    _parse_profile,
    _Problems,
)

__all__ = ["DEFAULT_PROFILE", "ENVIRONMENT_VARIABLES", "load_profile"]


# --------------------------------------------------------------------------------------------
# Layered loading
# --------------------------------------------------------------------------------------------

#: The built-in defaults (layer 1); ``service_name`` has none.
DEFAULT_PROFILE: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "otel_exporter": {
            "endpoint": "http://localhost:4318",
            "protocol": "http/protobuf",
            "headers": {},
            "timeout_ms": 2000,
        },
        "log": {
            "level": "info",
            "required_fields": ["request_id", "trace_id", "span_id", "actor.subject"],
            "sampling_rate": 1.0,
        },
        "metrics": {
            "histograms": [
                {"name": HTTP_DURATION_HISTOGRAM, "buckets": list(_DEFAULT_DURATION_BUCKETS)}
            ],
            "resource_attributes": {},
        },
        "tracing": {
            "sampler": "always_on",
            "sampler_arg": 0.1,
            "propagators": ["tracecontext", "baggage"],
        },
    }
)

#: Environment variables :func:`load_profile` reads, and the setting each one sets.
ENVIRONMENT_VARIABLES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "AIAAS_TELEMETRY_PROFILE": "(path of the profile document)",
        "OTEL_SERVICE_NAME": "service_name",
        "OTEL_RESOURCE_ATTRIBUTES": "metrics.resource_attributes (and service_name)",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "otel_exporter.endpoint",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "otel_exporter.endpoint",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "otel_exporter.protocol",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "otel_exporter.protocol",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "otel_exporter.headers",
        "OTEL_EXPORTER_OTLP_HEADERS": "otel_exporter.headers",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "otel_exporter.timeout_ms (milliseconds)",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "otel_exporter.timeout_ms (milliseconds)",
        "OTEL_TRACES_SAMPLER": "tracing.sampler",
        "OTEL_TRACES_SAMPLER_ARG": "tracing.sampler_arg",
        "OTEL_PROPAGATORS": "tracing.propagators",
        "OTEL_LOG_LEVEL": "log.level",
    }
)

_ENV_SAMPLERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "always_on": "always_on",
        "parentbased_always_on": "always_on",
        "always_off": "always_off",
        "parentbased_always_off": "always_off",
        "traceidratio": "ratio",
        "parentbased_traceidratio": "ratio",
    }
)
_ENV_LOG_LEVELS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "debug": "debug",
        "info": "info",
        "warn": "warn",
        "warning": "warn",
        "error": "error",
        "critical": "error",
        "fatal": "error",
    }
)
_SECRET_SETTINGS: Final = frozenset({"otel_exporter.headers"})
_SECTION_KEYS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "otel_exporter": frozenset({"endpoint", "protocol", "headers", "timeout_ms"}),
        "log": frozenset({"level", "required_fields", "sampling_rate"}),
        "metrics": frozenset({"histograms", "resource_attributes"}),
        "tracing": frozenset({"sampler", "sampler_arg", "propagators"}),
    }
)


def _shown(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, sort_keys=True)


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: (_deep_merge(v, {}) if isinstance(v, Mapping) else v) for k, v in base.items()
    }
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_document(path: Path, problems: _Problems) -> object:
    source = problems.default_source
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.add("", "an existing profile file", hint=f"create {path} or fix the path")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.add("", "a readable UTF-8 profile file", hint=str(exc))
        return None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # noqa: PLC0415 -- optional, only for YAML profiles
        except ImportError:  # pragma: no cover - depends on the environment
            problems.add(
                "",
                "a JSON profile (YAML needs PyYAML)",
                hint="pip install 'aiaas-telemetry[yaml]', or write the profile as JSON",
            )
            return None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            problems.add("", f"valid YAML ({' '.join(str(exc).split())})", hint=f"fix {source}")
            return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.add(
            "", f"valid JSON ({exc.msg} at line {exc.lineno})", hint=f"fix the syntax in {path}"
        )
        return None


def _parse_kv_list(raw: str, source: str, setting: str, problems: _Problems) -> dict[str, str]:
    """Parse ``k1=v1,k2=v2`` (W3C baggage style, values percent-decoded)."""
    out: dict[str, str] = {}
    secret = setting in _SECRET_SETTINGS
    for i, item in enumerate(raw.split(",")):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key.strip())
        if not sep or not key:
            problems.add(
                setting,
                "a comma-separated list of name=value pairs",
                None if secret else item.strip(),
                hint=f"fix entry {i + 1} of {source[4:]}",
                source=source,
            )
            continue
        out[key] = unquote(value.strip())
    return out


def _apply_environment(
    doc: dict[str, Any], env: Mapping[str, str], problems: _Problems
) -> list[ConfigOverride]:
    overrides: list[ConfigOverride] = []

    def first(*names: str) -> tuple[str, str] | None:
        for name in names:
            raw = env.get(name)
            if raw is not None and raw.strip():
                return f"env {name}", raw.strip()
        return None

    def put(setting: str, value: Any, source: str) -> None:
        section, _, key = setting.partition(".")
        if key:
            target = doc.get(section)
            if not isinstance(target, dict):
                return  # the document's own problem with this section is reported anyway
            target[key] = value
        else:
            doc[section] = value
        problems.sources[setting] = source
        secret = setting in _SECRET_SETTINGS
        overrides.append(ConfigOverride(setting, source, None if secret else _shown(value), secret))

    def section(name: str) -> Mapping[str, Any]:
        value = doc.get(name)
        return value if isinstance(value, Mapping) else {}

    if found := first("OTEL_RESOURCE_ATTRIBUTES"):
        source, raw = found
        pairs = _parse_kv_list(raw, source, "metrics.resource_attributes", problems)
        name = pairs.pop("service.name", None)
        if name is not None:
            put("service_name", name, source)
        if pairs:
            current = section("metrics").get("resource_attributes")
            merged = {**(current if isinstance(current, Mapping) else {}), **pairs}
            put("metrics.resource_attributes", merged, source)
    if found := first("OTEL_SERVICE_NAME"):
        put("service_name", found[1], found[0])
    if found := first("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        put("otel_exporter.endpoint", found[1], found[0])
    if found := first("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        source, raw = found
        if raw in _PROTOCOLS:
            put("otel_exporter.protocol", raw, source)
        else:
            problems.add(
                "otel_exporter.protocol",
                "one of: " + ", ".join(_PROTOCOLS),
                raw,
                source=source,
            )
    if found := first("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
        source, raw = found
        headers = _parse_kv_list(raw, source, "otel_exporter.headers", problems)
        current = section("otel_exporter").get("headers")
        put(
            "otel_exporter.headers",
            {**(current if isinstance(current, Mapping) else {}), **headers},
            source,
        )
    if found := first("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        source, raw = found
        try:
            millis = float(raw)
        except ValueError:
            millis = math.nan
        if _number_problem(millis, 100, 5000) is None:
            put("otel_exporter.timeout_ms", round(millis), source)
        else:
            problems.add(
                "otel_exporter.timeout_ms",
                "milliseconds between 100 and 5000",
                raw,
                source=source,
            )
    if found := first("OTEL_TRACES_SAMPLER"):
        source, raw = found
        sampler = _ENV_SAMPLERS.get(raw.lower())
        if sampler is None:
            problems.add(
                "tracing.sampler", "one of: " + ", ".join(_ENV_SAMPLERS), raw, source=source
            )
        else:
            put("tracing.sampler", sampler, source)
    if found := first("OTEL_TRACES_SAMPLER_ARG"):
        source, raw = found
        try:
            arg = float(raw)
        except ValueError:
            arg = math.nan
        if _number_problem(arg, 0, 1) is None:
            put("tracing.sampler_arg", arg, source)
        else:
            problems.add("tracing.sampler_arg", "a number between 0 and 1", raw, source=source)
    if found := first("OTEL_PROPAGATORS"):
        source, raw = found
        names = [p.strip().lower() for p in raw.split(",") if p.strip()]
        if names == ["none"]:
            names = []
        if all(n in _PROPAGATORS for n in names):
            put("tracing.propagators", list(dict.fromkeys(names)), source)
        else:
            problems.add(
                "tracing.propagators",
                "a comma-separated list of: " + ", ".join(_PROPAGATORS) + " (or none)",
                raw,
                source=source,
            )
    if found := first("OTEL_LOG_LEVEL"):
        source, raw = found
        level = _ENV_LOG_LEVELS.get(raw.lower())
        if level is None:
            problems.add("log.level", "one of: " + ", ".join(_LOG_LEVELS), raw, source=source)
        else:
            put("log.level", level, source)
    return overrides


def load_profile(
    source: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TelemetryProfile:
    """Build the service's :class:`TelemetryProfile` from defaults, a document and the environment.

    ``source`` is a profile mapping or the path of a JSON/YAML profile file; ``None`` reads the
    file named by ``AIAAS_TELEMETRY_PROFILE`` when set, else starts from the defaults alone.
    ``environ`` defaults to :data:`os.environ`. ``overrides`` maps dotted setting names
    (``"service_name"``, ``"tracing.sampler"``, ``"otel_exporter.timeout_ms"``) to values and
    wins over everything else. See the module documentation for the precedence.

    Raises :class:`aiaas_core.ConfigError` listing every problem.
    """
    env = os.environ if environ is None else environ
    if source is None and env.get("AIAAS_TELEMETRY_PROFILE", "").strip():
        source = env["AIAAS_TELEMETRY_PROFILE"].strip()
    if isinstance(source, str | os.PathLike):
        problems = _Problems(f"file {os.fspath(source)}")
        document = _read_document(Path(source), problems)
        if problems.items:
            raise problems.error()
    else:
        problems = _Problems("profile")
        document = {} if source is None else source
    if not isinstance(document, Mapping):
        problems.add("", "a JSON object with the profile", type(document).__name__)
        raise problems.error()
    for setting in _flatten_keys(DEFAULT_PROFILE):
        if not _has_path(document, setting):
            problems.sources[setting] = "default"
    doc = _deep_merge(DEFAULT_PROFILE, document)
    recorded = _apply_environment(doc, env, problems)
    for setting, value in (overrides or {}).items():
        section, _, key = setting.partition(".")
        if setting != "service_name" and key not in _SECTION_KEYS.get(section, ()):
            problems.add(
                setting,
                "a known setting such as 'tracing.sampler' or 'otel_exporter.timeout_ms'",
                source="override",
                hint=f"remove or rename the override {setting!r}",
            )
            continue
        if key:
            target = doc.get(section)
            if not isinstance(target, dict):
                continue  # the document's problem with the section is reported
            target[key] = value
        else:
            doc[section] = value
        problems.sources[setting] = "override"
        secret = setting in _SECRET_SETTINGS
        recorded.append(
            ConfigOverride(setting, "override", None if secret else _shown(value), secret)
        )
    profile = _parse_profile(doc, problems, overrides=tuple(recorded))
    if problems.items or profile is None:
        raise problems.error()
    return profile


def _flatten_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not prefix:
            out.extend(_flatten_keys(value, f"{path}."))
        else:
            out.append(path)
    return out


def _has_path(data: Mapping[str, Any], path: str) -> bool:
    node: object = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True
