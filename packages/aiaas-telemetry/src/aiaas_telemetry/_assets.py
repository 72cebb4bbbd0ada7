"""Deployable observability assets shipped with the package: a Grafana dashboard and Prometheus
rules for the metrics :class:`aiaas_telemetry.TelemetryMiddleware` and :func:`setup` export.

=============================  ===============================================================
asset                          what it is
=============================  ===============================================================
``grafana-dashboard.json``     request rate, 4xx/5xx share, p95 latency, in-flight requests,
                               errors by code, dropped spans and export health, CPU and memory;
                               ``$datasource`` and ``$job`` variables
``prometheus-rules.yaml``      recording rules and alerts: no traffic, 5xx rate above 5 %,
                               p95 above 500 ms, spans dropped, span export failing
=============================  ===============================================================

Infrastructure code reads them with :func:`load_asset` (text), :func:`load_grafana_dashboard`
(a dict) and :func:`load_prometheus_rules` (a dict; needs PyYAML, the ``yaml`` extra).
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any, Final

__all__ = ["ASSETS", "load_asset", "load_grafana_dashboard", "load_prometheus_rules"]

#: The names of the shipped assets.
ASSETS: Final = ("grafana-dashboard.json", "prometheus-rules.yaml")


def load_asset(name: str) -> str:
    """The text of the shipped asset ``name`` (one of :data:`ASSETS`)."""
    if name not in ASSETS:
        raise ValueError(f"unknown asset {name!r}; shipped assets: {', '.join(ASSETS)}")
    return (files("aiaas_telemetry") / "assets" / name).read_text(encoding="utf-8")


def load_grafana_dashboard() -> dict[str, Any]:
    """The Grafana dashboard model (import it, or wrap it in a dashboard ConfigMap)."""
    data: dict[str, Any] = json.loads(load_asset("grafana-dashboard.json"))
    return data


def load_prometheus_rules() -> dict[str, Any]:
    """The Prometheus rule file as data (``{"groups": [...]}``); needs PyYAML."""
    try:
        import yaml  # noqa: PLC0415 -- optional extra
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_prometheus_rules() needs PyYAML: pip install 'aiaas-telemetry[yaml]'"
            " (or read the text with load_asset('prometheus-rules.yaml'))"
        ) from None
    data: dict[str, Any] = yaml.safe_load(load_asset("prometheus-rules.yaml"))
    return data
