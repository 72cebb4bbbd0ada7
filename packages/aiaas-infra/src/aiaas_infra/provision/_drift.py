"""Drift: has anyone changed the platform's Linode resources behind the tool's back?

Live resources are compared with what was last applied (the latest state snapshot; for a
resource the state does not know yet, with the spec). The report's level follows documented
rules (see :data:`RULES`):

* ``major`` -- a managed resource is gone (e.g. a firewall deleted in Cloud Manager), a field
  Linode cannot change in place differs (it was recreated elsewhere), or a security field
  differs: firewall rules or policies, a pool's firewall, a database's allow list or public
  access;
* ``minor`` -- any other field differs (labels, taints, tags, a pool's count when no autoscaler
  owns it, the Kubernetes version, a description, a database's size), or an unmanaged extra
  (a hand-made pool in a managed cluster, a duplicate);
* ``none`` -- nothing differs. A pool's node count moved by its enabled autoscaler, within its
  bounds, is never drift. Spec edits not yet applied are *pending*, not drift.

Reports are JSON and Markdown, stored with the state (``reports/drift/``) and kept 90 days.
Environments hit by major drift move ``ready -> degraded``; the next apply repairs them
(``degraded -> recovering -> ready``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from aiaas_infra.provision._events import Emitter, EnvironmentStatus, StatusLedger, default_actor
from aiaas_infra.provision._plan import make_plan, scope_for
from aiaas_infra.provision._resources import REPLACE_FIELDS, desired_resources
from aiaas_infra.provision._state import iso, utcnow

if TYPE_CHECKING:
    from aiaas_infra.provision._provider import LinodeProvider
    from aiaas_infra.provision._state import StateSnapshot, StateStore
    from aiaas_infra.spec._model import PlatformSpec

__all__ = ["RULES", "DriftFinding", "DriftReport", "detect_drift"]

Level = Literal["none", "minor", "major"]

#: Fields whose drift is a security matter (major), by kind.
SECURITY_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "firewall": frozenset({"inbound", "outbound", "inbound_policy", "outbound_policy"}),
    "pool": frozenset({"firewall"}),
    "database": frozenset({"allow_list", "public_access", "subnet"}),
}

RULES: Final[Mapping[str, str]] = {
    "missing": "major: a managed resource no longer exists",
    "replace_field": "major: a field Linode cannot change in place differs",
    "security": "major: firewall rules or policies, a pool's firewall, a database's allow list, "
    "network or public access differ",
    "changed": "minor: another field differs",
    "unmanaged": "minor: an extra resource appeared where the platform manages (a hand-made "
    "pool, a duplicate)",
    "autoscaled": "none: a pool's count moved by its enabled autoscaler within its bounds",
    "pending": "none: the spec was edited but not yet applied (shown, not drift)",
}

_RANK: Final = {"none": 0, "minor": 1, "major": 2}


@attrs.frozen
class DriftFinding:
    address: str
    category: Literal["missing", "replace_field", "security", "changed", "unmanaged"]
    severity: Literal["minor", "major"]
    message: str
    field: str | None = None
    expected: Any = None
    actual: Any = None
    environments: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class DriftReport:
    id: str
    platform: str
    level: Level
    checked_at: str
    findings: tuple[DriftFinding, ...]
    environments: Mapping[str, Level]
    pending: tuple[str, ...] = ()
    state_serial: int | None = None
    api_calls: int = 0
    stored_as: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "id": self.id,
            "platform": self.platform,
            "level": self.level,
            "checked_at": self.checked_at,
            "state_serial": self.state_serial,
            "environments": dict(self.environments),
            "findings": [f.to_dict() for f in self.findings],
            "pending": list(self.pending),
            "api_calls": self.api_calls,
            "rules": dict(RULES),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    def to_markdown(self) -> str:
        lines = [
            f"# Drift report: {self.platform}",
            "",
            f"- **Level:** `{self.level}`",
            f"- **Checked at:** {self.checked_at}",
            f"- **State snapshot:** {'none' if self.state_serial is None else self.state_serial}",
            "",
            "| environment | drift |",
            "| --- | --- |",
            *(f"| {env} | `{level}` |" for env, level in sorted(self.environments.items())),
            "",
        ]
        if self.findings:
            lines += [
                "| severity | resource | what | expected | actual |",
                "| --- | --- | --- | --- | --- |",
            ]
            for f in self.findings:
                lines.append(
                    f"| {f.severity} | `{f.address}` | {_md(f.message)} | "
                    f"{_md(_short(f.expected))} | {_md(_short(f.actual))} |"
                )
        else:
            lines.append("No drift: every managed resource matches what was applied.")
        if self.pending:
            lines += ["", "Pending spec changes (not drift; run `aiaas-infra plan`):", ""]
            lines += [f"- `{p}`" for p in self.pending]
        lines += ["", "Rules:", ""] + [f"- `{k}`: {v}" for k, v in RULES.items()]
        return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    if value is None:
        return "-"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def detect_drift(
    spec: PlatformSpec,
    provider: LinodeProvider,
    *,
    store: StateStore | None = None,
    state: StateSnapshot | None = None,
    check_lifecycle: bool = False,
    record: bool = True,
    actor: str | None = None,
    now: datetime | None = None,
) -> DriftReport:
    """Compare live resources with the last apply; store the report and move degraded
    environments when ``record`` (and a ``store``) is given."""
    snapshot = state if state is not None else (store.latest() if store is not None else None)
    desired = desired_resources(spec)
    before_calls = provider.calls
    inventory = provider.inventory(scope_for(spec, desired, snapshot))
    live = inventory.resources
    records = snapshot.resources if snapshot is not None else {}
    all_envs = tuple(sorted(spec.environments))
    findings: list[DriftFinding] = []

    def envs_of(addr: str) -> tuple[str, ...]:
        if addr in desired and desired[addr].environments:
            return desired[addr].environments
        rec = records.get(addr)
        if rec is not None and rec.environments:
            return rec.environments
        return all_envs

    # Reference: what was applied (state), else what is declared (spec).
    reference: dict[str, tuple[str, Mapping[str, Any]]] = {
        addr: (rec.kind, rec.attrs) for addr, rec in records.items()
    }
    for addr, d in desired.items():
        reference.setdefault(addr, (d.kind, d.attrs))

    for addr, (kind, expected) in sorted(reference.items()):
        current = live.get(addr)
        if current is None:
            if addr in records:
                parent = addr.split(".", 1)[1].split("/")[0]
                if kind == "pool" and f"cluster.{parent}" not in live:
                    continue  # reported once, at its cluster
                if kind == "subnet" and f"vpc.{parent}" not in live:
                    continue
                findings.append(
                    DriftFinding(
                        addr,
                        "missing",
                        "major",
                        f"{kind} {addr.split('.', 1)[1]} (id {records[addr].id}) no longer exists",
                        expected=records[addr].id,
                        environments=envs_of(addr),
                    )
                )
            continue
        autoscaled = kind == "pool" and bool((expected.get("autoscaler") or {}).get("enabled"))
        for field, want in expected.items():
            if field == "lifecycle":
                continue  # API v4 cannot show it; see check_lifecycle
            have = current.attrs.get(field)
            if field == "count" and autoscaled:
                scaler = expected["autoscaler"]
                if isinstance(have, int) and scaler["min"] <= have <= scaler["max"]:
                    continue
            if have == want:
                continue
            if field.split(".")[0] in REPLACE_FIELDS.get(kind, frozenset()):
                category, severity = "replace_field", "major"
            elif field in SECURITY_FIELDS.get(kind, frozenset()):
                category, severity = "security", "major"
            else:
                category, severity = "changed", "minor"
            findings.append(
                DriftFinding(
                    addr,
                    category,  # type: ignore[arg-type]
                    severity,  # type: ignore[arg-type]
                    f"{field} changed outside aiaas-infra",
                    field=field,
                    expected=want,
                    actual=have,
                    environments=envs_of(addr),
                )
            )
        if check_lifecycle and kind == "bucket" and expected.get("lifecycle") is not None:
            actual = provider.get_lifecycle(current)
            if actual != expected["lifecycle"]:
                findings.append(
                    DriftFinding(
                        addr,
                        "changed",
                        "minor",
                        "lifecycle rules changed outside aiaas-infra",
                        field="lifecycle",
                        expected=expected["lifecycle"],
                        actual=actual,
                        environments=envs_of(addr),
                    )
                )

    for addr, current in sorted(live.items()):
        if addr not in reference:
            findings.append(
                DriftFinding(
                    addr,
                    "unmanaged",
                    "minor",
                    f"{current.kind} {current.name} (id {current.id}) is not managed here",
                    actual=current.id,
                    environments=envs_of(addr),
                )
            )
    findings.extend(
        DriftFinding(
            f"{dup.address}#{dup.id}",
            "unmanaged",
            "minor",
            f"a second {dup.kind} labelled {dup.name} exists (id {dup.id})",
            actual=dup.id,
            environments=envs_of(dup.address),
        )
        for dup in inventory.duplicates
    )

    pending: list[str] = []
    if snapshot is not None:
        reference_plan = make_plan(spec, inventory, snapshot)
        drifted = {f.address for f in findings}
        pending = [c.address for c in reference_plan.changes if c.address not in drifted]

    per_env: dict[str, Level] = dict.fromkeys(all_envs, "none")
    for f in findings:
        for env in f.environments:
            if env in per_env and _RANK[f.severity] > _RANK[per_env[env]]:
                per_env[env] = f.severity
    level: Level = max(per_env.values(), key=lambda v: _RANK[v], default="none")
    if findings and level == "none":  # findings outside any declared environment
        level = max((f.severity for f in findings), key=lambda v: _RANK[v])
    moment = now or utcnow()
    report = DriftReport(
        id=uuid.uuid4().hex[:12],
        platform=spec.name,
        level=level,
        checked_at=iso(moment),
        findings=tuple(findings),
        environments=per_env,
        pending=tuple(pending),
        state_serial=snapshot.serial if snapshot is not None else None,
        api_calls=provider.calls - before_calls,
    )
    emitter = Emitter(uuid.uuid4().hex, actor or default_actor(), spec.name)
    if record and store is not None:
        keys = store.write_report(
            "drift",
            moment,
            {"json": report.to_json().encode(), "md": report.to_markdown().encode()},
        )
        report = attrs.evolve(report, stored_as=tuple(keys))
        ledger = StatusLedger(store)
        for env, env_level in per_env.items():
            if env_level == "major" and ledger.status(env) == EnvironmentStatus.READY:
                ledger.move(env, EnvironmentStatus.DEGRADED, reason="major drift", emitter=emitter)
        ledger.save()
    emitter.emit(
        "infra.drift.checked",
        message=f"drift {spec.name}: {level} ({len(findings)} findings)",
        level=30 if level != "none" else 20,
        drift_level=level,
        findings=len(findings),
        environments=dict(per_env),
        api_calls=report.api_calls,
    )
    return report
