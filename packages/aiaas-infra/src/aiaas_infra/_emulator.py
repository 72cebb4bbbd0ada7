"""A local Linode API v4 emulator: a real HTTP server that ``linode_api4`` talks to.

It serves every endpoint the provider uses, with in-memory state and the behaviour the SDK
depends on: the list envelope ``{data, page, pages, results}`` with ``page``/``page_size``,
``X-Filter`` (``+and``, ``+or``, ``+contains``, ``+gt``, ``+gte``, ``+lt``, ``+lte``, ``+neq``,
``+order_by``, ``+order``), ``DELETE`` answered ``200 {}``, ``PUT`` answered with the object,
errors as ``{"errors": [{"reason", "field"}]}``, and ``X-RateLimit-*`` / ``Retry-After``
headers. LKE clusters, node pools and databases go from provisioning to ready after a
configurable delay; a new cluster's kubeconfig is "not yet available" (503 with Retry-After)
for a while; account limits, region capabilities and plan availability are configurable; and
faults can be injected: status storms (429 with Retry-After, 5xx), latency, responses lost after
a successful create, and timeouts.

Bucket lifecycle rules and the S3 state backend go through the S3 API on real Linode, so the
emulator is also its own S3 endpoint (:mod:`aiaas_infra._emulator_s3`): path style at its root
URL, SigV4-signed with the keys it issued, serving bucket lifecycle configuration, object
``PUT``/``GET``/``HEAD``/``DELETE`` and ListObjectsV2.

Admin endpoints under ``/_emulator/`` (faults, request log, out-of-band changes) let a test
drive an emulator running in another process (``aiaas-infra emulator --port N``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Network, ip_network
from typing import Any, ClassVar, Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

from aiaas_infra._emulator_s3 import S3Object, S3Response, S3Service

__all__ = [
    "AccountLimits",
    "Fault",
    "LinodeEmulator",
    "RegionConfig",
    "RequestRecord",
]

JSON = dict[str, Any]

ALL_CAPABILITIES: Final = (
    "Linodes",
    "NodeBalancers",
    "Block Storage",
    "Object Storage",
    "Kubernetes",
    "Cloud Firewall",
    "VPCs",
    "GPU Linodes",
    "Managed Databases",
    "Linode Interfaces",
)

KUBERNETES_VERSIONS: Final = ("1.32", "1.31", "1.30")

_PLANS: Final = (
    # id, class, label, vcpus, memory MB, disk MB, gpus, monthly price
    ("g6-nanode-1", "nanode", "Nanode 1GB", 1, 1024, 25600, 0, 5),
    ("g6-standard-1", "standard", "Linode 2GB", 1, 2048, 51200, 0, 12),
    ("g6-standard-2", "standard", "Linode 4GB", 2, 4096, 81920, 0, 24),
    ("g6-standard-4", "standard", "Linode 8GB", 4, 8192, 163840, 0, 48),
    ("g6-standard-8", "standard", "Linode 16GB", 6, 16384, 327680, 0, 96),
    ("g6-dedicated-2", "dedicated", "Dedicated 4GB", 2, 4096, 81920, 0, 36),
    ("g6-dedicated-4", "dedicated", "Dedicated 8GB", 4, 8192, 163840, 0, 72),
    ("g6-dedicated-8", "dedicated", "Dedicated 16GB", 8, 16384, 327680, 0, 144),
    ("g2-gpu-rtx4000a1-s", "gpu", "RTX4000 Ada x1 Small", 4, 16384, 512000, 1, 350),
    ("g1-gpu-rtx6000-1", "gpu", "Dedicated 32GB + RTX6000 GPU x1", 8, 32768, 655360, 1, 1000),
)
_DB_ENGINES: Final = ("postgresql/14", "postgresql/15", "postgresql/16", "mysql/8")
_DB_TYPES: Final = (
    "g6-nanode-1",
    "g6-standard-1",
    "g6-standard-2",
    "g6-dedicated-2",
    "g6-dedicated-4",
)

# The engine_config Linode returns for a PostgreSQL instance (defaults, same shape as the API).
_PG_ENGINE_CONFIG: Final[JSON] = {
    "pg": {
        "autovacuum_analyze_scale_factor": 0.1,
        "autovacuum_analyze_threshold": 50,
        "autovacuum_max_workers": 3,
        "autovacuum_naptime": 60,
        "autovacuum_vacuum_cost_delay": 2,
        "autovacuum_vacuum_cost_limit": 200,
        "autovacuum_vacuum_scale_factor": 0.2,
        "autovacuum_vacuum_threshold": 50,
        "bgwriter_delay": 200,
        "bgwriter_flush_after": 512,
        "bgwriter_lru_maxpages": 100,
        "bgwriter_lru_multiplier": 2.0,
        "deadlock_timeout": 1000,
        "default_toast_compression": "lz4",
        "idle_in_transaction_session_timeout": 0,
        "jit": True,
        "max_files_per_process": 1000,
        "max_locks_per_transaction": 64,
        "max_logical_replication_workers": 4,
        "max_parallel_workers": 8,
        "max_parallel_workers_per_gather": 2,
        "max_pred_locks_per_transaction": 64,
        "max_replication_slots": 20,
        "max_slot_wal_keep_size": -1,
        "max_stack_depth": 2097152,
        "max_standby_archive_delay": 30000,
        "max_standby_streaming_delay": 30000,
        "max_wal_senders": 20,
        "max_worker_processes": 8,
        "password_encryption": "scram-sha-256",
        "pg_partman_bgw.interval": 3600,
        "pg_partman_bgw.role": "akmadmin",
        "pg_stat_monitor.pgsm_enable_query_plan": False,
        "pg_stat_monitor.pgsm_max_buckets": 10,
        "pg_stat_statements.track": "top",
        "temp_file_limit": -1,
        "timezone": "UTC",
        "track_activity_query_size": 1024,
        "track_commit_timestamp": "off",
        "track_functions": "none",
        "track_io_timing": "off",
        "wal_sender_timeout": 60000,
        "wal_writer_delay": 200,
    },
    "pg_stat_monitor_enable": False,
    "pglookout": {"max_failover_replication_time_lag": 60},
    "shared_buffers_percentage": 25.0,
    "work_mem": 4,
}

_RFC1918: Final = (
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
)


# --------------------------------------------------------------------------------------------
# Configuration


@attrs.frozen
class RegionConfig:
    """A region the emulator serves: its capabilities and the plans sold out there."""

    id: str
    capabilities: tuple[str, ...] = ALL_CAPABILITIES
    country: str = "us"
    unavailable_plans: tuple[str, ...] = ()
    account_unavailable: tuple[str, ...] = ()


DEFAULT_REGIONS: Final = (
    RegionConfig("us-ord"),
    RegionConfig("us-sea"),
    RegionConfig(
        "us-east",
        capabilities=tuple(c for c in ALL_CAPABILITIES if c != "GPU Linodes"),
    ),
    RegionConfig(
        "eu-west",
        country="gb",
        capabilities=("Linodes", "NodeBalancers", "Block Storage", "Object Storage"),
    ),
)


@attrs.frozen
class AccountLimits:
    """Account limits; a create beyond one answers 400 ``Account Limit reached``."""

    clusters: int = 10
    nodes: int = 300
    firewalls: int = 50
    vpcs: int = 10
    subnets_per_vpc: int = 16
    buckets_per_region: int = 50
    keys: int = 100
    databases: int = 20


@attrs.frozen
class Fault:
    """A fault to inject into matching requests.

    ``kind``:

    * ``"status"``: answer ``status`` (with ``Retry-After`` when ``retry_after`` is set) instead
      of serving the request -- nothing is changed;
    * ``"latency"``: wait ``delay`` seconds, then serve the request normally;
    * ``"drop"``: serve the request (a create *is* made) and close the connection without an
      answer -- the client sees a lost response;
    * ``"timeout"``: serve the request, then hold the answer ``delay`` seconds (longer than the
      client's timeout) before sending it.

    ``method`` (``None`` for any) and ``path`` (a regular expression searched in the path after
    ``/v4``) select requests; ``times`` limits how many requests it hits (``None``: all).
    """

    kind: Literal["status", "latency", "drop", "timeout"]
    path: str = ""
    method: str | None = None
    status: int = 503
    retry_after: float | None = None
    delay: float = 0.0
    times: int | None = 1
    reason: str = ""


@attrs.frozen
class RequestRecord:
    """One request the emulator received, and the status it answered (0: no answer)."""

    method: str
    path: str
    status: int
    fault: str | None = None


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        reason: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.field = field
        self.headers = dict(headers or {})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _bad(reason: str, field: str | None = None) -> _ApiError:
    return _ApiError(400, reason, field)


def _not_found() -> _ApiError:
    return _ApiError(404, "Not found")


_EMULATED_AREAS: Final = (
    "regions, account availability, LKE clusters and pools, Linode types, firewalls, VPCs and "
    "subnets, Object Storage (buckets, keys, quotas) and managed PostgreSQL databases"
)


def _not_emulated(method: str, path: str) -> _ApiError:
    """An endpoint outside the emulated surface: 501, never a 404 that reads as a missing object."""
    shown = path if len(path) <= 200 else path[:200] + "..."
    return _ApiError(
        501,
        f"{method} /v4{shown} is not emulated by aiaas-infra's Linode emulator; it emulates "
        f"{_EMULATED_AREAS}. Use the real Linode API for anything else",
    )


def _limit(what: str) -> _ApiError:
    return _ApiError(
        400, f"Account Limit reached. Please open a support ticket to raise the {what} limit."
    )


# --------------------------------------------------------------------------------------------
# X-Filter


def _compare(value: Any, op: str, operand: Any) -> bool:
    if op == "+contains":
        if isinstance(value, list):
            return any(isinstance(v, str) and str(operand) in v for v in value)
        return isinstance(value, str) and str(operand) in value
    if op == "+neq":
        return bool(value != operand)
    if value is None:
        return False
    try:
        if op == "+gt":
            return bool(value > operand)
        if op == "+gte":
            return bool(value >= operand)
        if op == "+lt":
            return bool(value < operand)
        if op == "+lte":
            return bool(value <= operand)
    except TypeError:
        return False
    raise _bad(f"Unknown filter operator {op}", "X-Filter")


def _matches(obj: JSON, flt: Any) -> bool:
    if not isinstance(flt, dict):
        raise _bad("Filter must be an object", "X-Filter")
    for key, cond in flt.items():
        if key in ("+order_by", "+order"):
            continue
        if key == "+and":
            if not isinstance(cond, list) or not all(_matches(obj, c) for c in cond):
                return False
            continue
        if key == "+or":
            if not isinstance(cond, list) or not any(_matches(obj, c) for c in cond):
                return False
            continue
        if key.startswith("+"):
            raise _bad(f"Unknown filter operator {key}", "X-Filter")
        if key not in obj:
            raise _bad(f"Cannot filter on {key}", "X-Filter")
        value = obj[key]
        if isinstance(cond, dict):
            if not all(_compare(value, op, operand) for op, operand in cond.items()):
                return False
        elif isinstance(value, list):
            if cond not in value:
                return False
        elif value != cond:
            return False
    return True


# --------------------------------------------------------------------------------------------
# The store


def _node(cluster_id: int, pool_id: int, instance_id: int, ready: bool) -> JSON:
    return {
        "id": f"{cluster_id}-{pool_id}-{secrets.token_hex(4)}",
        "instance_id": instance_id,
        "status": "ready" if ready else "not_ready",
    }


class _Store:
    """In-memory account state, guarded by one lock."""

    def __init__(self, emulator: LinodeEmulator) -> None:
        self.em = emulator
        self.lock = threading.RLock()
        self.next_id = 10_000
        self.clusters: dict[int, JSON] = {}
        self.pools: dict[int, JSON] = {}  # pool id -> pool (with a private _cluster)
        self.firewalls: dict[int, JSON] = {}
        self.vpcs: dict[int, JSON] = {}
        self.subnets: dict[int, JSON] = {}  # subnet id -> subnet (private _vpc)
        self.buckets: dict[str, JSON] = {}  # "region/label" -> bucket
        self.keys: dict[int, JSON] = {}
        self.databases: dict[int, JSON] = {}
        self.ready_at: dict[tuple[str, Any], float] = {}
        self.lifecycle: dict[str, str] = {}  # bucket label -> lifecycle XML
        self.objects: dict[str, dict[str, S3Object]] = {}  # bucket label -> key -> object
        self.secrets: dict[int, str] = {}  # key id -> secret

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    # -- readiness ------------------------------------------------------------------------------

    def _ready(self, kind: str, ident: Any) -> bool:
        return time.monotonic() >= self.ready_at.get((kind, ident), 0.0)

    def refresh(self) -> None:
        """Advance provisioning resources whose delay has passed."""
        for cid, cluster in self.clusters.items():
            if cluster["status"] != "ready" and self._ready("cluster", cid):
                cluster["status"] = "ready"
        for pid, pool in self.pools.items():
            for node in pool["nodes"]:
                if node["status"] != "ready" and self._ready("node", node["id"]):
                    node["status"] = "ready"
            del pid
        for did, db in self.databases.items():
            if db["status"] == "provisioning" and self._ready("database", did):
                db["status"] = "active"

    def node_count(self) -> int:
        return sum(p["count"] for p in self.pools.values())

    # -- pools ----------------------------------------------------------------------------------

    def _validate_pool(self, body: JSON, region: str, *, field: str, creating: bool) -> None:
        if creating:
            ptype = body.get("type")
            if not isinstance(ptype, str) or self.em.plan(ptype) is None:
                raise _bad(f"Invalid Linode type: {ptype!r}", f"{field}.type")
            cfg = self.em.region(region)
            if cfg is not None and ptype in cfg.unavailable_plans:
                raise _bad(f"{ptype} is not available in {region}", f"{field}.type")
            plan = self.em.plan(ptype)
            if (
                plan is not None
                and plan["gpus"]
                and cfg is not None
                and ("GPU Linodes" not in cfg.capabilities)
            ):
                raise _bad(f"GPU plans are not available in {region}", f"{field}.type")
        if "count" in body:
            count = body["count"]
            if not isinstance(count, int) or not 1 <= count <= 100:
                raise _bad("Count must be between 1 and 100", f"{field}.count")
        scaler = body.get("autoscaler")
        if scaler is not None:
            if not isinstance(scaler, dict):
                raise _bad("Must be an object", f"{field}.autoscaler")
            lo, hi = scaler.get("min", 1), scaler.get("max", 1)
            if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi <= 100):
                raise _bad(
                    "Autoscaler min and max must satisfy 1 <= min <= max <= 100",
                    f"{field}.autoscaler",
                )
        label = body.get("label")
        if label is not None and (not isinstance(label, str) or not 1 <= len(label) <= 32):
            raise _bad("Label must be 1-32 characters", f"{field}.label")
        fw = body.get("firewall_id")
        if fw is not None and fw not in self.firewalls:
            raise _bad("Firewall not found", f"{field}.firewall_id")

    def make_pool(self, cluster_id: int, body: JSON) -> JSON:
        pid = self.new_id()
        count = body["count"]
        scaler = body.get("autoscaler") or {}
        pool: JSON = {
            "autoscaler": {
                "enabled": bool(scaler.get("enabled", False)),
                "max": scaler.get("max", count),
                "min": scaler.get("min", count),
            },
            "count": count,
            "disks": [],
            "id": pid,
            "nodes": [],
            "tags": list(body.get("tags", [])),
            "taints": [dict(t) for t in body.get("taints", [])],
            "labels": dict(body.get("labels", {})),
            "label": body.get("label") or f"pool-{pid}",
            "firewall_id": body.get("firewall_id"),
            "type": body["type"],
            "disk_encryption": "enabled",
            "_cluster": cluster_id,
        }
        self._resize(pool, count)
        self.pools[pid] = pool
        return pool

    def _resize(self, pool: JSON, count: int) -> None:
        nodes: list[JSON] = pool["nodes"]
        while len(nodes) > count:
            nodes.pop()
        while len(nodes) < count:
            node = _node(pool["_cluster"], pool["id"], self.new_id(), ready=False)
            self.ready_at[("node", node["id"])] = time.monotonic() + self.em.ready_delay
            nodes.append(node)
        pool["count"] = count

    # -- S3 -------------------------------------------------------------------------------------

    def bucket_by_label(self, label: str) -> JSON | None:
        return next((b for b in self.buckets.values() if b["label"] == label), None)


def _public(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


# --------------------------------------------------------------------------------------------
# The server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: LinodeEmulator


Route = tuple[str, re.Pattern[str], Callable[..., Any]]


class LinodeEmulator:
    """A Linode API v4 emulator on 127.0.0.1: a context manager, or ``start()`` / ``stop()``.

    ``url`` is the API base for ``LinodeClient(token, base_url=emulator.url)`` (``.../v4``, no
    trailing slash). ``env()`` gives ``LINODE_TOKEN``, ``LINODE_API_URL`` and
    ``LINODE_OBJ_ENDPOINT`` for tools that read their configuration from the environment.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        token: str | None = None,
        ready_delay: float = 0.05,
        kubeconfig_delay: float = 0.1,
        database_delay: float = 0.05,
        kubeconfig_retry_after: int = 1,
        regions: Iterable[RegionConfig] = DEFAULT_REGIONS,
        limits: AccountLimits | None = None,
        object_storage_bucket_quota: int | None = None,
        rate_limit: int | None = None,
        rate_window: float = 60.0,
    ) -> None:
        self.host = host
        self._port = port
        self.token = token
        self.ready_delay = ready_delay
        self.kubeconfig_delay = kubeconfig_delay
        self.database_delay = database_delay
        self.kubeconfig_retry_after = kubeconfig_retry_after
        self._regions = {r.id: r for r in regions}
        self.limits = limits or AccountLimits()
        self.bucket_quota = (
            object_storage_bucket_quota
            if object_storage_bucket_quota is not None
            else self.limits.buckets_per_region
        )
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self._window_start = time.monotonic()
        self._window_count = 0
        self.store = _Store(self)
        self.s3 = S3Service(self.store)
        self._faults: list[list[Any]] = []  # [fault, remaining]
        self._faults_lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._s3_log: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[Route] = self._build_routes()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> LinodeEmulator:
        if self._server is not None:
            return self
        server = _Server((self.host, self._port), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> LinodeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running: call start() first")
        return int(self._server.server_address[1])

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The API base URL (``http://127.0.0.1:PORT/v4``)."""
        return f"{self.root}/v4"

    def env(self) -> dict[str, str]:
        return {
            "LINODE_TOKEN": self.token or "emulator-token",
            "LINODE_API_URL": self.url,
            "LINODE_OBJ_ENDPOINT": self.root,
        }

    # -- configuration --------------------------------------------------------------------------

    def region(self, region_id: str) -> RegionConfig | None:
        return self._regions.get(region_id)

    def set_region(self, config: RegionConfig) -> None:
        self._regions[config.id] = config

    def set_limits(self, limits: AccountLimits) -> None:
        self.limits = limits

    def plan(self, type_id: str) -> JSON | None:
        for pid, cls, label, vcpus, memory, disk, gpus, monthly in _PLANS:
            if pid == type_id:
                return {
                    "accelerated_devices": 0,
                    "addons": {
                        "backups": {
                            "price": {"hourly": 0.004, "monthly": 2.5},
                            "region_prices": [{"id": "id-cgk", "hourly": 0.0045, "monthly": 3.0}],
                        }
                    },
                    "class": cls,
                    "disk": disk,
                    "gpus": gpus,
                    "id": pid,
                    "label": label,
                    "memory": memory,
                    "network_out": 1000,
                    "price": {"hourly": round(monthly / 730, 4), "monthly": float(monthly)},
                    "region_prices": [
                        {
                            "id": "id-cgk",
                            "hourly": round(monthly * 1.2 / 730, 4),
                            "monthly": monthly * 1.2,
                        }
                    ],
                    "successor": None,
                    "transfer": 1000,
                    "vcpus": vcpus,
                }
        return None

    # -- faults and the request log -------------------------------------------------------------

    def inject(self, fault: Fault) -> Fault:
        with self._faults_lock:
            self._faults.append([fault, fault.times, re.compile(fault.path)])
        return fault

    def inject_status(
        self,
        status: int,
        *,
        path: str = "",
        method: str | None = None,
        times: int | None = 1,
        retry_after: float | None = None,
    ) -> Fault:
        """Answer ``status`` to matching requests (a 429 storm, a 5xx burst)."""
        return self.inject(
            Fault("status", path, method, status=status, retry_after=retry_after, times=times)
        )

    def inject_latency(self, delay: float, *, path: str = "", method: str | None = None) -> Fault:
        """Delay every matching request by ``delay`` seconds (until cleared)."""
        return self.inject(Fault("latency", path, method, delay=delay, times=None))

    def lose_response(self, *, path: str, method: str = "POST", times: int | None = 1) -> Fault:
        """Serve matching requests, then drop the connection without answering."""
        return self.inject(Fault("drop", path, method, times=times))

    def inject_timeout(
        self, delay: float, *, path: str, method: str | None = None, times: int | None = 1
    ) -> Fault:
        """Serve matching requests, then hold the answer ``delay`` seconds."""
        return self.inject(Fault("timeout", path, method, delay=delay, times=times))

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> list[Fault]:
        hits: list[Fault] = []
        with self._faults_lock:
            for entry in self._faults:
                fault, remaining, pattern = entry
                if remaining is not None and remaining <= 0:
                    continue
                if fault.method is not None and fault.method != method:
                    continue
                if not pattern.search(path):
                    continue
                if remaining is not None:
                    entry[1] = remaining - 1
                hits.append(fault)
            self._faults = [e for e in self._faults if e[1] is None or e[1] > 0]
        return hits

    @property
    def requests(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._log)

    def request_count(self, method: str | None = None, path: str = "") -> int:
        """Requests received to the API (admin and S3 calls excluded), optionally filtered."""
        pattern = re.compile(path)
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method) and pattern.search(r.path)
        )

    @property
    def s3_requests(self) -> list[RequestRecord]:
        """Requests received on the S3 endpoint (path with the first query parameter, e.g.
        ``/bucket?lifecycle``), and the status each was answered."""
        with self._log_lock:
            return list(self._s3_log)

    def reset_requests(self) -> None:
        """Forget the API and S3 request logs."""
        with self._log_lock:
            self._log.clear()
            self._s3_log.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self._log.append(record)

    # -- out-of-band changes (what a person does in Cloud Manager) ------------------------------

    def resources(self, kind: str) -> list[JSON]:
        """A copy of every live resource of ``kind``: clusters, pools, firewalls, vpcs,
        subnets, buckets, keys, databases."""
        with self.store.lock:
            self.store.refresh()
            table: Mapping[Any, JSON] = getattr(self.store, kind)
            return [json.loads(json.dumps(v)) for v in table.values()]

    def ready_now(self) -> None:
        """Everything still provisioning (clusters, nodes, kubeconfigs, databases) is ready from
        now on, whatever its delay: a test can hold a resource in provisioning with a long delay,
        check what that state refuses, then end it here instead of sleeping past the delay."""
        with self.store.lock:
            now = time.monotonic()
            for key, at in self.store.ready_at.items():
                self.store.ready_at[key] = min(at, now)

    def delete_out_of_band(self, kind: str, label: str) -> None:
        """Delete a resource by label behind the tool's back."""
        with self.store.lock:
            table: dict[Any, JSON] = getattr(self.store, kind)
            matches = [k for k, v in table.items() if v.get("label") == label]
            if not matches:
                raise KeyError(f"no {kind} labelled {label!r}")
            for key in matches:
                if kind == "firewalls":
                    self._delete_firewall(key)
                elif kind == "clusters":
                    self._delete_cluster(key)
                else:
                    del table[key]
                    if kind == "vpcs":  # as on Linode: a VPC's subnets go with it
                        for sid in [
                            s for s, sub in self.store.subnets.items() if sub["_vpc"] == key
                        ]:
                            del self.store.subnets[sid]
                    if kind == "buckets":
                        self.store.lifecycle.pop(label, None)
                        self.store.objects.pop(label, None)

    def update_out_of_band(self, kind: str, label: str, **changes: Any) -> None:
        """Change fields of a resource by label behind the tool's back."""
        with self.store.lock:
            table: dict[Any, JSON] = getattr(self.store, kind)
            for value in table.values():
                if value.get("label") == label:
                    if kind == "pools" and "count" in changes:
                        self.store._resize(value, changes.pop("count"))
                    value.update(changes)
                    return
            raise KeyError(f"no {kind} labelled {label!r}")

    def put_object(self, bucket_label: str, key: str, size: int = 1) -> None:
        """Store an object of ``size`` bytes in a bucket, behind the S3 API's back (a non-empty
        bucket cannot be deleted)."""
        with self.store.lock:
            bucket = self.store.bucket_by_label(bucket_label)
            if bucket is None:
                raise KeyError(f"no bucket {bucket_label!r}")
            objects = self.store.objects.setdefault(bucket_label, {})
            objects[key] = S3Object.of(b"\0" * size)
            bucket["objects"] = len(objects)
            bucket["size"] = sum(len(o.data) for o in objects.values())

    def lifecycle_xml(self, bucket_label: str) -> str | None:
        with self.store.lock:
            return self.store.lifecycle.get(bucket_label)

    # -- routing --------------------------------------------------------------------------------

    def _build_routes(self) -> list[Route]:
        r: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", r"/regions", self._list_regions),
            ("GET", r"/regions/availability", self._list_regions_availability),
            ("GET", r"/regions/(?P<region>[a-z0-9-]+)/availability", self._region_availability),
            ("GET", r"/regions/(?P<region>[a-z0-9-]+)", self._get_region),
            ("GET", r"/account/availability", self._list_account_availability),
            ("GET", r"/account/availability/(?P<region>[a-z0-9-]+)", self._account_availability),
            ("GET", r"/lke/versions", self._lke_versions),
            ("GET", r"/lke/versions/(?P<version>[0-9.]+)", self._lke_version),
            ("GET", r"/linode/types", self._list_types),
            ("GET", r"/linode/types/(?P<type_id>[a-z0-9.-]+)", self._get_type),
            ("GET", r"/lke/clusters", self._list_clusters),
            ("POST", r"/lke/clusters", self._create_cluster),
            ("GET", r"/lke/clusters/(?P<cid>\d+)", self._get_cluster),
            ("PUT", r"/lke/clusters/(?P<cid>\d+)", self._update_cluster),
            ("DELETE", r"/lke/clusters/(?P<cid>\d+)", self._delete_cluster_route),
            ("GET", r"/lke/clusters/(?P<cid>\d+)/pools", self._list_pools),
            ("POST", r"/lke/clusters/(?P<cid>\d+)/pools", self._create_pool),
            ("GET", r"/lke/clusters/(?P<cid>\d+)/pools/(?P<pid>\d+)", self._get_pool),
            ("PUT", r"/lke/clusters/(?P<cid>\d+)/pools/(?P<pid>\d+)", self._update_pool),
            ("DELETE", r"/lke/clusters/(?P<cid>\d+)/pools/(?P<pid>\d+)", self._delete_pool),
            ("GET", r"/lke/clusters/(?P<cid>\d+)/kubeconfig", self._kubeconfig),
            ("GET", r"/networking/firewalls", self._list_firewalls),
            ("POST", r"/networking/firewalls", self._create_firewall),
            ("GET", r"/networking/firewalls/(?P<fid>\d+)", self._get_firewall),
            ("PUT", r"/networking/firewalls/(?P<fid>\d+)", self._update_firewall),
            ("DELETE", r"/networking/firewalls/(?P<fid>\d+)", self._delete_firewall_route),
            ("GET", r"/networking/firewalls/(?P<fid>\d+)/rules", self._get_rules),
            ("PUT", r"/networking/firewalls/(?P<fid>\d+)/rules", self._put_rules),
            ("GET", r"/vpcs", self._list_vpcs),
            ("POST", r"/vpcs", self._create_vpc),
            ("GET", r"/vpcs/(?P<vid>\d+)", self._get_vpc),
            ("PUT", r"/vpcs/(?P<vid>\d+)", self._update_vpc),
            ("DELETE", r"/vpcs/(?P<vid>\d+)", self._delete_vpc),
            ("GET", r"/vpcs/(?P<vid>\d+)/subnets", self._list_subnets),
            ("POST", r"/vpcs/(?P<vid>\d+)/subnets", self._create_subnet),
            ("GET", r"/vpcs/(?P<vid>\d+)/subnets/(?P<sid>\d+)", self._get_subnet),
            ("PUT", r"/vpcs/(?P<vid>\d+)/subnets/(?P<sid>\d+)", self._update_subnet),
            ("DELETE", r"/vpcs/(?P<vid>\d+)/subnets/(?P<sid>\d+)", self._delete_subnet),
            ("GET", r"/object-storage/buckets", self._list_buckets),
            ("POST", r"/object-storage/buckets", self._create_bucket),
            ("GET", r"/object-storage/buckets/(?P<region>[a-z0-9-]+)", self._list_buckets_in),
            (
                "GET",
                r"/object-storage/buckets/(?P<region>[a-z0-9-]+)/(?P<label>[a-z0-9.-]+)",
                self._get_bucket,
            ),
            (
                "DELETE",
                r"/object-storage/buckets/(?P<region>[a-z0-9-]+)/(?P<label>[a-z0-9.-]+)",
                self._delete_bucket,
            ),
            ("GET", r"/object-storage/keys", self._list_keys),
            ("POST", r"/object-storage/keys", self._create_key),
            ("GET", r"/object-storage/keys/(?P<kid>\d+)", self._get_key),
            ("PUT", r"/object-storage/keys/(?P<kid>\d+)", self._update_key),
            ("DELETE", r"/object-storage/keys/(?P<kid>\d+)", self._delete_key),
            ("GET", r"/object-storage/quotas", self._list_quotas),
            ("GET", r"/object-storage/quotas/(?P<qid>[a-z0-9-]+)", self._get_quota),
            ("GET", r"/object-storage/quotas/(?P<qid>[a-z0-9-]+)/usage", self._quota_usage),
            ("GET", r"/object-storage/global-quotas", self._list_global_quotas),
            (
                "GET",
                r"/object-storage/global-quotas/(?P<qid>[a-z0-9-]+)/usage",
                self._global_quota_usage,
            ),
            ("GET", r"/databases/engines", self._db_engines),
            ("GET", r"/databases/types", self._db_types),
            ("GET", r"/databases/instances", self._list_all_databases),
            ("GET", r"/databases/postgresql/instances", self._list_databases),
            ("POST", r"/databases/postgresql/instances", self._create_database),
            ("GET", r"/databases/postgresql/instances/(?P<did>\d+)", self._get_database),
            ("PUT", r"/databases/postgresql/instances/(?P<did>\d+)", self._update_database),
            ("DELETE", r"/databases/postgresql/instances/(?P<did>\d+)", self._delete_database),
            (
                "GET",
                r"/databases/postgresql/instances/(?P<did>\d+)/credentials",
                self._db_credentials,
            ),
        ]
        return [(m, re.compile(p + r"/?"), f) for m, p, f in r]

    def dispatch(
        self,
        method: str,
        path: str,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: Any,
    ) -> tuple[int, Any, dict[str, str]]:
        for route_method, pattern, func in self._routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            if route_method != method:
                continue
            with self.store.lock:
                self.store.refresh()
                result = func(body=body, query=query, headers=headers, **m.groupdict())
            if isinstance(result, tuple):
                return result[0], result[1], result[2] if len(result) > 2 else {}
            return 200, result, {}
        if any(p.fullmatch(path) for _m, p, _f in self._routes):
            raise _ApiError(405, "Method not allowed")
        raise _not_emulated(method, path)

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _page(
        items: list[JSON], query: Mapping[str, list[str]], headers: Mapping[str, str]
    ) -> JSON:
        raw_filter = headers.get("x-filter")
        order_by: str | None = None
        order = "asc"
        if raw_filter:
            try:
                flt = json.loads(raw_filter)
            except json.JSONDecodeError:
                raise _bad("Invalid JSON in X-Filter", "X-Filter") from None
            items = [i for i in items if _matches(i, flt)]
            if isinstance(flt, dict):
                order_by = flt.get("+order_by")
                order = flt.get("+order", "asc")
        if order_by is not None:
            items = sorted(
                items,
                key=lambda i: (i.get(order_by) is None, i.get(order_by)),
                reverse=order == "desc",
            )
        try:
            page = int(query.get("page", ["1"])[0])
            page_size = int(query.get("page_size", ["100"])[0])
        except ValueError:
            raise _bad("page and page_size must be integers", "page") from None
        if not 25 <= page_size <= 500:
            raise _bad("page_size must be between 25 and 500", "page_size")
        pages = max(1, math.ceil(len(items) / page_size))
        if page < 1:
            raise _bad("page must be >= 1", "page")
        start = (page - 1) * page_size
        return {
            "data": items[start : start + page_size],
            "page": page,
            "pages": pages,
            "results": len(items),
        }

    @staticmethod
    def _require(body: Any, *fields: str) -> JSON:
        if not isinstance(body, dict):
            raise _bad("Request body must be a JSON object")
        for f in fields:
            if body.get(f) in (None, ""):
                raise _bad(f"{f} is required", f)
        return body

    def _check_region(self, region: Any, capability: str, field: str = "region") -> RegionConfig:
        cfg = self._regions.get(region) if isinstance(region, str) else None
        if cfg is None:
            raise _bad(f"Region {region!r} does not exist", field)
        if capability not in cfg.capabilities:
            raise _bad(f"{capability} is not available in {region}", field)
        if capability in cfg.account_unavailable:
            raise _ApiError(
                403, f"{capability} is not available to this account in {region}", field
            )
        return cfg

    @staticmethod
    def _tags(body: JSON) -> list[str]:
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(
            isinstance(t, str) and 3 <= len(t) <= 50 for t in tags
        ):
            raise _bad("Tags must be 3-50 characters", "tags")
        return list(tags)

    # -- regions, types, versions ---------------------------------------------------------------

    def _region_json(self, cfg: RegionConfig) -> JSON:
        return {
            "id": cfg.id,
            "country": cfg.country,
            "capabilities": list(cfg.capabilities),
            "monitors": {"alerts": ["Managed Databases"], "metrics": ["Managed Databases"]},
            "status": "ok",
            "resolvers": {"ipv4": "172.105.34.5,172.105.35.5", "ipv6": "2600:3c03::7,2600:3c03::4"},
            "label": cfg.id,
            "site_type": "core",
            "placement_group_limits": {
                "maximum_pgs_per_customer": 100,
                "maximum_linodes_per_pg": 5,
            },
        }

    def _list_regions(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([self._region_json(c) for c in self._regions.values()], query, headers)

    def _get_region(self, *, region: str, **_: Any) -> JSON:
        cfg = self._regions.get(region)
        if cfg is None:
            raise _not_found()
        return self._region_json(cfg)

    def _availability(self, cfg: RegionConfig) -> list[JSON]:
        return [
            {"region": cfg.id, "plan": pid, "available": pid not in cfg.unavailable_plans}
            for pid, *_rest in _PLANS
        ]

    def _list_regions_availability(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        rows = [row for c in self._regions.values() for row in self._availability(c)]
        return self._page(rows, query, headers)

    def _region_availability(self, *, region: str, **_: Any) -> list[JSON]:
        cfg = self._regions.get(region)
        if cfg is None:
            raise _not_found()
        return self._availability(cfg)

    @staticmethod
    def _account_row(cfg: RegionConfig) -> JSON:
        return {
            "region": cfg.id,
            "unavailable": list(cfg.account_unavailable),
            "available": [c for c in cfg.capabilities if c not in cfg.account_unavailable],
        }

    def _list_account_availability(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([self._account_row(c) for c in self._regions.values()], query, headers)

    def _account_availability(self, *, region: str, **_: Any) -> JSON:
        cfg = self._regions.get(region)
        if cfg is None:
            raise _not_found()
        return self._account_row(cfg)

    def _lke_versions(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([{"id": v} for v in KUBERNETES_VERSIONS], query, headers)

    def _lke_version(self, *, version: str, **_: Any) -> JSON:
        if version not in KUBERNETES_VERSIONS:
            raise _not_found()
        return {"id": version}

    def _list_types(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        plans = [self.plan(p[0]) for p in _PLANS]
        return self._page([p for p in plans if p is not None], query, headers)

    def _get_type(self, *, type_id: str, **_: Any) -> JSON:
        plan = self.plan(type_id)
        if plan is None:
            raise _not_found()
        return plan

    # -- LKE ------------------------------------------------------------------------------------

    def _cluster(self, cid: str | int) -> JSON:
        cluster = self.store.clusters.get(int(cid))
        if cluster is None:
            raise _not_found()
        return cluster

    def _list_clusters(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([_public(c) for c in self.store.clusters.values()], query, headers)

    def _create_cluster(self, *, body: Any, **_: Any) -> JSON:
        body = self._require(body, "label", "region", "k8s_version")
        label = body["label"]
        if not isinstance(label, str) or not 1 <= len(label) <= 32:
            raise _bad("Label must be 1-32 characters", "label")
        if any(c["label"] == label for c in self.store.clusters.values()):
            raise _bad("Label must be unique among your LKE clusters", "label")
        self._check_region(body["region"], "Kubernetes")
        if body["k8s_version"] not in KUBERNETES_VERSIONS:
            raise _bad(f"Kubernetes version {body['k8s_version']} is not supported", "k8s_version")
        pools = body.get("node_pools")
        if not isinstance(pools, list) or not pools:
            raise _bad("At least one node pool is required", "node_pools")
        for i, pool in enumerate(pools):
            if not isinstance(pool, dict):
                raise _bad("Must be an object", f"node_pools[{i}]")
            self.store._validate_pool(pool, body["region"], field=f"node_pools[{i}]", creating=True)
        tags = self._tags(body)
        if len(self.store.clusters) >= self.limits.clusters:
            raise _limit("LKE cluster")
        new_nodes = sum(p["count"] for p in pools)
        if self.store.node_count() + new_nodes > self.limits.nodes:
            raise _limit("Linode")
        cid = self.store.new_id()
        now = _now()
        control = body.get("control_plane") or {}
        cluster: JSON = {
            "id": cid,
            "status": "not_ready",
            "created": now,
            "updated": now,
            "label": label,
            "region": body["region"],
            "k8s_version": body["k8s_version"],
            "tier": "standard",
            "tags": tags,
            "control_plane": {"high_availability": bool(control.get("high_availability", False))},
            "apl_enabled": False,
        }
        self.store.clusters[cid] = cluster
        self.store.ready_at[("cluster", cid)] = time.monotonic() + self.ready_delay
        self.store.ready_at[("kubeconfig", cid)] = time.monotonic() + self.kubeconfig_delay
        for pool in pools:
            self.store.make_pool(cid, pool)
        return _public(cluster)

    def _get_cluster(self, *, cid: str, **_: Any) -> JSON:
        return _public(self._cluster(cid))

    def _update_cluster(self, *, cid: str, body: Any, **_: Any) -> JSON:
        cluster = self._cluster(cid)
        body = self._require(body)
        if "label" in body:
            label = body["label"]
            if any(
                c["label"] == label and c["id"] != cluster["id"]
                for c in self.store.clusters.values()
            ):
                raise _bad("Label must be unique among your LKE clusters", "label")
            cluster["label"] = label
        if "tags" in body:
            cluster["tags"] = self._tags(body)
        if "k8s_version" in body:
            new = body["k8s_version"]
            if new not in KUBERNETES_VERSIONS:
                raise _bad(f"Kubernetes version {new} is not supported", "k8s_version")
            if tuple(map(int, new.split("."))) < tuple(map(int, cluster["k8s_version"].split("."))):
                raise _bad("Kubernetes version cannot be downgraded", "k8s_version")
            cluster["k8s_version"] = new
        if "control_plane" in body:
            ha = bool((body["control_plane"] or {}).get("high_availability", False))
            if cluster["control_plane"]["high_availability"] and not ha:
                raise _bad(
                    "High availability cannot be disabled", "control_plane.high_availability"
                )
            cluster["control_plane"]["high_availability"] = ha
        if "region" in body and body["region"] != cluster["region"]:
            raise _bad("region cannot be changed", "region")
        cluster["updated"] = _now()
        return _public(cluster)

    def _delete_cluster(self, cid: int) -> None:
        self.store.clusters.pop(cid, None)
        for pid in [p for p, pool in self.store.pools.items() if pool["_cluster"] == cid]:
            del self.store.pools[pid]

    def _delete_cluster_route(self, *, cid: str, **_: Any) -> JSON:
        self._cluster(cid)
        self._delete_cluster(int(cid))
        return {}

    def _pool(self, cid: str, pid: str) -> JSON:
        self._cluster(cid)
        pool = self.store.pools.get(int(pid))
        if pool is None or pool["_cluster"] != int(cid):
            raise _not_found()
        return pool

    def _list_pools(self, *, cid: str, query: Any, headers: Any, **_: Any) -> JSON:
        self._cluster(cid)
        pools = [_public(p) for p in self.store.pools.values() if p["_cluster"] == int(cid)]
        return self._page(pools, query, headers)

    def _create_pool(self, *, cid: str, body: Any, **_: Any) -> JSON:
        cluster = self._cluster(cid)
        body = self._require(body, "type", "count")
        self.store._validate_pool(body, cluster["region"], field="", creating=True)
        self._tags(body)
        if self.store.node_count() + body["count"] > self.limits.nodes:
            raise _limit("Linode")
        return _public(self.store.make_pool(int(cid), body))

    def _get_pool(self, *, cid: str, pid: str, **_: Any) -> JSON:
        return _public(self._pool(cid, pid))

    def _update_pool(self, *, cid: str, pid: str, body: Any, **_: Any) -> JSON:
        pool = self._pool(cid, pid)
        body = self._require(body)
        if "type" in body and body["type"] != pool["type"]:
            raise _bad("type cannot be changed; create a new pool", "type")
        self.store._validate_pool(body, self._cluster(cid)["region"], field="", creating=False)
        if "count" in body:
            growth = body["count"] - pool["count"]
            if growth > 0 and self.store.node_count() + growth > self.limits.nodes:
                raise _limit("Linode")
            self.store._resize(pool, body["count"])
        if "autoscaler" in body:
            scaler = body["autoscaler"]
            pool["autoscaler"] = {
                "enabled": bool(scaler.get("enabled", False)),
                "max": scaler.get("max", pool["autoscaler"]["max"]),
                "min": scaler.get("min", pool["autoscaler"]["min"]),
            }
        for field in ("labels", "taints", "label", "firewall_id"):
            if field in body:
                pool[field] = body[field]
        if "tags" in body:
            pool["tags"] = self._tags(body)
        return _public(pool)

    def _delete_pool(self, *, cid: str, pid: str, **_: Any) -> JSON:
        self._pool(cid, pid)
        siblings = [p for p in self.store.pools.values() if p["_cluster"] == int(cid)]
        if len(siblings) <= 1:
            raise _bad("A cluster must keep at least one node pool")
        del self.store.pools[int(pid)]
        return {}

    def _kubeconfig(self, *, cid: str, **_: Any) -> JSON:
        cluster = self._cluster(cid)
        if not self.store._ready("kubeconfig", cluster["id"]):
            raise _ApiError(
                503,
                "Cluster kubeconfig is not yet available. Please try again later.",
                headers={"Retry-After": str(self.kubeconfig_retry_after)},
            )
        config = (
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: lke{cluster['id']}\n  cluster:\n"
            f"    server: https://{cluster['id']}.{cluster['region']}.linodelke.net:443\n"
            f"users:\n- name: lke{cluster['id']}-admin\n  user:\n"
            f"    token: {secrets.token_urlsafe(32)}\n"
            f"contexts:\n- name: lke{cluster['id']}-ctx\n  context:\n"
            f"    cluster: lke{cluster['id']}\n    user: lke{cluster['id']}-admin\n"
            f"current-context: lke{cluster['id']}-ctx\n"
        )
        return {"kubeconfig": base64.b64encode(config.encode()).decode()}

    # -- firewalls ------------------------------------------------------------------------------

    def _firewall(self, fid: str | int) -> JSON:
        fw = self.store.firewalls.get(int(fid))
        if fw is None:
            raise _not_found()
        return fw

    @staticmethod
    def _validate_rules(rules: Any) -> JSON:
        if not isinstance(rules, dict):
            raise _bad("rules must be an object", "rules")
        inbound = rules.get("inbound", [])
        outbound = rules.get("outbound", [])
        if not isinstance(inbound, list) or not isinstance(outbound, list):
            raise _bad("inbound and outbound must be lists", "rules")
        if len(inbound) + len(outbound) > 25:
            raise _bad("Too many rules: a firewall holds at most 25", "rules")
        for direction, listed in (("inbound", inbound), ("outbound", outbound)):
            for i, rule in enumerate(listed):
                if not isinstance(rule, dict) or rule.get("action") not in ("ACCEPT", "DROP"):
                    raise _bad("action must be ACCEPT or DROP", f"rules.{direction}[{i}].action")
                if rule.get("protocol") not in ("TCP", "UDP", "ICMP", "IPENCAP"):
                    raise _bad("Invalid protocol", f"rules.{direction}[{i}].protocol")
        for policy in ("inbound_policy", "outbound_policy"):
            if rules.get(policy, "ACCEPT") not in ("ACCEPT", "DROP"):
                raise _bad("must be ACCEPT or DROP", f"rules.{policy}")
        return {
            "inbound": inbound,
            "inbound_policy": rules.get("inbound_policy", "ACCEPT"),
            "outbound": outbound,
            "outbound_policy": rules.get("outbound_policy", "ACCEPT"),
        }

    @staticmethod
    def _fingerprint(rules: JSON) -> str:
        canonical = json.dumps(
            {k: rules[k] for k in ("inbound", "inbound_policy", "outbound", "outbound_policy")},
            sort_keys=True,
        )
        import hashlib  # noqa: PLC0415

        return hashlib.sha256(canonical.encode()).hexdigest()[:8]

    def _list_firewalls(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([_public(f) for f in self.store.firewalls.values()], query, headers)

    def _create_firewall(self, *, body: Any, **_: Any) -> JSON:
        body = self._require(body, "label", "rules")
        label = body["label"]
        if not isinstance(label, str) or not 3 <= len(label) <= 32:
            raise _bad("Label must be 3-32 characters", "label")
        if any(f["label"] == label for f in self.store.firewalls.values()):
            raise _bad("Label must be unique among your firewalls", "label")
        rules = self._validate_rules(body["rules"])
        tags = self._tags(body)
        if len(self.store.firewalls) >= self.limits.firewalls:
            raise _limit("Cloud Firewall")
        fid = self.store.new_id()
        now = _now()
        rules.update(version=1, fingerprint=self._fingerprint(rules))
        fw: JSON = {
            "id": fid,
            "label": label,
            "created": now,
            "updated": now,
            "status": "enabled",
            "rules": rules,
            "tags": tags,
        }
        self.store.firewalls[fid] = fw
        return _public(fw)

    def _get_firewall(self, *, fid: str, **_: Any) -> JSON:
        return _public(self._firewall(fid))

    def _update_firewall(self, *, fid: str, body: Any, **_: Any) -> JSON:
        fw = self._firewall(fid)
        body = self._require(body)
        if "label" in body:
            if any(
                f["label"] == body["label"] and f["id"] != fw["id"]
                for f in self.store.firewalls.values()
            ):
                raise _bad("Label must be unique among your firewalls", "label")
            fw["label"] = body["label"]
        if "tags" in body:
            fw["tags"] = self._tags(body)
        if "status" in body:
            if body["status"] not in ("enabled", "disabled"):
                raise _bad("status must be enabled or disabled", "status")
            fw["status"] = body["status"]
        fw["updated"] = _now()
        return _public(fw)

    def _delete_firewall(self, fid: int) -> None:
        self.store.firewalls.pop(fid, None)
        for pool in self.store.pools.values():
            if pool.get("firewall_id") == fid:
                pool["firewall_id"] = None

    def _delete_firewall_route(self, *, fid: str, **_: Any) -> JSON:
        self._firewall(fid)
        self._delete_firewall(int(fid))
        return {}

    def _get_rules(self, *, fid: str, **_: Any) -> JSON:
        return dict(self._firewall(fid)["rules"])

    def _put_rules(self, *, fid: str, body: Any, **_: Any) -> JSON:
        fw = self._firewall(fid)
        rules = self._validate_rules(body)
        rules.update(version=fw["rules"]["version"] + 1, fingerprint=self._fingerprint(rules))
        fw["rules"] = rules
        fw["updated"] = _now()
        return dict(rules)

    # -- VPCs -----------------------------------------------------------------------------------

    def _vpc(self, vid: str | int) -> JSON:
        vpc = self.store.vpcs.get(int(vid))
        if vpc is None:
            raise _not_found()
        return vpc

    def _list_vpcs(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([_public(v) for v in self.store.vpcs.values()], query, headers)

    def _create_vpc(self, *, body: Any, **_: Any) -> JSON:
        body = self._require(body, "label", "region")
        label = body["label"]
        if not isinstance(label, str) or not 1 <= len(label) <= 64 or "--" in label:
            raise _bad("Label must be 1-64 letters, digits and single hyphens", "label")
        self._check_region(body["region"], "VPCs")
        if any(v["label"] == label for v in self.store.vpcs.values()):
            raise _bad("Label must be unique among your VPCs", "label")
        if len(self.store.vpcs) >= self.limits.vpcs:
            raise _limit("VPC")
        vid = self.store.new_id()
        now = _now()
        vpc: JSON = {
            "label": label,
            "id": vid,
            "description": body.get("description", ""),
            "region": body["region"],
            "ipv6": [{"range": f"fd71:1140:{vid % 0xFFFF:x}::/52"}],
            "created": now,
            "updated": now,
        }
        self.store.vpcs[vid] = vpc
        for subnet in body.get("subnets") or []:
            self._add_subnet(vpc, subnet)
        return _public(vpc)

    def _get_vpc(self, *, vid: str, **_: Any) -> JSON:
        return _public(self._vpc(vid))

    def _update_vpc(self, *, vid: str, body: Any, **_: Any) -> JSON:
        vpc = self._vpc(vid)
        body = self._require(body)
        if "region" in body and body["region"] != vpc["region"]:
            raise _bad("region cannot be changed", "region")
        for field in ("label", "description"):
            if field in body:
                vpc[field] = body[field]
        vpc["updated"] = _now()
        return _public(vpc)

    def _delete_vpc(self, *, vid: str, **_: Any) -> JSON:
        vpc = self._vpc(vid)
        for sid in [s for s, sub in self.store.subnets.items() if sub["_vpc"] == vpc["id"]]:
            if self._subnet_in_use(sid):
                raise _bad("The VPC has a subnet in use by a database")
        for sid in [s for s, sub in self.store.subnets.items() if sub["_vpc"] == vpc["id"]]:
            del self.store.subnets[sid]
        del self.store.vpcs[vpc["id"]]
        return {}

    def _subnet_in_use(self, sid: int) -> bool:
        return any(
            (db.get("private_network") or {}).get("subnet_id") == sid
            for db in self.store.databases.values()
        )

    def _subnet_json(self, subnet: JSON) -> JSON:
        out = _public(subnet)
        out["databases"] = [
            {"id": db["id"], "ipv4_range": subnet["ipv4"], "ipv6_ranges": []}
            for db in self.store.databases.values()
            if (db.get("private_network") or {}).get("subnet_id") == subnet["id"]
        ]
        return out

    def _add_subnet(self, vpc: JSON, body: Any) -> JSON:
        body = self._require(body, "label", "ipv4")
        try:
            net = ip_network(body["ipv4"], strict=True)
        except ValueError:
            raise _bad("ipv4 must be a network in CIDR notation", "ipv4") from None
        if not isinstance(net, IPv4Network) or not any(net.subnet_of(r) for r in _RFC1918):
            raise _bad("ipv4 must be an RFC 1918 range", "ipv4")
        if not 1 <= net.prefixlen <= 29:
            raise _bad("ipv4 prefix must be /1 to /29", "ipv4")
        siblings = [s for s in self.store.subnets.values() if s["_vpc"] == vpc["id"]]
        if any(s["label"] == body["label"] for s in siblings):
            raise _bad("Label must be unique in the VPC", "label")
        if any(net.overlaps(ip_network(s["ipv4"])) for s in siblings):
            raise _bad("ipv4 overlaps another subnet of the VPC", "ipv4")
        if len(siblings) >= self.limits.subnets_per_vpc:
            raise _limit("subnet")
        sid = self.store.new_id()
        now = _now()
        subnet: JSON = {
            "label": body["label"],
            "id": sid,
            "ipv4": str(net),
            "ipv6": [],
            "linodes": [],
            "databases": [],
            "created": now,
            "updated": now,
            "_vpc": vpc["id"],
        }
        self.store.subnets[sid] = subnet
        return subnet

    def _subnet(self, vid: str, sid: str) -> JSON:
        self._vpc(vid)
        subnet = self.store.subnets.get(int(sid))
        if subnet is None or subnet["_vpc"] != int(vid):
            raise _not_found()
        return subnet

    def _list_subnets(self, *, vid: str, query: Any, headers: Any, **_: Any) -> JSON:
        self._vpc(vid)
        rows = [self._subnet_json(s) for s in self.store.subnets.values() if s["_vpc"] == int(vid)]
        return self._page(rows, query, headers)

    def _create_subnet(self, *, vid: str, body: Any, **_: Any) -> JSON:
        return self._subnet_json(self._add_subnet(self._vpc(vid), body))

    def _get_subnet(self, *, vid: str, sid: str, **_: Any) -> JSON:
        return self._subnet_json(self._subnet(vid, sid))

    def _update_subnet(self, *, vid: str, sid: str, body: Any, **_: Any) -> JSON:
        subnet = self._subnet(vid, sid)
        body = self._require(body)
        if "ipv4" in body and body["ipv4"] != subnet["ipv4"]:
            raise _bad("ipv4 cannot be changed", "ipv4")
        if "label" in body:
            subnet["label"] = body["label"]
        subnet["updated"] = _now()
        return self._subnet_json(subnet)

    def _delete_subnet(self, *, vid: str, sid: str, **_: Any) -> JSON:
        subnet = self._subnet(vid, sid)
        if self._subnet_in_use(subnet["id"]):
            raise _bad("The subnet is in use by a database")
        del self.store.subnets[subnet["id"]]
        return {}

    # -- Object Storage -------------------------------------------------------------------------

    def _list_buckets(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([_public(b) for b in self.store.buckets.values()], query, headers)

    def _list_buckets_in(self, *, region: str, query: Any, headers: Any, **_: Any) -> JSON:
        rows = [
            _public(b) for b in self.store.buckets.values() if region in (b["region"], b["cluster"])
        ]
        return self._page(rows, query, headers)

    def _create_bucket(self, *, body: Any, **_: Any) -> JSON:
        body = self._require(body, "label")
        region = body.get("region") or (body.get("cluster") or "").rsplit("-", 1)[0]
        label = body["label"]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", str(label)):
            raise _bad("Invalid bucket label", "label")
        self._check_region(region, "Object Storage")
        existing = self.store.bucket_by_label(label)
        if existing is not None:
            if existing["region"] == region:
                # Linode answers 200 with the bucket when you already own it.
                return _public(existing)
            raise _bad("A bucket with this label already exists", "label")
        in_region = [b for b in self.store.buckets.values() if b["region"] == region]
        if len(in_region) >= self.bucket_quota:
            raise _limit("Object Storage bucket")
        cluster = f"{region}-1"
        bucket: JSON = {
            "cluster": cluster,
            "region": region,
            "created": _now(),
            "hostname": f"{label}.{cluster}.linodeobjects.com",
            "label": label,
            "objects": 0,
            "size": 0,
            "endpoint_type": "E1",
            "s3_endpoint": f"{cluster}.linodeobjects.com",
        }
        self.store.buckets[f"{region}/{label}"] = bucket
        return _public(bucket)

    def _bucket(self, region: str, label: str) -> JSON:
        for bucket in self.store.buckets.values():
            if bucket["label"] == label and region in (bucket["region"], bucket["cluster"]):
                return bucket
        raise _not_found()

    def _get_bucket(self, *, region: str, label: str, **_: Any) -> JSON:
        return _public(self._bucket(region, label))

    def _delete_bucket(self, *, region: str, label: str, **_: Any) -> JSON:
        bucket = self._bucket(region, label)
        if bucket["objects"]:
            raise _bad("Bucket is not empty: delete its objects first")
        del self.store.buckets[f"{bucket['region']}/{label}"]
        self.store.lifecycle.pop(label, None)
        self.store.objects.pop(label, None)
        return {}

    def _key_json(self, key: JSON, *, secret: str | None = None) -> JSON:
        out = _public(key)
        out["secret_key"] = secret if secret is not None else "[REDACTED]"
        if not key["limited"]:
            out.pop("bucket_access", None)
        return out

    def _list_keys(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([self._key_json(k) for k in self.store.keys.values()], query, headers)

    def _create_key(self, *, body: Any, **_: Any) -> JSON:
        body = self._require(body, "label")
        access = body.get("bucket_access")
        grants: list[JSON] = []
        for i, grant in enumerate(access or []):
            if grant.get("permissions") not in ("read_only", "read_write"):
                raise _bad(
                    "permissions must be read_only or read_write", f"bucket_access[{i}].permissions"
                )
            region = grant.get("region")
            bucket = next(
                (
                    b
                    for b in self.store.buckets.values()
                    if b["label"] == grant.get("bucket_name") and b["region"] == region
                ),
                None,
            )
            if bucket is None:
                raise _bad("Bucket not found", f"bucket_access[{i}].bucket_name")
            grants.append(
                {
                    "cluster": bucket["cluster"],
                    "bucket_name": bucket["label"],
                    "permissions": grant["permissions"],
                    "region": bucket["region"],
                }
            )
        if len(self.store.keys) >= self.limits.keys:
            raise _limit("Object Storage key")
        kid = self.store.new_id()
        regions = sorted({g["region"] for g in grants}) or sorted(self._regions)
        key: JSON = {
            "id": kid,
            "label": body["label"],
            "access_key": "AK" + secrets.token_hex(9).upper(),
            "limited": bool(grants),
            "bucket_access": grants,
            "regions": [{"id": r, "s3_endpoint": f"{r}-1.linodeobjects.com"} for r in regions],
        }
        secret = secrets.token_urlsafe(30)
        self.store.keys[kid] = key
        self.store.secrets[kid] = secret
        return self._key_json(key, secret=secret)

    def _key(self, kid: str) -> JSON:
        key = self.store.keys.get(int(kid))
        if key is None:
            raise _not_found()
        return key

    def _get_key(self, *, kid: str, **_: Any) -> JSON:
        return self._key_json(self._key(kid))

    def _update_key(self, *, kid: str, body: Any, **_: Any) -> JSON:
        key = self._key(kid)
        body = self._require(body)
        if "label" in body:
            key["label"] = body["label"]
        return self._key_json(key)

    def _delete_key(self, *, kid: str, **_: Any) -> JSON:
        key = self._key(kid)
        del self.store.keys[key["id"]]
        self.store.secrets.pop(key["id"], None)
        return {}

    def _quota_rows(self) -> list[JSON]:
        rows: list[JSON] = []
        for cfg in self._regions.values():
            if "Object Storage" not in cfg.capabilities:
                continue
            cluster = f"{cfg.id}-1"
            rows.append(
                {
                    "quota_id": f"obj-buckets-{cluster}",
                    "quota_name": "Object Storage Maximum Buckets",
                    "description": (
                        "Maximum number of buckets this customer is allowed to have on this "
                        "endpoint."
                    ),
                    "endpoint_type": "E1",
                    "s3_endpoint": f"{cluster}.linodeobjects.com",
                    "quota_limit": self.bucket_quota,
                    "resource_metric": "bucket",
                    "quota_type": "obj-buckets",
                    "has_usage": True,
                }
            )
        return rows

    def _list_quotas(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page(self._quota_rows(), query, headers)

    def _get_quota(self, *, qid: str, **_: Any) -> JSON:
        for row in self._quota_rows():
            if row["quota_id"] == qid:
                return row
        raise _not_found()

    def _quota_usage(self, *, qid: str, **_: Any) -> JSON:
        row = self._get_quota(qid=qid)
        region = row["s3_endpoint"].split(".")[0].rsplit("-", 1)[0]
        used = sum(1 for b in self.store.buckets.values() if b["region"] == region)
        return {"quota_limit": row["quota_limit"], "usage": used}

    def _global_rows(self) -> list[JSON]:
        return [
            {
                "quota_id": "obj-access-keys-per-account",
                "quota_type": "obj-access-keys",
                "quota_name": "Object Storage Access Keys per Account",
                "description": (
                    "Maximum number of access keys this customer is allowed to have on their "
                    "account."
                ),
                "resource_metric": "access_key",
                "quota_limit": self.limits.keys,
                "has_usage": True,
            }
        ]

    def _list_global_quotas(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page(self._global_rows(), query, headers)

    def _global_quota_usage(self, *, qid: str, **_: Any) -> JSON:
        if qid != "obj-access-keys-per-account":
            raise _not_found()
        return {"quota_limit": self.limits.keys, "usage": len(self.store.keys)}

    # -- databases ------------------------------------------------------------------------------

    def _db_engines(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        rows = [
            {"engine": e.split("/")[0], "id": e, "version": e.split("/")[1]} for e in _DB_ENGINES
        ]
        return self._page(rows, query, headers)

    def _db_types(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        rows: list[JSON] = []
        for type_id in _DB_TYPES:
            plan = self.plan(type_id)
            if plan is None:  # pragma: no cover - the tables above agree
                continue
            price = {
                "price": {
                    "hourly": plan["price"]["hourly"] * 2,
                    "monthly": plan["price"]["monthly"] * 2,
                },
                "quantity": 1,
            }
            rows.append(
                {
                    "class": plan["class"],
                    "deprecated": False,
                    "disk": plan["disk"],
                    "engines": {"mysql": [price], "postgresql": [price]},
                    "id": type_id,
                    "label": f"DBaaS - {plan['label']}",
                    "memory": plan["memory"],
                    "vcpus": plan["vcpus"],
                }
            )
        return self._page(rows, query, headers)

    def _database(self, did: str | int) -> JSON:
        db = self.store.databases.get(int(did))
        if db is None:
            raise _not_found()
        return db

    def _list_databases(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([_public(d) for d in self.store.databases.values()], query, headers)

    def _list_all_databases(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        rows = []
        for db in self.store.databases.values():
            row = {
                k: db[k]
                for k in (
                    "allow_list",
                    "cluster_size",
                    "created",
                    "encrypted",
                    "engine",
                    "hosts",
                    "id",
                    "label",
                    "region",
                    "status",
                    "type",
                    "updated",
                    "updates",
                    "version",
                    "private_network",
                )
            }
            row["instance_uri"] = f"/v4/databases/postgresql/instances/{db['id']}"
            rows.append(row)
        return self._page(rows, query, headers)

    def _private_network(self, value: Any) -> JSON | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _bad("private_network must be an object", "private_network")
        vpc_id, subnet_id = value.get("vpc_id"), value.get("subnet_id")
        subnet = self.store.subnets.get(subnet_id) if isinstance(subnet_id, int) else None
        if subnet is None or subnet["_vpc"] != vpc_id:
            raise _bad("Subnet not found in the VPC", "private_network.subnet_id")
        return {
            "vpc_id": vpc_id,
            "subnet_id": subnet_id,
            "public_access": bool(value.get("public_access", False)),
        }

    def _create_database(self, *, body: Any, **_: Any) -> JSON:
        body = self._require(body, "label", "region", "type", "engine")
        label = body["label"]
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{1,30}[A-Za-z0-9]", str(label)):
            raise _bad("Label must be 3-32 characters", "label")
        if any(d["label"] == label for d in self.store.databases.values()):
            raise _bad("Label must be unique among your databases", "label")
        self._check_region(body["region"], "Managed Databases")
        if body["type"] not in _DB_TYPES:
            raise _bad(f"Invalid database type {body['type']!r}", "type")
        if body["engine"] not in _DB_ENGINES or not body["engine"].startswith("postgresql/"):
            raise _bad(f"Invalid engine {body['engine']!r}", "engine")
        size = body.get("cluster_size", 1)
        if size not in (1, 2, 3):
            raise _bad("cluster_size must be 1, 2 or 3", "cluster_size")
        network = self._private_network(body.get("private_network"))
        if len(self.store.databases) >= self.limits.databases:
            raise _limit("Managed Database")
        did = self.store.new_id()
        now = _now()
        db: JSON = {
            "allow_list": list(body.get("allow_list", [])),
            "cluster_size": size,
            "created": now,
            "encrypted": True,
            "engine": "postgresql",
            "hosts": {
                "primary": f"lin-{did}-pgsql-primary.servers.linodedb.net",
                "standby": f"lin-{did}-pgsql-primary-private.servers.linodedb.net",
            },
            "id": did,
            "label": label,
            "port": 5432,
            "region": body["region"],
            "replication_commit_type": "local",
            "replication_type": "asynch" if size > 1 else "none",
            "ssl_connection": True,
            "status": "provisioning",
            "type": body["type"],
            "updated": now,
            "updates": {
                "day_of_week": 1,
                "duration": 3,
                "frequency": "weekly",
                "hour_of_day": 0,
                "week_of_month": None,
            },
            "version": body["engine"].split("/")[1],
            "engine_config": json.loads(json.dumps(_PG_ENGINE_CONFIG)),
            "private_network": network,
        }
        self.store.databases[did] = db
        self.store.ready_at[("database", did)] = time.monotonic() + self.database_delay
        self.store.secrets[-did] = secrets.token_urlsafe(24)
        return _public(db)

    def _get_database(self, *, did: str, **_: Any) -> JSON:
        return _public(self._database(did))

    def _update_database(self, *, did: str, body: Any, **_: Any) -> JSON:
        db = self._database(did)
        body = self._require(body)
        if db["status"] != "active":
            raise _bad("The database is not active yet")
        if "type" in body:
            if body["type"] not in _DB_TYPES:
                raise _bad(f"Invalid database type {body['type']!r}", "type")
            db["type"] = body["type"]
        if "cluster_size" in body:
            if body["cluster_size"] < db["cluster_size"]:
                raise _bad("cluster_size cannot be decreased", "cluster_size")
            db["cluster_size"] = body["cluster_size"]
        if "allow_list" in body:
            db["allow_list"] = list(body["allow_list"])
        if "label" in body:
            db["label"] = body["label"]
        if "private_network" in body:
            db["private_network"] = self._private_network(body["private_network"])
        db["updated"] = _now()
        return _public(db)

    def _delete_database(self, *, did: str, **_: Any) -> JSON:
        db = self._database(did)
        del self.store.databases[db["id"]]
        self.store.secrets.pop(-db["id"], None)
        return {}

    def _db_credentials(self, *, did: str, **_: Any) -> JSON:
        db = self._database(did)
        return {"password": self.store.secrets[-db["id"]], "username": "akmadmin"}

    # -- S3 -------------------------------------------------------------------------------------

    def handle_s3(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> S3Response:
        """Serve one request on the S3 endpoint (:class:`~aiaas_infra._emulator_s3.S3Service`)
        and record it in :attr:`s3_requests`."""
        response = self.s3.handle(method, raw_path, raw_query, headers, body)
        first = raw_query.split("&", 1)[0].split("=", 1)[0]
        path = unquote(raw_path) + (f"?{unquote(first)}" if first else "")
        self._record_s3(RequestRecord(method, path, response.status))
        return response

    def _record_s3(self, record: RequestRecord) -> None:
        with self._log_lock:
            self._s3_log.append(record)

    # -- admin ----------------------------------------------------------------------------------

    def handle_admin(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "/faults" and method == "POST":
            fault = Fault(**body)
            self.inject(fault)
            return 200, {}
        if path == "/faults" and method == "DELETE":
            self.clear_faults()
            return 200, {}
        if path == "/requests" and method == "GET":
            return 200, {"data": [attrs.asdict(r) for r in self.requests]}
        if path == "/requests" and method == "DELETE":
            self.reset_requests()
            return 200, {}
        if path == "/s3-requests" and method == "GET":
            return 200, {"data": [attrs.asdict(r) for r in self.s3_requests]}
        m = re.fullmatch(r"/resources/(\w+)", path)
        if m and method == "GET":
            return 200, {"data": self.resources(m.group(1))}
        m = re.fullmatch(r"/resources/(\w+)/([^/]+)", path)
        if m and method == "DELETE":
            try:
                self.delete_out_of_band(m.group(1), unquote(m.group(2)))
            except KeyError as exc:
                return 404, {"errors": [{"reason": str(exc)}]}
            return 200, {}
        shown = path if len(path) <= 200 else path[:200] + "..."
        reason = (
            f"{method} /_emulator{shown} is not an admin endpoint of aiaas-infra's Linode "
            "emulator (faults, requests, s3-requests, resources/KIND)"
        )
        return 404, {"errors": [{"reason": reason}]}

    # -- rate limiting --------------------------------------------------------------------------

    def rate_headers(self) -> tuple[bool, dict[str, str]]:
        now = time.monotonic()
        with self._log_lock:
            if now - self._window_start >= self.rate_window:
                self._window_start = now
                self._window_count = 0
            self._window_count += 1
            limit = self.rate_limit if self.rate_limit is not None else 1600
            remaining = max(0, limit - self._window_count)
            reset_in = self.rate_window - (now - self._window_start)
            over = self.rate_limit is not None and self._window_count > self.rate_limit
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(time.time() + reset_in)),
        }
        if over:
            headers["Retry-After"] = str(max(1, math.ceil(reset_in)))
        return over, headers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _Server
    error_content_type = "application/json"
    _allowed_methods: ClassVar[tuple[str, ...]] = ("GET", "POST", "PUT", "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        """Linode API v4 has no PATCH: 405 on an emulated path, 501 "not emulated" elsewhere."""
        self._handle("PATCH")

    def do_HEAD(self) -> None:
        """HEAD is an S3 request (HeadBucket, HeadObject); the Linode API has none."""
        split = urlsplit(self.path)
        if split.path.startswith(("/v4/", "/_emulator/")) or split.path == "/v4":
            self._read_body()
            self.send_response(405)
            self.send_header("Allow", "GET, POST, PUT, DELETE")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._handle("HEAD")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(
        self,
        status: int,
        payload: bytes,
        headers: Mapping[str, str],
        ctype: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _send_s3(self, method: str, response: S3Response) -> None:
        self.send_response(response.status)
        headers = {k.lower(): (k, v) for k, v in response.headers.items()}
        if "content-length" not in headers:
            self.send_header("Content-Length", str(len(response.body)))
        for name, value in headers.values():
            self.send_header(name, value)
        self.end_headers()
        if response.body and method != "HEAD":
            self.wfile.write(response.body)

    def _handle(self, method: str) -> None:
        em = self.server.emulator
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        raw = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        if split.path.startswith("/_emulator/"):
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = None
            status, out = em.handle_admin(method, split.path[len("/_emulator") :], body)
            self._send(status, json.dumps(out).encode(), {})
            return
        if not split.path.startswith("/v4/") and split.path != "/v4":
            self._send_s3(method, em.handle_s3(method, split.path, split.query, headers, raw))
            return
        path = split.path[len("/v4") :] or "/"
        faults = em._take_fault(method, path)
        for fault in faults:
            if fault.kind == "latency":
                time.sleep(fault.delay)
        over, rate = em.rate_headers()
        status_fault = next((f for f in faults if f.kind == "status"), None)
        if over:
            em._record(RequestRecord(method, path, 429, "rate-limit"))
            self._error(429, "Too many requests", None, rate)
            return
        if status_fault is not None:
            extra = dict(rate)
            if status_fault.retry_after is not None:
                extra["Retry-After"] = str(max(0, math.ceil(status_fault.retry_after)))
            em._record(RequestRecord(method, path, status_fault.status, "status"))
            reason = status_fault.reason or {
                429: "Too many requests",
                500: "Internal server error",
                502: "Bad gateway",
                503: "Service unavailable",
                504: "Gateway timeout",
            }.get(status_fault.status, "Injected fault")
            self._error(status_fault.status, reason, None, extra)
            return
        auth = headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if not token or (em.token is not None and token != em.token):
            em._record(RequestRecord(method, path, 401))
            self._error(401, "Invalid Token", None, rate)
            return
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            em._record(RequestRecord(method, path, 400))
            self._error(400, "Request body is not valid JSON", None, rate)
            return
        try:
            status, out, extra = em.dispatch(method, path, query, headers, body)
        except _ApiError as exc:
            em._record(RequestRecord(method, path, exc.status))
            self._error(exc.status, exc.reason, exc.field, {**rate, **exc.headers})
            return
        drop = next((f for f in faults if f.kind == "drop"), None)
        if drop is not None:
            em._record(RequestRecord(method, path, 0, "drop"))
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may have gone already
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        timeout = next((f for f in faults if f.kind == "timeout"), None)
        if timeout is not None:
            em._record(RequestRecord(method, path, 0, "timeout"))
            time.sleep(timeout.delay)
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client gave up long ago
                self._send(status, json.dumps(out).encode(), {**rate, **extra})
            return
        em._record(RequestRecord(method, path, status))
        self._send(status, json.dumps(out).encode(), {**rate, **extra})

    def _error(
        self, status: int, reason: str, field: str | None, headers: Mapping[str, str]
    ) -> None:
        err: JSON = {"reason": reason}
        if field:
            err["field"] = field
        self._send(status, json.dumps({"errors": [err]}).encode(), headers)
