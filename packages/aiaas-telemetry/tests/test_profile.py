"""The telemetry profile: the schema contract, layered loading, OTEL_* variables, problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiaas_core import ConfigError, ConfigProblem, Secret
from aiaas_telemetry import (
    ConfigOverride,
    HistogramSpec,
    LogSettings,
    MetricsSettings,
    OtelExporterSettings,
    TelemetryProfile,
    TracingSettings,
    load_profile,
)

FULL: dict[str, Any] = {
    "service_name": "world-service",
    "otel_exporter": {
        "endpoint": "http://otel-collector:4318",
        "protocol": "http/protobuf",
        "headers": {"Authorization": "Bearer collector-token-123"},
        "timeout_ms": 1500,
    },
    "log": {
        "level": "warn",
        "required_fields": ["request_id", "trace_id", "actor.subject"],
        "sampling_rate": 0.5,
    },
    "metrics": {
        "histograms": [
            {"name": "http_server_request_duration_seconds", "buckets": [0.01, 0.1, 1]},
            {"name": "inference_seconds", "buckets": [0.05, 0.1, 0.3, 1]},
        ],
        "resource_attributes": {"deployment.environment": "staging"},
    },
    "tracing": {"sampler": "ratio", "sampler_arg": 0.25, "propagators": ["tracecontext"]},
}


def validate(schema: dict[str, Any], doc: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    ).validate(doc)


def problems_of(exc: pytest.ExceptionInfo[ConfigError]) -> list[ConfigProblem]:
    problems = list(exc.value.problems)
    assert all(isinstance(p, ConfigProblem) for p in problems)
    return problems


def paths(exc: pytest.ExceptionInfo[ConfigError]) -> set[str]:
    return {p.path for p in problems_of(exc)}


# --------------------------------------------------------------------------- JSON form


def test_full_document_round_trips_and_validates(profile_schema: dict[str, Any]) -> None:
    validate(profile_schema, FULL)
    profile = TelemetryProfile.from_dict(FULL)
    assert profile.service_name == "world-service"
    assert profile.otel_exporter.timeout_ms == 1500
    assert profile.otel_exporter.timeout_s == 1.5
    assert profile.log.python_level == 30
    assert profile.metrics.buckets_for("inference_seconds") == (0.05, 0.1, 0.3, 1)
    assert profile.metrics.buckets_for("unknown") is None
    assert profile.tracing.sampler == "ratio"
    assert profile.to_dict(reveal_secrets=True) == FULL | {
        "log": FULL["log"],
    }
    masked = profile.to_dict()
    validate(profile_schema, masked)
    assert masked["otel_exporter"]["headers"] == {"Authorization": "[REDACTED]"}
    assert TelemetryProfile.from_dict(profile.to_dict(reveal_secrets=True)) == profile


def test_defaults_validate_against_the_schema(profile_schema: dict[str, Any]) -> None:
    profile = load_profile({"service_name": "svc"}, environ={})
    doc = profile.to_dict()
    validate(profile_schema, doc)
    assert doc["otel_exporter"] == {
        "endpoint": "http://localhost:4318",
        "protocol": "http/protobuf",
        "timeout_ms": 2000,
    }
    assert doc["tracing"]["propagators"] == ["tracecontext", "baggage"]
    assert json.loads(profile.to_json()) == doc


def test_secrets_never_in_repr_summary_or_json() -> None:
    profile = TelemetryProfile.from_dict(FULL)
    secret = "collector-token-123"
    assert secret not in repr(profile)
    assert secret not in json.dumps(profile.summary())
    assert secret not in profile.to_json()
    assert secret in profile.to_json(reveal_secrets=True)
    assert isinstance(profile.otel_exporter.headers["Authorization"], Secret)
    assert profile.otel_exporter.revealed_headers() == {
        "Authorization": "Bearer collector-token-123"
    }


def test_summary_drops_credentials_from_the_endpoint() -> None:
    profile = load_profile(
        {"service_name": "svc", "otel_exporter": {"endpoint": "https://user:pw@[::1]:4318/otlp"}},
        environ={},
    )
    summary = profile.summary()
    assert summary["exporter_endpoint"] == "https://[::1]:4318/otlp"
    assert "pw" not in json.dumps(summary)
    assert summary["exporter_headers"] == "-"


def test_traces_url() -> None:
    assert OtelExporterSettings("http://c:4318").traces_url == "http://c:4318/v1/traces"
    assert OtelExporterSettings("http://c:4318/").traces_url == "http://c:4318/v1/traces"
    assert OtelExporterSettings("http://c:4318/v1/traces").traces_url == "http://c:4318/v1/traces"


def test_every_problem_is_reported_at_once() -> None:
    bad = {
        "service_name": "World Service",
        "otel_exporter": {"endpoint": "not a url", "protocol": "thrift", "timeout_ms": 50},
        "log": {"level": "loud", "required_fields": ["request_id"], "sampling_rate": 2},
        "metrics": {"histograms": [{"name": "bad name", "buckets": [3, 2, 1]}, 5]},
        "tracing": {"sampler": "sometimes", "sampler_arg": -1, "propagators": ["xray"]},
        "extra": True,
    }
    with pytest.raises(ConfigError) as exc:
        TelemetryProfile.from_dict(bad)
    assert paths(exc) == {
        "service_name",
        "otel_exporter.endpoint",
        "otel_exporter.protocol",
        "otel_exporter.timeout_ms",
        "log.level",
        "log.required_fields",
        "log.sampling_rate",
        "metrics.histograms[0].name",
        "metrics.histograms[0].buckets",
        "metrics.histograms[1]",
        "tracing.sampler",
        "tracing.sampler_arg",
        "tracing.propagators",
        "extra",
    }
    text = str(exc.value)
    assert "between 100 and 5000" in text
    assert "strictly increasing" in text


def test_missing_required_keys_are_problems() -> None:
    with pytest.raises(ConfigError) as exc:
        TelemetryProfile.from_dict({"otel_exporter": {}, "log": {}, "metrics": {}, "tracing": {}})
    assert paths(exc) == {
        "service_name",
        "otel_exporter.endpoint",
        "otel_exporter.protocol",
        "log.level",
        "log.required_fields",
        "metrics.histograms",
        "tracing.sampler",
    }
    assert {p.source for p in problems_of(exc)} == {"missing"}
    with pytest.raises(ConfigError) as exc2:
        TelemetryProfile.from_dict({"service_name": "a", "log": 3})
    assert "log" in paths(exc2)
    assert "otel_exporter" in paths(exc2)
    with pytest.raises(ConfigError):
        TelemetryProfile.from_dict([1, 2])  # type: ignore[arg-type]


def test_header_values_never_shown_in_problems() -> None:
    with pytest.raises(ConfigError) as exc:
        TelemetryProfile.from_dict(
            FULL | {"otel_exporter": FULL["otel_exporter"] | {"headers": {"x": 5, "y": "s3cr3t"}}}
        )
    assert "s3cr3t" not in str(exc.value)
    (problem,) = problems_of(exc)
    assert problem.path == "otel_exporter.headers"
    assert problem.value is None


def test_histogram_names_must_be_distinct() -> None:
    doc = json.loads(json.dumps(FULL))
    doc["metrics"]["histograms"].append(doc["metrics"]["histograms"][0])
    with pytest.raises(ConfigError) as exc:
        TelemetryProfile.from_dict(doc)
    assert paths(exc) == {"metrics.histograms[2].name"}
    with pytest.raises(ValueError, match="distinct"):
        MetricsSettings(histograms=[HistogramSpec("a", [1, 2, 3]), HistogramSpec("a", [1, 2, 3])])


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: OtelExporterSettings(endpoint="ftp://x"), "endpoint"),
        (lambda: OtelExporterSettings(endpoint="http://x:port"), "endpoint"),
        (lambda: OtelExporterSettings(timeout_ms=True), "timeout_ms"),
        (lambda: OtelExporterSettings(timeout_ms=2.5), "timeout_ms"),
        (lambda: OtelExporterSettings(protocol="udp"), "protocol"),
        (lambda: LogSettings(sampling_rate=float("nan")), "sampling_rate"),
        (lambda: LogSettings(required_fields=["a", "b"]), "required_fields"),
        (lambda: HistogramSpec("h", [1, float("inf"), 3]), "buckets"),
        (lambda: HistogramSpec("1h", [1, 2, 3]), "name"),
        (lambda: TracingSettings(propagators=["zipkin"]), "propagators"),
        (lambda: TelemetryProfile("Bad_Name"), "service_name"),
    ],
)
def test_value_objects_validate(factory: Any, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        factory()


def test_exporter_headers_repr_is_masked() -> None:
    exp = OtelExporterSettings(headers={"authorization": "Bearer abc123"})
    assert "abc123" not in repr(exp)
    assert OtelExporterSettings(headers={"a": Secret("x")}).revealed_headers() == {"a": "x"}
    with pytest.raises(TypeError):
        OtelExporterSettings(headers=[("a", "b")])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- layered loading


def test_environment_overrides_the_document_and_is_recorded() -> None:
    env = {
        "OTEL_SERVICE_NAME": "env-service",
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,team=platform,region=eu%2Dwest",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme,api-key=env%20secret",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "750",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
        "OTEL_PROPAGATORS": "tracecontext,baggage,tracecontext",
        "OTEL_LOG_LEVEL": "WARNING",
    }
    profile = load_profile(FULL, environ=env)
    assert profile.service_name == "env-service"  # OTEL_SERVICE_NAME beats service.name
    assert profile.metrics.resource_attributes == {
        "deployment.environment": "staging",
        "team": "platform",
        "region": "eu-west",
    }
    assert profile.otel_exporter.endpoint == "http://traces:4318/v1/traces"  # TRACES wins
    assert profile.otel_exporter.revealed_headers() == {
        "Authorization": "Bearer collector-token-123",
        "x-tenant": "acme",
        "api-key": "env secret",
    }
    assert profile.otel_exporter.timeout_ms == 750  # milliseconds, as the spec says
    assert profile.tracing.sampler == "ratio"
    assert profile.tracing.sampler_arg == 0.5
    assert profile.tracing.propagators == ("tracecontext", "baggage")
    assert profile.log.level == "warn"
    recorded = {o.setting: o for o in profile.overrides}
    assert recorded["service_name"] == ConfigOverride(
        "service_name", "env OTEL_SERVICE_NAME", "env-service", False
    )
    headers = recorded["otel_exporter.headers"]
    assert headers.secret
    assert headers.value is None
    assert headers.source == "env OTEL_EXPORTER_OTLP_HEADERS"
    assert "env secret" not in repr(profile.overrides)
    assert recorded["otel_exporter.timeout_ms"].value == "750"


def test_explicit_overrides_win_over_everything() -> None:
    profile = load_profile(
        FULL,
        environ={"OTEL_TRACES_SAMPLER": "always_off"},
        overrides={"tracing.sampler": "always_on", "service_name": "override-svc"},
    )
    assert profile.tracing.sampler == "always_on"
    assert profile.service_name == "override-svc"
    sources = [(o.setting, o.source) for o in profile.overrides]
    assert ("tracing.sampler", "env OTEL_TRACES_SAMPLER") in sources
    assert ("tracing.sampler", "override") in sources


def test_unknown_override_is_a_problem() -> None:
    with pytest.raises(ConfigError) as exc:
        load_profile({"service_name": "a"}, environ={}, overrides={"tracing.samplr": "x"})
    (problem,) = problems_of(exc)
    assert problem.path == "tracing.samplr"
    assert problem.source == "override"


def test_bad_environment_values_name_the_variable() -> None:
    env = {
        "OTEL_SERVICE_NAME": "Not Valid",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "soon",
        "OTEL_EXPORTER_OTLP_HEADERS": "novalue,ok=1",
        "OTEL_TRACES_SAMPLER": "xray",
        "OTEL_TRACES_SAMPLER_ARG": "2",
        "OTEL_PROPAGATORS": "tracecontext,ottrace",
        "OTEL_LOG_LEVEL": "verbose",
    }
    with pytest.raises(ConfigError) as exc:
        load_profile({}, environ=env)
    sources = {p.source for p in problems_of(exc)}
    assert sources == {f"env {name}" for name in env}
    text = str(exc.value)
    assert "fix or unset OTEL_TRACES_SAMPLER" in text
    header_problem = next(p for p in problems_of(exc) if p.path == "otel_exporter.headers")
    assert header_problem.value is None  # never echo header text


def test_service_name_is_required() -> None:
    with pytest.raises(ConfigError) as exc:
        load_profile(None, environ={})
    (problem,) = problems_of(exc)
    assert problem.path == "service_name"
    assert "OTEL_SERVICE_NAME" in problem.hint
    assert load_profile(None, environ={"OTEL_SERVICE_NAME": "svc"}).service_name == "svc"


def test_propagators_none_and_resource_attributes_only_service_name() -> None:
    profile = load_profile(
        {},
        environ={"OTEL_PROPAGATORS": "none", "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs"},
    )
    assert profile.tracing.propagators == ()
    assert profile.service_name == "from-attrs"


def test_problem_source_is_where_the_value_came_from(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"service_name": "svc", "log": {"level": "chatty"}}))
    with pytest.raises(ConfigError) as exc:
        load_profile(path, environ={"OTEL_TRACES_SAMPLER_ARG": "7"})
    by_path = {p.path: p for p in problems_of(exc)}
    assert by_path["log.level"].source == f"file {path}"
    assert by_path["tracing.sampler_arg"].source == "env OTEL_TRACES_SAMPLER_ARG"


def test_profile_from_json_file_and_env_var(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(FULL))
    assert load_profile(path, environ={}).service_name == "world-service"
    assert load_profile(str(path), environ={}) == TelemetryProfile.from_dict(FULL)
    assert load_profile(environ={"AIAAS_TELEMETRY_PROFILE": str(path)}).service_name == (
        "world-service"
    )


def test_profile_from_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text("service_name: yaml-svc\ntracing:\n  sampler: always_off\n")
    profile = load_profile(path, environ={})
    assert profile.service_name == "yaml-svc"
    assert profile.tracing.sampler == "always_off"
    assert profile.log.level == "info"  # defaults fill the rest


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.json", None, "an existing profile file"),
        ("broken.json", "{not json", "valid JSON"),
        ("broken.yaml", "a: [", "valid YAML"),
        ("list.json", "[1, 2]", "a JSON object"),
    ],
)
def test_unreadable_profile_files(
    tmp_path: Path, name: str, content: str | None, expected: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as exc:
        load_profile(path, environ={})
    assert expected in str(exc.value)
    assert problems_of(exc)[0].source == f"file {path}"


def test_partial_document_section_of_wrong_type() -> None:
    with pytest.raises(ConfigError) as exc:
        load_profile({"service_name": "a", "tracing": "on"}, environ={"OTEL_TRACES_SAMPLER": "x"})
    assert "tracing" in paths(exc)
    with pytest.raises(ConfigError):
        load_profile(
            {"service_name": "a", "tracing": "on"},
            environ={},
            overrides={"tracing.sampler": "always_on"},
        )


# --------------------------------------------------------------------------- property

_names = st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True)
_buckets = st.lists(
    st.floats(min_value=0.0001, max_value=1000, allow_nan=False),
    min_size=3,
    max_size=8,
    unique=True,
).map(sorted)
_profiles = st.builds(
    TelemetryProfile,
    service_name=_names,
    otel_exporter=st.builds(
        OtelExporterSettings,
        endpoint=st.sampled_from(["http://c:4318", "https://otel.example.com/otlp"]),
        protocol=st.sampled_from(["grpc", "http/protobuf"]),
        headers=st.dictionaries(_names, st.text(min_size=1, max_size=10), max_size=3),
        timeout_ms=st.integers(100, 5000),
    ),
    log=st.builds(
        LogSettings,
        level=st.sampled_from(["debug", "info", "warn", "error"]),
        required_fields=st.lists(_names, min_size=3, max_size=5),
        sampling_rate=st.floats(0, 1),
    ),
    metrics=st.builds(
        MetricsSettings,
        histograms=st.lists(
            st.builds(
                HistogramSpec, name=st.from_regex(r"[a-z_]{1,12}", fullmatch=True), buckets=_buckets
            ),
            max_size=3,
            unique_by=lambda h: h.name,
        ),
        resource_attributes=st.dictionaries(_names, _names, max_size=3),
    ),
    tracing=st.builds(
        TracingSettings,
        sampler=st.sampled_from(["always_on", "always_off", "ratio"]),
        sampler_arg=st.floats(0, 1),
        propagators=st.lists(
            st.sampled_from(["tracecontext", "baggage", "b3", "jaeger"]), unique=True
        ),
    ),
)


@given(profile=_profiles)
def test_any_profile_validates_and_round_trips(
    profile_schema: dict[str, Any], profile: TelemetryProfile
) -> None:
    validate(profile_schema, profile.to_dict())
    revealed = json.loads(json.dumps(profile.to_dict(reveal_secrets=True)))
    validate(profile_schema, revealed)
    again = TelemetryProfile.from_dict(revealed)
    assert again == profile
    assert again.otel_exporter.revealed_headers() == profile.otel_exporter.revealed_headers()
