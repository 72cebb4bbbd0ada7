"""Health checks: liveness and readiness probes with dependency status and latency thresholds.

Two probes, two questions
-------------------------
**Liveness** (``/health``): *can this process still make progress?* A failing liveness probe makes
the orchestrator restart the container, so liveness checks look only inside the process -- the
event loop answers, worker threads are alive, a queue is not wedged. They never check
dependencies: restarting a pod does not fix a database outage, and a liveness probe that touches
the database turns one outage into a restart storm across every replica.

**Readiness** (``/ready``): *can this process serve traffic right now?* A failing readiness probe
takes the pod out of the load balancer until it recovers; nothing is restarted. This is where
dependency checks belong: the database answers, the schema is at the expected version, a
downstream service is reachable.

Every :class:`HealthCheck` belongs to exactly one probe through its ``kind`` (``"readiness"``
by default). With no checks registered for a kind, :meth:`HealthRegistry.run` reports ``ok``:
for liveness, answering at all is the signal.

Statuses and how they combine
-----------------------------
:class:`HealthStatus` is ordered by severity, ``ok < degraded < failing``; a report's overall
status is the worst of its checks' contributions:

==================================  ===========================
one check                           contributes to overall
==================================  ===========================
``ok``                              ``ok``
succeeded, slower than              ``degraded``
``degraded_after`` (or returned
``degraded``)
``failing``, ``critical=False``     ``degraded``
``failing``, ``critical=True``      ``failing``
==================================  ===========================

A check fails when it raises, returns ``False``, returns a ``failing`` :class:`CheckResult`, or
runs past its ``timeout`` (reason ``"timed out after 0.5s"``).

HTTP status
-----------
:attr:`HealthReport.http_status` is ``503`` only when the overall status is ``failing``;
``degraded`` is still ``200``. Degraded means the service *is* serving -- slower, or without an
optional dependency -- and taking it out of rotation would move its load onto the other replicas,
which are usually degraded by the same cause, cascading a partial problem into a full outage.
The body still says ``"degraded"`` so dashboards and alerts see it. This module serves no HTTP
itself: the service layer maps ``/health`` and ``/ready`` onto :meth:`HealthRegistry.run`,
:attr:`HealthReport.http_status` and :meth:`HealthReport.to_dict`.

Report shape
------------
:meth:`HealthReport.to_dict` returns a JSON-ready mapping whose shape is stable (keys are only
ever added):

.. code-block:: json

    {
      "status": "degraded",
      "kind": "readiness",
      "checked_at": "2024-05-01T12:00:00.123456Z",
      "checks": {
        "db": {
          "status": "ok",
          "critical": true,
          "latency_ms": 3.712,
          "reason": null,
          "details": {"schema_version": "0042"}
        },
        "search": {
          "status": "failing",
          "critical": false,
          "latency_ms": 500.4,
          "reason": "timed out after 0.5s",
          "details": {}
        }
      }
    }

``status`` is ``ok``, ``degraded`` or ``failing``; ``kind`` is ``readiness`` or ``liveness``;
``checked_at`` is ISO 8601 UTC; ``checks`` is keyed by check name, in registration order, and
every check always carries all five keys (``reason`` is ``null`` when there is none).

Running checks
--------------
::

    health = HealthRegistry(cache_ttl=2.0)


    @health.register(timeout=0.5, degraded_after=0.1)
    async def db() -> CheckResult:
        version = await pool.fetchval("SELECT max(version) FROM schema_history")
        return CheckResult.ok({"schema_version": version})


    @health.register(name="event-loop", kind="liveness")
    async def event_loop() -> None:
        await asyncio.sleep(0)


    report = await health.run("readiness")
    status, body = report.http_status, report.to_dict()

:meth:`HealthRegistry.run` runs every check of one kind concurrently, each in its own task and
each bounded by its own ``timeout``: one slow check never delays the others, and the run takes
about as long as its slowest check, at most the largest timeout plus a short grace
(:data:`CANCEL_GRACE`) for the cancellation to land. A check that ignores cancellation is left
running in the background and is not started again while it lingers (it reports ``failing``).
Checks must not block the event loop: run blocking client calls with :func:`asyncio.to_thread`.

Exceptions are caught (``Exception``, not ``BaseException``); the reason carries the exception
type and a short, single-line message that passed through the registry's ``redact`` function --
never a traceback. The default redactor masks URL passwords, ``password=``/``token=``-style
values and bearer tokens; pass ``redact=None`` to report the exception type only.

Caching
-------
Probes are frequent (kubelet, load balancers, every replica's monitors), and a readiness probe
that runs a query on every call multiplies load on the very dependency it is watching. With
``cache_ttl > 0`` a report is reused for that many seconds after it was produced, and callers
that arrive while a run is in flight share it instead of starting their own, so the checks run
at most about once per ``cache_ttl`` per kind however hard the endpoint is hit. Failing reports
are cached too: that is the case where hammering hurts most. A cached report keeps its
``checked_at``, so consumers can see how old it is. Keep ``cache_ttl`` below the probe period
(1-5 s is typical); ``run(..., use_cache=False)`` forces a fresh run and refreshes the cache.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, TypeVar, overload

import attrs

__all__ = [
    "CheckResult",
    "HealthCheck",
    "HealthRegistry",
    "HealthReport",
    "HealthStatus",
]

CheckKind: TypeAlias = Literal["readiness", "liveness"]
CHECK_KINDS: Final[tuple[CheckKind, ...]] = ("readiness", "liveness")

#: Check names: lowercase letters, digits and ``_ . -``, starting with a letter or digit.
CHECK_NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_.-]*")
#: Longest reason the registry itself writes (exception messages are cut to fit).
MAX_REASON_LENGTH: Final = 200
#: Seconds a timed-out check is given to finish cancelling before it is left in the background.
CANCEL_GRACE: Final = 0.1
DEFAULT_TIMEOUT: Final = 1.0

_SEVERITY: Final[dict[str, int]] = {"ok": 0, "degraded": 1, "failing": 2}


class HealthStatus(enum.StrEnum):
    """The status of one check or a whole report, ordered by severity: ``OK < DEGRADED < FAILING``.

    Members are strings (``HealthStatus.OK == "ok"``), but they compare by severity, not
    alphabetically; comparing with a string that is not a status raises :class:`TypeError`.
    """

    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"

    @property
    def severity(self) -> int:
        """0 for ``ok``, 1 for ``degraded``, 2 for ``failing``."""
        return _SEVERITY[self.value]

    @classmethod
    def worst(cls, statuses: Iterable[HealthStatus]) -> HealthStatus:
        """The most severe of ``statuses``; ``OK`` when there are none."""
        return max(statuses, key=_severity_of, default=cls.OK)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, str):
            return NotImplemented
        return self.severity < _severity_of(other)

    def __le__(self, other: object) -> bool:
        if not isinstance(other, str):
            return NotImplemented
        return self.severity <= _severity_of(other)

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, str):
            return NotImplemented
        return self.severity > _severity_of(other)

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, str):
            return NotImplemented
        return self.severity >= _severity_of(other)


def _severity_of(status: str) -> int:
    try:
        return _SEVERITY[status]
    except KeyError:
        raise TypeError(
            f"cannot compare a health status with {status!r}: expected one of {list(_SEVERITY)}"
        ) from None


# -- validators and converters --------------------------------------------------------------


def _to_status(value: object) -> HealthStatus:
    if isinstance(value, HealthStatus):
        return value
    if isinstance(value, str) and value in _SEVERITY:
        return HealthStatus(value)
    raise ValueError(f"status must be one of {list(_SEVERITY)}, got {value!r}")


def _validate_name(name: object, *, what: str) -> None:
    if not isinstance(name, str) or not CHECK_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{what} name must match {CHECK_NAME_PATTERN.pattern} (lowercase letters, digits and "
            f"'_', '.', '-', starting with a letter or digit), got {name!r}"
        )


def _check_name(_inst: object, _attribute: attrs.Attribute[str], value: str) -> None:
    _validate_name(value, what="health check")


def _result_name(_inst: object, _attribute: attrs.Attribute[str], value: str) -> None:
    # "" means "not set yet": the registry fills in the check's name.
    if value != "":
        _validate_name(value, what="check result")


def _reason(_inst: object, _attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"reason must be a string or None, got {type(value).__name__}")


def _latency(_inst: object, _attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"latency_ms must be a finite number >= 0, got {value!r}")


def _to_float(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number of seconds, got {type(value).__name__}")
    return float(value)


def _to_optional_float(value: float | None) -> float | None:
    return None if value is None else _to_float(value)


def _seconds(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise ValueError(f"{attribute.name} must be a finite number of seconds > 0, got {value!r}")


def _degraded_after(
    inst: HealthCheck, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    _seconds(inst, attribute, value)
    if value is not None and value >= inst.timeout:
        raise ValueError(
            f"degraded_after ({value:g}s) must be less than timeout ({inst.timeout:g}s) for "
            f"health check {inst.name!r}: a check slower than its timeout already fails"
        )


def _bool(_inst: object, attribute: attrs.Attribute[bool], value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be a bool, got {type(value).__name__}")


def _require_kind(value: object) -> None:
    if value not in CHECK_KINDS:
        raise ValueError(f"kind must be one of {list(CHECK_KINDS)}, got {value!r}")


def _kind(_inst: object, _attribute: attrs.Attribute[str], value: object) -> None:
    _require_kind(value)


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):  # also sees through functools.partial
        return True
    if isinstance(fn, type) or inspect.isfunction(fn) or inspect.ismethod(fn):
        return False
    # An instance whose class defines ``async def __call__``.
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004


def _async_callable(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        raise TypeError(f"a health check must be an async callable, got {type(value).__name__}")
    if not _is_async_callable(value):
        label = getattr(value, "__qualname__", type(value).__name__)
        raise TypeError(
            f"health check {label!r} must be an async function (async def) taking no arguments; "
            "wrap blocking calls as `async def check(): await asyncio.to_thread(...)`"
        )


_JSON_SCALARS: Final = (bool, str, int, float)


def _json_value(value: object, path: str) -> Any:
    """A plain-JSON copy of ``value`` (tuples become lists); raises on anything else."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"details{path} must be a finite number, got {value!r}")
    if value is None or type(value) in _JSON_SCALARS:
        return value
    for scalar in _JSON_SCALARS:  # subclasses (enums...) become the plain type
        if isinstance(value, scalar):
            return scalar(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"details{path} keys must be strings, got {key!r}")
            out[key] = _json_value(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise TypeError(
        f"details{path} must be JSON-compatible (str, int, float, bool, None, list, mapping), got "
        f"{type(value).__name__}; convert it first (for a datetime: .isoformat())"
    )


def _to_details(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise TypeError(f"details must be a mapping, got {type(value).__name__}")
    return MappingProxyType(_json_value(value, ""))


def _to_utc(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"checked_at must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("checked_at must be timezone-aware")
    return value.astimezone(UTC)


# -- value objects --------------------------------------------------------------------------


@attrs.frozen
class CheckResult:
    """The outcome of one check.

    A check function may return one to report more than "ok": a ``degraded`` status, a reason,
    or ``details`` (JSON-compatible, e.g. ``{"schema_version": "0042"}``). It sets ``status``,
    ``reason`` and ``details``; the registry fills in ``name``, ``latency_ms`` and ``critical``
    from the :class:`HealthCheck` and its own measurement, overriding whatever was there.

    ``reason`` is shown to whoever reads the probe: keep secrets out of it.
    """

    status: HealthStatus = attrs.field(converter=_to_status)
    reason: str | None = attrs.field(default=None, validator=_reason)
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=_to_details)
    name: str = attrs.field(default="", kw_only=True, validator=_result_name)
    latency_ms: float = attrs.field(
        default=0.0, kw_only=True, converter=_to_float, validator=_latency
    )
    critical: bool = attrs.field(default=True, kw_only=True, validator=_bool)

    @classmethod
    def ok(cls, details: Mapping[str, Any] | None = None) -> CheckResult:
        """A healthy result carrying ``details``."""
        return cls(HealthStatus.OK, None, details)

    @classmethod
    def degraded(cls, reason: str, details: Mapping[str, Any] | None = None) -> CheckResult:
        """Working, but not well: slow, behind, or running without something optional."""
        return cls(HealthStatus.DEGRADED, reason, details)

    @classmethod
    def failing(cls, reason: str, details: Mapping[str, Any] | None = None) -> CheckResult:
        """Not working."""
        return cls(HealthStatus.FAILING, reason, details)

    @property
    def contribution(self) -> HealthStatus:
        """What this result adds to the overall status: a non-critical failure only degrades."""
        if self.status is HealthStatus.FAILING and not self.critical:
            return HealthStatus.DEGRADED
        return self.status

    def _as_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "critical": self.critical,
            "latency_ms": round(self.latency_ms, 3),
            "reason": self.reason,
            "details": _json_value(self.details, ""),
        }


def _to_results(value: Iterable[CheckResult]) -> tuple[CheckResult, ...]:
    results = tuple(value)
    seen: set[str] = set()
    for result in results:
        if not isinstance(result, CheckResult):
            raise TypeError(f"checks must be CheckResult objects, got {type(result).__name__}")
        if not result.name:
            raise ValueError("every CheckResult in a report needs a name")
        if result.name in seen:
            raise ValueError(f"duplicate check name {result.name!r} in a report")
        seen.add(result.name)
    return results


def _now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen
class HealthReport:
    """The result of running one probe's checks. ``status`` is derived from ``checks``."""

    # Checked in the converter: ``status`` is computed from ``checks`` before validators run.
    checks: tuple[CheckResult, ...] = attrs.field(converter=_to_results)
    checked_at: datetime = attrs.field(factory=_now, converter=_to_utc)
    kind: CheckKind = attrs.field(default="readiness", validator=_kind)
    status: HealthStatus = attrs.field(init=False)

    @status.default
    def _overall(self) -> HealthStatus:
        return HealthStatus.worst(result.contribution for result in self.checks)

    @property
    def http_status(self) -> int:
        """``503`` when ``failing``, else ``200`` -- ``degraded`` still serves (module docs)."""
        return 503 if self.status is HealthStatus.FAILING else 200

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON-ready shape documented in this module's docstring."""
        return {
            "status": self.status.value,
            "kind": self.kind,
            "checked_at": self.checked_at.isoformat().replace("+00:00", "Z"),
            "checks": {result.name: result._as_json() for result in self.checks},
        }


CheckOutcome: TypeAlias = CheckResult | bool | None
CheckFunction: TypeAlias = Callable[[], Awaitable[CheckOutcome]]


@attrs.frozen
class HealthCheck:
    """One named check: an async callable plus how to judge and combine its outcome.

    ``check`` takes no arguments and returns ``None`` or ``True`` (ok), ``False`` (failing) or a
    :class:`CheckResult`; raising makes it ``failing``. It must finish within ``timeout``
    seconds, or it is cancelled and reported ``failing``. A check that succeeds but takes longer
    than ``degraded_after`` seconds (when set; less than ``timeout``) is ``degraded``.
    ``critical=False`` marks an optional dependency: its failure degrades the report instead of
    failing it. ``kind`` picks the probe (see the module docs): dependencies are ``readiness``.
    """

    name: str = attrs.field(validator=_check_name)
    check: CheckFunction = attrs.field(validator=_async_callable)
    timeout: float = attrs.field(
        default=DEFAULT_TIMEOUT, kw_only=True, converter=_to_float, validator=_seconds
    )
    degraded_after: float | None = attrs.field(
        default=None, kw_only=True, converter=_to_optional_float, validator=_degraded_after
    )
    critical: bool = attrs.field(default=True, kw_only=True, validator=_bool)
    kind: CheckKind = attrs.field(default="readiness", kw_only=True, validator=_kind)


# -- running --------------------------------------------------------------------------------

_SECRET_PATTERNS: Final = (
    # scheme://user:password@host -> scheme://user:***@host
    re.compile(r"(?P<keep>\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@]+(?=@)", re.IGNORECASE),
    # Authorization: Bearer <token>
    re.compile(r"(?P<keep>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE),
    # password=..., db_password: "...", X-Api-Key: ..., token='...'
    re.compile(
        r"(?P<keep>\b[\w-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)"
        r"[\"']?\s*[=:]\s*)(?:\"[^\"]*\"|'[^']*'|[^\s,;&)]+)",
        re.IGNORECASE,
    ),
)
_WHITESPACE: Final = re.compile(r"\s+")
_UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _default_redact(exc: BaseException) -> str:
    text = str(exc)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\g<keep>***", text)
    return text


def _one_line(text: str, limit: int = MAX_REASON_LENGTH) -> str:
    text = _UNPRINTABLE.sub(" ", _WHITESPACE.sub(" ", text)).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_F = TypeVar("_F", bound=Callable[[], Awaitable[Any]])


class HealthRegistry:
    """The checks of one service, and the runner that turns them into :class:`HealthReport` s.

    ``cache_ttl`` (seconds, ``0`` = off) reuses reports and coalesces concurrent runs; ``clock``
    is the monotonic clock it is measured with (injectable for tests). ``redact`` turns a
    check's exception into the message part of its reason (the type name is always shown);
    ``None`` shows the type only. Its output is cut to one line of at most
    :data:`MAX_REASON_LENGTH` characters.
    """

    #: The default ``redact``: the exception's text with URL passwords, ``key=secret`` values
    #: and bearer tokens masked. Compose custom redactors from it.
    default_redact = staticmethod(_default_redact)

    def __init__(
        self,
        *,
        cache_ttl: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        redact: Callable[[BaseException], str] | None = _default_redact,
    ) -> None:
        ttl = _to_float(cache_ttl)
        if not math.isfinite(ttl) or ttl < 0:
            raise ValueError(f"cache_ttl must be a finite number of seconds >= 0, got {ttl!r}")
        self._cache_ttl = ttl
        self._clock = clock
        self._redact = redact
        self._checks: dict[str, HealthCheck] = {}
        self._generation = 0
        self._cache: dict[str, tuple[float, HealthReport]] = {}
        self._inflight: dict[str, asyncio.Task[HealthReport]] = {}
        # Timed-out checks that ignored cancellation, kept referenced until they finish.
        self._lingering: dict[str, asyncio.Task[Any]] = {}

    def __repr__(self) -> str:
        return f"HealthRegistry(checks={list(self._checks)!r}, cache_ttl={self._cache_ttl:g})"

    @property
    def cache_ttl(self) -> float:
        return self._cache_ttl

    def checks(self, kind: CheckKind | None = None) -> tuple[HealthCheck, ...]:
        """The registered checks in registration order, optionally only those of ``kind``."""
        if kind is not None:
            _require_kind(kind)
        return tuple(c for c in self._checks.values() if kind is None or c.kind == kind)

    @overload
    def register(self, check: HealthCheck, /) -> HealthCheck: ...

    @overload
    def register(
        self,
        check: _F,
        /,
        *,
        name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        degraded_after: float | None = None,
        critical: bool = True,
        kind: CheckKind = "readiness",
    ) -> _F: ...

    @overload
    def register(
        self,
        check: None = None,
        /,
        *,
        name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        degraded_after: float | None = None,
        critical: bool = True,
        kind: CheckKind = "readiness",
    ) -> Callable[[_F], _F]: ...

    def register(
        self,
        check: HealthCheck | _F | None = None,
        /,
        *,
        name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        degraded_after: float | None = None,
        critical: bool = True,
        kind: CheckKind = "readiness",
    ) -> HealthCheck | _F | Callable[[_F], _F]:
        """Add a check; names are unique across the registry.

        Three forms::

            registry.register(HealthCheck("db", ping_db, timeout=0.5))


            @registry.register  # named after the function: "db"
            async def db() -> None: ...


            @registry.register(name="search", critical=False, degraded_after=0.2)
            async def search_ping() -> bool: ...

        The decorator forms return the function unchanged.
        """
        if isinstance(check, HealthCheck):
            options = (name, timeout, degraded_after, critical, kind)
            if options != (None, DEFAULT_TIMEOUT, None, True, "readiness"):
                raise TypeError(
                    "register(HealthCheck(...)) takes no options: set them on the HealthCheck"
                )
            self._add(check)
            return check

        if check is not None and not callable(check):
            raise TypeError(
                "register() takes a HealthCheck or an async function; to name a check, pass "
                f"name= as a keyword (@registry.register(name=...)), got {check!r}"
            )

        def decorate(fn: _F) -> _F:
            check_name = name if name is not None else getattr(fn, "__name__", None)
            if check_name is None:
                raise TypeError(f"cannot derive a check name from {fn!r}: pass name=...")
            self._add(
                HealthCheck(
                    check_name,
                    fn,
                    timeout=timeout,
                    degraded_after=degraded_after,
                    critical=critical,
                    kind=kind,
                )
            )
            return fn

        return decorate if check is None else decorate(check)

    def _add(self, check: HealthCheck) -> None:
        if check.name in self._checks:
            raise ValueError(
                f"a health check named {check.name!r} is already registered; names must be unique"
            )
        self._checks[check.name] = check
        self._generation += 1
        self._cache.pop(check.kind, None)

    async def run(self, kind: CheckKind = "readiness", *, use_cache: bool = True) -> HealthReport:
        """Run every check of ``kind`` concurrently and report.

        Never raises for a check's sake: failures, timeouts and exceptions become results. With
        caching on, a recent enough report is returned as-is; ``use_cache=False`` runs afresh
        (and refreshes the cache).
        """
        _require_kind(kind)
        if self._cache_ttl <= 0:
            return await self._run_kind(kind)
        if use_cache:
            cached = self._cache.get(kind)
            if cached is not None and self._clock() - cached[0] < self._cache_ttl:
                return cached[1]
        else:
            return await self._run_and_store(kind, self._generation)
        task = self._inflight.get(kind)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(self._run_and_store(kind, self._generation))
            self._inflight[kind] = task
            task.add_done_callback(self._forget_inflight(kind))
        # shield: one caller giving up must not cancel the run the others are waiting for.
        return await asyncio.shield(task)

    def _forget_inflight(self, kind: str) -> Callable[[asyncio.Task[HealthReport]], None]:
        def forget(task: asyncio.Task[HealthReport]) -> None:
            if self._inflight.get(kind) is task:
                del self._inflight[kind]

        return forget

    async def _run_and_store(self, kind: CheckKind, generation: int) -> HealthReport:
        report = await self._run_kind(kind)
        if generation == self._generation:  # no check was added meanwhile
            self._cache[kind] = (self._clock(), report)
        return report

    async def _run_kind(self, kind: CheckKind) -> HealthReport:
        checks = self.checks(kind)
        results = await asyncio.gather(*(self._run_one(check) for check in checks))
        return HealthReport(results, kind=kind)

    async def _run_one(self, check: HealthCheck) -> CheckResult:
        lingering = self._lingering.get(check.name)
        if lingering is not None and lingering.get_loop() is not asyncio.get_running_loop():
            del self._lingering[check.name]  # left behind on a loop that is gone
            lingering = None
        if lingering is not None:
            return self._finish(
                check,
                0.0,
                CheckResult.failing(
                    "still running after an earlier timeout (does it suppress cancellation?)"
                ),
            )
        start = time.perf_counter()
        try:
            awaitable: object = check.check()
            if not inspect.isawaitable(awaitable):
                return self._finish(
                    check,
                    _elapsed_ms(start),
                    CheckResult.failing(
                        f"check returned {type(awaitable).__name__}, not an awaitable"
                    ),
                )
            task = asyncio.ensure_future(awaitable)
        except Exception as exc:  # noqa: BLE001 - any failure of user code is a failing check
            return self._finish(check, _elapsed_ms(start), self._from_exception(exc))
        try:
            done, _ = await asyncio.wait({task}, timeout=check.timeout)
        except asyncio.CancelledError:
            task.cancel()  # the run itself was cancelled: take the check down with it
            raise
        latency = _elapsed_ms(start)
        if not done:
            await self._cancel(check.name, task)
            return self._finish(
                check, latency, CheckResult.failing(f"timed out after {check.timeout:g}s")
            )
        if task.cancelled():
            return self._finish(check, latency, CheckResult.failing("check was cancelled"))
        error = task.exception()
        if error is not None:
            return self._finish(check, latency, self._from_exception(error))
        return self._finish(check, latency, _from_outcome(task.result()))

    async def _cancel(self, name: str, task: asyncio.Task[Any]) -> None:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE)
        if done:
            _retrieve(task)
            return
        self._lingering[name] = task

        def release(finished: asyncio.Task[Any]) -> None:
            _retrieve(finished)
            if self._lingering.get(name) is finished:
                del self._lingering[name]

        task.add_done_callback(release)

    def _from_exception(self, exc: BaseException) -> CheckResult:
        kind = type(exc).__name__
        message = ""
        if self._redact is not None:
            try:
                message = _one_line(self._redact(exc))
            except Exception:  # noqa: BLE001 - a broken redactor must not leak or crash the probe
                message = "(message withheld: the redactor failed)"
        return CheckResult.failing(f"{kind}: {message}" if message else kind)

    def _finish(self, check: HealthCheck, latency_ms: float, result: CheckResult) -> CheckResult:
        status, reason = result.status, result.reason
        limit = check.degraded_after
        if status is not HealthStatus.FAILING and limit is not None and latency_ms > limit * 1000:
            slow = f"slow: took {latency_ms:.0f} ms, over the {limit * 1000:g} ms threshold"
            status = HealthStatus.DEGRADED
            reason = f"{reason}; {slow}" if reason else slow
        return attrs.evolve(
            result,
            status=status,
            reason=reason,
            name=check.name,
            latency_ms=latency_ms,
            critical=check.critical,
        )


def _elapsed_ms(start: float) -> float:
    return max(0.0, (time.perf_counter() - start) * 1000)


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Mark a finished task's exception as seen so asyncio does not log it as never retrieved.
    if not task.cancelled():
        task.exception()


def _from_outcome(outcome: object) -> CheckResult:
    if outcome is None or outcome is True:
        return CheckResult(HealthStatus.OK)
    if outcome is False:
        return CheckResult.failing("check returned False")
    if isinstance(outcome, CheckResult):
        return outcome
    return CheckResult.failing(
        f"check returned an unsupported {type(outcome).__name__}; "
        "return None, a bool or a CheckResult"
    )
