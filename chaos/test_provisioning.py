"""Campaign "provisioning": ``aiaas-infra apply`` of the example spec under injected API faults.

The real ``aiaas-infra`` CLI (a subprocess) applies aiaas-infra's example spec against the Linode
emulator over HTTP; the emulator accepts only the planted Linode token. Each episode starts from an
empty account and an empty state; each apply run of an episode gets one to four random faults:
429 with ``Retry-After``, 5xx, timeouts (the answer held longer than the client waits) and answers
lost after the create happened. A run may fail (and roll back); the episode re-runs until an apply
succeeds, sometimes deletes a resource behind the tool's back and applies again. After every run:
no duplicated resource (two of one kind with one label), no orphan (the account holds exactly
what the latest state snapshot records); at the end of each episode a fault-free ``plan`` finds no
changes.

Figures: runs, faults injected by kind (requests answered by a fault), duplicates (0), orphans (0),
final plan changes (0).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from conftest import Budget, BudgetFactory, ChaosReport, PlantedSecrets

from aiaas_infra import LocalStateBackend, StateStore, example_spec_path
from aiaas_infra.testing import LinodeEmulator

CAMPAIGN = "provisioning"
REQUEST_TIMEOUT_S = 1.5
CLI_TIMEOUT_S = 300.0
MAX_RUNS_PER_EPISODE = 5
# Emulator tables, and the state's resource kinds that live in them.
KIND_TABLES = {
    "cluster": "clusters",
    "pool": "pools",
    "firewall": "firewalls",
    "vpc": "vpcs",
    "subnet": "subnets",
    "bucket": "buckets",
    "object_key": "keys",
    "database": "databases",
}
CREATE_PATHS = (
    "/networking/firewalls$",
    "/vpcs$",
    r"/vpcs/\d+/subnets$",
    "/lke/clusters$",
    r"/lke/clusters/\d+/pools$",
    "/object-storage/buckets$",
    "/object-storage/keys$",
    "/databases/postgresql/instances$",
)
READ_PATHS = ("", "/lke/clusters", "/networking/firewalls", "/databases", "/vpcs", "/regions")
OUT_OF_BAND = (
    ("firewalls", "aiaas-nodes"),
    ("vpcs", "aiaas-vpc"),
    ("buckets", "aiaas-artifacts"),
    ("keys", "aiaas-metrics-writer"),
    ("databases", "aiaas-staging"),
)


def inject_faults(em: LinodeEmulator, rng: random.Random) -> list[str]:
    """One to four random faults; returns their kinds (``429 storm``: more 429s in a row than
    the client retries, so the run fails and rolls back)."""
    kinds = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["429", "5xx", "timeout", "lost"])
        if kind == "429" and rng.random() < 0.25:
            kind = "429 storm"
        kinds.append(kind)
        if kind == "429 storm":
            em.inject_status(
                429, path=rng.choice(CREATE_PATHS[:4]), method="POST", times=12, retry_after=1
            )
        elif kind == "429":
            em.inject_status(
                429,
                path=rng.choice([*CREATE_PATHS, *READ_PATHS]),
                method=rng.choice(["GET", "POST", None]),
                times=rng.randint(1, 3),
                retry_after=1,
            )
        elif kind == "5xx":
            em.inject_status(
                rng.choice([500, 502, 503, 504]),
                path=rng.choice([*CREATE_PATHS, *READ_PATHS]),
                method=rng.choice(["GET", "POST", "PUT", None]),
                times=rng.randint(1, 2),
            )
        elif kind == "timeout":
            em.inject_timeout(
                REQUEST_TIMEOUT_S + 1.0,
                path=rng.choice(CREATE_PATHS),
                method=rng.choice(["POST", "GET"]),
                times=1,
            )
        else:
            em.lose_response(path=rng.choice(CREATE_PATHS), method="POST", times=1)
    return kinds


def duplicates(em: LinodeEmulator) -> list[str]:
    """Resources of one kind sharing a label (pools: within a cluster; subnets: within a VPC)."""
    found = []
    for table in KIND_TABLES.values():
        labels = Counter(
            (r.get("cluster_id"), r.get("_vpc"), r.get("label") or r.get("type"))
            for r in em.resources(table)
        )
        found += [f"{table} {key}" for key, n in labels.items() if n > 1 and table != "pools"]
    pools = Counter(
        (p.get("cluster_id"), json.dumps(p.get("labels"), sort_keys=True))
        for p in em.resources("pools")
    )
    found += [f"pools {key}" for key, n in pools.items() if n > 1]
    return found


def orphans(em: LinodeEmulator, state_dir: Path) -> list[str]:
    """What the account holds beyond the latest snapshot, and what the snapshot holds that the
    account does not (kind:id)."""
    snapshot = StateStore(LocalStateBackend(str(state_dir))).latest()
    recorded: set[str] = set()
    if snapshot is not None:
        recorded = {f"{rec.kind}:{rec.id}" for rec in snapshot.resources.values()}
    live: set[str] = set()
    for kind, table in KIND_TABLES.items():
        for r in em.resources(table):
            ident = f"{r['region']}/{r['label']}" if kind == "bucket" else str(r["id"])
            live.add(f"{kind}:{ident}")
    return sorted(f"orphan {x}" for x in live - recorded) + sorted(
        f"recorded but gone {x}" for x in recorded - live
    )


class InfraCli:
    def __init__(self, env: dict[str, str], spec: Path) -> None:
        self.env = env
        self.spec = spec
        self.outputs: list[str] = []

    def run(self, *args: str, state: Path) -> subprocess.CompletedProcess[str]:
        script = Path(sys.executable).with_name("aiaas-infra")
        head = [str(script)] if script.is_file() else [sys.executable, "-m", "aiaas_infra"]
        proc = subprocess.run(
            [*head, *args, "--spec", str(self.spec), "--state", str(state), "-o", "json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        self.outputs += [proc.stdout, proc.stderr]
        return proc


def test_apply_under_faults_converges_without_duplicates_or_orphans(
    tmp_path: Path,
    chaos_rng: random.Random,
    chaos_budget: BudgetFactory,
    chaos_report: ChaosReport,
    chaos_secrets: PlantedSecrets,
    chaos_seed: int,
) -> None:
    spec = Path(example_spec_path())
    budget: Budget = chaos_budget(full=100, default=20, seconds=90)
    runs = iter(budget)
    outcomes: Counter[int] = Counter()
    faults_planned: Counter[str] = Counter()
    faulted_requests: Counter[str] = Counter()
    problems: list[str] = []
    plan_changes = 0
    episodes = 0
    scans: list[str] = []
    max_runs_to_converge = 0
    started = time.monotonic()
    exhausted = False
    while not exhausted:
        episodes += 1
        state = tmp_path / f"episode-{episodes}"
        with LinodeEmulator(
            token=chaos_secrets.linode_token,
            ready_delay=0.1,
            kubeconfig_delay=0.2,
            database_delay=0.1,
            kubeconfig_retry_after=1,
        ) as em:
            env = {
                **os.environ,
                **em.env(),
                "AIAAS_INFRA_POLL_INTERVAL": "0.05",
                "AIAAS_INFRA_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT_S),
                "NO_COLOR": "1",
            }
            cli = InfraCli(env, spec)
            converged = False
            drifted = False
            tries = 0
            while True:
                if next(runs, None) is None:
                    exhausted = True
                    break
                tries += 1
                em.clear_faults()
                if tries <= MAX_RUNS_PER_EPISODE:
                    faults_planned.update(inject_faults(em, chaos_rng))
                proc = cli.run("apply", "--yes", state=state)
                outcomes[proc.returncode] += 1
                where = f"episode {episodes} run {tries} (exit {proc.returncode})"
                problems += [f"{where}: duplicate {d}" for d in duplicates(em)]
                problems += [f"{where}: {o}" for o in orphans(em, state)]
                if proc.returncode != 0:
                    continue
                if not drifted and chaos_rng.random() < 0.4:
                    table, label = chaos_rng.choice(OUT_OF_BAND)
                    em.delete_out_of_band(table, label)
                    drifted = True
                    continue
                converged = True
                max_runs_to_converge = max(max_runs_to_converge, tries)
                break
            for record in em.requests:
                if record.fault is not None:
                    faulted_requests[_fault_kind(record.fault, record.status)] += 1
            em.clear_faults()
            log = httpx.get(f"{em.root}/_emulator/requests", timeout=10)
            scans.append(log.text)
            if converged:
                final = cli.run("plan", state=state)
                assert final.returncode in (0, 2), (
                    f"seed {chaos_seed} episode {episodes}: plan failed: {final.stderr}"
                )
                changes = json.loads(final.stdout)["changes"] if final.returncode == 2 else []
                plan_changes += len(changes)
                if changes:
                    problems.append(f"episode {episodes}: final plan changes {changes}")
            scans += cli.outputs
    hits = chaos_secrets.scan(scans, where="aiaas-infra apply/plan output")
    hits += chaos_secrets.scan([tmp_path], where="aiaas-infra state")

    report = chaos_report.figure
    report(CAMPAIGN, "runs", budget.ran, bound=budget.describe())
    report(CAMPAIGN, "episodes (empty account to converged)", episodes)
    report(CAMPAIGN, "max runs to converge", max_runs_to_converge)
    report(CAMPAIGN, "run outcomes (exit: count)", _outcomes(outcomes))
    report(CAMPAIGN, "faults planned by kind", _counts(faults_planned))
    report(CAMPAIGN, "retries (requests answered by a fault)", _counts(faulted_requests))
    report(CAMPAIGN, "duplicates", sum("duplicate" in p for p in problems), bound="0")
    report(CAMPAIGN, "orphans", sum("orphan" in p or "gone" in p for p in problems), bound="0")
    report(CAMPAIGN, "final plan changes", plan_changes, bound="0")
    report(CAMPAIGN, "wall time", round(time.monotonic() - started, 1), unit="s")
    report(CAMPAIGN, "secret hits", len(hits), bound="0")
    assert problems == [], f"seed {chaos_seed}: {problems}"
    assert hits == [], f"seed {chaos_seed}: planted secrets leaked: {[str(h) for h in hits]}"
    assert sum(faulted_requests.values()) > 0, f"seed {chaos_seed}: no fault hit a request"


def _fault_kind(fault: str, status: int) -> str:
    if fault == "status":
        return "429" if status == 429 else "5xx"
    return {"drop": "lost", "timeout": "timeout"}.get(fault, fault)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


def _outcomes(counter: Counter[int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items()))
