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
emulator is also its own S3 endpoint (``aiaas_infra.testing._linode._s3``): path style at its
root
URL, SigV4-signed with the keys it issued, serving bucket lifecycle configuration, object
``PUT``/``GET``/``HEAD``/``DELETE`` and ListObjectsV2.

Admin endpoints under ``/_emulator/`` (faults, request log, out-of-band changes) let a test
drive an emulator running in another process (``aiaas-infra emulator --port N``).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote

import attrs

from aiaas_infra.testing._linode._catalog import _CatalogApi
from aiaas_infra.testing._linode._databases import _DatabaseApi
from aiaas_infra.testing._linode._http import _Handler, _Server
from aiaas_infra.testing._linode._lke import _LkeApi
from aiaas_infra.testing._linode._model import (
    DEFAULT_REGIONS,
    JSON,
    AccountLimits,
    Fault,
    RegionConfig,
    RequestRecord,
    _ApiError,
    _not_emulated,
)
from aiaas_infra.testing._linode._network import _NetworkApi
from aiaas_infra.testing._linode._objstore import _ObjectStorageApi
from aiaas_infra.testing._linode._s3 import S3Response, S3Service
from aiaas_infra.testing._linode._store import S3Object, _Store

__all__ = ["LinodeEmulator"]


Route = tuple[str, re.Pattern[str], Callable[..., Any]]


class LinodeEmulator(_CatalogApi, _LkeApi, _NetworkApi, _ObjectStorageApi, _DatabaseApi):
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

    # -- S3 -------------------------------------------------------------------------------------

    def handle_s3(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> S3Response:
        """Serve one request on the S3 endpoint
        (``S3Service`` in ``aiaas_infra.testing._linode._s3``)
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
