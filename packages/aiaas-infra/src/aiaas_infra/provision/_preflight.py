"""Preflight: can this account, in this region, take the plan? Checked before anything is made.

Linode has no general compute-quota endpoint, so preflight combines what it does have: region
capabilities (``/regions/{id}``), what the account may use there
(``/account/availability/{id}``), plan availability (``/regions/{id}/availability``), the plan
catalogue (GPU or not), LKE versions, database engines and types, Object Storage quotas (buckets
per endpoint, keys per account) and the documented limits the spec enforces. Every problem is
reported at once (:class:`~aiaas_infra.PreflightError`); nothing is created when there is one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiaas_infra._errors import PreflightProblem
from aiaas_infra.provision._resources import address

if TYPE_CHECKING:
    from aiaas_infra.provision._plan import Plan
    from aiaas_infra.provision._provider import LinodeProvider

__all__ = ["preflight"]


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return (0,)


def preflight(plan: Plan, provider: LinodeProvider) -> list[PreflightProblem]:
    """Every reason ``plan`` cannot be applied (empty when it can). Only reads."""
    problems: list[PreflightProblem] = []
    spec = plan.spec
    if not plan.has_changes:
        return problems

    def problem(code: str, subject: str, message: str) -> None:
        problems.append(PreflightProblem(code, subject, message))

    creating = {c.address for c in plan.changes if c.action in ("create", "replace")}
    kinds = {plan.desired[a].kind for a in creating if a in plan.desired}

    # -- region capabilities -------------------------------------------------------------------
    needs: dict[str, str] = {"Kubernetes": "the cluster"}
    if spec.firewall is not None:
        needs["Cloud Firewall"] = f"firewall {spec.firewall.label}"
    if spec.vpc is not None:
        needs["VPCs"] = f"vpc {spec.vpc.label}"
    if any(p.gpu for p in spec.cluster.pools):
        needs["GPU Linodes"] = "the GPU pools"
    if any(e.database is not None for e in spec.environments.values()):
        needs["Managed Databases"] = "the environment databases"
    regions: dict[str, set[str]] = {spec.region: set(needs)}
    for bucket in spec.object_storage.buckets:
        regions.setdefault(spec.bucket_region(bucket), set()).add("Object Storage")

    for region, wanted in sorted(regions.items()):
        info = provider.region(region)
        if info is None:
            problem(
                "REGION_UNKNOWN", region, "Linode has no such region; see `linode-cli regions list`"
            )
            continue
        if info.get("status") not in (None, "ok"):
            problem("REGION_UNAVAILABLE", region, f"the region's status is {info.get('status')!r}")
        have = set(info.get("capabilities") or [])
        for cap in sorted(wanted - have):
            what = needs.get(cap, "the buckets")
            problem(
                "REGION_CAPABILITY_MISSING",
                region,
                f"{region} does not offer {cap}, needed by {what}",
            )
        account = provider.account_availability(region)
        if account is not None:
            for cap in sorted(wanted & set(account.get("unavailable") or [])):
                problem(
                    "ACCOUNT_CAPABILITY_UNAVAILABLE",
                    region,
                    f"{cap} is not available to this account in {region}: ask Linode support",
                )

    # -- plans: catalogue, GPU placement, availability -----------------------------------------
    types = provider.linode_types()
    growing: set[str] = set()
    for change in plan.changes:
        if (change.kind == "pool" and change.action in ("create", "replace")) or (
            change.kind == "pool"
            and change.action == "update"
            and any(
                d.field in ("count", "autoscaler.max") and (d.after or 0) > (d.before or 0)
                for d in change.diffs
            )
        ):
            growing.add(change.address)
    users: dict[str, list[str]] = {}
    for env_name, env in spec.environments.items():
        for label in env.pools:
            users.setdefault(label, []).append(env_name)
    sold_out: set[str] = set()
    if growing:
        sold_out = {
            row["plan"]
            for row in provider.plan_availability(spec.region)
            if row.get("available") is False
        }
    for i, pool in enumerate(spec.cluster.pools):
        subject = f"cluster.pools[{i}] ({pool.label})"
        info = types.get(pool.type)
        if info is None:
            problem("PLAN_UNKNOWN", subject, f"there is no Linode plan {pool.type!r}")
            continue
        if int(info.get("gpus") or 0) > 0:
            others = [u for u in users.get(pool.label, []) if u != "system"]
            if others:
                problem(
                    "GPU_POOL_OUTSIDE_SYSTEM",
                    subject,
                    f"{pool.type} is a GPU plan; only the system environment may use it, not "
                    f"{', '.join(others)}",
                )
        addr = address("pool", f"{spec.cluster.label}/{pool.label}")
        if addr in growing and pool.type in sold_out:
            problem("PLAN_UNAVAILABLE", subject, f"{pool.type} is sold out in {spec.region}")

    # -- Kubernetes version -------------------------------------------------------------------
    versions = provider.kubernetes_versions()
    wanted_version = spec.cluster.kubernetes_version
    if wanted_version not in versions:
        problem(
            "K8S_VERSION_UNAVAILABLE",
            "cluster.kubernetes_version",
            f"LKE offers {', '.join(versions)}, not {wanted_version}",
        )
    cluster_change = plan.change(address("cluster", spec.cluster.label))
    if cluster_change is not None and cluster_change.action == "update":
        for diff in cluster_change.diffs:
            if diff.field == "k8s_version" and _version(str(diff.after)) < _version(
                str(diff.before)
            ):
                problem(
                    "K8S_DOWNGRADE",
                    "cluster.kubernetes_version",
                    f"LKE cannot downgrade {diff.before} to {diff.after}",
                )

    # -- databases ------------------------------------------------------------------------------
    if "database" in kinds or any(c.kind == "database" for c in plan.changes):
        engines = set(provider.database_engines())
        db_types = set(provider.database_types())
        for env_name, env in spec.environments.items():
            db = env.database
            if db is None:
                continue
            subject = f"environments.{env_name}.database"
            if not any(e == db.engine or e.startswith(db.engine + ".") for e in engines):
                problem("DB_ENGINE_UNAVAILABLE", subject, f"Linode offers no {db.engine}")
            if db.type not in db_types:
                problem("DB_TYPE_UNKNOWN", subject, f"{db.type} is not a database plan")
    for change in plan.changes:
        if change.kind != "database" or change.action != "update":
            continue
        for diff in change.diffs:
            if diff.field == "cluster_size" and (diff.after or 0) < (diff.before or 0):
                problem(
                    "DB_SHRINK",
                    change.address,
                    f"a database cluster cannot shrink from {diff.before} to {diff.after} nodes",
                )

    # -- replacements that would break a dependent ----------------------------------------------
    replaced = {c.address for c in plan.changes if c.action in ("replace", "delete")}
    for addr, live in plan.inventory.resources.items():
        if live.kind != "database" or addr in replaced:
            continue
        subnet = live.attrs.get("subnet")
        if subnet and address("subnet", str(subnet)) in replaced:
            problem(
                "SUBNET_IN_USE",
                address("subnet", str(subnet)),
                f"would be replaced or deleted while {addr} uses it; move the database first",
            )

    # -- object storage ---------------------------------------------------------------------------
    new_buckets: dict[str, int] = {}
    for change in plan.changes:
        if change.kind == "bucket" and change.action in ("create", "replace") and change.desired:
            region = change.desired.attrs["region"]
            new_buckets[region] = new_buckets.get(region, 0) + 1
        if change.kind == "bucket" and change.action == "delete" and change.live is not None:
            objects = int(change.live.raw.get("objects") or 0)
            if objects:
                problem(
                    "BUCKET_NOT_EMPTY",
                    change.address,
                    f"holds {objects} objects; Linode deletes only empty buckets: empty it first",
                )
    for region, count in sorted(new_buckets.items()):
        quota = provider.bucket_quota(region)
        if quota is not None:
            limit, used = quota
            if used + count > limit:
                problem(
                    "OBJ_BUCKET_QUOTA",
                    region,
                    f"{count} new bucket(s) need {used + count} of a {limit}-bucket quota "
                    f"({used} used)",
                )
    new_keys = sum(
        1 for c in plan.changes if c.kind == "object_key" and c.action in ("create", "replace")
    )
    lifecycle_writes = sum(
        1
        for c in plan.changes
        if c.kind == "bucket" and c.desired is not None and c.desired.attrs.get("lifecycle")
    )
    temp_keys = 1 if lifecycle_writes and provider.obj_credentials is None else 0
    if new_keys + temp_keys:
        quota = provider.key_quota()
        if quota is not None:
            limit, used = quota
            if used + new_keys + temp_keys > limit:
                problem(
                    "OBJ_KEY_QUOTA",
                    "object_storage.keys",
                    f"{new_keys + temp_keys} new key(s) need {used + new_keys + temp_keys} of a "
                    f"{limit}-key quota ({used} used)",
                )

    # -- labels held by resources this platform does not own ------------------------------------
    for change in plan.changes:
        if change.action != "create" or change.desired is None:
            continue
        if change.kind in ("cluster", "firewall") and _label_taken(
            provider, change.kind, change.desired.label
        ):
            problem(
                "LABEL_TAKEN",
                change.address,
                f"another {change.kind} (not tagged {spec.owner_tag}) already has this label",
            )
    return problems


def _label_taken(provider: LinodeProvider, kind: str, label: str) -> bool:
    c = provider.client
    flt = provider.filter_by({"label": label})
    if kind == "cluster":
        rows = provider.list_all("check cluster label", lambda: c.lke.clusters(flt))
    else:
        rows = provider.list_all("check firewall label", lambda: c.networking.firewalls(flt))
    return bool(rows)
