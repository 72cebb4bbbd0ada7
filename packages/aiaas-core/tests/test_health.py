"""Tests for aiaas_core._health: statuses, checks, the registry's runner, caching and reports."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiaas_core
from aiaas_core import (
    CheckResult,
    HealthCheck,
    HealthRegistry,
    HealthReport,
    HealthStatus,
    ValidationError,
    _health,
    request_context,
)

OK, DEGRADED, FAILING = HealthStatus.OK, HealthStatus.DEGRADED, HealthStatus.FAILING


async def _ok() -> None:
    return None


def by_name(report: HealthReport) -> dict[str, CheckResult]:
    return {result.name: result for result in report.checks}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Counting:
    """An async check that counts its calls and returns ``outcome``."""

    def __init__(self, outcome: Any = None) -> None:
        self.calls = 0
        self.outcome = outcome

    async def __call__(self) -> Any:
        self.calls += 1
        return self.outcome


# -- public API ------------------------------------------------------------------------------


def test_public_names_come_from_the_health_module():
    for name in ("CheckResult", "HealthCheck", "HealthRegistry", "HealthReport", "HealthStatus"):
        assert name in aiaas_core.__all__
        assert getattr(aiaas_core, name) is getattr(_health, name)
    assert sorted(_health.__all__) == _health.__all__


# -- HealthStatus ----------------------------------------------------------------------------


def test_status_values_are_strings():
    assert [s.value for s in HealthStatus] == ["ok", "degraded", "failing"]
    assert OK == "ok"
    assert json.dumps({"s": DEGRADED}) == '{"s": "degraded"}'


def test_status_orders_by_severity_not_alphabet():
    assert OK < DEGRADED < FAILING
    assert FAILING > DEGRADED > OK
    assert OK <= OK  # noqa: PLR0124 - reflexive comparison on purpose
    assert FAILING >= FAILING  # noqa: PLR0124
    assert not FAILING < OK
    assert sorted([FAILING, OK, DEGRADED]) == [OK, DEGRADED, FAILING]
    assert [s.severity for s in HealthStatus] == [0, 1, 2]


def test_status_compares_with_status_strings():
    assert OK < "failing"
    assert DEGRADED >= "degraded"
    assert FAILING > "ok"
    assert not OK > "degraded"


@pytest.mark.parametrize("other", ["healthy", "OK", ""])
def test_status_refuses_comparison_with_other_strings(other):
    with pytest.raises(TypeError, match="expected one of"):
        _ = OK < other  # noqa: SIM300
    with pytest.raises(TypeError, match="expected one of"):
        _ = other > FAILING  # the status's reflected comparison wins over str's


def test_status_refuses_comparison_with_non_strings():
    with pytest.raises(TypeError):
        _ = OK < 1
    with pytest.raises(TypeError):
        _ = FAILING > None
    with pytest.raises(TypeError):
        _ = DEGRADED <= 2.5
    with pytest.raises(TypeError):
        _ = DEGRADED >= object()  # noqa: SIM300


def test_worst_of_nothing_is_ok():
    assert HealthStatus.worst([]) is OK


@given(st.lists(st.sampled_from(list(HealthStatus)), min_size=1))
def test_worst_is_the_most_severe_member(statuses):
    worst = HealthStatus.worst(statuses)
    assert worst in statuses
    assert all(s <= worst for s in statuses)
    assert HealthStatus.worst([*statuses, OK]) is worst


# -- CheckResult -----------------------------------------------------------------------------


def test_check_result_factories():
    assert CheckResult.ok() == CheckResult(OK)
    assert CheckResult.ok({"version": "0042"}).details == {"version": "0042"}
    degraded = CheckResult.degraded("replica lag 30s", {"lag_s": 30})
    assert (degraded.status, degraded.reason, degraded.details) == (
        DEGRADED,
        "replica lag 30s",
        {"lag_s": 30},
    )
    assert CheckResult.failing("down").status is FAILING
    assert (degraded.name, degraded.latency_ms, degraded.critical) == ("", 0.0, True)


def test_check_result_accepts_status_strings():
    assert CheckResult("degraded").status is DEGRADED


@pytest.mark.parametrize("bad", ["healthy", "OK", 1, None])
def test_check_result_refuses_unknown_status(bad):
    with pytest.raises(ValueError, match="status must be one of"):
        CheckResult(bad)


def test_check_result_details_are_a_read_only_copy():
    source: dict[str, Any] = {"rows": 3, "nested": {"ids": (1, 2)}}
    result = CheckResult.ok(source)
    source["rows"] = 99
    assert result.details["rows"] == 3
    with pytest.raises(TypeError):
        result.details["rows"] = 4
    assert result.details["nested"] == {"ids": [1, 2]}


def test_check_result_details_subclasses_become_plain_json():
    result = CheckResult.ok({"status": HealthStatus.DEGRADED, "flag": True, "n": 1, "x": 0.5})
    assert type(result.details["status"]) is str
    assert result.details == {"status": "degraded", "flag": True, "n": 1, "x": 0.5}
    assert type(result.details["flag"]) is bool


@pytest.mark.parametrize(
    ("details", "error", "match"),
    [
        ({"at": datetime(2024, 1, 1, tzinfo=UTC)}, TypeError, r"details\['at'\].*isoformat"),
        ({"x": {1, 2}}, TypeError, "JSON-compatible"),
        ({1: "a"}, TypeError, "keys must be strings"),
        ({"n": {"deep": [1, float("nan")]}}, ValueError, r"details\['n'\]\['deep'\]\[1\]"),
        ({"n": float("inf")}, ValueError, "finite"),
        (["not", "a", "mapping"], TypeError, "details must be a mapping"),
    ],
)
def test_check_result_refuses_non_json_details(details, error, match):
    with pytest.raises(error, match=match):
        CheckResult.ok(details)


def test_check_result_validates_its_fields():
    with pytest.raises(TypeError, match="reason must be a string"):
        CheckResult(FAILING, 42)
    with pytest.raises(ValueError, match="check result name must match"):
        CheckResult(OK, name="Bad Name")
    with pytest.raises(ValueError, match="latency_ms must be a finite number >= 0"):
        CheckResult(OK, latency_ms=-1)
    with pytest.raises(ValueError, match="latency_ms"):
        CheckResult(OK, latency_ms=math.nan)
    with pytest.raises(TypeError, match="critical must be a bool"):
        CheckResult(OK, critical=1)
    assert CheckResult(OK, name="db", latency_ms=3).latency_ms == 3.0


@pytest.mark.parametrize(
    ("status", "critical", "contribution"),
    [
        (OK, True, OK),
        (OK, False, OK),
        (DEGRADED, True, DEGRADED),
        (DEGRADED, False, DEGRADED),
        (FAILING, True, FAILING),
        (FAILING, False, DEGRADED),
    ],
)
def test_check_result_contribution(status, critical, contribution):
    assert CheckResult(status, critical=critical).contribution is contribution


# -- HealthCheck -----------------------------------------------------------------------------


def test_health_check_defaults():
    check = HealthCheck("db", _ok)
    assert (check.timeout, check.degraded_after, check.critical, check.kind) == (
        1.0,
        None,
        True,
        "readiness",
    )
    assert HealthCheck("db", _ok, timeout=2).timeout == 2.0


@pytest.mark.parametrize("name", ["db", "0", "db.primary", "search-v2", "cache_1", "a" * 100])
def test_health_check_accepts_good_names(name):
    assert HealthCheck(name, _ok).name == name


@pytest.mark.parametrize(
    "name", ["", "DB", "Db", "-db", "_db", ".db", "db primary", "db/primary", "dé", "db\n", 7, None]
)
def test_health_check_refuses_bad_names(name):
    with pytest.raises(ValueError, match=r"health check name must match .*got"):
        HealthCheck(name, _ok)


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("timeout", 0, ValueError, "timeout must be a finite number of seconds > 0"),
        ("timeout", -1.5, ValueError, "timeout must be"),
        ("timeout", math.nan, ValueError, "timeout must be"),
        ("timeout", math.inf, ValueError, "timeout must be"),
        ("timeout", True, TypeError, "expected a number of seconds, got bool"),
        ("timeout", "1", TypeError, "expected a number of seconds, got str"),
        ("degraded_after", 0, ValueError, "degraded_after must be a finite number"),
        ("degraded_after", -0.1, ValueError, "degraded_after must be"),
        ("degraded_after", 1.0, ValueError, r"must be less than timeout \(1s\)"),
        ("degraded_after", 5, ValueError, "must be less than timeout"),
        ("critical", "yes", TypeError, "critical must be a bool"),
        ("kind", "startup", ValueError, "kind must be one of"),
    ],
)
def test_health_check_refuses_bad_options(field, value, error, match):
    with pytest.raises(error, match=match):
        HealthCheck("db", _ok, **{field: value})


def _sync_check() -> None:
    return None


class _SyncCallable:
    def __call__(self) -> None:
        return None


class _AsyncCallable:
    async def __call__(self) -> None:
        return None


class _Pinger:
    async def ping(self) -> bool:
        return True


@pytest.mark.parametrize(
    "fn",
    [
        _sync_check,
        lambda: _ok(),  # noqa: PLW0108 - a sync function returning a coroutine
        _SyncCallable(),
        _AsyncCallable,  # the class, not an instance: calling it builds an object
        functools.partial(_sync_check),
    ],
    ids=["function", "lambda", "sync-callable", "class", "partial-of-sync"],
)
def test_health_check_refuses_non_async_callables(fn):
    with pytest.raises(TypeError, match=r"must be an async function \(async def\)"):
        HealthCheck("db", fn)


@pytest.mark.parametrize("fn", [None, "db", 42])
def test_health_check_refuses_non_callables(fn):
    with pytest.raises(TypeError, match="must be an async callable"):
        HealthCheck("db", fn)


@pytest.mark.parametrize(
    "fn",
    [_ok, _AsyncCallable(), _Pinger().ping, functools.partial(_ok)],
    ids=["async-function", "async-callable", "bound-method", "partial-of-async"],
)
def test_health_check_accepts_async_callables(fn):
    assert HealthCheck("db", fn).check is fn


def test_health_check_is_frozen():
    check = HealthCheck("db", _ok)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        check.timeout = 5


# -- registration ----------------------------------------------------------------------------


def test_register_forms():
    registry = HealthRegistry()

    @registry.register
    async def db() -> None:
        return None

    @registry.register(name="search", critical=False, degraded_after=0.2, timeout=0.5)
    async def search_ping() -> bool:
        return True

    cache = HealthCheck("cache", _ok, kind="liveness")
    assert registry.register(cache) is cache
    assert registry.register(_AsyncCallable(), name="queue") is not None

    assert db.__name__ == "db"  # decorators hand the function back unchanged
    assert search_ping.__name__ == "search_ping"
    names = [c.name for c in registry.checks()]
    assert names == ["db", "search", "cache", "queue"]
    search = registry.checks()[1]
    assert (search.critical, search.degraded_after, search.timeout) == (False, 0.2, 0.5)
    assert search.check is search_ping
    assert [c.name for c in registry.checks("liveness")] == ["cache"]
    assert [c.name for c in registry.checks("readiness")] == ["db", "search", "queue"]
    assert "db" in repr(registry)


def test_register_refuses_duplicate_names_across_kinds():
    registry = HealthRegistry()
    registry.register(HealthCheck("db", _ok))
    with pytest.raises(ValueError, match="'db' is already registered"):
        registry.register(HealthCheck("db", _ok, kind="liveness"))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(_ok, name="db")
    assert len(registry.checks()) == 1


def test_register_refuses_options_beside_a_health_check():
    registry = HealthRegistry()
    with pytest.raises(TypeError, match="takes no options"):
        registry.register(HealthCheck("db", _ok), timeout=2.0)
    assert registry.checks() == ()


def test_register_refuses_a_positional_name():
    registry = HealthRegistry()
    with pytest.raises(TypeError, match=r"pass name= as a keyword"):
        registry.register("db")


def test_register_refuses_underivable_or_bad_names():
    registry = HealthRegistry()

    async def CheckDB() -> None:
        return None

    with pytest.raises(ValueError, match="health check name must match"):
        registry.register(CheckDB)
    with pytest.raises(TypeError, match="cannot derive a check name"):
        registry.register(functools.partial(_ok))
    assert registry.register(functools.partial(_ok), name="db") is not None


def test_register_refuses_sync_functions_and_bad_options():
    registry = HealthRegistry()
    with pytest.raises(TypeError, match="must be an async function"):
        registry.register(_sync_check, name="sync")
    with pytest.raises(ValueError, match="timeout must be"):
        registry.register(_ok, name="ok", timeout=0)
    with pytest.raises(ValueError, match="timeout must be"):

        @registry.register(name="x", timeout=-1)
        async def x() -> None:
            return None

    assert registry.checks() == ()


@pytest.mark.parametrize(
    ("ttl", "error"), [(-1, ValueError), (math.nan, ValueError), (True, TypeError)]
)
def test_registry_refuses_bad_cache_ttl(ttl, error):
    with pytest.raises(error):
        HealthRegistry(cache_ttl=ttl)


def test_checks_refuses_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        HealthRegistry().checks("startup")


# -- running: statuses -----------------------------------------------------------------------


async def test_empty_registry_is_ok():
    report = await HealthRegistry().run()
    assert (report.status, report.http_status, report.checks) == (OK, 200, ())
    assert (await HealthRegistry().run("liveness")).kind == "liveness"


@pytest.mark.parametrize(
    ("outcome", "status", "reason"),
    [
        (None, OK, None),
        (True, OK, None),
        (False, FAILING, "check returned False"),
        (CheckResult.ok({"v": 1}), OK, None),
        (CheckResult.degraded("lagging"), DEGRADED, "lagging"),
        (CheckResult.failing("no primary"), FAILING, "no primary"),
        (42, FAILING, "check returned an unsupported int; return None, a bool or a CheckResult"),
        ("ok", FAILING, "unsupported str"),
    ],
)
async def test_outcomes_map_to_statuses(outcome, status, reason):
    registry = HealthRegistry()
    registry.register(Counting(outcome), name="dep")
    report = await registry.run()
    (result,) = report.checks
    assert (result.name, result.status, result.critical) == ("dep", status, True)
    if reason is None:
        assert result.reason is None
    else:
        assert result.reason is not None
        assert reason in result.reason
    assert report.status is status
    assert report.http_status == (503 if status is FAILING else 200)


async def test_registry_overrides_name_latency_and_criticality_from_results():
    registry = HealthRegistry()
    returned = CheckResult(
        FAILING, "down", {"host": "db-1"}, name="other", latency_ms=999, critical=True
    )
    registry.register(Counting(returned), name="replica", critical=False)
    report = await registry.run()
    (result,) = report.checks
    assert (result.name, result.critical, result.reason) == ("replica", False, "down")
    assert result.details == {"host": "db-1"}
    assert result.latency_ms < 999
    assert report.status is DEGRADED  # a non-critical failure only degrades


async def test_latency_is_measured():
    registry = HealthRegistry()

    @registry.register(name="sleepy")
    async def sleepy() -> None:
        await asyncio.sleep(0.05)

    registry.register(Counting(), name="quick")
    results = by_name(await registry.run())
    assert results["sleepy"].latency_ms >= 40  # a sleep never ends early (clock granularity aside)
    assert results["quick"].latency_ms >= 0
    assert results["quick"].latency_ms < results["sleepy"].latency_ms


@pytest.mark.parametrize(
    ("statuses", "critical", "overall", "http"),
    [
        ((OK, OK), (True, True), OK, 200),
        ((OK, DEGRADED), (True, True), DEGRADED, 200),
        ((OK, FAILING), (True, False), DEGRADED, 200),
        ((DEGRADED, FAILING), (True, False), DEGRADED, 200),
        ((OK, FAILING), (True, True), FAILING, 503),
        ((FAILING, FAILING), (False, True), FAILING, 503),
        ((FAILING, FAILING), (False, False), DEGRADED, 200),
    ],
)
async def test_critical_and_non_critical_combine(statuses, critical, overall, http):
    registry = HealthRegistry()
    for i, (status, is_critical) in enumerate(zip(statuses, critical, strict=True)):
        registry.register(Counting(CheckResult(status, "x")), name=f"c{i}", critical=is_critical)
    report = await registry.run()
    assert (report.status, report.http_status) == (overall, http)


# -- running: exceptions and redaction -------------------------------------------------------


async def _run_raising(exc: BaseException, **registry_options: Any) -> CheckResult:
    registry = HealthRegistry(**registry_options)

    @registry.register(name="dep")
    async def dep() -> None:
        raise exc

    report = await registry.run()
    assert report.status is FAILING
    (result,) = report.checks
    assert result.status is FAILING
    assert result.reason is not None
    return result


async def test_exception_reason_has_type_and_message_never_a_traceback():
    def nested() -> None:
        raise ConnectionRefusedError("connection refused by db.internal:5432")

    registry = HealthRegistry()

    @registry.register(name="db")
    async def db() -> None:
        nested()

    (result,) = (await registry.run()).checks
    assert result.reason == "ConnectionRefusedError: connection refused by db.internal:5432"
    assert "Traceback" not in json.dumps((await registry.run()).to_dict())


async def test_exception_without_message_reports_its_type():
    result = await _run_raising(KeyError())
    assert result.reason == "KeyError"


async def test_aiaas_errors_are_reported_like_any_other():
    result = await _run_raising(ValidationError("schema version 41, expected 42"))
    assert result.reason == "ValidationError: schema version 41, expected 42"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "could not connect to postgresql://svc:hunter2@db:5432/app",
            "could not connect to postgresql://svc:***@db:5432/app",
        ),
        ("login failed: password=hunter2 user=svc", "login failed: password=*** user=svc"),
        ("bad DB_PASSWORD='hunter 2' given", "bad DB_PASSWORD=*** given"),
        ('{"api_key": "sk-abcdef", "x": 1}', '{"api_key": ***, "x": 1}'),
        ("header X-Auth-Token: abc.def.ghi rejected", "header X-Auth-Token: *** rejected"),
        ("401 for Authorization Bearer eyJhbGciOi.payload.sig", "401 for Authorization Bearer ***"),
        ("client_secret=s3cr3t&grant=x", "client_secret=***&grant=x"),
        ("nothing secret here", "nothing secret here"),
    ],
)
async def test_default_redaction_masks_secrets(message, expected):
    result = await _run_raising(RuntimeError(message))
    assert result.reason == f"RuntimeError: {expected}"


_SECRET = st.text(
    alphabet=st.characters(
        codec="ascii", exclude_categories=("Cc", "Zs"), exclude_characters="@,;&)'\"/"
    ),
    min_size=1,
    max_size=40,
)


@given(_SECRET)
def test_default_redaction_never_shows_a_password_value(secret):
    redact = HealthRegistry.default_redact
    assert redact(RuntimeError(f"auth failed password={secret} for svc")) == (
        "auth failed password=*** for svc"
    )
    assert redact(OSError(f"dial postgresql://svc:{secret}@db/app failed")) == (
        "dial postgresql://svc:***@db/app failed"
    )


async def test_reason_is_one_short_line():
    result = await _run_raising(RuntimeError("line one\nline two\r\n\tthree\x00" + "x" * 1000))
    assert result.reason is not None
    for control in "\n\r\t\x00":
        assert control not in result.reason
    assert result.reason.startswith("RuntimeError: line one line two three")
    assert result.reason.endswith("…")
    message = result.reason.removeprefix("RuntimeError: ")
    assert len(message) == _health.MAX_REASON_LENGTH


async def test_redact_none_shows_the_type_only():
    result = await _run_raising(RuntimeError("password=hunter2"), redact=None)
    assert result.reason == "RuntimeError"


async def test_custom_redactor_replaces_the_default():
    result = await _run_raising(
        RuntimeError("the full message"), redact=lambda exc: f"<{len(str(exc))} chars>"
    )
    assert result.reason == "RuntimeError: <16 chars>"


async def test_custom_redactor_output_is_normalised_and_empty_means_type_only():
    result = await _run_raising(RuntimeError("x"), redact=lambda exc: "a\nb")
    assert result.reason == "RuntimeError: a b"
    result = await _run_raising(RuntimeError("x"), redact=lambda exc: "")
    assert result.reason == "RuntimeError"


async def test_failing_redactor_withholds_the_message():
    def broken(exc: BaseException) -> str:
        raise LookupError(str(exc))

    result = await _run_raising(RuntimeError("password=hunter2"), redact=broken)
    assert result.reason == "RuntimeError: (message withheld: the redactor failed)"


async def test_check_raising_when_called_is_failing():
    async def needs_arg(conn: object) -> None:
        return None

    registry = HealthRegistry()
    registry.register(functools.partial(needs_arg), name="db")
    (result,) = (await registry.run()).checks
    assert result.status is FAILING
    assert result.reason is not None
    assert result.reason.startswith("TypeError: ")


async def test_check_returning_a_non_awaitable_is_failing():
    class Shifty:
        async def __call__(self) -> None:
            return None

    registry = HealthRegistry()
    registry.register(Shifty(), name="shifty")  # accepted: its __call__ is async
    Shifty.__call__ = lambda self: 42
    (result,) = (await registry.run()).checks
    assert result.status is FAILING
    assert result.reason == "check returned int, not an awaitable"


async def test_check_cancelling_itself_is_failing_and_others_still_run():
    registry = HealthRegistry()

    @registry.register(name="cancels")
    async def cancels() -> None:
        raise asyncio.CancelledError

    registry.register(Counting(), name="fine")
    results = by_name(await registry.run())
    assert (results["cancels"].status, results["cancels"].reason) == (
        FAILING,
        "check was cancelled",
    )
    assert results["fine"].status is OK


async def test_checks_see_the_callers_context():
    registry = HealthRegistry()
    seen: list[str | None] = []

    @registry.register(name="ctx")
    async def ctx() -> None:
        seen.append(aiaas_core.get_request_id())

    with request_context("probe-request-0001"):
        await registry.run()
    assert seen == ["probe-request-0001"]


# -- running: latency thresholds -------------------------------------------------------------


async def test_slow_success_is_degraded():
    registry = HealthRegistry()

    @registry.register(name="slow", degraded_after=0.01, timeout=5)
    async def slow() -> None:
        await asyncio.sleep(0.1)

    report = await registry.run()
    (result,) = report.checks
    assert result.status is DEGRADED
    assert result.reason is not None
    assert result.reason.startswith("slow: took ")
    assert "over the 10 ms threshold" in result.reason
    assert (report.status, report.http_status) == (DEGRADED, 200)


async def test_fast_success_under_threshold_is_ok():
    registry = HealthRegistry()
    registry.register(Counting(), name="fast", degraded_after=2, timeout=5)
    (result,) = (await registry.run()).checks
    assert (result.status, result.reason) == (OK, None)


async def test_slow_degraded_result_keeps_its_own_reason_too():
    registry = HealthRegistry()

    @registry.register(name="lag", degraded_after=0.01, timeout=5)
    async def lag() -> CheckResult:
        await asyncio.sleep(0.1)
        return CheckResult.degraded("replica lag 30s", {"lag_s": 30})

    (result,) = (await registry.run()).checks
    assert result.status is DEGRADED
    assert result.reason is not None
    assert result.reason.startswith("replica lag 30s; slow: took ")
    assert result.details == {"lag_s": 30}


async def test_slow_failure_stays_failing():
    registry = HealthRegistry()

    @registry.register(name="down", degraded_after=0.01, timeout=5)
    async def down() -> None:
        await asyncio.sleep(0.1)
        raise ConnectionError("refused")

    (result,) = (await registry.run()).checks
    assert (result.status, result.reason) == (FAILING, "ConnectionError: refused")


# -- running: timeouts and concurrency -------------------------------------------------------


async def test_timed_out_check_fails_and_the_run_is_bounded_by_its_timeout():
    registry = HealthRegistry()
    cancelled = asyncio.Event()

    @registry.register(name="hung", timeout=0.2)
    async def hung() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    registry.register(Counting(), name="fine")
    started = time.perf_counter()
    report = await registry.run()
    elapsed = time.perf_counter() - started
    results = by_name(report)
    assert (results["hung"].status, results["hung"].reason) == (FAILING, "timed out after 0.2s")
    assert results["hung"].latency_ms >= 150
    assert results["fine"].status is OK
    assert (report.status, report.http_status) == (FAILING, 503)
    assert cancelled.is_set()  # the hung check was cancelled, not left running
    assert elapsed < 5 * 0.2  # generous: the check alone would take 30 s


async def test_non_critical_timeout_degrades():
    registry = HealthRegistry()

    @registry.register(name="search", timeout=0.05, critical=False)
    async def search() -> None:
        await asyncio.sleep(30)

    report = await registry.run()
    assert (report.status, report.http_status) == (DEGRADED, 200)
    assert report.checks[0].reason == "timed out after 0.05s"


async def test_a_checks_own_timeout_error_is_not_our_timeout():
    registry = HealthRegistry()

    @registry.register(name="sock", timeout=5)
    async def sock() -> None:
        raise TimeoutError("read timed out")

    (result,) = (await registry.run()).checks
    assert result.reason == "TimeoutError: read timed out"


async def test_checks_run_concurrently():
    # Each check waits until the other has started: run one after the other, the first would
    # time out. Both succeeding proves they overlapped, with no timing assumption.
    registry = HealthRegistry()
    started: set[str] = set()
    both = asyncio.Event()

    def rendezvous(name: str) -> Any:
        async def check() -> None:
            started.add(name)
            if len(started) == 2:
                both.set()
            await both.wait()
            await asyncio.sleep(0.05)

        return check

    registry.register(rendezvous("a"), name="a", timeout=3)
    registry.register(rendezvous("b"), name="b", timeout=3)
    report = await registry.run()
    assert [r.status for r in report.checks] == [OK, OK]


async def test_cancelling_the_run_cancels_its_checks():
    registry = HealthRegistry()
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    @registry.register(name="slow", timeout=30)
    async def slow() -> None:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    run = asyncio.ensure_future(registry.run())
    await entered.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_check_that_ignores_cancellation_does_not_hold_the_run_or_pile_up():
    registry = HealthRegistry()
    release = asyncio.Event()
    calls = 0

    @registry.register(name="stubborn", timeout=0.1)
    async def stubborn() -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            return
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await release.wait()  # swallows the cancellation until released

    started = time.perf_counter()
    first = await registry.run()
    assert time.perf_counter() - started < 5 * (0.1 + _health.CANCEL_GRACE)
    assert first.checks[0].reason == "timed out after 0.1s"

    second = await registry.run()  # still lingering: not started again
    assert calls == 1
    assert second.checks[0].status is FAILING
    assert second.checks[0].reason is not None
    assert "still running after an earlier timeout" in second.checks[0].reason

    release.set()
    for _ in range(20):
        if not registry._lingering:
            break
        await asyncio.sleep(0.01)
    third = await registry.run()
    assert (calls, third.checks[0].status) == (2, OK)


# -- kinds -----------------------------------------------------------------------------------


async def test_run_picks_the_checks_of_one_kind():
    registry = HealthRegistry()
    db = Counting(False)
    loop = Counting(True)
    registry.register(db, name="db")
    registry.register(loop, name="loop", kind="liveness")

    liveness = await registry.run("liveness")
    assert (liveness.kind, [r.name for r in liveness.checks], liveness.status) == (
        "liveness",
        ["loop"],
        OK,
    )
    assert db.calls == 0  # a database outage never fails liveness

    readiness = await registry.run()
    assert (readiness.kind, [r.name for r in readiness.checks]) == ("readiness", ["db"])
    assert (readiness.status, readiness.http_status) == (FAILING, 503)
    assert loop.calls == 1


async def test_run_refuses_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        await HealthRegistry().run("startup")


# -- caching ---------------------------------------------------------------------------------


async def test_no_cache_by_default():
    registry = HealthRegistry()
    check = Counting()
    registry.register(check, name="db")
    first, second = await registry.run(), await registry.run()
    assert check.calls == 2
    assert first is not second


async def test_cache_reuses_a_report_until_the_ttl_passes():
    clock = FakeClock()
    registry = HealthRegistry(cache_ttl=2.0, clock=clock)
    check = Counting()
    registry.register(check, name="db")

    first = await registry.run()
    clock.advance(1.9)
    assert await registry.run() is first
    assert check.calls == 1

    clock.advance(0.1)
    fresh = await registry.run()
    assert fresh is not first
    assert fresh.checked_at >= first.checked_at
    assert check.calls == 2
    assert registry.cache_ttl == 2.0


async def test_failing_reports_are_cached_too():
    clock = FakeClock()
    registry = HealthRegistry(cache_ttl=5, clock=clock)
    check = Counting(False)
    registry.register(check, name="db")
    reports = [await registry.run() for _ in range(10)]
    assert check.calls == 1
    assert all(r.status is FAILING for r in reports)


async def test_use_cache_false_runs_fresh_and_refreshes_the_cache():
    clock = FakeClock()
    registry = HealthRegistry(cache_ttl=5, clock=clock)
    check = Counting()
    registry.register(check, name="db")
    await registry.run()
    forced = await registry.run(use_cache=False)
    assert check.calls == 2
    assert await registry.run() is forced
    assert check.calls == 2


async def test_kinds_are_cached_separately():
    clock = FakeClock()
    registry = HealthRegistry(cache_ttl=5, clock=clock)
    ready, live = Counting(), Counting()
    registry.register(ready, name="db")
    registry.register(live, name="loop", kind="liveness")
    readiness = await registry.run()
    liveness = await registry.run("liveness")
    assert (readiness.kind, liveness.kind) == ("readiness", "liveness")
    assert await registry.run() is readiness
    assert await registry.run("liveness") is liveness
    assert (ready.calls, live.calls) == (1, 1)


async def test_registering_a_check_invalidates_that_kinds_cache():
    clock = FakeClock()
    registry = HealthRegistry(cache_ttl=5, clock=clock)
    registry.register(Counting(), name="db")
    registry.register(Counting(), name="loop", kind="liveness")
    await registry.run()
    liveness = await registry.run("liveness")
    registry.register(Counting(), name="cache")
    assert [r.name for r in (await registry.run()).checks] == ["db", "cache"]
    assert await registry.run("liveness") is liveness


async def test_concurrent_callers_share_one_run():
    clock = FakeClock()
    registry = HealthRegistry(cache_ttl=5, clock=clock)
    gate = asyncio.Event()
    calls = 0

    @registry.register(name="db", timeout=5)
    async def db() -> None:
        nonlocal calls
        calls += 1
        await gate.wait()

    callers = [asyncio.ensure_future(registry.run()) for _ in range(5)]
    await asyncio.sleep(0.01)
    gate.set()
    reports = await asyncio.gather(*callers)
    assert calls == 1
    assert all(r is reports[0] for r in reports)


async def test_a_caller_giving_up_does_not_cancel_the_shared_run():
    clock = FakeClock()
    registry = HealthRegistry(cache_ttl=5, clock=clock)
    gate = asyncio.Event()

    @registry.register(name="db", timeout=5)
    async def db() -> None:
        await gate.wait()

    impatient = asyncio.ensure_future(registry.run())
    patient = asyncio.ensure_future(registry.run())
    await asyncio.sleep(0.01)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    gate.set()
    report = await patient
    assert report.status is OK
    assert await registry.run() is report  # and the finished run was cached


async def test_a_run_overtaken_by_a_registration_is_not_cached():
    clock = FakeClock()
    registry = HealthRegistry(cache_ttl=5, clock=clock)
    gate = asyncio.Event()

    @registry.register(name="db", timeout=5)
    async def db() -> None:
        await gate.wait()

    running = asyncio.ensure_future(registry.run())
    await asyncio.sleep(0.01)
    registry.register(Counting(), name="cache")
    gate.set()
    stale = await running
    assert [r.name for r in stale.checks] == ["db"]
    assert [r.name for r in (await registry.run()).checks] == ["db", "cache"]


def test_registry_survives_being_used_from_several_event_loops():
    # A cached or in-flight run from one loop must not break the next loop's runs.
    registry = HealthRegistry(cache_ttl=5, clock=FakeClock())
    registry.register(Counting(), name="db")
    first = asyncio.run(registry.run())
    assert asyncio.run(registry.run()) is first


def test_in_flight_and_lingering_tasks_of_another_loop_are_not_reused():
    registry = HealthRegistry(cache_ttl=5, clock=FakeClock())
    old_loop = asyncio.new_event_loop()
    try:
        gate = asyncio.Event()
        stubborn_calls = 0

        @registry.register(name="db", timeout=5)
        async def db() -> None:
            if asyncio.get_running_loop() is old_loop:
                await gate.wait()

        @registry.register(name="loop", timeout=0.05, kind="liveness")
        async def stubborn() -> None:
            nonlocal stubborn_calls
            stubborn_calls += 1
            if asyncio.get_running_loop() is not old_loop:
                return
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await gate.wait()

        # On the old loop: a readiness run left in flight, a liveness check left lingering.
        stuck = old_loop.create_task(registry.run())
        assert old_loop.run_until_complete(registry.run("liveness")).status is FAILING
        assert not stuck.done()

        # A new loop neither waits on the old loop's run nor blames the old lingering task.
        assert asyncio.run(registry.run()).status is OK
        assert asyncio.run(registry.run("liveness", use_cache=False)).status is OK
        assert stubborn_calls == 2

        gate.set()
        old_loop.run_until_complete(stuck)  # the old run finishes without disturbing the new
        assert stuck.result().status is OK
        assert registry._inflight == {}
    finally:
        old_loop.run_until_complete(old_loop.shutdown_asyncgens())
        old_loop.close()


# -- HealthReport ----------------------------------------------------------------------------


def _result(name: str, status: HealthStatus = OK, **kw: Any) -> CheckResult:
    return CheckResult(status, name=name, **kw)


def test_report_status_is_derived_from_its_checks():
    report = HealthReport(
        [_result("a"), _result("b", FAILING, critical=False)],
        checked_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    )
    assert isinstance(report.checks, tuple)
    assert (report.status, report.http_status) == (DEGRADED, 200)
    assert attrs.evolve(report, checks=[_result("a", FAILING)]).status is FAILING
    with pytest.raises(TypeError):
        HealthReport((), status=OK)


def test_report_checked_at_is_utc_and_must_be_aware():
    plus_two = timezone(timedelta(hours=2))
    report = HealthReport((), checked_at=datetime(2024, 5, 1, 14, 0, tzinfo=plus_two))
    assert report.checked_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert report.checked_at.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        HealthReport((), checked_at=datetime(2024, 5, 1, 12, 0))  # noqa: DTZ001
    with pytest.raises(TypeError, match="checked_at must be a datetime"):
        HealthReport((), checked_at="2024-05-01T12:00:00Z")


async def test_run_stamps_checked_at_in_utc():
    before = datetime.now(UTC)
    report = await HealthRegistry().run()
    assert report.checked_at.tzinfo is UTC
    assert before <= report.checked_at <= datetime.now(UTC)


def test_report_refuses_bad_checks():
    with pytest.raises(TypeError, match="must be CheckResult objects"):
        HealthReport([{"name": "db"}])
    with pytest.raises(ValueError, match="needs a name"):
        HealthReport([CheckResult(OK)])
    with pytest.raises(ValueError, match="duplicate check name 'db'"):
        HealthReport([_result("db"), _result("db", FAILING)])
    with pytest.raises(ValueError, match="kind must be one of"):
        HealthReport([], kind="startup")


def test_to_dict_has_the_documented_stable_shape():
    report = HealthReport(
        [
            _result("db", latency_ms=3.71234, details={"schema_version": "0042", "ids": (1, 2)}),
            CheckResult(
                FAILING,
                "timed out after 0.5s",
                name="search",
                latency_ms=500.4,
                critical=False,
            ),
        ],
        checked_at=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
    )
    body = report.to_dict()
    assert body == {
        "status": "degraded",
        "kind": "readiness",
        "checked_at": "2024-05-01T12:00:00.123456Z",
        "checks": {
            "db": {
                "status": "ok",
                "critical": True,
                "latency_ms": 3.712,
                "reason": None,
                "details": {"schema_version": "0042", "ids": [1, 2]},
            },
            "search": {
                "status": "failing",
                "critical": False,
                "latency_ms": 500.4,
                "reason": "timed out after 0.5s",
                "details": {},
            },
        },
    }
    assert list(body) == ["status", "kind", "checked_at", "checks"]
    assert list(body["checks"]) == ["db", "search"]  # registration order
    assert type(body["status"]) is str
    assert json.loads(json.dumps(body, allow_nan=False)) == body


def test_to_dict_returns_an_independent_copy():
    report = HealthReport([_result("db", details={"nested": {"a": [1]}})])
    body = report.to_dict()
    body["checks"]["db"]["details"]["nested"]["a"].append(2)
    assert report.to_dict()["checks"]["db"]["details"] == {"nested": {"a": [1]}}


async def test_to_dict_of_a_real_run_is_json():
    registry = HealthRegistry()
    registry.register(Counting(CheckResult.ok({"version": 3})), name="db")
    registry.register(Counting(False), name="search", critical=False)
    body = (await registry.run()).to_dict()
    decoded = json.loads(json.dumps(body, allow_nan=False))
    assert decoded["status"] == "degraded"
    assert decoded["checks"]["db"]["details"] == {"version": 3}
    assert decoded["checks"]["search"]["reason"] == "check returned False"
    assert decoded["checked_at"].endswith("Z")
