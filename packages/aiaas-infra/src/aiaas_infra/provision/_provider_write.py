"""Changing the platform's Linode resources: creates (a lost answer is looked up, never blindly
re-sent), in-place updates, restores, deletes, waiting until a resource is ready, and a
bucket's lifecycle rules over S3 (with a temporary, bucket-scoped key when no standing
Object Storage credentials are configured).
"""

# linode_api4, boto3 and botocore ship no type information.

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from aiaas_infra._errors import LinodeApiError, ReadinessTimeoutError
from aiaas_infra._retry import parse_retry_after
from aiaas_infra.provision._provider_api import (
    _T,
    JSON,
    CreateOutcome,
    _raw,
    _rules_json,
    api_s3_endpoint,
)
from aiaas_infra.provision._provider_read import _fw_names, _pool_raw, _Reader, _subnet_names
from aiaas_infra.provision._resources import Desired, LiveResource, address

if TYPE_CHECKING:
    from aiaas_core import Secret

__all__: list[str] = []


class _Writer(_Reader):
    """Changing: create (never a blind re-send), update, restore, delete, waiting for readiness,
    and bucket lifecycle rules over S3."""

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


def _autoscaler_body(a: Mapping[str, Any]) -> JSON:
    scaler = a["autoscaler"]
    if scaler["enabled"]:
        return {"enabled": True, "min": scaler["min"], "max": scaler["max"]}
    return {"enabled": False, "min": a["count"], "max": a["count"]}


def _nodes_ready(pool: Mapping[str, Any]) -> bool:
    nodes = pool.get("nodes") or []
    return len(nodes) >= 1 and all(n.get("status") == "ready" for n in nodes)


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
