"""Bulk synthetic data for benchmarks and analytics tests: :func:`load_synthetic`.

Shape (deterministic for a given ``seed``):

* ``organizations`` organisations ``syn<seed>-o<n>`` over the four plan tiers (most on free and
  starter), about 2 % suspended and 1 % closed; one API key each (closed ones have none);
* ``models`` global model registry entries ``syn<seed>-model-<n>`` (revision ``r1``) with prices;
* ``events`` usage events spread evenly over ``[start, end)`` and written in time order, with
  per-organisation traffic skewed like real tenants (Zipf, exponent 1.1: a few organisations send
  most requests; closed organisations send none), per-model popularity skewed the same way,
  ~2 % ``error`` and ~1 % ``rate_limited`` (those consume no tokens), tokens log-normal in
  8..2048, ~0.5 % of events without a model (``model_id`` NULL), latency growing with tokens.

Daily partitions are created for the range first, then events stream through one text ``COPY``
in chunks; ``ingested_at`` is the load time. Organisations, models and keys are inserted with
``ON CONFLICT DO NOTHING`` (a rerun reuses them), while event ids come from the seeded generator:
loading the same seed over the same range twice is refused (``SYNTHETIC_DUPLICATE``) rather than
doubling the data -- use another ``seed`` to add more.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import attrs

from aiaas_db._errors import MigrationRefusedError
from aiaas_db.platform._dbops import (
    ConnOrDsn,
    ensure_usage_partitions,
    open_connection,
    require_tables,
)

if TYPE_CHECKING:
    import psycopg

    from aiaas_db.platform._pii import PiiProtector
    from aiaas_db.platform._seeds import LoadProgress

__all__ = ["SyntheticError", "SyntheticReport", "load_synthetic", "load_synthetic_audit"]

_CHUNK: Final = 50_000
_TIERS: Final = (("free", 0.55, 100_000), ("starter", 0.3, 2_000_000), ("pro", 0.12, 25_000_000))
_ENTERPRISE: Final = ("enterprise", 0.03, 500_000_000)
_REGIONS: Final = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")
_ERROR_CODES: Final = ("MODEL_TIMEOUT", "INTERNAL", "BAD_INPUT", "UPSTREAM_UNAVAILABLE")
_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://aiaas.dev/aiaas-db/synthetic")
_SYNTHETIC_SECRET: Final = "aiaas-db synthetic data (not for production)"  # noqa: S105
_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class SyntheticError(MigrationRefusedError):
    """The load was refused: ``SYNTHETIC_INVALID`` (arguments), ``SYNTHETIC_SCHEMA_MISSING``,
    ``SYNTHETIC_DUPLICATE`` (these events are already loaded)."""

    code = "SYNTHETIC_REFUSED"
    title = "Synthetic load refused"


@attrs.frozen(kw_only=True)
class SyntheticReport:
    """What :func:`load_synthetic` loaded, and how long each phase took (seconds)."""

    organizations: int
    api_keys: int
    models: int
    events: int
    partitions_created: int
    start: datetime
    end: datetime
    seed: int
    setup_seconds: float
    events_seconds: float
    analyze_seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.events_seconds if self.events_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["start"] = self.start.isoformat()
        out["end"] = self.end.isoformat()
        out["events_per_second"] = round(self.events_per_second, 1)
        return out


def _b62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(reversed(chars))


def _zipf_cum(weights_n: int, rng: random.Random, exponent: float = 1.1) -> list[float]:
    """Cumulative Zipf weights over a random permutation of ``range(weights_n)``."""
    ranks = list(range(1, weights_n + 1))
    rng.shuffle(ranks)
    cum: list[float] = []
    total = 0.0
    for rank in ranks:
        total += 1.0 / rank**exponent
        cum.append(total)
    return cum


def _validate(organizations: int, events: int, models: int, start: datetime, end: datetime) -> None:
    problems = []
    if organizations < 1:
        problems.append(f"organizations must be >= 1, got {organizations}")
    if events < 0:
        problems.append(f"events must be >= 0, got {events}")
    if models < 1:
        problems.append(f"models must be >= 1, got {models}")
    if start.tzinfo is None or end.tzinfo is None:
        problems.append("start and end must be timezone-aware datetimes")
    elif end <= start:
        problems.append(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    elif end - start > timedelta(days=3660):
        problems.append("the range [start, end) must not exceed ten years")
    if problems:
        raise SyntheticError("; ".join(problems), code="SYNTHETIC_INVALID")


def load_synthetic(
    conn: ConnOrDsn,
    *,
    organizations: int,
    events: int,
    start: datetime,
    end: datetime,
    models: int = 20,
    seed: int = 0,
    progress: bool | Callable[[int], LoadProgress] = False,
    protector: PiiProtector | None = None,
) -> SyntheticReport:
    """Load synthetic organisations, models, API keys and ``events`` usage events (see the
    module docs for the distributions) into a database with the platform schema.

    ``conn`` is a psycopg connection (its transaction is used and committed at the end of each
    phase when it is not in autocommit) or a DSN. ``progress``: ``True`` for a rich bar on
    stderr, or a factory ``total -> LoadProgress``. ``protector`` audits the partitions it
    creates (default: local-development keys -- synthetic data never belongs in production).
    Raises :class:`SyntheticError`.
    """
    _validate(organizations, events, models, start, end)
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    rng = random.Random(seed)  # noqa: S311 -- synthetic data, not crypto
    with open_connection(conn, "synthetic") as c:
        require_tables(
            c,
            ("organizations", "api_keys", "model_registry_entries", "usage_events"),
            code="SYNTHETIC_SCHEMA_MISSING",
            error=SyntheticError,
            what="the synthetic load",
        )
        t0 = time.perf_counter()
        with c.transaction():
            if protector is None:
                from aiaas_db.platform._pii import PiiProtector  # noqa: PLC0415

                protector = PiiProtector.for_local_development(_SYNTHETIC_SECRET)
            partitions = ensure_usage_partitions(
                c, start, end, protector=protector, actor="aiaas-db synthetic"
            )
            orgs = _load_organizations(c, organizations, seed, rng)
            keys = _load_api_keys(c, orgs, seed)
            model_rows = _load_models(c, models, seed, rng)
        t1 = time.perf_counter()
        bar: LoadProgress | None = None
        if progress is True:
            from aiaas_db.platform._seeds import rich_progress  # noqa: PLC0415

            bar = rich_progress(events, "synthetic usage events")
        elif callable(progress):
            bar = progress(events)
        try:
            with c.transaction():
                _load_events(
                    c,
                    total=events,
                    start=start,
                    end=end,
                    orgs=orgs,
                    keys=keys,
                    models=model_rows,
                    rng=rng,
                    bar=bar,
                )
        except Exception as exc:
            import psycopg.errors  # noqa: PLC0415

            if isinstance(exc, psycopg.errors.UniqueViolation):
                raise SyntheticError(
                    f"synthetic events of seed {seed} over this range are already loaded: use "
                    "another seed to add more",
                    code="SYNTHETIC_DUPLICATE",
                ) from None
            raise
        finally:
            if bar is not None:
                bar.close()
        t2 = time.perf_counter()
        c.execute("ANALYZE organizations")
        c.execute("ANALYZE api_keys")
        c.execute("ANALYZE model_registry_entries")
        c.execute("ANALYZE usage_events")
        if not c.autocommit:
            c.commit()
        t3 = time.perf_counter()
    return SyntheticReport(
        organizations=len(orgs),
        api_keys=sum(1 for k in keys if k is not None),
        models=len(model_rows),
        events=events,
        partitions_created=partitions,
        start=start,
        end=end,
        seed=seed,
        setup_seconds=round(t1 - t0, 3),
        events_seconds=round(t2 - t1, 3),
        analyze_seconds=round(t3 - t2, 3),
    )


@attrs.frozen
class _Org:
    id_text: str
    region: str
    active: bool


def _copy_rows(
    conn: psycopg.Connection[Any], table: str, columns: str, lines: Iterator[str]
) -> None:
    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        buffer: list[str] = []
        for line in lines:
            buffer.append(line)
            if len(buffer) >= 10_000:
                copy.write("".join(buffer))
                buffer.clear()
        if buffer:
            copy.write("".join(buffer))


def _insert_via_temp(
    conn: psycopg.Connection[Any], table: str, columns: str, lines: Iterator[str]
) -> None:
    temp = f"aiaas_syn_{table}"
    conn.execute(f"CREATE TEMP TABLE {temp} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
    _copy_rows(conn, temp, columns, lines)
    conn.execute(
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {temp}"  # noqa: S608 -- constants
        " ON CONFLICT DO NOTHING"
    )
    conn.execute(f"DROP TABLE {temp}")


def _load_organizations(
    conn: psycopg.Connection[Any], count: int, seed: int, rng: random.Random
) -> list[_Org]:
    prefix = f"syn{seed}-o"
    plan: list[tuple[str, str, int, str, str]] = []
    for i in range(count):
        roll = rng.random()
        tier, budget = _ENTERPRISE[0], _ENTERPRISE[2]
        acc = 0.0
        for name, share, limit in _TIERS:
            acc += share
            if roll < acc:
                tier, budget = name, limit
                break
        status_roll = rng.random()
        status = "closed" if status_roll < 0.01 else "suspended" if status_roll < 0.03 else "active"
        region = _REGIONS[rng.randrange(len(_REGIONS))]
        plan.append((f"{prefix}{i:07d}", tier, budget, status, region))

    def lines() -> Iterator[str]:
        for slug, tier, budget, status, _region in plan:
            oid = uuid.uuid5(_NAMESPACE, f"organizations:{slug}")
            yield f"{oid}\t{slug}\tSynthetic {slug}\t{status}\t{tier}\t{budget}\n"

    _insert_via_temp(
        conn,
        "organizations",
        "organization_id, slug, display_name, status, plan_tier, budget_limit_tokens",
        lines(),
    )
    rows = conn.execute(
        "SELECT slug, organization_id::text, status FROM organizations WHERE slug LIKE %s",
        (prefix.replace("-", "\\-") + "%",),
    ).fetchall()
    found = {str(r[0]): (str(r[1]), str(r[2])) for r in rows}
    return [
        _Org(found[slug][0], region, found[slug][1] != "closed")
        for slug, _t, _b, _s, region in plan
    ]


def _load_api_keys(conn: psycopg.Connection[Any], orgs: list[_Org], seed: int) -> list[str | None]:
    """One key per organisation that is not closed; returns each org's api_key_id text."""
    from aiaas_core import HashKey, KeyedHasher  # noqa: PLC0415

    material = hashlib.sha256(f"aiaas-db synthetic api keys {seed}".encode()).digest()
    hasher = KeyedHasher([HashKey("syn", material)], "syn")
    key_rng = random.Random(f"keys-{seed}")  # noqa: S311 -- synthetic data

    plan: list[tuple[_Org, str, str]] = []
    for org in orgs:
        key_id = _b62(key_rng.getrandbits(72), 12)
        secret = _b62(key_rng.getrandbits(256), 43)
        if org.active:
            plan.append((org, key_id, secret))

    def lines() -> Iterator[str]:
        for org, key_id, secret in plan:
            kid = uuid.uuid5(_NAMESPACE, f"api_keys:{org.id_text}:synthetic")
            yield (
                f"{kid}\t{org.id_text}\t{key_id}\tsynthetic\t{hasher.digest(secret)}"
                "\t{embeddings:create}\t{service}\n"
            )

    _insert_via_temp(
        conn,
        "api_keys",
        "api_key_id, organization_id, key_id, name, hashed_secret, scopes, roles",
        lines(),
    )
    rows = conn.execute(
        "SELECT organization_id::text, api_key_id::text FROM api_keys"
        " WHERE name = 'synthetic' AND organization_id = ANY(%s::uuid[])",
        ([o.id_text for o in orgs],),
    ).fetchall()
    by_org = {str(r[0]): str(r[1]) for r in rows}
    return [by_org.get(o.id_text) for o in orgs]


def _load_models(
    conn: psycopg.Connection[Any], count: int, seed: int, rng: random.Random
) -> list[tuple[str, float]]:
    names = [f"syn{seed}-model-{i:03d}" for i in range(count)]
    costs = [round(rng.uniform(0.00001, 0.002), 6) for _ in names]

    def lines() -> Iterator[str]:
        for name, cost in zip(names, costs, strict=True):
            mid = uuid.uuid5(_NAMESPACE, f"model_registry_entries:-:{name}:r1")
            target = "serving/gpu" if cost > 0.001 else "serving/cpu"
            yield f'{mid}\t\\N\t{name}\tr1\t{target}\t{cost:.6f}\t{{"synthetic": true}}\n'

    _insert_via_temp(
        conn,
        "model_registry_entries",
        "model_registry_entry_id, organization_id, name, revision, deployment_target,"
        " cost_per_1k_tokens_usd, metadata",
        lines(),
    )
    rows = conn.execute(
        "SELECT name, model_registry_entry_id::text, cost_per_1k_tokens_usd::float8"
        " FROM model_registry_entries WHERE organization_id IS NULL AND revision = 'r1'"
        " AND name = ANY(%s)",
        (names,),
    ).fetchall()
    by_name = {str(r[0]): (str(r[1]), float(r[2])) for r in rows}
    return [by_name[n] for n in names]


def _load_events(
    conn: psycopg.Connection[Any],
    *,
    total: int,
    start: datetime,
    end: datetime,
    orgs: list[_Org],
    keys: list[str | None],
    models: list[tuple[str, float]],
    rng: random.Random,
    bar: LoadProgress | None,
) -> None:
    if total == 0:
        return
    org_rng = random.Random(rng.random())  # noqa: S311
    weights = _zipf_cum(len(orgs), org_rng)
    # Closed organisations send nothing: give them zero width in the cumulative weights.
    cum: list[float] = []
    acc = 0.0
    prev = 0.0
    for org, w in zip(orgs, weights, strict=True):
        acc += (w - prev) if org.active else 0.0
        prev = w
        cum.append(acc)
    org_total = acc
    last_org = len(orgs) - 1
    model_cum = _zipf_cum(len(models), org_rng, 1.2)
    model_total = model_cum[-1]
    columns = (
        "usage_event_id, occurred_at, organization_id, api_key_id, model_id, tokens_consumed,"
        " latency_ms, status, error_code, region, cost_usd"
    )
    t0, t1 = start.timestamp(), end.timestamp()
    chunks = max(1, math.ceil(total / _CHUNK))
    span = (t1 - t0) / chunks
    prefixes: dict[int, str] = {}
    lognorm = rng.lognormvariate
    rand = rng.random
    getbits = rng.getrandbits
    with conn.cursor().copy(f"COPY usage_events ({columns}) FROM STDIN") as copy:
        written = 0
        for chunk in range(chunks):
            n = min(_CHUNK, total - written)
            low = t0 + chunk * span
            times = sorted(low + rand() * span for _ in range(n))
            out: list[str] = []
            for ts in times:
                minute = int(ts // 60)
                prefix = prefixes.get(minute)
                if prefix is None:
                    prefix = datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%d %H:%M:")
                    prefixes[minute] = prefix
                index = min(bisect.bisect_right(cum, rand() * org_total), last_org)
                org = orgs[index]
                key = keys[index]
                roll = rand()
                if roll < 0.01:
                    status, code, tokens = "rate_limited", "RATE_LIMITED", 0
                elif roll < 0.03:
                    status, code = "error", _ERROR_CODES[int(roll * 1000) % len(_ERROR_CODES)]
                    tokens = min(2048, max(8, int(lognorm(5.0, 1.0))))
                else:
                    status, code = "success", "\\N"
                    tokens = min(2048, max(8, int(lognorm(5.0, 1.0))))
                mroll = rand()
                if mroll < 0.005:
                    model_text, cost = "\\N", 0.0
                else:
                    m = models[
                        min(
                            bisect.bisect_right(model_cum, (mroll - 0.005) / 0.995 * model_total),
                            len(models) - 1,
                        )
                    ]
                    model_text = m[0]
                    cost = tokens * m[1] / 1000 if status == "success" else 0.0
                latency = 4 + tokens // 24 + int(-30.0 * math.log(1.0 - rand()))
                out.append(
                    f"{getbits(128):032x}\t{prefix}{ts - minute * 60:09.6f}+00\t{org.id_text}\t"
                    f"{key or chr(92) + 'N'}\t{model_text}\t{tokens}\t{latency}\t{status}\t"
                    f"{code}\t{org.region}\t{cost:.8f}\n"
                )
            copy.write("".join(out))
            written += n
            if bar is not None:
                bar.advance(n)


def load_synthetic_audit(
    conn: ConnOrDsn,
    *,
    entries: int,
    actors: int,
    start: datetime,
    end: datetime,
    protector: PiiProtector,
    seed: int = 0,
) -> int:
    """Append ``entries`` synthetic audit entries by ``actors`` distinct user actors over
    ``[start, end)`` (actor ids digested with ``protector``, as :func:`write_audit` does; no
    ciphertext). Activity per actor is skewed (Zipf). Returns the number written."""
    if entries < 0 or actors < 1:
        raise SyntheticError("need entries >= 0 and actors >= 1", code="SYNTHETIC_INVALID")
    _validate(1, entries, 1, start, end)
    rng = random.Random(f"audit-{seed}")  # noqa: S311 -- synthetic data
    digests = [protector.digest(f"user:syn{seed}-actor-{i:06d}") for i in range(actors)]
    cum = _zipf_cum(actors, rng)
    top = cum[-1]
    actions = ("api_key.created", "api_key.revoked", "model.updated", "user.invited", "login")
    t0, t1 = start.timestamp(), end.timestamp()

    def lines() -> Iterator[str]:
        for _ in range(entries):
            ts = datetime.fromtimestamp(rng.uniform(t0, t1), UTC).isoformat()
            actor = digests[min(bisect.bisect_right(cum, rng.random() * top), actors - 1)]
            action = actions[rng.randrange(len(actions))]
            yield f"{ts}\tuser\t{actor}\t{action}\tsynthetic:{rng.randrange(1_000_000)}\t{{}}\n"

    with open_connection(conn, "synthetic audit") as c:
        require_tables(
            c,
            ("audit_log_entries",),
            code="SYNTHETIC_SCHEMA_MISSING",
            error=SyntheticError,
            what="the audit load",
        )
        with c.transaction():
            _copy_rows(
                c,
                "audit_log_entries",
                "occurred_at, actor_type, actor_id, action, target, metadata",
                lines(),
            )
        c.execute("ANALYZE audit_log_entries")
        if not c.autocommit:
            c.commit()
    return entries
