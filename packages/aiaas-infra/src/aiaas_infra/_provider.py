"""The Linode provider: reads and changes resources through the official ``linode_api4`` SDK.

Retries are ours, not the SDK's: the SDK's own retry (which re-sends a POST after a 429/502)
is switched off, and every call goes through :class:`RetryPolicy` with an injectable clock,
honouring ``Retry-After``. A create whose answer was lost (connection dropped, timeout, 5xx) is
never blindly re-sent: the provider first looks the resource up by its ownership tag and label
and adopts it when found, so a lost response cannot leave a duplicate behind.
"""

# linode_api4, boto3 and botocore ship no type information.

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

import attrs

from aiaas_infra._errors import AccountLimitError, LinodeApiError, ReadinessTimeoutError
from aiaas_infra._model import Desired, LiveResource, address, normalise_autoscaler
from aiaas_infra._retry import Clock, RetryPolicy, SystemClock, parse_retry_after

if TYPE_CHECKING:
    from aiaas_core import Secret

__all__ = ["DEFAULT_API_URL", "Inventory", "LinodeProvider", "Scope"]

DEFAULT_API_URL: Final = "https://api.linode.com/v4"


def api_s3_endpoint(api_url: str) -> str | None:
    """The S3 endpoint a Linode API URL implies: ``None`` for Linode's own API (``*.linode.com``,
    where each bucket's regional endpoint, ``https://<cluster>.linodeobjects.com``, serves S3);
    for any other API server -- the emulator, a test double -- that server's root URL, which
    serves the S3 API beside ``/v4`` (``http://127.0.0.1:8080/v4`` -> ``http://127.0.0.1:8080``).
    """
    parts = urlsplit(api_url)
    host = (parts.hostname or "").lower()
    if not parts.scheme or not host or host == "linode.com" or host.endswith(".linode.com"):
        return None
    return f"{parts.scheme}://{parts.netloc}"


_T = TypeVar("_T")
JSON = dict[str, Any]


def fingerprint(value: str) -> str:
    """What state keeps instead of a secret: a short SHA-256 digest."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


@attrs.frozen
class Scope:
    """Which live resources count as this platform's.

    Taggable kinds (clusters, firewalls) are found by ``owner_tag``; the others by label
    (``labels``: the labels the spec declares plus those recorded in state).
    """

    owner_tag: str
    labels: Mapping[str, frozenset[str]] = attrs.field(factory=dict)

    def wants(self, kind: str) -> bool:
        return bool(self.labels.get(kind))

    def has(self, kind: str, label: str) -> bool:
        return label in self.labels.get(kind, frozenset())


@attrs.frozen
class Inventory:
    """Live resources in scope, by address; ``duplicates`` are extra copies of a label."""

    resources: Mapping[str, LiveResource]
    duplicates: tuple[LiveResource, ...] = ()


@attrs.frozen
class CreateOutcome:
    """What a create produced: the resource (and children made with it) and its secrets."""

    resources: tuple[LiveResource, ...]
    secrets: Mapping[str, Secret] = attrs.field(factory=dict)
    adopted: bool = False
    uncertain: bool = False


def _raw(obj: Any) -> JSON:
    raw = getattr(obj, "_raw_json", None)
    return dict(raw) if isinstance(raw, dict) else {}


def _rule_json(rule: Mapping[str, Any]) -> JSON:
    out: JSON = {
        "label": rule["label"],
        "action": rule["action"],
        "protocol": rule["protocol"],
        "addresses": {k: list(v) for k, v in rule["addresses"].items() if v},
    }
    if rule.get("ports"):
        out["ports"] = rule["ports"]
    if rule.get("description"):
        out["description"] = rule["description"]
    return out


def _rule_attrs(rule: Mapping[str, Any]) -> JSON:
    addresses = rule.get("addresses") or {}
    return {
        "label": rule.get("label", ""),
        "action": rule.get("action"),
        "protocol": rule.get("protocol"),
        "ports": rule.get("ports") or None,
        "addresses": {
            "ipv4": list(addresses.get("ipv4") or []),
            "ipv6": list(addresses.get("ipv6") or []),
        },
        "description": rule.get("description") or "",
    }


def _rules_json(attrs_: Mapping[str, Any]) -> JSON:
    return {
        "inbound": [_rule_json(r) for r in attrs_["inbound"]],
        "outbound": [_rule_json(r) for r in attrs_["outbound"]],
        "inbound_policy": attrs_["inbound_policy"],
        "outbound_policy": attrs_["outbound_policy"],
    }


def _engine_major(engine: str, version: str) -> str:
    return f"{engine}/{version.split('.', maxsplit=1)[0]}"


def _adapter(timeout: float) -> Any:
    from requests.adapters import HTTPAdapter  # noqa: PLC0415

    class TimeoutAdapter(HTTPAdapter):
        """No retries (ours are smarter) and a default timeout on every request."""

        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            return super().send(request, **kwargs)

    return TimeoutAdapter(max_retries=0, pool_connections=4, pool_maxsize=16)


class LinodeProvider:
    """Reads and changes the platform's Linode resources.

    ``token`` comes from ``LINODE_TOKEN`` and ``base_url`` from ``LINODE_API_URL`` with
    :meth:`from_env`. ``clock`` and ``retry`` are injectable so tests and benchmarks do not
    really wait; ``poll_interval`` is how often readiness is checked. S3 calls (bucket lifecycle
    rules) go to :meth:`s3_endpoint_url`.
    """

    def __init__(
        self,
        token: str | Secret,
        *,
        base_url: str = DEFAULT_API_URL,
        obj_endpoint: str | None = None,
        obj_credentials: tuple[str, Secret] | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        request_timeout: float = 30.0,
        poll_interval: float = 10.0,
        readiness_timeout: float = 1800.0,
        user_agent: str = "aiaas-infra",
    ) -> None:
        raw_token = token if isinstance(token, str) else token.get_secret_value()
        if not raw_token:
            from aiaas_core import ConfigError  # noqa: PLC0415

            raise ConfigError(
                "no Linode API token: set LINODE_TOKEN (a personal access token with read/write "
                "on LKE, Firewalls, VPCs, Object Storage and Databases)"
            )
        self._token = raw_token
        self.base_url = base_url.rstrip("/")
        self.obj_endpoint = obj_endpoint
        self.obj_credentials = obj_credentials
        self.retry = retry or RetryPolicy()
        self.clock: Clock = clock or SystemClock()
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self.readiness_timeout = readiness_timeout
        self.user_agent = user_agent
        self._local = threading.local()
        self._calls = 0
        self._calls_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LinodeProvider(base_url={self.base_url!r})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> LinodeProvider:
        """Build from ``LINODE_TOKEN``, ``LINODE_API_URL`` and, for S3 calls,
        ``LINODE_OBJ_ENDPOINT`` (default: see :meth:`s3_endpoint_url`),
        ``LINODE_OBJ_ACCESS_KEY`` and ``LINODE_OBJ_SECRET_KEY``;
        ``AIAAS_INFRA_POLL_INTERVAL`` and ``AIAAS_INFRA_REQUEST_TIMEOUT`` (seconds) tune waits."""
        from aiaas_core import Secret  # noqa: PLC0415

        env = os.environ if environ is None else environ
        creds = None
        if env.get("LINODE_OBJ_ACCESS_KEY") and env.get("LINODE_OBJ_SECRET_KEY"):
            creds = (env["LINODE_OBJ_ACCESS_KEY"], Secret(env["LINODE_OBJ_SECRET_KEY"]))
        kwargs.setdefault("base_url", env.get("LINODE_API_URL") or DEFAULT_API_URL)
        kwargs.setdefault("obj_endpoint", env.get("LINODE_OBJ_ENDPOINT") or None)
        kwargs.setdefault("obj_credentials", creds)
        for name, key in (
            ("AIAAS_INFRA_POLL_INTERVAL", "poll_interval"),
            ("AIAAS_INFRA_REQUEST_TIMEOUT", "request_timeout"),
        ):
            if env.get(name):
                try:
                    kwargs.setdefault(key, float(env[name]))
                except ValueError:
                    raise LinodeApiError(
                        f"{name} must be a number of seconds, got {env[name]!r}"
                    ) from None
        return cls(Secret(env.get("LINODE_TOKEN", "")), **kwargs)

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def calls(self) -> int:
        """HTTP requests sent to the Linode API so far (retries included)."""
        with self._calls_lock:
            return self._calls

    def _count(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        with self._calls_lock:
            self._calls += 1
        return response

    @property
    def client(self) -> Any:
        """This thread's ``linode_api4.LinodeClient`` (one per thread: requests sessions are not
        thread-safe)."""
        client = getattr(self._local, "client", None)
        if client is None:
            from linode_api4 import LinodeClient  # noqa: PLC0415

            client = LinodeClient(
                self._token, base_url=self.base_url, retry=False, user_agent=self.user_agent
            )
            adapter = _adapter(self.request_timeout)
            client.session.mount("http://", adapter)
            client.session.mount("https://", adapter)
            client.session.hooks["response"].append(self._count)
            self._local.client = client
        return client

    def _call(
        self,
        operation: str,
        func: Callable[[], _T],
        *,
        probe: Callable[[], _T | None] | None = None,
        missing_ok: bool = False,
    ) -> _T:
        """Run ``func`` with retries. For a create, ``probe`` looks for the resource before any
        retry (its answer may have been lost although it was made)."""
        import requests  # noqa: PLC0415
        from linode_api4 import ApiError  # noqa: PLC0415

        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                return func()
            except ApiError as exc:
                status = int(exc.status)
                if missing_ok and status == 404:
                    return None  # type: ignore[return-value]
                if probe is not None and attempt > 1 and status in (400, 409):
                    # "label must be unique": an earlier attempt landed after all.
                    found = probe()
                    if found is not None:
                        return found
                if status not in self.retry.statuses or attempt >= self.retry.max_attempts:
                    raise self._translate(operation, exc) from None
                response = getattr(exc, "response", None)
                headers = getattr(response, "headers", None) or {}
                retry_after = parse_retry_after(headers.get("Retry-After"))
                uncertain = status >= 500
            except (requests.ConnectionError, requests.Timeout) as exc:
                if probe is not None:
                    self._local.uncertain = True
                if attempt >= self.retry.max_attempts:
                    raise LinodeApiError(
                        f"{operation}: no answer from the Linode API after {attempt} attempts "
                        f"({type(exc).__name__})",
                        operation=operation,
                    ) from None
                uncertain = True
            # Wait first: a request that timed out may still land while we wait.
            self.clock.sleep(self.retry.delay(attempt, retry_after))
            if probe is not None and uncertain:
                self._local.uncertain = True
                found = probe()
                if found is not None:
                    return found

    @staticmethod
    def _translate(operation: str, exc: Any) -> LinodeApiError:
        reasons = []
        for err in (exc.json or {}).get("errors", []) if isinstance(exc.json, dict) else []:
            field = err.get("field")
            reasons.append(f"{field}: {err.get('reason')}" if field else str(err.get("reason")))
        text = "; ".join(reasons) or str(exc)
        cls = AccountLimitError if "Account Limit reached" in text else LinodeApiError
        hint = ""
        if exc.status == 401:
            hint = " (check LINODE_TOKEN)"
        elif exc.status == 403:
            hint = " (the token lacks a scope this needs)"
        return cls(
            f"{operation}: Linode answered {exc.status}: {text}{hint}",
            api_status=int(exc.status),
            reasons=reasons,
            operation=operation,
        )

    def list_all(self, operation: str, fetch: Callable[[], Any]) -> list[Any]:
        return self._call(operation, lambda: list(fetch()))

    def filter_by(self, spec: JSON) -> Any:
        from linode_api4.objects.filtering import Filter  # noqa: PLC0415

        return Filter(spec)

    # -- reading --------------------------------------------------------------------------------

    def _cluster_live(self, raw: JSON) -> LiveResource:
        return LiveResource(
            "cluster",
            raw["label"],
            str(raw["id"]),
            {
                "region": raw["region"],
                "k8s_version": raw["k8s_version"],
                "high_availability": bool(
                    (raw.get("control_plane") or {}).get("high_availability")
                ),
                "tags": sorted(raw.get("tags") or []),
            },
            status=raw.get("status"),
            raw=raw,
        )

    def _pool_live(
        self, cluster_label: str, cluster_id: str, raw: JSON, firewalls: Mapping[str, str]
    ) -> LiveResource:
        scaler = raw.get("autoscaler") or {}
        fw_id = raw.get("firewall_id")
        nodes = raw.get("nodes") or []
        ready = all(
            (n.get("status") if isinstance(n, dict) else getattr(n, "status", None)) == "ready"
            for n in nodes
        )
        return LiveResource(
            "pool",
            f"{cluster_label}/{raw.get('label') or '#' + str(raw['id'])}",
            str(raw["id"]),
            {
                "type": raw["type"],
                "count": raw["count"],
                "autoscaler": normalise_autoscaler(
                    bool(scaler.get("enabled")), scaler.get("min"), scaler.get("max")
                ),
                "labels": dict(sorted((raw.get("labels") or {}).items())),
                "taints": sorted(
                    (
                        {"key": t["key"], "value": t.get("value") or "", "effect": t["effect"]}
                        for t in (raw.get("taints") or [])
                    ),
                    key=lambda t: (t["key"], t["effect"]),
                ),
                "tags": sorted(raw.get("tags") or []),
                "firewall": None if fw_id is None else firewalls.get(str(fw_id), f"#{fw_id}"),
            },
            status="ready" if ready and len(nodes) == raw["count"] else "provisioning",
            parent_id=cluster_id,
        )

    def _firewall_live(self, raw: JSON) -> LiveResource:
        rules = raw.get("rules") or {}
        return LiveResource(
            "firewall",
            raw["label"],
            str(raw["id"]),
            {
                "inbound_policy": rules.get("inbound_policy"),
                "outbound_policy": rules.get("outbound_policy"),
                "inbound": [_rule_attrs(r) for r in rules.get("inbound") or []],
                "outbound": [_rule_attrs(r) for r in rules.get("outbound") or []],
                "tags": sorted(raw.get("tags") or []),
            },
            status=raw.get("status"),
            raw=raw,
        )

    @staticmethod
    def _vpc_live(raw: JSON) -> LiveResource:
        return LiveResource(
            "vpc",
            raw["label"],
            str(raw["id"]),
            {"region": raw["region"], "description": raw.get("description") or ""},
            raw=raw,
        )

    @staticmethod
    def _subnet_live(vpc_label: str, vpc_id: str, raw: JSON) -> LiveResource:
        return LiveResource(
            "subnet",
            f"{vpc_label}/{raw['label']}",
            str(raw["id"]),
            {"ipv4": raw.get("ipv4")},
            parent_id=vpc_id,
            raw=raw,
        )

    @staticmethod
    def _bucket_live(raw: JSON) -> LiveResource:
        region = raw.get("region") or str(raw.get("cluster", "")).rsplit("-", 1)[0]
        return LiveResource(
            "bucket",
            raw["label"],
            f"{region}/{raw['label']}",
            {"region": region},
            raw=raw,
        )

    @staticmethod
    def _key_live(raw: JSON) -> LiveResource:
        grants = sorted(
            (
                {
                    "bucket": g.get("bucket_name"),
                    "region": g.get("region") or str(g.get("cluster", "")).rsplit("-", 1)[0],
                    "permissions": g.get("permissions"),
                }
                for g in raw.get("bucket_access") or []
            ),
            key=lambda g: str(g["bucket"]),
        )
        safe = {k: v for k, v in raw.items() if k != "secret_key"}
        return LiveResource(
            "object_key", raw["label"], str(raw["id"]), {"buckets": grants}, raw=safe
        )

    @staticmethod
    def _database_live(raw: JSON, subnets: Mapping[str, str]) -> LiveResource:
        network = raw.get("private_network") or {}
        subnet_id = network.get("subnet_id")
        status = raw.get("status")
        return LiveResource(
            "database",
            raw["label"],
            str(raw["id"]),
            {
                "region": raw["region"],
                "type": raw["type"],
                "engine": _engine_major(
                    raw.get("engine", "postgresql"), str(raw.get("version", ""))
                ),
                "cluster_size": raw.get("cluster_size", 1),
                "allow_list": sorted(raw.get("allow_list") or []),
                "subnet": None
                if subnet_id is None
                else subnets.get(str(subnet_id), f"#{subnet_id}"),
                "public_access": bool(network.get("public_access", False)) if network else False,
            },
            status="ready" if status == "active" else status,
            raw=raw,
        )

    def inventory(self, scope: Scope) -> Inventory:
        """Every live resource in ``scope``: one list call per kind, plus one per cluster
        (its pools) and per VPC (its subnets)."""

        c = self.client
        found: dict[str, LiveResource] = {}
        dupes: list[LiveResource] = []

        def keep(res: LiveResource) -> None:
            if res.address in found:
                dupes.append(res)
            else:
                found[res.address] = res

        firewall_labels: dict[str, str] = {}
        if scope.wants("firewall") or scope.wants("pool"):
            fws = self.list_all(
                "list firewalls",
                lambda: c.networking.firewalls(self.filter_by({"tags": scope.owner_tag})),
            )
            for fw in fws:
                raw = _raw(fw)
                firewall_labels[str(raw["id"])] = raw["label"]
                if scope.has("firewall", raw["label"]):
                    keep(self._firewall_live(raw))

        subnet_names: dict[str, str] = {}
        if scope.wants("vpc") or scope.wants("subnet"):
            vpc_labels = scope.labels.get("vpc", frozenset())
            for vpc in self.list_all("list VPCs", c.vpcs):
                raw = _raw(vpc)
                if raw["label"] not in vpc_labels:
                    continue
                live = self._vpc_live(raw)
                keep(live)
                subnets = self.list_all(
                    f"list subnets of VPC {raw['label']}",
                    functools.partial(_subnets_of, c, raw["id"]),
                )
                for subnet in subnets:
                    s = self._subnet_live(raw["label"], live.id, _raw(subnet))
                    subnet_names[s.id] = s.name
                    keep(s)

        if scope.wants("cluster"):
            clusters = self.list_all(
                "list LKE clusters",
                lambda: c.lke.clusters(self.filter_by({"tags": scope.owner_tag})),
            )
            for cluster in clusters:
                raw = _raw(cluster)
                if not scope.has("cluster", raw["label"]):
                    continue
                live = self._cluster_live(raw)
                keep(live)
                pools = self.list_all(
                    f"list pools of cluster {raw['label']}",
                    functools.partial(_pools_of, c, raw["id"]),
                )
                for pool in pools:
                    keep(self._pool_live(raw["label"], live.id, _pool_raw(pool), firewall_labels))

        if scope.wants("bucket"):
            for bucket in self.list_all("list buckets", c.object_storage.buckets):
                raw = _raw(bucket)
                if scope.has("bucket", raw["label"]):
                    keep(self._bucket_live(raw))

        if scope.wants("object_key"):
            for key in self.list_all("list object storage keys", c.object_storage.keys):
                raw = _raw(key)
                if scope.has("object_key", raw["label"]):
                    keep(self._key_live(raw))

        if scope.wants("database"):
            dbs = self.list_all("list PostgreSQL databases", c.database.postgresql_instances)
            for db in dbs:
                raw = _raw(db)
                if scope.has("database", raw["label"]):
                    keep(self._database_live(raw, subnet_names))
        return Inventory(found, tuple(dupes))

    def pools(self, cluster: LiveResource, refs: Mapping[str, LiveResource]) -> list[LiveResource]:
        """The live pools of ``cluster``; firewall ids are named from ``refs``."""
        from linode_api4 import LKECluster  # noqa: PLC0415

        c = self.client
        rows = self.list_all(
            f"list pools of {cluster.address}", lambda: LKECluster(c, int(cluster.id)).pools
        )
        names = _fw_names(refs)
        return [self._pool_live(cluster.name, cluster.id, _pool_raw(p), names) for p in rows]

    # -- finding a resource whose create answer was lost ----------------------------------------

    def find(self, desired: Desired, refs: Mapping[str, LiveResource]) -> LiveResource | None:
        """Look ``desired`` up by tag and label (after a create whose answer was lost)."""
        found = self.find_all(desired, refs)
        return found[-1] if found else None

    def find_all(self, desired: Desired, refs: Mapping[str, LiveResource]) -> list[LiveResource]:
        """Every live copy of ``desired`` (found by tag and label), oldest first."""
        from linode_api4 import VPC  # noqa: PLC0415

        c = self.client
        kind, label = desired.kind, desired.label
        flt = self.filter_by({"label": label})
        if kind == "cluster":
            owner = next(t for t in desired.attrs["tags"] if t.startswith("aiaas-owner:"))
            both = self.filter_by({"+and": [{"label": label}, {"tags": owner}]})
            rows = self.list_all("find cluster", lambda: c.lke.clusters(both))
            return [self._cluster_live(_raw(r)) for r in rows]
        if kind == "pool":
            parent = refs.get(desired.parent or "")
            if parent is None:
                return []
            return [p for p in self.pools(parent, refs) if p.name == desired.name]
        if kind == "firewall":
            rows = self.list_all("find firewall", lambda: c.networking.firewalls(flt))
            return [self._firewall_live(_raw(r)) for r in rows]
        if kind == "vpc":
            rows = self.list_all("find VPC", lambda: c.vpcs(flt))
            return [self._vpc_live(_raw(r)) for r in rows]
        if kind == "subnet":
            parent = refs.get(desired.parent or "")
            if parent is None:
                return []
            rows = self.list_all("find subnet", lambda: VPC(c, int(parent.id)).subnets)
            subnets = [self._subnet_live(parent.name, parent.id, _raw(r)) for r in rows]
            return [s for s in subnets if s.name == desired.name]
        if kind == "bucket":
            region = desired.attrs["region"]
            raw = self._call(
                "find bucket",
                lambda: c.get(f"/object-storage/buckets/{region}/{label}"),
                missing_ok=True,
            )
            return [self._bucket_live(raw)] if raw else []
        if kind == "object_key":
            rows = self.list_all("find object storage key", lambda: c.object_storage.keys(flt))
            return [self._key_live(_raw(r)) for r in rows]
        if kind == "database":
            rows = self.list_all("find database", lambda: c.database.postgresql_instances(flt))
            return [self._database_live(_raw(r), _subnet_names(refs)) for r in rows]
        raise ValueError(f"unknown kind {kind!r}")  # pragma: no cover - KINDS is closed

    # -- creating -------------------------------------------------------------------------------

    def create(
        self,
        desired: Desired,
        refs: Mapping[str, LiveResource],
        *,
        children: Iterable[Desired] = (),
    ) -> CreateOutcome:
        """Create ``desired``; ``refs`` resolves the addresses it depends on to live resources.

        A cluster is created together with its pools (``children``): LKE requires at least one.
        ``uncertain`` in the outcome says an attempt went unanswered (a late copy may appear:
        :meth:`find_all` finds it).
        """
        self._local.uncertain = False
        outcome = self._create(desired, refs, children=children)
        return attrs.evolve(outcome, uncertain=bool(getattr(self._local, "uncertain", False)))

    def _create(
        self,
        desired: Desired,
        refs: Mapping[str, LiveResource],
        *,
        children: Iterable[Desired] = (),
    ) -> CreateOutcome:
        """Create ``desired``; ``refs`` resolves the addresses it depends on to live resources.

        A cluster is created together with its pools (``children``): LKE requires at least one.
        """
        from linode_api4 import VPC, LKECluster  # noqa: PLC0415

        from aiaas_core import Secret  # noqa: PLC0415

        c = self.client
        a = desired.attrs
        kind = desired.kind
        op = f"create {desired.address}"
        adopted = False

        def probe() -> Any:
            nonlocal adopted
            found = self.find(desired, refs)
            adopted = found is not None
            return found

        if kind == "firewall":
            obj = self._call(
                op,
                lambda: c.networking.firewall_create(
                    desired.label, rules=_rules_json(a), tags=list(a["tags"])
                ),
                probe=probe,
            )
            live = obj if isinstance(obj, LiveResource) else self._firewall_live(_raw(obj))
            return CreateOutcome((live,), adopted=adopted)
        if kind == "vpc":
            obj = self._call(
                op,
                lambda: c.vpcs.create(
                    desired.label, a["region"], description=a["description"] or None
                ),
                probe=probe,
            )
            live = obj if isinstance(obj, LiveResource) else self._vpc_live(_raw(obj))
            return CreateOutcome((live,), adopted=adopted)
        if kind == "subnet":
            parent = refs[desired.parent or ""]
            obj = self._call(
                op,
                lambda: VPC(c, int(parent.id)).subnet_create(desired.label, ipv4=a["ipv4"]),
                probe=probe,
            )
            live = (
                obj
                if isinstance(obj, LiveResource)
                else self._subnet_live(parent.name, parent.id, _raw(obj))
            )
            return CreateOutcome((live,), adopted=adopted)
        if kind == "cluster":
            pools = [self._pool_body(p, refs) for p in children]
            obj = self._call(
                op,
                lambda: c.lke.cluster_create(
                    a["region"],
                    desired.label,
                    a["k8s_version"],
                    node_pools=pools,
                    control_plane={"high_availability": a["high_availability"]},
                    tags=list(a["tags"]),
                ),
                probe=probe,
            )
            live = obj if isinstance(obj, LiveResource) else self._cluster_live(_raw(obj))
            made = self.list_all(
                f"list pools of {desired.address}", lambda: LKECluster(c, int(live.id)).pools
            )
            fws = _fw_names(refs)
            return CreateOutcome(
                (live, *(self._pool_live(live.name, live.id, _pool_raw(p), fws) for p in made)),
                adopted=adopted,
            )
        if kind == "pool":
            parent = refs[desired.parent or ""]
            body = self._pool_body(desired, refs)
            obj = self._call(
                op,
                lambda: c.post(f"/lke/clusters/{parent.id}/pools", data=body),
                probe=probe,
            )
            live = (
                obj
                if isinstance(obj, LiveResource)
                else self._pool_live(parent.name, parent.id, obj, _fw_names(refs))
            )
            return CreateOutcome((live,), adopted=adopted)
        if kind == "bucket":
            # Linode answers 200 with the bucket when it already exists and is ours: idempotent.
            obj = self._call(
                op, lambda: c.object_storage.bucket_create(a["region"], desired.label), probe=probe
            )
            live = obj if isinstance(obj, LiveResource) else self._bucket_live(_raw(obj))
            if a.get("lifecycle"):
                self.put_lifecycle(live, a["lifecycle"])
            return CreateOutcome((live,), adopted=adopted)
        if kind == "object_key":
            grants = [
                {"region": g["region"], "bucket_name": g["bucket"], "permissions": g["permissions"]}
                for g in a["buckets"]
            ]
            raw = self._fresh_key(op, desired.label, grants)
            secret = raw.get("secret_key")
            live = self._key_live(raw)
            return CreateOutcome(
                (live,),
                {"secret_key": Secret(secret)} if isinstance(secret, str) else {},
                adopted=adopted,
            )
        if kind == "database":
            network = None
            if a["subnet"]:
                subnet = refs[address("subnet", a["subnet"])]
                network = {
                    "vpc_id": int(subnet.parent_id or 0),
                    "subnet_id": int(subnet.id),
                    "public_access": a["public_access"],
                }
            obj = self._call(
                op,
                lambda: c.database.postgresql_create(
                    desired.label,
                    a["region"],
                    a["engine"],
                    a["type"],
                    cluster_size=a["cluster_size"],
                    allow_list=list(a["allow_list"]),
                    private_network=network,
                ),
                probe=probe,
            )
            live = (
                obj
                if isinstance(obj, LiveResource)
                else self._database_live(_raw(obj), _subnet_names(refs))
            )
            return CreateOutcome((live,), adopted=adopted)
        raise ValueError(f"unknown kind {kind!r}")  # pragma: no cover - KINDS is closed

    def _fresh_key(self, operation: str, label: str, grants: list[JSON]) -> JSON:
        """Create a key. A copy whose answer was lost is useless (its secret was in that
        answer), so it is deleted before the create is retried."""
        c = self.client

        def probe() -> None:
            flt = self.filter_by({"label": label})
            rows = self.list_all(
                f"{operation}: look for a lost copy", lambda: c.object_storage.keys(flt)
            )
            for row in rows:
                self.delete(self._key_live(_raw(row)))

        obj = self._call(
            operation,
            lambda: c.object_storage.keys_create(label, bucket_access=grants),
            probe=probe,
        )
        return _raw(obj)

    @staticmethod
    def _pool_body(desired: Desired, refs: Mapping[str, LiveResource]) -> JSON:
        a = desired.attrs
        body: JSON = {
            "type": a["type"],
            "count": a["count"],
            "label": desired.label,
            "labels": dict(a["labels"]),
            "taints": [dict(t) for t in a["taints"]],
            "tags": list(a["tags"]),
            "autoscaler": _autoscaler_body(a),
        }
        if a.get("firewall"):
            fw = refs.get(address("firewall", a["firewall"]))
            if fw is not None:
                body["firewall_id"] = int(fw.id)
        return body

    # -- updating -------------------------------------------------------------------------------

    def update(
        self,
        desired: Desired,
        live: LiveResource,
        fields: Iterable[str],
        refs: Mapping[str, LiveResource],
    ) -> LiveResource:
        """Change ``fields`` of ``live`` in place to the values ``desired`` has."""
        from linode_api4 import Firewall  # noqa: PLC0415

        c = self.client
        a = desired.attrs
        changed = set(fields)
        op = f"update {desired.address}"
        if desired.kind == "cluster":
            body: JSON = {}
            if "k8s_version" in changed:
                body["k8s_version"] = a["k8s_version"]
            if "high_availability" in changed:
                body["control_plane"] = {"high_availability": a["high_availability"]}
            if "tags" in changed:
                body["tags"] = list(a["tags"])
            raw = self._call(op, lambda: c.put(f"/lke/clusters/{live.id}", data=body))
            return self._cluster_live(raw)
        if desired.kind == "pool":
            body = {}
            if "count" in changed:
                body["count"] = a["count"]
            if "autoscaler" in changed:
                body["autoscaler"] = _autoscaler_body(a)
                if not a["autoscaler"]["enabled"]:
                    body["count"] = a["count"]
            for field in ("labels", "taints", "tags"):
                if field in changed:
                    body[field] = a[field]
            if "firewall" in changed:
                fw = refs.get(address("firewall", a["firewall"])) if a["firewall"] else None
                body["firewall_id"] = int(fw.id) if fw is not None else None
            raw = self._call(
                op, lambda: c.put(f"/lke/clusters/{live.parent_id}/pools/{live.id}", data=body)
            )
            return self._pool_live(
                desired.name.split("/")[0], str(live.parent_id), raw, _fw_names(refs)
            )
        if desired.kind == "firewall":
            if changed & {"inbound", "outbound", "inbound_policy", "outbound_policy"}:
                self._call(op, lambda: Firewall(c, int(live.id)).update_rules(_rules_json(a)))
            raw = self._call(
                op,
                lambda: (
                    c.put(f"/networking/firewalls/{live.id}", data={"tags": list(a["tags"])})
                    if "tags" in changed
                    else c.get(f"/networking/firewalls/{live.id}")
                ),
            )
            return self._firewall_live(raw)
        if desired.kind == "vpc":
            raw = self._call(
                op, lambda: c.put(f"/vpcs/{live.id}", data={"description": a["description"]})
            )
            return self._vpc_live(raw)
        if desired.kind == "bucket":
            self.put_lifecycle(live, a["lifecycle"])
            return attrs.evolve(live, attrs={**live.attrs, "lifecycle": a["lifecycle"]})
        if desired.kind == "database":
            body = {}
            for field in ("type", "cluster_size"):
                if field in changed:
                    body[field] = a[field]
            if "allow_list" in changed:
                body["allow_list"] = list(a["allow_list"])
            if "subnet" in changed:
                if a["subnet"]:
                    subnet = refs[address("subnet", a["subnet"])]
                    body["private_network"] = {
                        "vpc_id": int(subnet.parent_id or 0),
                        "subnet_id": int(subnet.id),
                        "public_access": a["public_access"],
                    }
                else:
                    body["private_network"] = None
            raw = self._call(
                op, lambda: c.put(f"/databases/postgresql/instances/{live.id}", data=body)
            )
            return self._database_live(raw, _subnet_names(refs))
        raise LinodeApiError(f"{op}: {desired.kind} cannot be updated in place", operation=op)

    def restore(
        self, live_before: LiveResource, current: LiveResource, refs: Mapping[str, LiveResource]
    ) -> None:
        """Put back the attributes ``live_before`` had (rolling back an in-place update)."""
        before = Desired(
            live_before.kind,
            live_before.name,
            live_before.attrs,
            label=live_before.name.split("/")[-1],
        )
        fields = [k for k in live_before.attrs if live_before.attrs[k] != current.attrs.get(k)]
        if fields:
            self.update(before, current, fields, refs)

    # -- deleting -------------------------------------------------------------------------------

    def delete(self, live: LiveResource) -> None:
        """Delete ``live``; a resource already gone counts as deleted."""
        c = self.client
        path = {
            "cluster": f"/lke/clusters/{live.id}",
            "pool": f"/lke/clusters/{live.parent_id}/pools/{live.id}",
            "firewall": f"/networking/firewalls/{live.id}",
            "vpc": f"/vpcs/{live.id}",
            "subnet": f"/vpcs/{live.parent_id}/subnets/{live.id}",
            "bucket": f"/object-storage/buckets/{live.id}",
            "object_key": f"/object-storage/keys/{live.id}",
            "database": f"/databases/postgresql/instances/{live.id}",
        }[live.kind]
        self._call(f"delete {live.address}", lambda: c.delete(path), missing_ok=True)

    # -- readiness ------------------------------------------------------------------------------

    def wait_ready(self, live: LiveResource, *, timeout: float | None = None) -> dict[str, Secret]:
        """Wait until ``live`` is usable; returns secrets it yields then (a cluster's
        kubeconfig). Raises :class:`ReadinessTimeoutError` after ``timeout`` seconds."""
        from linode_api4 import ApiError  # noqa: PLC0415

        from aiaas_core import Secret  # noqa: PLC0415

        c = self.client
        limit = self.readiness_timeout if timeout is None else timeout
        deadline = self.clock.monotonic() + limit

        def until(what: str, check: Callable[[], bool]) -> None:
            while not check():
                if self.clock.monotonic() >= deadline:
                    raise ReadinessTimeoutError(
                        f"{live.address}: {what} not ready after {limit:g}s; it is kept, and "
                        "the run is rolled back"
                    )
                self.clock.sleep(self.poll_interval)

        if live.kind == "cluster":
            until(
                "cluster",
                lambda: (
                    self._call("poll cluster", lambda: c.get(f"/lke/clusters/{live.id}")).get(
                        "status"
                    )
                    == "ready"
                ),
            )
            until("node pools", lambda: self._pools_ready(live))
            kubeconfig: list[str] = []

            def have_config() -> bool:
                try:
                    raw = c.get(f"/lke/clusters/{live.id}/kubeconfig")
                except ApiError as exc:
                    if exc.status in (503, 404, 429, 502):
                        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
                        wait = parse_retry_after(headers.get("Retry-After"))
                        if wait and self.clock.monotonic() + wait < deadline:
                            self.clock.sleep(max(wait - self.poll_interval, 0.0))
                        return False
                    raise self._translate("get kubeconfig", exc) from None
                kubeconfig.append(raw["kubeconfig"])
                return True

            until("kubeconfig", have_config)
            return {"kubeconfig": Secret(kubeconfig[0])}
        if live.kind == "pool":
            until(
                "pool nodes",
                lambda: self._pool_ready(live),
            )
            return {}
        if live.kind == "database":
            until(
                "database",
                lambda: (
                    self._call(
                        "poll database", lambda: c.get(f"/databases/postgresql/instances/{live.id}")
                    ).get("status")
                    == "active"
                ),
            )
            creds = self._call(
                "get database credentials",
                lambda: c.get(f"/databases/postgresql/instances/{live.id}/credentials"),
            )
            return {"password": Secret(str(creds.get("password", "")))}
        return {}

    def _pools_ready(self, cluster: LiveResource) -> bool:
        c = self.client
        raw = self._call("poll pools", lambda: c.get(f"/lke/clusters/{cluster.id}/pools"))
        return all(_nodes_ready(p) for p in raw.get("data", []))

    def _pool_ready(self, pool: LiveResource) -> bool:
        c = self.client
        raw = self._call(
            "poll pool", lambda: c.get(f"/lke/clusters/{pool.parent_id}/pools/{pool.id}")
        )
        return _nodes_ready(raw)

    # -- preflight facts ------------------------------------------------------------------------

    def region(self, region: str) -> JSON | None:
        found: JSON | None = self._call(
            "get region", lambda: self.client.get(f"/regions/{region}"), missing_ok=True
        )
        return found

    def account_availability(self, region: str) -> JSON | None:
        found: JSON | None = self._call(
            "get account availability",
            lambda: self.client.get(f"/account/availability/{region}"),
            missing_ok=True,
        )
        return found

    def plan_availability(self, region: str) -> list[JSON]:
        raw = self._call(
            "get region availability",
            lambda: self.client.get(f"/regions/{region}/availability"),
            missing_ok=True,
        )
        if raw is None:
            return []
        return list(raw) if isinstance(raw, list) else list(raw.get("data", []))

    def linode_types(self) -> dict[str, JSON]:
        rows = self.list_all("list Linode types", self.client.linode.types)
        return {_raw(t)["id"]: _raw(t) for t in rows}

    def kubernetes_versions(self) -> list[str]:
        return [_raw(v)["id"] for v in self.list_all("list LKE versions", self.client.lke.versions)]

    def database_engines(self) -> list[str]:
        return [
            _raw(e)["id"]
            for e in self.list_all("list database engines", self.client.database.engines)
        ]

    def database_types(self) -> list[str]:
        return [
            _raw(t)["id"] for t in self.list_all("list database types", self.client.database.types)
        ]

    def bucket_quota(self, region: str) -> tuple[int, int] | None:
        """(limit, used) of the bucket quota of ``region``'s endpoint, when Linode reports one."""
        c = self.client
        rows = self._call("list object storage quotas", lambda: c.get("/object-storage/quotas"))
        for row in rows.get("data", []):
            endpoint = str(row.get("s3_endpoint", ""))
            if row.get("resource_metric") == "bucket" and endpoint.startswith(f"{region}-"):
                usage = self._call(
                    "get quota usage",
                    functools.partial(c.get, f"/object-storage/quotas/{row['quota_id']}/usage"),
                )
                return int(usage.get("quota_limit", row["quota_limit"])), int(
                    usage.get("usage") or 0
                )
        return None

    def key_quota(self) -> tuple[int, int] | None:
        c = self.client
        usage = self._call(
            "get key quota usage",
            lambda: c.get("/object-storage/global-quotas/obj-access-keys-per-account/usage"),
            missing_ok=True,
        )
        if not usage:
            return None
        return int(usage["quota_limit"]), int(usage.get("usage") or 0)

    # -- S3 lifecycle ---------------------------------------------------------------------------

    def _s3(self, bucket: LiveResource, access_key: str, secret_key: str) -> Any:
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        region = bucket.attrs["region"]
        endpoint = self.s3_endpoint_url(bucket)
        # A session per client: boto3's default session is not safe across threads.
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=self.request_timeout,
                read_timeout=self.request_timeout,
            ),
        )

    def s3_endpoint_url(self, bucket: LiveResource) -> str:
        """Where ``bucket``'s S3 calls go: ``obj_endpoint`` (``LINODE_OBJ_ENDPOINT``) when set;
        else, when ``base_url`` is not Linode's API (the emulator), that server's root (see
        :func:`api_s3_endpoint`); else the bucket's regional endpoint as Linode reports it
        (``https://us-ord-1.linodeobjects.com``)."""
        if self.obj_endpoint:
            return self.obj_endpoint
        derived = api_s3_endpoint(self.base_url)
        if derived is not None:
            return derived
        region = bucket.attrs["region"]
        return f"https://{bucket.raw.get('s3_endpoint') or region + '-1.linodeobjects.com'}"

    def _with_s3(self, bucket: LiveResource, write: bool, action: Callable[[Any], _T]) -> _T:
        if self.obj_credentials is not None:
            access, secret = self.obj_credentials
            return action(self._s3(bucket, access, secret.get_secret_value()))
        # No standing keys: a temporary key limited to this bucket, deleted afterwards.
        label = f"aiaas-tmp-{secrets.token_hex(4)}"
        grant = {
            "region": bucket.attrs["region"],
            "bucket_name": bucket.name,
            "permissions": "read_write" if write else "read_only",
        }
        c = self.client
        raw = self._fresh_key("create a temporary key", label, [grant])
        try:
            return action(self._s3(bucket, raw["access_key"], raw["secret_key"]))
        finally:
            self._call(
                "delete temporary key",
                lambda: c.delete(f"/object-storage/keys/{raw['id']}"),
                missing_ok=True,
            )

    def put_lifecycle(self, bucket: LiveResource, rules: list[JSON]) -> None:
        """Set (or, for no rules, remove) the bucket's lifecycle rules through the S3 API."""

        def act(s3: Any) -> None:
            if not rules:
                s3.delete_bucket_lifecycle(Bucket=bucket.name)
                return
            s3.put_bucket_lifecycle_configuration(
                Bucket=bucket.name, LifecycleConfiguration={"Rules": [_s3_rule(r) for r in rules]}
            )

        self._with_s3(bucket, True, act)

    def get_lifecycle(self, bucket: LiveResource) -> list[JSON]:
        """The bucket's lifecycle rules as the S3 API reports them (normalised)."""

        def act(s3: Any) -> list[JSON]:
            from botocore.exceptions import ClientError  # noqa: PLC0415

            try:
                got = s3.get_bucket_lifecycle_configuration(Bucket=bucket.name)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
                    return []
                raise
            return sorted((_rule_from_s3(r) for r in got.get("Rules", [])), key=lambda r: r["id"])

        return self._with_s3(bucket, False, act)


def _subnets_of(client: Any, vpc_id: int) -> Any:
    from linode_api4 import VPC  # noqa: PLC0415

    return VPC(client, vpc_id).subnets


def _pools_of(client: Any, cluster_id: int) -> Any:
    from linode_api4 import LKECluster  # noqa: PLC0415

    return LKECluster(client, cluster_id).pools


def _autoscaler_body(a: Mapping[str, Any]) -> JSON:
    scaler = a["autoscaler"]
    if scaler["enabled"]:
        return {"enabled": True, "min": scaler["min"], "max": scaler["max"]}
    return {"enabled": False, "min": a["count"], "max": a["count"]}


def _nodes_ready(pool: Mapping[str, Any]) -> bool:
    nodes = pool.get("nodes") or []
    return len(nodes) >= 1 and all(n.get("status") == "ready" for n in nodes)


def _pool_raw(pool: Any) -> JSON:
    raw = _raw(pool)
    if not raw and isinstance(pool, dict):
        raw = dict(pool)
    # The SDK turns nodes into objects in place; read them back as plain data.
    nodes = []
    for node in raw.get("nodes") or []:
        if isinstance(node, dict):
            nodes.append(node)
        else:
            nodes.append({"id": node.id, "instance_id": node.instance_id, "status": node.status})
    taints = []
    for taint in raw.get("taints") or []:
        if isinstance(taint, dict):
            taints.append(taint)
        else:
            taints.append({"key": taint.key, "value": taint.value, "effect": taint.effect})
    raw["nodes"] = nodes
    raw["taints"] = taints
    return raw


def _fw_names(refs: Mapping[str, LiveResource]) -> dict[str, str]:
    return {r.id: r.name for r in refs.values() if r.kind == "firewall"}


def _subnet_names(refs: Mapping[str, LiveResource]) -> dict[str, str]:
    return {r.id: r.name for r in refs.values() if r.kind == "subnet"}


def _s3_rule(rule: Mapping[str, Any]) -> JSON:
    out: JSON = {
        "ID": rule["id"],
        "Filter": {"Prefix": rule["prefix"]},
        "Status": "Enabled" if rule["enabled"] else "Disabled",
    }
    if rule["expiration_days"] is not None:
        out["Expiration"] = {"Days": rule["expiration_days"]}
    if rule["noncurrent_expiration_days"] is not None:
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule["noncurrent_expiration_days"]}
    if rule["abort_incomplete_multipart_days"] is not None:
        out["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": rule["abort_incomplete_multipart_days"]
        }
    return out


def _rule_from_s3(rule: Mapping[str, Any]) -> JSON:
    flt = rule.get("Filter") or {}
    prefix = flt.get("Prefix", rule.get("Prefix", "")) if isinstance(flt, dict) else ""
    return {
        "id": rule.get("ID", ""),
        "prefix": prefix or "",
        "enabled": rule.get("Status") == "Enabled",
        "expiration_days": (rule.get("Expiration") or {}).get("Days"),
        "noncurrent_expiration_days": (rule.get("NoncurrentVersionExpiration") or {}).get(
            "NoncurrentDays"
        ),
        "abort_incomplete_multipart_days": (rule.get("AbortIncompleteMultipartUpload") or {}).get(
            "DaysAfterInitiation"
        ),
    }
