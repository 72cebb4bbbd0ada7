"""Fuzzing campaign: schemathesis against every served API document, and Hypothesis-generated
hostile bodies against the OpenAI routes.

Three real servers, each its own process: inference-service (its ``/openapi.json``, chat
routes on, with SmolLM2) on a platform database, the handoff API (``aiaas-infra handoff
serve``, its ``/openapi.json``) and the schema management API (``aiaas-db serve``; it serves
no document: its published contract,
``packages/aiaas-db/tests/contracts/schema-management.yaml``, is fuzzed, with the two checks
its own fuzz test uses, the statuses it answers beyond the contract being documented
deviations). Schemathesis generates valid and invalid requests for every operation (seeded from
the run's seed) and checks every answer: no server error, and for the served documents the
status code, content type, headers and body as documented, and invalid data refused.

The hostile bodies (``POST /v1/embeddings``, ``/v1/chat/completions`` and ``/v1/completions``,
and the ``/v1/models`` paths): JSON nested up to 200,000 deep, numbers with thousands of digits
or out of float range, every field with a wrong type, bytes that are not UTF-8 and lone
surrogates, inputs up to the 100,000-character limit, content types that are not JSON, and more.
Every answer must be below 500 and, when it is an error, OpenAI's error shape (the document's
``Error`` schema).

Bounds: :data:`EXAMPLES` cases per operation and mode and :data:`SECONDS` per server by default
(``--long``: :data:`EXAMPLES_LONG`, no time budget). Figures per server: cases run, server
errors (0), schema violations (0). The three servers' logs are scanned for their API keys and the
planted secrets.
"""

from __future__ import annotations

import json
import random
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import jsonschema
import pytest
import schemathesis
import yaml
from _services import (
    MODEL,
    Platform,
    Process,
    clean_env,
    free_port,
    inference_argv,
    platform_database,
    spawn,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aiaas_core import ApiKeyVerifier, HashKey, InMemoryApiKeyStore, KeyedHasher

CAMPAIGN = "fuzzing"
ROOT = Path(__file__).resolve().parent.parent
SCHEMA_API_CONTRACT = ROOT / "packages/aiaas-db/tests/contracts/schema-management.yaml"
EXAMPLES = 25
EXAMPLES_LONG = 300
SECONDS = 45.0
HOSTILE_EXAMPLES = 150
HOSTILE_EXAMPLES_LONG = 1500
HOSTILE_SECONDS = 40.0
#: The routes the hostile bodies are posted to.
POSTED = ("/v1/embeddings", "/v1/chat/completions", "/v1/completions")
SERVED_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


# --- the servers ----------------------------------------------------------------------------


def issue(roles: list[str], subject: str) -> tuple[str, str, str]:
    """A new API key: (token, its ``subject:key_id:roles:digest`` entry, the HMAC key)."""
    hash_key = secrets.token_hex(32)
    hasher = KeyedHasher([HashKey.from_text("v1", hash_key)], "v1")
    key, record = ApiKeyVerifier(InMemoryApiKeyStore(), hasher).issue(subject=subject, roles=roles)
    entry = f"{subject}:{record.key_id}:{'+'.join(record.roles)}:{record.digest}"
    return key.token, entry, hash_key


@dataclass
class Server:
    name: str
    process: Process
    headers: dict[str, str]
    secrets: list[str]


@dataclass
class Servers:
    platform: Platform
    inference: Server
    handoff: Server
    schema_api: Server
    secrets_found: list[str] = field(default_factory=list)


def wait_up(process: Process, path: str, timeout: float = 180) -> None:
    process.wait_ready(path, timeout=timeout)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    logs = tmp_path_factory.mktemp("fuzz-logs")
    with platform_database() as platform:
        started: list[Process] = []
        try:
            port = free_port()
            # Chat on: the document then describes /v1/chat/completions and /v1/completions
            # (SmolLM2), fuzzed with the rest (about 25 s more on a 2-core machine).
            inference = spawn(
                inference_argv(port),
                platform.service_env(INFERENCE_SERVICE_CHAT="true"),
                port,
                logs / "inference.log",
            )
            started.append(inference)

            h_token, h_entry, h_hash = issue(["platform-engineer"], "fuzz-pe")
            port = free_port()
            handoff = spawn(
                [
                    str(Path(sys.executable).with_name("aiaas-infra")),
                    "handoff",
                    "serve",
                    "--spec",
                    str(_example_spec()),
                    "--port",
                    str(port),
                    "--package-base-url",
                    "https://packages.example.net",
                ],
                clean_env(
                    AIAAS_HANDOFF_API_KEYS=h_entry,
                    AIAAS_HANDOFF_API_KEY_HASH_KEY=h_hash,
                    OTEL_SDK_DISABLED="true",
                ),
                port,
                logs / "handoff.log",
            )
            started.append(handoff)

            s_token, s_entry, s_hash = issue(["platform-engineer"], "fuzz-pe")
            port = free_port()
            schema_db = platform.cluster.create_database("schema_api")
            schema_api = spawn(
                [
                    str(Path(sys.executable).with_name("aiaas-db")),
                    "serve",
                    "--dsn",
                    schema_db,
                    "--port",
                    str(port),
                    "--lock-timeout",
                    "1",
                ],
                clean_env(
                    AIAAS_DB_API_KEYS=s_entry,
                    AIAAS_DB_API_KEY_HASH_KEY=s_hash,
                    OTEL_SDK_DISABLED="true",
                ),
                port,
                logs / "schema-api.log",
            )
            started.append(schema_api)
            wait_up(handoff, "/health")
            wait_up(schema_api, "/health")
            wait_up(inference, "/ready")
            yield Servers(
                platform=platform,
                inference=Server(
                    "inference-service",
                    inference,
                    {"Authorization": f"Bearer {platform.token}"},
                    [platform.token, platform.hash_key],
                ),
                handoff=Server(
                    "handoff API",
                    handoff,
                    {"Authorization": f"Bearer {h_token}"},
                    [h_token, h_hash],
                ),
                schema_api=Server(
                    "schema API",
                    schema_api,
                    {"Authorization": f"Bearer {s_token}"},
                    [s_token, s_hash],
                ),
            )
            for process in started:
                code, _ = process.terminate(timeout=60)
                assert code == 0, f"{process.base} exited {code}:\n{process.text()[-3000:]}"
        finally:
            for process in started:
                process.kill()


def _example_spec() -> Path:
    from aiaas_infra import example_spec_path

    return Path(example_spec_path())


# --- schemathesis -----------------------------------------------------------------------------


@dataclass
class Tally:
    cases: int = 0
    server_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    operations: int = 0
    stopped_by_time: bool = False


def run_schemathesis(
    schema: Any,
    server: Server,
    checks: list[Callable[..., Any]],
    *,
    seed: int,
    examples: int,
    seconds: float | None,
) -> Tally:
    tally = Tally()
    deadline = None if seconds is None else time.monotonic() + seconds
    operations = [cast(Any, result).ok() for result in schema.get_all_operations()]
    tally.operations = len(operations)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis_seed(seed)
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                if deadline is not None and time.monotonic() > deadline:
                    tally.stopped_by_time = True
                    return
                response = case.call(
                    base_url=server.process.base, headers=server.headers, timeout=60
                )
                tally.cases += 1
                tally.statuses[response.status_code] += 1
                try:
                    case.validate_response(response, checks=checks)
                except FailureGroup as group:
                    where = f"{case.method} {case.formatted_path}"
                    for failure in group.exceptions:
                        text = f"{where}: {failure.title} ({response.status_code})"
                        if isinstance(failure, ServerError):
                            tally.server_errors.append(text)
                        else:
                            tally.violations.append(text)

            try:
                run()
            except Unsatisfiable:
                continue  # nothing invalid can be made of this operation (no parameters)
    return tally


def report(chaos_report: Any, server: Server, tally: Tally, what: str) -> None:
    figure = chaos_report.figure
    figure(CAMPAIGN, f"{server.name}: operations", tally.operations, bound=what)
    figure(
        CAMPAIGN,
        f"{server.name}: cases run",
        tally.cases,
        bound="stopped by time" if tally.stopped_by_time else "",
    )
    figure(CAMPAIGN, f"{server.name}: server errors", len(tally.server_errors), bound="0")
    figure(CAMPAIGN, f"{server.name}: schema violations", len(tally.violations), bound="0")
    figure(
        CAMPAIGN,
        f"{server.name}: statuses",
        " ".join(f"{s}:{n}" for s, n in sorted(tally.statuses.items())),
    )


def judge(server: Server, tally: Tally, seed: int) -> None:
    assert tally.cases > 0, f"{server.name}: no case ran (seed {seed})"
    assert not tally.server_errors, (
        f"{server.name}: server errors (seed {seed}): {sorted(set(tally.server_errors))[:10]}"
    )
    assert not tally.violations, (
        f"{server.name}: answers that break the document (seed {seed}):"
        f" {sorted(set(tally.violations))[:10]}"
    )


def test_schemathesis_inference_service(
    servers: Servers, chaos_report: Any, chaos_long: bool
) -> None:
    server = servers.inference
    schema = schemathesis.openapi.from_url(f"{server.process.base}/openapi.json")
    schema.config.generation.update(with_security_parameters=False)
    # Invalid data is refused with a 4xx the document names: 413 for an input over its length
    # (OpenAI's input_too_large), which schemathesis does not count as a refusal by default.
    schema.config.checks.negative_data_rejection.expected_statuses = [
        "400",
        "401",
        "403",
        "404",
        "413",
        "415",
        "422",
    ]
    tally = run_schemathesis(
        schema,
        server,
        [*SERVED_CHECKS, negative_data_rejection],
        seed=chaos_report.seed,
        examples=EXAMPLES_LONG if chaos_long else EXAMPLES,
        seconds=None if chaos_long else SECONDS,
    )
    report(chaos_report, server, tally, "its /openapi.json")
    judge(server, tally, chaos_report.seed)


def test_schemathesis_handoff_api(servers: Servers, chaos_report: Any, chaos_long: bool) -> None:
    server = servers.handoff
    schema = schemathesis.openapi.from_url(f"{server.process.base}/openapi.json")
    schema.config.generation.update(with_security_parameters=False)
    # Valid input may still meet a maintenance lock (423) or a denial: documented answers.
    schema.config.checks.positive_data_acceptance.expected_statuses = ["2xx", "401", "403", "423"]
    tally = run_schemathesis(
        schema,
        server,
        [*SERVED_CHECKS, negative_data_rejection],
        seed=chaos_report.seed,
        examples=EXAMPLES_LONG if chaos_long else EXAMPLES,
        seconds=None if chaos_long else SECONDS,
    )
    report(chaos_report, server, tally, "its /openapi.json")
    judge(server, tally, chaos_report.seed)


def test_schemathesis_schema_api(servers: Servers, chaos_report: Any, chaos_long: bool) -> None:
    from aiaas_core import error_response_schema

    server = servers.schema_api
    schema = schemathesis.openapi.from_dict(yaml.safe_load(SCHEMA_API_CONTRACT.read_text()))
    error = jsonschema.Draft7Validator(error_response_schema())
    bad_errors: list[str] = []

    def error_body(ctx: Any, response: Any, case: Any) -> bool | None:
        if response.status_code >= 400:
            try:
                error.validate(response.json())
            except (ValueError, jsonschema.ValidationError) as exc:
                bad_errors.append(f"{case.method} {case.formatted_path}: {exc}")
                raise AssertionError(f"not the platform's error body: {exc}") from None
        return None

    tally = run_schemathesis(
        schema,
        server,
        [not_a_server_error, response_schema_conformance, error_body],
        seed=chaos_report.seed,
        examples=EXAMPLES_LONG if chaos_long else EXAMPLES,
        seconds=None if chaos_long else SECONDS,
    )
    report(chaos_report, server, tally, "its published contract (serves none)")
    judge(server, tally, chaos_report.seed)
    assert not bad_errors, bad_errors[:5]


# --- hostile bodies ---------------------------------------------------------------------------


def _nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
WRONG = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(what, body, content type) of one hostile request."""
    kind = draw(
        st.sampled_from(
            [
                "deep",
                "deep-input",
                "huge-int",
                "huge-float",
                "wrong-types",
                "not-utf8",
                "surrogate",
                "giant",
                "giant-list",
                "content-type",
                "garbage",
                "duplicate-keys",
            ]
        )
    )
    ctype = "application/json"
    if kind == "deep":
        body = _nested(draw(st.integers(min_value=900, max_value=200_000))).encode()
    elif kind == "deep-input":
        depth = draw(st.integers(min_value=2, max_value=100_000))
        body = (
            f'{{"model": "{MODEL}", "input": {_nested(depth, chr(34) + "x" + chr(34))}}}'.encode()
        )
    elif kind == "huge-int":
        digits = draw(st.integers(min_value=4000, max_value=400_000))
        field_name = draw(st.sampled_from(["dimensions", "input", "model", "truncate"]))
        number = "9" * digits
        body = f'{{"model": "{MODEL}", "input": "hi", "{field_name}": {number}}}'.encode()
    elif kind == "huge-float":
        value = draw(st.sampled_from(["1e999", "-1e999", "1e-999", "NaN", "Infinity", "-0.0"]))
        field_name = draw(st.sampled_from(["dimensions", "input", "encoding_format"]))
        body = f'{{"model": "{MODEL}", "input": "hi", "{field_name}": {value}}}'.encode()
    elif kind == "wrong-types":
        request: dict[str, Any] = {"model": MODEL, "input": "hi"}
        for name in draw(
            st.lists(
                st.sampled_from(
                    ["model", "input", "encoding_format", "dimensions", "user", "truncate"]
                ),
                min_size=1,
                max_size=4,
                unique=True,
            )
        ):
            request[name] = draw(WRONG)
        body = json.dumps(request).encode()
    elif kind == "not-utf8":
        raw = draw(st.binary(min_size=1, max_size=64).filter(_not_utf8))
        body = b'{"model": "' + MODEL.encode() + b'", "input": "' + raw + b'"}'
    elif kind == "surrogate":
        escapes = draw(st.sampled_from(["\\ud800", "\\udfff", "a\\ud83d", "\\udc00\\ud800"]))
        body = f'{{"model": "{MODEL}", "input": ["ok", "{escapes}"]}}'.encode()
    elif kind == "giant":
        size = draw(st.integers(min_value=50_000, max_value=100_000))
        truncate = draw(st.booleans())
        text = draw(st.sampled_from(["a", "word ", "\u00e9", "\U0001f600", " ", "\x00"])) * 1
        body = json.dumps(
            {"model": MODEL, "input": (text * size)[:size], "truncate": truncate}
        ).encode()
    elif kind == "giant-list":
        # Up to (and past) the 2,048 inputs a request may hold; short ones, so that a request
        # within the limits is one the model can answer inside its deadline on 2 cores.
        count = draw(st.integers(min_value=1, max_value=2100))
        word = draw(st.text(min_size=1, max_size=12))
        body = json.dumps({"model": MODEL, "input": [word] * count}).encode()
    elif kind == "content-type":
        ctype = draw(
            st.sampled_from(
                [
                    "text/plain",
                    "",
                    "application/json; charset=latin-1",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                    "application/json\u00ff",
                    "application/" + "j" * 5000,
                ]
            )
        )
        body = json.dumps({"model": MODEL, "input": "hi"}).encode()
    elif kind == "duplicate-keys":
        body = f'{{"model": "{MODEL}", "input": "a", "input": 5, "model": null}}'.encode()
    else:
        body = draw(st.binary(max_size=256))
    return kind, body, ctype


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return b'"' not in raw and b"\\" not in raw
    return False


def test_hostile_bodies_get_openai_errors_never_5xx(
    servers: Servers, chaos_report: Any, chaos_long: bool, chaos_rng: random.Random
) -> None:
    from inference_service import openapi_document

    server = servers.inference
    doc = openapi_document(model=MODEL, version="0")
    error = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/Error", "components": doc["components"]}
    )
    examples = HOSTILE_EXAMPLES_LONG if chaos_long else HOSTILE_EXAMPLES
    deadline = None if chaos_long else time.monotonic() + HOSTILE_SECONDS
    kinds: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    client = httpx.Client(base_url=server.process.base, timeout=120)

    def check(what: str, response: httpx.Response) -> None:
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            failures.append(f"{what}: {response.status_code} {response.text[:200]}")
        elif response.status_code >= 400:
            try:
                error.validate(response.json())
            except (ValueError, jsonschema.ValidationError) as exc:
                failures.append(f"{what}: not OpenAI's error shape: {exc}")

    @hypothesis_seed(chaos_rng.randrange(2**32))
    @given(request=hostile())
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(request: tuple[str, bytes, str]) -> None:
        if deadline is not None and time.monotonic() > deadline:
            return
        kind, body, ctype = request
        headers = {k.encode(): v.encode() for k, v in server.headers.items()}
        if ctype:
            headers[b"Content-Type"] = ctype.encode("latin-1")  # any byte, as a client may send
        kinds[kind] += 1
        for path in POSTED:  # the generation routes parse the same bodies (chat is on)
            check(f"{kind} {path}", client.post(path, content=body, headers=headers))

    try:
        run()
        # The models routes: hostile ids and methods.
        for model_id in ["%00", "..%2F..%2Fetc", "a" * 5000, "%FF%FE", "\u00e9\U0001f600", "%2F"]:
            kinds["model-id"] += 1
            check("model-id", client.get(f"/v1/models/{model_id}", headers=server.headers))
        for method in ["PUT", "DELETE", "PATCH", "OPTIONS"]:
            for path in POSTED:
                kinds["method"] += 1
                check(f"{method} {path}", client.request(method, path, headers=server.headers))
    finally:
        client.close()
    cases = sum(kinds.values())
    figure = chaos_report.figure
    figure(CAMPAIGN, "hostile bodies: cases run", cases)
    figure(
        CAMPAIGN, "hostile bodies: kinds", " ".join(f"{k}:{n}" for k, n in sorted(kinds.items()))
    )
    figure(
        CAMPAIGN,
        "hostile bodies: statuses",
        " ".join(f"{s}:{n}" for s, n in sorted(statuses.items())),
    )
    figure(CAMPAIGN, "hostile bodies: 5xx or not OpenAI's error shape", len(failures), bound="0")
    assert cases > 0
    assert not failures, f"hostile bodies (seed {chaos_report.seed}): {failures[:10]}"


def test_the_fuzzed_servers_logged_no_secret(
    servers: Servers, chaos_secrets: Any, chaos_report: Any
) -> None:
    hits: list[str] = []
    for server, path in (
        (servers.inference, "/v1/models"),
        (servers.handoff, "/v1/environments"),
        (servers.schema_api, "/v1/schema/entities"),
    ):
        for headers in (
            {"Authorization": f"Bearer {chaos_secrets.api_key}"},
            {"X-API-Key": chaos_secrets.admin_api_key},
            {
                "Authorization": f"Bearer {chaos_secrets.db_password}",
                "X-Email": chaos_secrets.pii_email,
            },
        ):
            response = httpx.get(f"{server.process.base}{path}", headers=headers, timeout=30)
            assert response.status_code in (400, 401), response.text
            hits += [
                str(h)
                for h in chaos_secrets.scan([response.content], where=f"{server.name} answer")
            ]
    for server in (servers.inference, servers.handoff, servers.schema_api):
        text = server.process.text()
        hits += [
            f"{server.name}: its own key material" for value in server.secrets if value in text
        ]
        hits += [str(h) for h in chaos_secrets.scan([server.process.log], where=server.name)]
    chaos_report.figure(CAMPAIGN, "secrets found in the fuzzed servers' logs", len(hits), bound="0")
    assert not hits, hits
