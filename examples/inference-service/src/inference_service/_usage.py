"""Usage metering of inference-service: aiaas-db's usage writer, and its metrics.

The writer itself (bounded buffer, batched idempotent inserts, drops counted, buffered while the
database is down, bounded flush on shutdown) is :class:`aiaas_db.UsageWriter`; this module maps
its counts, and the gateway's, to the service's Prometheus metrics when they are scraped:

* ``inference_usage_events_total{outcome="written|dropped_buffer_full|dropped_shutdown"}``,
  ``inference_usage_events_pending``, ``inference_usage_database_up``;
* ``inference_gateway_refusals_total{reason="insufficient_quota|key_requests|key_tokens|
  org_requests|org_tokens"}``, ``inference_gateway_budget_reads_total{outcome="ok|failed"}``
  and ``inference_gateway_budget_unavailable_total`` (requests let through without a budget).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiaas_core import deprecated
from aiaas_db import UsageEvent, UsageStats, UsageWriter

if TYPE_CHECKING:
    from inference_service._gateway import Gateway

__all__ = ["UsageCollector", "UsageEvent", "UsageRecorder", "UsageStats"]


@deprecated(since="0.1.0", removal="0.2.0", alternative="aiaas_db.UsageWriter")
class UsageRecorder(UsageWriter):
    """The usage writer under its old name: use :class:`aiaas_db.UsageWriter`."""


class UsageCollector:
    """The usage and gateway metrics, read from the writer and the gateway at scrape time (so
    recording an event costs a request nothing but an append)."""

    def __init__(self, writer: UsageWriter, gateway: Gateway | None = None) -> None:
        self._writer = writer
        self._gateway = gateway

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        stats = self._writer.stats
        events = CounterMetricFamily(
            "inference_usage_events",
            "Usage events by outcome: written to usage_events, or dropped (buffer full, shutdown).",
            labels=["outcome"],
        )
        events.add_metric(["written"], stats.written)
        events.add_metric(["dropped_buffer_full"], stats.dropped_buffer_full)
        events.add_metric(["dropped_shutdown"], stats.dropped_shutdown)
        yield events
        yield GaugeMetricFamily(
            "inference_usage_events_pending",
            "Usage events buffered, not yet written.",
            value=stats.pending,
        )
        yield GaugeMetricFamily(
            "inference_usage_database_up",
            "1 while usage events are being written.",
            value=1 if stats.database_up else 0,
        )
        gateway = self._gateway
        if gateway is None:
            return
        refusals = CounterMetricFamily(
            "inference_gateway_refusals",
            "Requests refused before any compute (429), by reason: a spent budget"
            " (insufficient_quota) or a request/token rate limit of the key or organisation.",
            labels=["reason"],
        )
        for reason, count in gateway.refusals.items():
            refusals.add_metric([reason], count)
        yield refusals
        reads = CounterMetricFamily(
            "inference_gateway_budget_reads",
            "Budget readings from the database, by outcome (failed: a cached one was served).",
            labels=["outcome"],
        )
        budgets = gateway.budgets
        reads.add_metric(["ok"], budgets.reads - budgets.read_failures)
        reads.add_metric(["failed"], budgets.read_failures)
        yield reads
        yield CounterMetricFamily(
            "inference_gateway_budget_unavailable",
            "Requests let through unchecked because no budget could be read (database down).",
            value=gateway.budget_unavailable,
        )
