"""Apply: carry a plan out in dependency order, with bounded concurrency and rollback.

Steps run in two phases. Phase 1 makes everything new and changes things in place (creates
and updates, in dependency order, ``concurrency`` at a time, each waiting for readiness: a
cluster until it is ready, its nodes are ready and its kubeconfig is available; a pool until its
nodes are ready; a database until it is active). Phase 2 does what cannot be undone: deletes,
and replacements (the old resource is deleted, then the new one made).

If a step fails, nothing new starts, running steps finish, and the run is rolled back: what it
created is deleted (including a create whose answer was lost: it is looked up by tag and label),
what it changed in place is changed back. Pre-existing resources are left as they were -- except
those phase 2 had already deleted, which the result lists as not restorable. The result says
what was done and undone; a snapshot is written either way (``outcome`` tells which).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Literal

import attrs

from aiaas_core import AiaasError
from aiaas_infra._errors import PreflightError
from aiaas_infra.provision._events import (
    Emitter,
    EnvironmentStatus,
    EventSink,
    StatusLedger,
    default_actor,
)
from aiaas_infra.provision._plan import Change, Plan, scope_for
from aiaas_infra.provision._preflight import preflight
from aiaas_infra.provision._provider_api import fingerprint
from aiaas_infra.provision._resources import Desired, LiveResource, address
from aiaas_infra.provision._state import (
    ResourceRecord,
    StateSnapshot,
    StateStore,
    Transition,
    iso,
    utcnow,
)
from aiaas_infra.spec._loader import spec_fingerprint, spec_to_dict

if TYPE_CHECKING:
    from aiaas_core import Secret
    from aiaas_infra.provision._provider import LinodeProvider

__all__ = ["ApplyError", "ApplyResult", "StepRecord", "apply"]

Outcome = Literal["applied", "no_changes", "rolled_back", "partial"]
_Op = Literal["create", "update", "delete", "destroy"]


@attrs.frozen
class StepRecord:
    """One thing apply (or its rollback) did to one resource."""

    address: str
    action: str
    outcome: Literal["done", "failed", "skipped"]
    resource_id: str | None = None
    duration_s: float = 0.0
    error: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class ApplyResult:
    """What an apply did. ``secrets`` holds the secrets Linode returned (a key's secret, a
    cluster's kubeconfig, a database password): hand them on, never log them."""

    run_id: str
    outcome: Outcome
    steps: list[StepRecord] = attrs.field(factory=list)
    rollback: list[StepRecord] = attrs.field(factory=list)
    secrets: dict[str, dict[str, Secret]] = attrs.field(factory=dict, repr=False)
    snapshot: StateSnapshot | None = attrs.field(default=None, repr=False)
    error: str | None = None
    duration_s: float = 0.0
    api_calls: int = 0
    plan_summary: dict[str, int] = attrs.field(factory=dict)
    transitions: list[Transition] = attrs.field(factory=list)
    unrestorable: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome in ("applied", "no_changes")

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "outcome": self.outcome,
            "error": self.error,
            "duration_s": round(self.duration_s, 3),
            "api_calls": self.api_calls,
            "plan_summary": self.plan_summary,
            "steps": [s.to_dict() for s in self.steps],
            "rollback": [s.to_dict() for s in self.rollback],
            "unrestorable": self.unrestorable,
            "snapshot": self.snapshot.id if self.snapshot is not None else None,
            "environments": {t.environment: t.to_status for t in self.transitions},
            "secrets": {a: sorted(s) for a, s in self.secrets.items()},
        }


class ApplyError(AiaasError):
    """An apply failed. ``result`` records what was done and what the rollback undid."""

    code = "APPLY_FAILED"
    title = "Apply failed"

    def __init__(
        self, message: str, *, result: ApplyResult, cause: BaseException | None = None
    ) -> None:
        self.result = result
        self.cause = cause
        super().__init__(message)


@attrs.define
class _Step:
    op: _Op
    change: Change
    deps: set[str] = attrs.field(factory=set)

    @property
    def key(self) -> str:
        return f"{self.op}:{self.change.address}"


def _live_deps(live: LiveResource) -> set[str]:
    """Addresses a live resource depends on (it must go before them)."""
    out: set[str] = set()
    if live.kind == "pool":
        out.add(address("cluster", live.name.split("/")[0]))
        if live.attrs.get("firewall") and not str(live.attrs["firewall"]).startswith("#"):
            out.add(address("firewall", live.attrs["firewall"]))
    elif live.kind == "subnet":
        out.add(address("vpc", live.name.split("/")[0]))
    elif live.kind == "object_key":
        out.update(address("bucket", g["bucket"]) for g in live.attrs.get("buckets", []))
    elif live.kind == "database" and live.attrs.get("subnet"):
        out.add(address("subnet", live.attrs["subnet"]))
    elif live.kind == "cluster":
        pass
    return out


def build_steps(plan: Plan) -> tuple[list[_Step], list[_Step]]:
    """Phase 1 (creates and in-place updates) and phase 2 (deletes and replacements)."""
    steps: dict[str, _Step] = {}
    for change in plan.changes:
        if change.via is not None:
            continue  # carried by its parent's step
        if change.action == "create":
            steps[f"create:{change.address}"] = _Step("create", change)
        elif change.action == "update":
            steps[f"update:{change.address}"] = _Step("update", change)
        elif change.action == "delete":
            steps[f"destroy:{change.address}"] = _Step("destroy", change)
        else:  # replace
            steps[f"destroy:{change.address}"] = _Step("destroy", change)
            steps[f"create:{change.address}"] = _Step("create", change)

    making = {s.change.address: key for key, s in steps.items() if s.op in ("create", "update")}
    for key, step in steps.items():
        change = step.change
        if step.op in ("create", "update") and change.desired is not None:
            for dep in change.desired.depends_on:
                if dep in making and making[dep] != key:
                    step.deps.add(making[dep])
            if step.op == "create" and f"destroy:{change.address}" in steps:
                step.deps.add(f"destroy:{change.address}")
    # A resource is destroyed after everything that depends on it is destroyed.
    for key, step in steps.items():
        if step.op != "destroy" or step.change.live is None:
            continue
        base = step.change.address.split("#")[0]
        for other_key, other in steps.items():
            if (
                other.op == "destroy"
                and other.change.live is not None
                and other_key != key
                and base in _live_deps(other.change.live)
            ):
                step.deps.add(other_key)

    destructive = {k for k, s in steps.items() if s.op == "destroy"}
    late = set(destructive)
    grew = True
    while grew:
        grew = False
        for key, step in steps.items():
            if key not in late and step.deps & late:
                late.add(key)
                grew = True
    phase1 = [s for k, s in steps.items() if k not in late]
    phase2 = [s for k, s in steps.items() if k in late]
    return phase1, phase2


class _Run:
    def __init__(
        self,
        plan: Plan,
        provider: LinodeProvider,
        emitter: Emitter,
        *,
        concurrency: int,
        readiness_timeout: float | None,
    ) -> None:
        self.plan = plan
        self.provider = provider
        self.emitter = emitter
        self.concurrency = max(1, concurrency)
        self.readiness_timeout = readiness_timeout
        self.refs: dict[str, LiveResource] = dict(plan.inventory.resources)
        self.lock = threading.Lock()
        self.journal: list[tuple[str, Any, Any]] = []
        self.records: list[StepRecord] = []
        self.secrets: dict[str, dict[str, Secret]] = {}
        self.done: set[str] = set()
        self.error: BaseException | None = None
        self.failed_step: str | None = None
        self.destroyed: list[str] = []
        self.uncertain: dict[str, Desired] = {}

    # -- one step -------------------------------------------------------------------------------

    def _refs(self) -> dict[str, LiveResource]:
        with self.lock:
            return dict(self.refs)

    def _note(self, kind: str, a: Any, b: Any = None) -> None:
        with self.lock:
            self.journal.append((kind, a, b))

    def run_step(self, step: _Step) -> None:
        change = step.change
        started = time.monotonic()
        self.emitter.emit(
            "infra.step.start",
            address=change.address,
            action=step.op,
            environments=list(change.environments),
        )
        resource_id: str | None = None
        note = ""
        if step.op == "create":
            desired = change.desired
            assert desired is not None
            children = [
                c.desired
                for c in self.plan.changes
                if c.via == change.address
                and c.desired is not None
                and c.action in ("create", "replace")
            ]
            self._note("attempt", desired)
            outcome = self.provider.create(desired, self._refs(), children=children)
            made = outcome.resources
            with self.lock:
                for live in made:
                    self.refs[live.address] = live
            self._note("created", made[0], desired)
            resource_id = made[0].id
            if outcome.uncertain:
                with self.lock:
                    self.uncertain[change.address] = desired
            if outcome.adopted:
                note = "adopted: made by an earlier attempt whose answer was lost"
            found_secrets = dict(outcome.secrets)
            if desired.kind in ("cluster", "pool", "database"):
                self.emitter.emit("infra.step.wait", address=change.address, what="readiness")
                found_secrets.update(
                    self.provider.wait_ready(made[0], timeout=self.readiness_timeout)
                )
                if desired.kind == "cluster":
                    self._refresh_pools(made[0])
            if found_secrets:
                with self.lock:
                    self.secrets[change.address] = found_secrets
        elif step.op == "update":
            wanted, before = change.desired, change.live
            assert wanted is not None
            assert before is not None
            fields = {d.field.split(".")[0] for d in change.diffs}
            self._note("updating", before, wanted)
            updated = self.provider.update(wanted, before, fields, self._refs())
            with self.lock:
                self.refs[change.address] = updated
            resource_id = updated.id
            grows = wanted.kind == "pool" and any(
                d.field in ("count", "autoscaler.min") and (d.after or 0) > (d.before or 0)
                for d in change.diffs
            )
            if grows:
                self.emitter.emit("infra.step.wait", address=change.address, what="new nodes")
                self.provider.wait_ready(updated, timeout=self.readiness_timeout)
        else:  # destroy (a delete, or the first half of a replacement)
            gone = change.live
            assert gone is not None
            self.provider.delete(gone)
            self._note("destroyed", gone)
            with self.lock:
                self.destroyed.append(change.address)
                if change.action == "delete":
                    self.refs.pop(change.address, None)
                    if gone.kind == "cluster":
                        for addr in [a for a in self.refs if a.startswith(f"pool.{gone.name}/")]:
                            self.refs.pop(addr)
            resource_id = gone.id
        duration = time.monotonic() - started
        with self.lock:
            self.records.append(
                StepRecord(
                    change.address, step.op, "done", resource_id, round(duration, 3), note=note
                )
            )
        self.emitter.emit(
            "infra.step.finish",
            address=change.address,
            action=step.op,
            resource_id=resource_id,
            duration_s=round(duration, 3),
            environments=list(change.environments),
        )

    def _refresh_pools(self, cluster: LiveResource) -> None:
        pools = self.provider.pools(cluster, self._refs())
        with self.lock:
            for live in pools:
                self.refs[live.address] = live

    # -- a phase --------------------------------------------------------------------------------

    def run_phase(self, steps: list[_Step]) -> bool:
        pending = {s.key: s for s in steps}
        phase_keys = set(pending)
        running: dict[Future[None], _Step] = {}
        with ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="aiaas-apply"
        ) as pool:
            while pending or running:
                if self.error is None:
                    for key, step in list(pending.items()):
                        if len(running) >= self.concurrency:
                            break
                        if all(d in self.done or d not in phase_keys for d in step.deps):
                            del pending[key]
                            running[pool.submit(self.run_step, step)] = step
                if not running:
                    break
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    step = running.pop(fut)
                    exc = fut.exception()
                    if exc is None:
                        with self.lock:
                            self.done.add(step.key)
                        continue
                    with self.lock:
                        self.records.append(
                            StepRecord(step.change.address, step.op, "failed", error=_safe(exc))
                        )
                        if self.error is None:
                            self.error = exc
                            self.failed_step = step.key
                    self.emitter.emit(
                        "infra.step.failure",
                        level=40,
                        address=step.change.address,
                        action=step.op,
                        error=_safe(exc),
                        error_code=getattr(exc, "code", type(exc).__name__),
                        environments=list(step.change.environments),
                    )
            for key, step in pending.items():
                self.records.append(
                    StepRecord(
                        step.change.address,
                        step.op,
                        "skipped",
                        note="not started: an earlier step failed",
                    )
                )
                del key
        return self.error is None

    def sweep(self) -> None:
        """Delete late copies of creates whose answer went missing (a request that timed out
        may still have been carried out after its retry succeeded)."""
        for addr, desired in sorted(self.uncertain.items()):
            keep = self._refs().get(addr)
            for found in self.provider.find_all(desired, self._refs()):
                if keep is not None and found.id == keep.id:
                    continue
                started = time.monotonic()
                self.provider.delete(found)
                self.records.append(
                    StepRecord(
                        addr,
                        "delete",
                        "done",
                        found.id,
                        _dur(started),
                        note="removed a duplicate left by a lost answer",
                    )
                )

    # -- rollback -------------------------------------------------------------------------------

    def rollback(self) -> tuple[list[StepRecord], list[str]]:
        undone: list[StepRecord] = []
        unrestorable: list[str] = []
        created = {id(e[2]) for e in self.journal if e[0] == "created"}
        carried = {
            c.address
            for c in self.plan.changes
            if c.via is not None and c.action in ("create", "replace")
        }
        for kind, a, _b in reversed(self.journal):
            started = time.monotonic()
            try:
                if kind == "created":
                    live: LiveResource = a
                    if live.address in carried:
                        continue
                    self.provider.delete(live)
                    undone.append(
                        StepRecord(
                            live.address,
                            "delete",
                            "done",
                            live.id,
                            _dur(started),
                            note="rolled back a create",
                        )
                    )
                elif kind == "attempt":
                    desired: Desired = a
                    if id(a) in created:
                        continue
                    for found in self.provider.find_all(desired, self._refs()):
                        self.provider.delete(found)
                        undone.append(
                            StepRecord(
                                desired.address,
                                "delete",
                                "done",
                                found.id,
                                _dur(started),
                                note="removed a create whose answer was lost",
                            )
                        )
                elif kind == "updating":
                    before: LiveResource = a
                    current = self._refs().get(before.address, before)
                    if current is before:
                        continue  # the update never happened
                    self.provider.restore(before, current, self._refs())
                    undone.append(
                        StepRecord(
                            before.address,
                            "restore",
                            "done",
                            before.id,
                            _dur(started),
                            note="changed back",
                        )
                    )
                elif kind == "destroyed":
                    gone: LiveResource = a
                    unrestorable.append(gone.address)
            except Exception as exc:  # noqa: BLE001 -- keep undoing the rest; report each failure
                addr = a.address if hasattr(a, "address") else str(a)
                undone.append(
                    StepRecord(
                        addr, "rollback", "failed", error=_safe(exc), duration_s=_dur(started)
                    )
                )
                self.emitter.emit(
                    "infra.rollback.failure", level=40, address=addr, error=_safe(exc)
                )
        return undone, unrestorable


def _dur(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _safe(exc: BaseException) -> str:
    """An error's message: ours are client-safe; anything else shows only its type."""
    if isinstance(exc, AiaasError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"[:500]


def _records(
    plan: Plan,
    live: Mapping[str, LiveResource],
    previous: StateSnapshot | None,
    secrets: Mapping[str, Mapping[str, Secret]],
    *,
    succeeded: bool,
) -> dict[str, ResourceRecord]:
    out: dict[str, ResourceRecord] = {}
    old = previous.resources if previous is not None else {}
    for addr, res in sorted(live.items()):
        desired = plan.desired.get(addr)
        if desired is None and addr not in old:
            continue
        attrs_ = dict(res.attrs)
        if res.kind == "bucket":
            if succeeded and desired is not None:
                attrs_["lifecycle"] = desired.attrs["lifecycle"]
            elif addr in old:
                attrs_["lifecycle"] = old[addr].attrs.get("lifecycle")
        prints = (
            dict(old[addr].secret_fingerprints) if addr in old and old[addr].id == res.id else {}
        )
        for name, secret in secrets.get(addr, {}).items():
            prints[name] = fingerprint(secret.get_secret_value())
        out[addr] = ResourceRecord(
            kind=res.kind,
            name=res.name,
            id=res.id,
            attrs=attrs_,
            parent_id=res.parent_id,
            environments=desired.environments if desired is not None else old[addr].environments,
            secret_fingerprints=prints,
        )
    return out


def apply(
    plan: Plan,
    provider: LinodeProvider,
    *,
    store: StateStore | None = None,
    actor: str | None = None,
    concurrency: int = 4,
    run_preflight: bool = True,
    readiness_timeout: float | None = None,
    on_event: EventSink | None = None,
    run_id: str | None = None,
) -> ApplyResult:
    """Carry out ``plan``; see the module documentation for the guarantees.

    Raises :class:`~aiaas_infra.PreflightError` (nothing was created),
    :class:`~aiaas_infra.StateLockedError` (another apply runs), ``ConflictError`` (the state
    changed since the plan was made) or :class:`~aiaas_infra.ApplyError` (the run failed; its
    ``result`` says what was rolled back).
    """
    import contextlib  # noqa: PLC0415

    from opentelemetry import trace  # noqa: PLC0415

    rid = run_id or uuid.uuid4().hex
    who = actor or default_actor()
    emitter = Emitter(rid, who, plan.spec.name, on_event)
    tracer = trace.get_tracer("aiaas_infra")
    lock = store.lock(holder=who, run_id=rid) if store is not None else contextlib.nullcontext()
    with tracer.start_as_current_span("infra.apply") as span, lock:
        span.set_attribute("aiaas.platform", plan.spec.name)
        span.set_attribute("aiaas.run_id", rid)
        return _apply_locked(
            plan,
            provider,
            store=store,
            emitter=emitter,
            concurrency=concurrency,
            run_preflight=run_preflight,
            readiness_timeout=readiness_timeout,
            span=span,
        )


def _apply_locked(
    plan: Plan,
    provider: LinodeProvider,
    *,
    store: StateStore | None,
    emitter: Emitter,
    concurrency: int,
    run_preflight: bool,
    readiness_timeout: float | None,
    span: Any,
) -> ApplyResult:
    from aiaas_core import ConflictError  # noqa: PLC0415

    started = time.monotonic()
    calls_before = provider.calls
    previous = store.latest() if store is not None else None
    current_serial = previous.serial if previous is not None else None
    if store is not None and current_serial != plan.state_serial:
        raise ConflictError(
            f"the state changed since this plan was made (serial {plan.state_serial} -> "
            f"{current_serial}): plan again"
        )
    summary = plan.summary()
    envs = [] if plan.destroy else sorted(plan.spec.environments)
    emitter.emit(
        "infra.apply.start",
        message=f"apply {plan.spec.name}: {summary}",
        counts=summary,
        environments=envs,
        concurrency=concurrency,
    )
    if run_preflight and plan.has_changes:
        problems = preflight(plan, provider)
        if problems:
            emitter.emit(
                "infra.apply.failure",
                level=40,
                message="preflight failed; nothing was created",
                outcome="preflight_failed",
                counts=summary,
                problems=[str(p) for p in problems],
                duration_s=round(time.monotonic() - started, 3),
            )
            raise PreflightError(problems)

    ledger = StatusLedger(store)
    keeping = set(envs)
    for env in envs:
        status = ledger.status(env)
        if status in (None, EnvironmentStatus.RETIRED):
            ledger.move(env, EnvironmentStatus.PROVISIONING, reason="first apply", emitter=emitter)
        elif status == EnvironmentStatus.DEGRADED:
            ledger.move(
                env, EnvironmentStatus.RECOVERING, reason="apply to repair drift", emitter=emitter
            )

    run = _Run(
        plan, provider, emitter, concurrency=concurrency, readiness_timeout=readiness_timeout
    )
    phase1, phase2 = build_steps(plan)
    ok = run.run_phase(phase1) and run.run_phase(phase2)
    if ok and run.uncertain:
        try:
            run.sweep()
        except Exception as exc:  # noqa: BLE001 -- the next plan removes duplicates too
            emitter.emit("infra.sweep.failure", level=30, error=_safe(exc))
    rollback: list[StepRecord] = []
    unrestorable: list[str] = []
    outcome: Outcome
    if ok:
        outcome = "applied" if plan.has_changes else "no_changes"
        final = dict(run.refs.items())
    else:
        emitter.emit("infra.rollback.start", level=30, failed_step=run.failed_step)
        rollback, unrestorable = run.rollback()
        rollback_failed = any(r.outcome == "failed" for r in rollback)
        outcome = "partial" if rollback_failed or unrestorable else "rolled_back"
        emitter.emit(
            "infra.rollback.finish",
            level=30,
            outcome=outcome,
            undone=len([r for r in rollback if r.outcome == "done"]),
            failed=len([r for r in rollback if r.outcome == "failed"]),
            unrestorable=unrestorable,
        )
        final = dict(provider.inventory(scope_for(plan.spec, plan.desired, previous)).resources)

    # -- environment statuses --------------------------------------------------------------------
    failed_envs = {
        e
        for r in run.records
        if r.outcome == "failed"
        for c in [plan.change(r.address)]
        if c is not None
        for e in (c.environments or tuple(envs))
    }
    for env in envs:
        status = ledger.status(env)
        if outcome in ("applied", "no_changes"):
            if status in (EnvironmentStatus.PROVISIONING, EnvironmentStatus.RECOVERING):
                ledger.move(env, EnvironmentStatus.READY, reason="apply succeeded", emitter=emitter)
        elif outcome == "rolled_back":
            if status == EnvironmentStatus.PROVISIONING:
                ledger.move(
                    env,
                    EnvironmentStatus.RETIRED,
                    reason="first provisioning rolled back",
                    emitter=emitter,
                )
            elif status == EnvironmentStatus.RECOVERING:
                ledger.move(
                    env, EnvironmentStatus.DEGRADED, reason="repair rolled back", emitter=emitter
                )
        elif status in (EnvironmentStatus.PROVISIONING, EnvironmentStatus.RECOVERING) or (
            status == EnvironmentStatus.READY and env in failed_envs
        ):
            ledger.move(
                env, EnvironmentStatus.DEGRADED, reason="apply left it partial", emitter=emitter
            )
    if outcome in ("applied", "no_changes"):
        for env, rec in list(ledger.records.items()):
            if env not in keeping and rec.status in ("ready", "degraded"):
                reason = "destroyed" if plan.destroy else "removed from the spec"
                ledger.move(env, EnvironmentStatus.RETIRED, reason=reason, emitter=emitter)
    ledger.save()

    # -- snapshot -------------------------------------------------------------------------------
    snapshot: StateSnapshot | None = None
    fingerprint_now = spec_fingerprint(plan.spec)
    changed_spec = previous is None or previous.spec_fingerprint != fingerprint_now
    if store is not None and (plan.has_changes or changed_spec):
        # A failed run records what is live now, under the spec that was last applied.
        applied_spec = previous if (not ok and previous is not None) else None
        snapshot = StateSnapshot(
            serial=store.next_serial(),
            lineage=previous.lineage if previous is not None else uuid.uuid4().hex,
            created_at=iso(utcnow()),
            platform=plan.spec.name,
            outcome="applied" if outcome == "no_changes" else outcome,
            run_id=emitter.run_id,
            actor=emitter.actor,
            spec=applied_spec.spec if applied_spec is not None else spec_to_dict(plan.spec),
            spec_fingerprint=(
                applied_spec.spec_fingerprint if applied_spec is not None else fingerprint_now
            ),
            resources=_records(plan, final, previous, run.secrets, succeeded=ok),
            environments=ledger.snapshot(),
        )
        store.write(snapshot)

    duration = time.monotonic() - started
    result = ApplyResult(
        run_id=emitter.run_id,
        outcome=outcome,
        steps=list(run.records),
        rollback=rollback,
        secrets=run.secrets,
        snapshot=snapshot,
        error=_safe(run.error) if run.error is not None else None,
        duration_s=duration,
        api_calls=provider.calls - calls_before,
        plan_summary=summary,
        transitions=list(ledger.changed),
        unrestorable=unrestorable,
    )
    span.set_attribute("aiaas.apply.outcome", outcome)
    span.set_attribute("aiaas.apply.api_calls", result.api_calls)
    if ok:
        emitter.emit(
            "infra.apply.finish",
            message=f"apply {plan.spec.name} {outcome} in {duration:.1f}s",
            outcome=outcome,
            counts=summary,
            environments=envs,
            duration_s=round(duration, 3),
            api_calls=result.api_calls,
            snapshot=snapshot.id if snapshot is not None else None,
        )
        return result
    emitter.emit(
        "infra.apply.failure",
        level=40,
        message=f"apply {plan.spec.name} failed at {run.failed_step}: {result.error}; {outcome}",
        outcome=outcome,
        counts=summary,
        environments=envs,
        duration_s=round(duration, 3),
        failed_step=run.failed_step,
        error=result.error,
        undone=[r.address for r in rollback if r.outcome == "done"],
        unrestorable=unrestorable,
    )
    what = (
        "everything it created was removed and changes were undone"
        if outcome == "rolled_back"
        else "the rollback could not undo everything: see result.rollback and result.unrestorable"
    )
    raise ApplyError(
        f"apply failed at {run.failed_step}: {result.error}; {what}",
        result=result,
        cause=run.error,
    )
