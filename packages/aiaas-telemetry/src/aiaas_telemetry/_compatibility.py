"""The start-up version-skew check every service and command line that composes aiaas packages runs.

A process built from aiaas distributions works only if each one it loads is in the range the
others declare (``aiaas-core>=0.1,<0.2``). :func:`aiaas_core.check_compatibility` says whether
they are; this module makes every service and CLI ask at start, the same way:

* :func:`check_service_compatibility` (services): one WARNING log line per problem on the
  service's logger, the gauge ``aiaas_version_skew_problems`` on its Prometheus registry (0 when
  all is well), and a non-critical ``version-skew`` readiness check, so ``/ready`` answers
  ``degraded`` (still 200: the service serves) with the problems, until a compatible install.
* :func:`check_cli_compatibility` (commands): a clear error on stderr and the exit status
  :data:`EXIT_VERSION_SKEW` (78, ``EX_CONFIG`` of sysexits.h, used by no aiaas command for
  anything else), or ``None`` to carry on.

Both are cheap: they read the metadata of the program's own distribution and of the aiaas
distributions it requires, transitively (``importlib.metadata``, once, a handful of lookups),
not of everything installed. ``distributions=`` stands in for what is installed (tests).
"""

from __future__ import annotations

import re
import sys
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, TextIO

from aiaas_core import CheckResult, CompatibilityReport, HealthRegistry, check_compatibility

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Gauge

    from aiaas_telemetry._setup import Telemetry

__all__ = [
    "EXIT_VERSION_SKEW",
    "VERSION_SKEW_PROBLEMS",
    "check_cli_compatibility",
    "check_service_compatibility",
]

#: The exit status of a command that refuses to run on an incompatible install (sysexits EX_CONFIG).
EXIT_VERSION_SKEW: Final = 78
#: The gauge every service exports: how many declared ranges the installed versions break.
VERSION_SKEW_PROBLEMS: Final = "aiaas_version_skew_problems"
#: The readiness check's name.
CHECK_NAME: Final = "version-skew"

_NAME: Final = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_gauges: weakref.WeakKeyDictionary[CollectorRegistry, Gauge] = weakref.WeakKeyDictionary()

Distributions = Mapping[str, tuple[str, Sequence[str]]]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _composed(program: str) -> dict[str, tuple[str, list[str]]]:
    """``program``'s distribution and the aiaas distributions it requires, transitively."""
    from importlib import metadata  # noqa: PLC0415 -- only at start-up

    found: dict[str, tuple[str, list[str]]] = {}
    pending = [_normalize(program)]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a required sibling that is missing: check_compatibility reports it
        requirements = list(dist.requires or [])
        found[name] = (dist.version, requirements)
        for text in requirements:
            match = _NAME.match(text)
            if match and _normalize(match.group(1)).startswith("aiaas-"):
                pending.append(_normalize(match.group(1)))
    return found


def _report(program: str, distributions: Distributions | None) -> CompatibilityReport:
    return check_compatibility(
        distributions=_composed(program) if distributions is None else distributions,
        on_problem="ignore",
        consumers=[program],
    )


def _gauge(registry: CollectorRegistry) -> Gauge:
    gauge = _gauges.get(registry)
    if gauge is None:
        from prometheus_client import Gauge  # noqa: PLC0415 -- aiaas-telemetry's dependency

        gauge = Gauge(
            VERSION_SKEW_PROBLEMS,
            "Installed aiaas distributions outside a range another one declares (0: compatible).",
            registry=registry,
        )
        _gauges[registry] = gauge
    return gauge


def check_service_compatibility(
    program: str,
    telemetry: Telemetry,
    health: HealthRegistry | None = None,
    *,
    distributions: Distributions | None = None,
) -> CompatibilityReport:
    """Check, at a service's start, that the aiaas distributions it composes fit together.

    ``program`` is the service's distribution (``"world-service"``): its own requirements on
    aiaas packages and theirs on each other are checked. Each problem is logged once at WARNING
    on ``telemetry.logger`` (event ``aiaas.version_skew``, with the distribution, requirement and
    installed version); ``aiaas_version_skew_problems`` on ``telemetry.registry`` counts them;
    and when ``health`` is given, a non-critical readiness check ``version-skew`` reports
    ``degraded`` with the problems (``ok`` with the versions otherwise). Calling it again (a
    second app on the same telemetry) updates the same gauge. Returns the report.
    """
    report = _report(program, distributions)
    _gauge(telemetry.registry).set(len(report.problems))
    for problem in report.problems:
        telemetry.logger.warning(
            "aiaas version skew: %s",
            problem,
            extra={
                "event": "aiaas.version_skew",
                "distribution": problem.distribution,
                "requirement": problem.requirement,
                "installed": problem.installed,
            },
        )
    if health is not None:
        summary = report.to_dict()

        @health.register(name=CHECK_NAME, critical=False, timeout=1.0)
        async def version_skew() -> CheckResult:
            if report.ok:
                return CheckResult.ok({"distributions": summary["distributions"]})
            return CheckResult.degraded(
                f"{len(report.problems)} installed aiaas distribution(s) outside a declared "
                "range: install versions that fit (see problems)",
                summary,
            )

    return report


def check_cli_compatibility(
    program: str,
    *,
    distributions: Distributions | None = None,
    stream: TextIO | None = None,
) -> int | None:
    """Check, at a command's start, that the aiaas distributions it composes fit together.

    ``None`` when they do (carry on). Otherwise writes what is wrong and what to install to
    ``stream`` (stderr) and returns :data:`EXIT_VERSION_SKEW` for the command to exit with.
    """
    report = _report(program, distributions)
    if report.ok:
        return None
    out = stream if stream is not None else sys.stderr
    lines = "\n".join(f"  - {problem}" for problem in report.problems)
    out.write(
        f"{program}: error VERSION_SKEW: the installed aiaas packages do not fit together, so "
        f"{program} will not run:\n{lines}\n"
        f"Install versions inside the declared ranges (pip install -U ...), then run it again.\n"
    )
    return EXIT_VERSION_SKEW
