"""The telemetry profile (``contracts/telemetry-profile.schema.json``) and its parser; the layered
loading (:func:`load_profile`: defaults, document, environment, overrides) is
:mod:`aiaas_telemetry._profile_load`'s.

A :class:`TelemetryProfile` is a frozen value: service name, OTLP exporter, log settings,
histogram buckets and tracing. Its JSON form (:meth:`TelemetryProfile.to_dict`) validates against
the shared schema, and :meth:`TelemetryProfile.from_dict` accepts what the schema accepts
(unknown keys inside the nested objects are ignored, as the schema allows, so a newer document
still loads in an older service; unknown top-level keys are errors, as in the schema).

:func:`load_profile` builds one from layers, lowest precedence first:

1. built-in defaults (:data:`DEFAULT_PROFILE`: everything but the service name);
2. a profile document: a mapping, or a JSON (or, with PyYAML installed, YAML) file; with no
   ``source``, the file named by ``AIAAS_TELEMETRY_PROFILE`` when that variable is set;
3. the standard OpenTelemetry environment variables (:data:`ENVIRONMENT_VARIABLES`); a
   signal-specific ``OTEL_EXPORTER_OTLP_TRACES_*`` wins over the generic ``OTEL_EXPORTER_OTLP_*``;
   ``OTEL_SERVICE_NAME`` wins over ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``; headers and
   resource attributes are merged key by key over the document's;
4. the keyword ``overrides`` (dotted setting names), which win over everything.

Every value layers 3 and 4 set is recorded as a :class:`ConfigOverride` (``profile.overrides``),
so :func:`aiaas_telemetry.setup` can emit one audit event each.

Exporter headers are secrets: they are held as :class:`aiaas_core.Secret`, and never appear in a
``repr``, in :meth:`TelemetryProfile.summary`, in an override record or in a problem;
:meth:`TelemetryProfile.to_dict` masks them unless asked with ``reveal_secrets=True``.

Every problem found is reported at once, in one :class:`aiaas_core.ConfigError` whose
``problems`` are :class:`aiaas_core.ConfigProblem` (setting, source, value, what was expected,
what to do).

``OTEL_EXPORTER_OTLP_TIMEOUT`` is read in milliseconds, as the OpenTelemetry specification says
(some SDKs read seconds); ``OTEL_TRACES_SAMPLER`` accepts the specification's names
(``parentbased_traceidratio`` ...) and maps them onto the profile's three samplers -- sampling is
always parent-based here.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, Literal, cast, get_args
from urllib.parse import urlsplit

import attrs

from aiaas_core import ConfigError, ConfigProblem, Secret
from aiaas_telemetry._redact import REDACTED

__all__ = [
    "HTTP_DURATION_HISTOGRAM",
    "ConfigOverride",
    "HistogramSpec",
    "LogSettings",
    "MetricsSettings",
    "OtelExporterSettings",
    "TelemetryProfile",
    "TracingSettings",
]

LogLevel = Literal["debug", "info", "warn", "error"]
ExporterProtocol = Literal["grpc", "http/protobuf"]
SamplerName = Literal["always_on", "always_off", "ratio"]
PropagatorName = Literal["tracecontext", "baggage", "b3", "jaeger"]

_LOG_LEVELS: Final = tuple(get_args(LogLevel))
_PROTOCOLS: Final = tuple(get_args(ExporterProtocol))
_SAMPLERS: Final = tuple(get_args(SamplerName))
_PROPAGATORS: Final = tuple(get_args(PropagatorName))
_SERVICE_NAME: Final = re.compile(r"[a-z0-9-]+")
_METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_TOP_LEVEL_KEYS: Final = ("service_name", "otel_exporter", "log", "metrics", "tracing")

#: The histogram the request middleware records durations in (seconds).
HTTP_DURATION_HISTOGRAM: Final = "http_server_request_duration_seconds"
_DEFAULT_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --------------------------------------------------------------------------------------------
# Checks: each returns None when the value is fine, else what was expected.
# --------------------------------------------------------------------------------------------

_ENDPOINT_EXPECTED: Final = "an absolute http(s) URL such as 'http://otel-collector:4318'"


def _endpoint_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return _ENDPOINT_EXPECTED
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a non-numeric port
    except ValueError:
        return _ENDPOINT_EXPECTED
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return _ENDPOINT_EXPECTED
    return None


def _number_problem(value: object, low: float, high: float, *, integer: bool = False) -> str | None:
    kind = "an integer" if integer else "a number"
    expected = f"{kind} between {low:g} and {high:g}"
    if isinstance(value, bool):
        return expected
    if integer and not isinstance(value, int):
        return expected
    if not isinstance(value, int | float) or not math.isfinite(value):
        return expected
    if not low <= value <= high:
        return expected
    return None


def _choice_problem(value: object, choices: Sequence[str]) -> str | None:
    return None if value in choices else "one of: " + ", ".join(choices)


def _service_name_problem(value: object) -> str | None:
    if isinstance(value, str) and _SERVICE_NAME.fullmatch(value):
        return None
    return "lowercase letters, digits and '-' (a Kubernetes-friendly name)"


def _required_fields_problem(value: object) -> str | None:
    if (
        isinstance(value, list | tuple)
        and len(value) >= 3
        and all(isinstance(v, str) and v for v in value)
    ):
        return None
    return "a list of at least 3 field names (e.g. request_id, trace_id, actor.subject)"


def _buckets_problem(value: object) -> str | None:
    if not isinstance(value, list | tuple) or len(value) < 3:
        return "a list of at least 3 bucket bounds"
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        return "finite bucket bounds (+Inf is added automatically)"
    if any(b <= a for a, b in itertools.pairwise(value)):
        return "strictly increasing bucket bounds"
    return None


def _metric_name_problem(value: object) -> str | None:
    if isinstance(value, str) and _METRIC_NAME.fullmatch(value):
        return None
    return "a Prometheus metric name (letters, digits, '_' and ':')"


def _string_map_problem(value: object) -> str | None:
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and k and isinstance(v, str | Secret) for k, v in value.items()
    ):
        return None
    return "an object of non-empty string names to string values"


def _propagators_problem(value: object) -> str | None:
    if isinstance(value, list | tuple) and all(p in _PROPAGATORS for p in value):
        return None
    return "a list of propagator names: " + ", ".join(_PROPAGATORS)


def _validator(check: Callable[[object], str | None]) -> Callable[[Any, Any, Any], None]:
    def validate(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        problem = check(value)
        if problem is not None:
            raise ValueError(f"{attr.name} must be {problem}, got {_shown_value(attr.name, value)}")

    return validate


def _shown_value(name: str, value: object) -> str:
    return repr(REDACTED) if name == "headers" else repr(value)


# --------------------------------------------------------------------------------------------
# Value objects
# --------------------------------------------------------------------------------------------


def _to_secret_headers(value: Mapping[str, str | Secret]) -> Mapping[str, Secret]:
    if not isinstance(value, Mapping):
        raise TypeError("headers must be a mapping of header names to values")
    return MappingProxyType(
        {k: v if isinstance(v, Secret) else Secret(v) for k, v in value.items()}
    )


@attrs.frozen
class OtelExporterSettings:
    """Where spans go: an OTLP collector.

    ``endpoint`` is the collector's base URL (``http://collector:4318``); for OTLP/HTTP the
    traces path ``/v1/traces`` is appended unless the URL already ends with it.
    ``timeout_ms`` bounds one export, retries included (100 to 5000 ms). ``headers`` (for example
    an ``Authorization`` header for the collector) are held as :class:`aiaas_core.Secret`.
    """

    endpoint: str = attrs.field(
        default="http://localhost:4318", validator=_validator(_endpoint_problem)
    )
    protocol: ExporterProtocol = attrs.field(
        default="http/protobuf", validator=_validator(lambda v: _choice_problem(v, _PROTOCOLS))
    )
    headers: Mapping[str, Secret] = attrs.field(
        factory=dict,
        converter=_to_secret_headers,
        validator=_validator(_string_map_problem),
        eq=False,
        hash=False,
    )
    timeout_ms: int = attrs.field(
        default=2000, validator=_validator(lambda v: _number_problem(v, 100, 5000, integer=True))
    )

    @property
    def traces_url(self) -> str:
        """The URL spans are POSTed to (OTLP/HTTP)."""
        base = self.endpoint.rstrip("/")
        return base if base.endswith("/v1/traces") else f"{base}/v1/traces"

    @property
    def timeout_s(self) -> float:
        """``timeout_ms`` in seconds."""
        return self.timeout_ms / 1000.0

    def revealed_headers(self) -> dict[str, str]:
        """The header values in clear text, for the exporter only."""
        return {k: v.get_secret_value() for k, v in self.headers.items()}

    def to_dict(self, *, reveal_secrets: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"endpoint": self.endpoint, "protocol": self.protocol}
        if self.headers:
            out["headers"] = (
                self.revealed_headers() if reveal_secrets else dict.fromkeys(self.headers, REDACTED)
            )
        out["timeout_ms"] = self.timeout_ms
        return out


def _to_str_tuple(value: Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen
class LogSettings:
    """JSON log settings.

    ``required_fields`` are present in every log line -- ``null`` when unknown (outside a
    request, or before authentication) -- so log pipelines can rely on the keys.
    ``sampling_rate`` is the share of successful (1xx-3xx) access-log lines kept; error lines
    (4xx/5xx) are always kept.
    """

    level: LogLevel = attrs.field(
        default="info", validator=_validator(lambda v: _choice_problem(v, _LOG_LEVELS))
    )
    required_fields: tuple[str, ...] = attrs.field(
        default=("request_id", "trace_id", "span_id", "actor.subject"),
        converter=_to_str_tuple,
        validator=_validator(_required_fields_problem),
    )
    sampling_rate: float = attrs.field(
        default=1.0, validator=_validator(lambda v: _number_problem(v, 0, 1))
    )

    @property
    def python_level(self) -> int:
        """The stdlib :mod:`logging` level for :attr:`level`."""
        return {"debug": 10, "info": 20, "warn": 30, "error": 40}[self.level]

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "required_fields": list(self.required_fields),
            "sampling_rate": self.sampling_rate,
        }


def _to_floats(value: Sequence[float]) -> tuple[float, ...]:
    return tuple(value)


@attrs.frozen
class HistogramSpec:
    """Bucket upper bounds for one named histogram (``+Inf`` is implied)."""

    name: str = attrs.field(validator=_validator(_metric_name_problem))
    buckets: tuple[float, ...] = attrs.field(
        converter=_to_floats, validator=_validator(_buckets_problem)
    )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "buckets": list(self.buckets)}


def _to_histograms(value: Sequence[HistogramSpec]) -> tuple[HistogramSpec, ...]:
    return tuple(value)


def _check_unique_names(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    names = [h.name for h in cast(tuple[HistogramSpec, ...], value)]
    if len(names) != len(set(names)):
        raise ValueError(f"histograms must have distinct names, got {names!r}")


def _freeze_strings(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@attrs.frozen
class MetricsSettings:
    """Histogram buckets by metric name, and resource attributes for traces and the info metric."""

    histograms: tuple[HistogramSpec, ...] = attrs.field(
        factory=lambda: (HistogramSpec(HTTP_DURATION_HISTOGRAM, _DEFAULT_DURATION_BUCKETS),),
        converter=_to_histograms,
        validator=_check_unique_names,
    )
    resource_attributes: Mapping[str, str] = attrs.field(
        factory=dict,
        converter=_freeze_strings,
        validator=_validator(_string_map_problem),
        eq=False,
        hash=False,
    )

    def buckets_for(self, name: str) -> tuple[float, ...] | None:
        """The configured buckets of histogram ``name``, or ``None`` when not configured."""
        for spec in self.histograms:
            if spec.name == name:
                return spec.buckets
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"histograms": [h.to_dict() for h in self.histograms]}
        if self.resource_attributes:
            out["resource_attributes"] = dict(self.resource_attributes)
        return out


@attrs.frozen
class TracingSettings:
    """Sampling and context propagation.

    Sampling is always *parent-based*: a request that arrives with a sampled ``traceparent`` is
    traced, one with an unsampled parent is not; ``sampler`` decides for new traces only
    (``ratio`` samples a ``sampler_arg`` share of them).
    """

    sampler: SamplerName = attrs.field(
        default="always_on", validator=_validator(lambda v: _choice_problem(v, _SAMPLERS))
    )
    sampler_arg: float = attrs.field(
        default=0.1, validator=_validator(lambda v: _number_problem(v, 0, 1))
    )
    propagators: tuple[PropagatorName, ...] = attrs.field(
        default=("tracecontext", "baggage"),
        converter=_to_str_tuple,
        validator=_validator(_propagators_problem),
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "sampler_arg": self.sampler_arg,
            "propagators": list(self.propagators),
        }


@attrs.frozen
class ConfigOverride:
    """A setting the environment (or an explicit override) changed.

    ``source`` is ``"env NAME"`` or ``"override"``. ``value`` is ``None`` for secret settings
    (exporter headers): only the fact of the override is recorded.
    """

    setting: str
    source: str
    value: str | None
    secret: bool = False


@attrs.frozen
class TelemetryProfile:
    """A service's telemetry configuration, as in ``telemetry-profile.schema.json``."""

    service_name: str = attrs.field(validator=_validator(_service_name_problem))
    otel_exporter: OtelExporterSettings = attrs.field(factory=OtelExporterSettings)
    log: LogSettings = attrs.field(factory=LogSettings)
    metrics: MetricsSettings = attrs.field(factory=MetricsSettings)
    tracing: TracingSettings = attrs.field(factory=TracingSettings)
    #: What the environment and explicit overrides changed (not part of the JSON form).
    overrides: tuple[ConfigOverride, ...] = attrs.field(default=(), eq=False, repr=False)

    def to_dict(self, *, reveal_secrets: bool = False) -> dict[str, Any]:
        """The JSON form; exporter header values are masked unless ``reveal_secrets``."""
        return {
            "service_name": self.service_name,
            "otel_exporter": self.otel_exporter.to_dict(reveal_secrets=reveal_secrets),
            "log": self.log.to_dict(),
            "metrics": self.metrics.to_dict(),
            "tracing": self.tracing.to_dict(),
        }

    def to_json(self, *, reveal_secrets: bool = False) -> str:
        """:meth:`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(reveal_secrets=reveal_secrets), indent=2)

    def summary(self) -> dict[str, str]:
        """A flat, secret-free summary (for the info metric and the start-up log line).

        Header *names* are listed, never their values; credentials in the endpoint URL
        (``user:password@``) are dropped.
        """
        exp = self.otel_exporter
        parts = urlsplit(exp.endpoint)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return {
            "service_name": self.service_name,
            "exporter_endpoint": f"{parts.scheme}://{netloc}{parts.path}",
            "exporter_protocol": exp.protocol,
            "exporter_timeout_ms": str(exp.timeout_ms),
            "exporter_headers": ",".join(sorted(exp.headers)) or "-",
            "log_level": self.log.level,
            "log_sampling_rate": f"{self.log.sampling_rate:g}",
            "sampler": self.tracing.sampler,
            "sampler_arg": f"{self.tracing.sampler_arg:g}",
            "propagators": ",".join(self.tracing.propagators) or "none",
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "profile") -> TelemetryProfile:
        """Parse the JSON form (all required keys present, as the schema demands).

        Raises :class:`aiaas_core.ConfigError` listing every problem.
        """
        problems = _Problems(source)
        profile = _parse_profile(data, problems, overrides=())
        if problems.items or profile is None:
            raise problems.error()
        return profile


# --------------------------------------------------------------------------------------------
# Parsing (collects every problem)
# --------------------------------------------------------------------------------------------

_NO_VALUE: Final = object()


class _Problems:
    """Collects problems; the source of each is where its setting's value came from."""

    def __init__(self, default_source: str) -> None:
        self.default_source = default_source
        self.sources: dict[str, str] = {}
        self.items: list[ConfigProblem] = []

    def source_of(self, path: str) -> str:
        probe = path
        while True:
            if probe in self.sources:
                return self.sources[probe]
            if "." not in probe and "[" not in probe:
                return self.default_source
            probe = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", probe)

    def add(
        self,
        path: str,
        expected: str,
        value: object = _NO_VALUE,
        hint: str = "",
        *,
        source: str | None = None,
    ) -> None:
        src = source if source is not None else self.source_of(path)
        shown: object = None if value is _NO_VALUE else value
        if path.startswith("otel_exporter.headers") and shown is not None:
            shown = None  # never show header values
        self.items.append(ConfigProblem(path, src, shown, expected, hint or _hint(path, src)))

    def error(self) -> ConfigError:
        return ConfigError(problems=self.items)


def _hint(path: str, source: str) -> str:
    if source.startswith("env "):
        return f"fix or unset {source[4:]}"
    if source == "override":
        return f"fix the override for {path!r}"
    if source == "missing":
        return f"set {path!r} in the profile"
    return f"fix {path!r} in the {source}"


def _section(data: Mapping[str, Any], key: str, problems: _Problems) -> Mapping[str, Any] | None:
    if key not in data:
        problems.add(key, f"an object with the {key} settings", source="missing")
        return None
    value = data[key]
    if not isinstance(value, Mapping):
        problems.add(key, f"an object with the {key} settings", type(value).__name__)
        return None
    return value


def _take(
    data: Mapping[str, Any],
    section: str,
    key: str,
    check: Callable[[object], str | None],
    problems: _Problems,
    *,
    default: object = _NO_VALUE,
) -> Any:
    path = f"{section}.{key}"
    if key not in data:
        if default is _NO_VALUE:
            problems.add(path, check(_NO_VALUE) or "a value", source="missing")
        return default
    value = data[key]
    problem = check(value)
    if problem is not None:
        problems.add(path, problem, value)
        return _NO_VALUE
    return value


def _parse_histograms(value: object, problems: _Problems) -> list[HistogramSpec] | None:
    if not isinstance(value, list | tuple):
        problems.add("metrics.histograms", "a list of {name, buckets} objects", value)
        return None
    specs: list[HistogramSpec] = []
    seen: set[str] = set()
    ok = True
    for i, item in enumerate(value):
        where = f"metrics.histograms[{i}]"
        if not isinstance(item, Mapping):
            problems.add(where, "an object with name and buckets", item)
            ok = False
            continue
        name, buckets = item.get("name"), item.get("buckets")
        name_problem = _metric_name_problem(name)
        if name_problem is not None:
            problems.add(f"{where}.name", name_problem, name)
        elif name in seen:
            problems.add(f"{where}.name", "a name not configured twice", name)
            name_problem = "duplicate"
        buckets_problem = _buckets_problem(buckets)
        if buckets_problem is not None:
            problems.add(f"{where}.buckets", buckets_problem, buckets)
        if name_problem is None and buckets_problem is None:
            seen.add(cast(str, name))
            specs.append(HistogramSpec(cast(str, name), cast(Sequence[float], buckets)))
        else:
            ok = False
    return specs if ok else None


def _parse_profile(
    data: object, problems: _Problems, *, overrides: tuple[ConfigOverride, ...]
) -> TelemetryProfile | None:
    if not isinstance(data, Mapping):
        problems.add("", "a JSON object with the profile", type(data).__name__)
        return None
    before = len(problems.items)
    for key in sorted(set(data) - set(_TOP_LEVEL_KEYS), key=str):
        problems.add(
            str(key), "a known setting: " + ", ".join(_TOP_LEVEL_KEYS), hint=f"remove {key!r}"
        )
    if "service_name" not in data:
        problems.add(
            "service_name",
            _service_name_problem(None) or "",
            source="missing",
            hint="set service_name in the profile, or OTEL_SERVICE_NAME",
        )
    elif (problem := _service_name_problem(data["service_name"])) is not None:
        problems.add("service_name", problem, data["service_name"])

    exporter = log = metrics = tracing = None
    if (sec := _section(data, "otel_exporter", problems)) is not None:
        fields = {
            "endpoint": _take(sec, "otel_exporter", "endpoint", _endpoint_problem, problems),
            "protocol": _take(
                sec, "otel_exporter", "protocol", lambda v: _choice_problem(v, _PROTOCOLS), problems
            ),
            "headers": _take(
                sec, "otel_exporter", "headers", _string_map_problem, problems, default={}
            ),
            "timeout_ms": _take(
                sec,
                "otel_exporter",
                "timeout_ms",
                lambda v: _number_problem(v, 100, 5000, integer=True),
                problems,
                default=2000,
            ),
        }
        if _NO_VALUE not in fields.values():
            exporter = OtelExporterSettings(**fields)
    if (sec := _section(data, "log", problems)) is not None:
        fields = {
            "level": _take(
                sec, "log", "level", lambda v: _choice_problem(v, _LOG_LEVELS), problems
            ),
            "required_fields": _take(
                sec, "log", "required_fields", _required_fields_problem, problems
            ),
            "sampling_rate": _take(
                sec, "log", "sampling_rate", lambda v: _number_problem(v, 0, 1), problems, default=1
            ),
        }
        if _NO_VALUE not in fields.values():
            log = LogSettings(**fields)
    if (sec := _section(data, "metrics", problems)) is not None:
        histograms: list[HistogramSpec] | None = None
        if "histograms" not in sec:
            problems.add(
                "metrics.histograms", "a list of {name, buckets} objects", source="missing"
            )
        else:
            histograms = _parse_histograms(sec["histograms"], problems)
        resource = _take(
            sec, "metrics", "resource_attributes", _string_map_problem, problems, default={}
        )
        if histograms is not None and resource is not _NO_VALUE:
            metrics = MetricsSettings(histograms=histograms, resource_attributes=resource)
    if (sec := _section(data, "tracing", problems)) is not None:
        fields = {
            "sampler": _take(
                sec, "tracing", "sampler", lambda v: _choice_problem(v, _SAMPLERS), problems
            ),
            "sampler_arg": _take(
                sec,
                "tracing",
                "sampler_arg",
                lambda v: _number_problem(v, 0, 1),
                problems,
                default=0.1,
            ),
            "propagators": _take(
                sec,
                "tracing",
                "propagators",
                _propagators_problem,
                problems,
                default=("tracecontext", "baggage"),
            ),
        }
        if _NO_VALUE not in fields.values():
            tracing = TracingSettings(**fields)
    if len(problems.items) != before or None in (exporter, log, metrics, tracing):
        return None
    return TelemetryProfile(
        service_name=data["service_name"],
        otel_exporter=cast(OtelExporterSettings, exporter),
        log=cast(LogSettings, log),
        metrics=cast(MetricsSettings, metrics),
        tracing=cast(TracingSettings, tracing),
        overrides=overrides,
    )
