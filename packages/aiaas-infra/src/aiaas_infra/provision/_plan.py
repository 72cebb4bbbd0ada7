"""Plans: what applying a spec would change, field by field.

Each managed resource is compared with its live twin, matched by address (so node pools are
matched by label, never by position). The outcome per resource:

* ``create``: declared, not live (including a resource deleted out of band);
* ``update``: fields Linode can change in place differ;
* ``replace``: a field Linode cannot change differs (cluster region, pool type, VPC region,
  subnet range, bucket region, key grants, database region or engine), or its parent is replaced;
* ``delete``: live and managed (in state, or a pool of a managed cluster), no longer declared.

An enabled autoscaler owns a pool's ``count``: the count Linode reports is never a difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from aiaas_infra.provision._provider_api import Inventory, Scope
from aiaas_infra.provision._resources import (
    KINDS,
    REPLACE_FIELDS,
    STATE_ONLY_FIELDS,
    Desired,
    LiveResource,
    desired_resources,
    kind_of,
)
from aiaas_infra.spec._loader import spec_fingerprint
from aiaas_infra.spec._model import PlatformSpec

if TYPE_CHECKING:
    from aiaas_infra.provision._provider import LinodeProvider
    from aiaas_infra.provision._state import StateSnapshot, StateStore

__all__ = ["Change", "FieldDiff", "Plan", "make_plan", "plan", "rollback_plan"]

Action = Literal["create", "update", "replace", "delete"]


@attrs.frozen
class FieldDiff:
    """One field that differs: its dotted name, the live value and the declared value."""

    field: str
    before: Any
    after: Any
    forces_replacement: bool = False


@attrs.frozen
class Change:
    """One planned change. ``via`` names the parent whose create/replace/delete carries it."""

    action: Action
    address: str
    diffs: tuple[FieldDiff, ...] = ()
    desired: Desired | None = attrs.field(default=None, repr=False)
    live: LiveResource | None = attrs.field(default=None, repr=False)
    via: str | None = None
    reason: str = ""
    environments: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return kind_of(self.address)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "address": self.address,
            "kind": self.kind,
            "environments": list(self.environments),
            "diffs": [
                {
                    "field": d.field,
                    "before": d.before,
                    "after": d.after,
                    "forces_replacement": d.forces_replacement,
                }
                for d in self.diffs
            ],
        }
        if self.via:
            out["via"] = self.via
        if self.reason:
            out["reason"] = self.reason
        return out


@attrs.frozen
class Plan:
    """The changes that would make Linode match ``spec``, and everything needed to apply them."""

    spec: PlatformSpec
    changes: tuple[Change, ...]
    desired: Mapping[str, Desired] = attrs.field(repr=False)
    inventory: Inventory = attrs.field(repr=False)
    state_serial: int | None = None
    warnings: tuple[str, ...] = ()
    api_calls: int = 0
    destroy: bool = False

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def summary(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "replace": 0, "delete": 0}
        for change in self.changes:
            counts[change.action] += 1
        return counts

    def by_action(self, action: Action) -> list[Change]:
        return [c for c in self.changes if c.action == action]

    def change(self, address: str) -> Change | None:
        return next((c for c in self.changes if c.address == address), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "platform": self.spec.name,
            "spec_fingerprint": spec_fingerprint(self.spec),
            "state_serial": self.state_serial,
            "has_changes": self.has_changes,
            "destroy": self.destroy,
            "summary": self.summary(),
            "changes": [c.to_dict() for c in self.changes],
            "warnings": list(self.warnings),
            "api_calls": self.api_calls,
        }


def _diff(field: str, before: Any, after: Any, kind: str) -> list[FieldDiff]:
    forces = field.split(".", maxsplit=1)[0] in REPLACE_FIELDS.get(kind, frozenset())
    if isinstance(before, Mapping) and isinstance(after, Mapping) and field in ("autoscaler",):
        return [
            FieldDiff(f"{field}.{key}", before.get(key), after.get(key), forces)
            for key in sorted({*before, *after})
            if before.get(key) != after.get(key)
        ]
    return [FieldDiff(field, before, after, forces)]


def compare(desired: Desired, live_attrs: Mapping[str, Any]) -> list[FieldDiff]:
    """Field-level differences between the declared and the live attributes."""
    diffs: list[FieldDiff] = []
    autoscaled = desired.kind == "pool" and desired.attrs["autoscaler"]["enabled"]
    for field, after in desired.attrs.items():
        if field == "count" and autoscaled:
            continue  # the autoscaler owns count
        before = live_attrs.get(field)
        if before != after:
            diffs.extend(_diff(field, before, after, desired.kind))
    if (
        desired.kind == "cluster"
        and live_attrs.get("high_availability")
        and not desired.attrs["high_availability"]
    ):
        # LKE cannot turn a highly available control plane off.
        diffs = [
            attrs.evolve(d, forces_replacement=True) if d.field == "high_availability" else d
            for d in diffs
        ]
    return diffs


def scope_for(
    spec: PlatformSpec, desired: Mapping[str, Desired], state: StateSnapshot | None
) -> Scope:
    labels: dict[str, set[str]] = {k: set() for k in KINDS}
    for d in desired.values():
        labels[d.kind].add(d.name.split("/")[0] if d.kind in ("pool", "subnet") else d.name)
    if state is not None:
        for rec in state.resources.values():
            name = rec.name.split("/")[0] if rec.kind in ("pool", "subnet") else rec.name
            labels.setdefault(rec.kind, set()).add(name)
    # Pools live in clusters, subnets in VPCs: reading the parent reads them.
    labels["cluster"] |= labels.pop("pool", set())
    labels["vpc"] |= labels.pop("subnet", set())
    return Scope(spec.owner_tag, {k: frozenset(v) for k, v in labels.items() if v})


def make_plan(
    spec: PlatformSpec,
    inventory: Inventory,
    state: StateSnapshot | None = None,
    *,
    api_calls: int = 0,
    destroy: bool = False,
) -> Plan:
    """The plan from an inventory already read (see :func:`plan`). With ``destroy``, nothing
    is declared: every managed resource is deleted."""
    desired = {} if destroy else desired_resources(spec)
    live = inventory.resources
    records = state.resources if state is not None else {}
    changes: dict[str, Change] = {}
    warnings: list[str] = []

    for addr, d in desired.items():
        current = live.get(addr)
        if current is None:
            reason = "deleted outside aiaas-infra" if addr in records else ""
            changes[addr] = Change(
                "create", addr, desired=d, reason=reason, environments=d.environments
            )
            continue
        live_attrs = dict(current.attrs)
        for field in STATE_ONLY_FIELDS.get(d.kind, ()):
            rec = records.get(addr)
            live_attrs[field] = rec.attrs.get(field) if rec is not None else None
        if STATE_ONLY_FIELDS.get(d.kind):
            current = attrs.evolve(current, attrs=live_attrs)  # what a rollback restores
        diffs = compare(d, live_attrs)
        if not diffs:
            continue
        forced = [x.field for x in diffs if x.forces_replacement]
        if forced:
            changes[addr] = Change(
                "replace",
                addr,
                tuple(diffs),
                d,
                current,
                reason=f"Linode cannot change {', '.join(forced)} in place",
                environments=d.environments,
            )
        else:
            changes[addr] = Change(
                "update", addr, tuple(diffs), d, current, environments=d.environments
            )

    # Children follow a parent that is created or replaced. Pools are made by their cluster's
    # create (LKE needs one) and go with its delete: they are carried ``via`` the cluster.
    # Subnets of a new VPC are created (and of a replaced VPC replaced) on their own.
    for addr, d in desired.items():
        parent = d.parent
        if parent is None or parent not in changes:
            continue
        parent_action = changes[parent].action
        carried = parent if d.kind == "pool" else None
        current = live.get(addr)
        if parent_action == "create":
            changes[addr] = Change(
                "create", addr, desired=d, via=carried, environments=d.environments
            )
        elif parent_action == "replace":
            if current is None:
                changes[addr] = Change(
                    "create", addr, desired=d, via=carried, environments=d.environments
                )
                continue
            old = changes.get(addr)
            changes[addr] = Change(
                "replace",
                addr,
                old.diffs if old is not None else (),
                d,
                current,
                via=carried,
                reason=f"its parent {parent} is replaced",
                environments=d.environments,
            )

    for addr, current in live.items():
        if addr in desired:
            continue
        parent = _parent_address(current)
        parent_change = changes.get(parent) if parent is not None else None
        via = (
            parent
            if current.kind == "pool"
            and parent is not None
            and parent in live
            and (
                parent not in desired
                or (parent_change is not None and parent_change.action == "replace")
            )
            else None
        )
        changes[addr] = Change(
            "delete",
            addr,
            live=current,
            via=via,
            reason="no longer declared",
            environments=records[addr].environments if addr in records else (),
        )
    for dup in inventory.duplicates:
        key = f"{dup.address}#{dup.id}"
        changes[key] = Change("delete", key, live=dup, reason="duplicate of a managed resource")
        warnings.append(f"{dup.address} exists twice (id {dup.id}); the extra copy is deleted")

    warnings.extend(
        f"{change.address} will be {change.action}d: its data is lost"
        for change in changes.values()
        if change.kind == "database" and change.action in ("replace", "delete")
    )

    order: dict[str, int] = {k: i for i, k in enumerate(KINDS)}
    ranked = sorted(
        changes.values(),
        key=lambda c: (order.get(c.kind, 99), c.address),
    )
    return Plan(
        spec=spec,
        changes=tuple(ranked),
        desired=desired,
        inventory=inventory,
        state_serial=state.serial if state is not None else None,
        warnings=tuple(warnings),
        api_calls=api_calls,
        destroy=destroy,
    )


def _parent_address(live: LiveResource) -> str | None:
    if live.kind == "pool":
        return f"cluster.{live.name.split('/')[0]}"
    if live.kind == "subnet":
        return f"vpc.{live.name.split('/')[0]}"
    return None


def plan(
    spec: PlatformSpec,
    provider: LinodeProvider,
    state: StateSnapshot | None = None,
    *,
    destroy: bool = False,
) -> Plan:
    """Read the live resources in scope and compare them with ``spec``.

    Reading costs one list call per kind in use, plus one per cluster (its pools) and per VPC
    (its subnets), plus pages: a no-op plan never costs more calls than it manages resources.
    """
    from opentelemetry import trace  # noqa: PLC0415

    tracer = trace.get_tracer("aiaas_infra")
    with tracer.start_as_current_span("infra.plan") as span:
        desired = desired_resources(spec)
        before = provider.calls
        inventory = provider.inventory(scope_for(spec, desired, state))
        result = make_plan(
            spec, inventory, state, api_calls=provider.calls - before, destroy=destroy
        )
        span.set_attribute("aiaas.platform", spec.name)
        span.set_attribute("aiaas.plan.changes", len(result.changes))
        span.set_attribute("aiaas.plan.api_calls", result.api_calls)
        return result


def rollback_plan(store: StateStore, provider: LinodeProvider, to: str | int) -> Plan:
    """A plan that brings the platform back to what snapshot ``to`` applied.

    The snapshot's own spec is planned against the live resources and the latest state, so
    applying it restores the known-good configuration (resources made since are deleted).
    """
    from aiaas_infra.spec._loader import spec_from_dict  # noqa: PLC0415

    target = store.get(to)
    spec = spec_from_dict(target.spec, source=f"snapshot {target.id}")
    return plan(spec, provider, store.latest())
