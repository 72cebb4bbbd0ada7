"""Deterministic, idempotent seed data: ``aiaas-db seed --package local-dev|ci``.

What a package holds (both packages, same natural keys):

* organisations ``acme-free``, ``acme-starter``, ``acme-pro``, ``acme-enterprise`` -- one per plan
  tier, each with a token budget;
* one user per role (owner, admin, developer, billing) in each, e-mail
  ``<role>@<slug>.example.com`` stored only as a keyed digest plus an AES-GCM copy
  (:class:`~aiaas_db.platform._pii.PiiProtector`), never as plain text;
* API keys: ``local-dev`` in ``acme-pro`` (the key ``seed --output json`` prints) and ``default``
  in every organisation; ``ci`` adds ``ci-revoked``, ``ci-expired`` and ``ci-rotating`` in
  ``acme-pro`` and two users who asked for deletion (one long ago, one recently) for purge tests;
* the global models ``all-MiniLM-L6-v2`` revision ``gt-1`` (embeddings) and
  ``SmolLM2-135M-Instruct`` revision ``q4_1`` (chat), no organisation, and the
  organisation-owned model ``support-embedder`` revision ``v1`` of ``acme-enterprise``;
* usage events over the whole UTC days of ``window`` before today (pseudo-random but
  deterministic: the same day always gets the same events), loaded with ``COPY``.

Determinism. Row ids are ``uuid5(AIAAS_SEED_NAMESPACE, "<table>:<natural key>")``; API keys (id
and secret) are derived from the seed secret (``AIAAS_DB_SEED_SECRET``) with HKDF-SHA256, so the
same secret always gives the same ``api_key`` token. Without the variable, ``local-dev`` uses
:data:`LOCAL_DEV_SEED_SECRET` and ``ci`` :data:`CI_SEED_SECRET` -- fixed, published values, fit
only for throwaway databases (seeding is refused in ``production``). The digests of the key
secrets are made with the API key hash key: ``AIAAS_DB_API_KEY_HASH_KEY`` when set, otherwise one
derived from the seed secret (:func:`seed_api_key_hash_key`, which a local service uses to verify
the keys).

Idempotence. Every insert is ``ON CONFLICT DO NOTHING`` on the natural key (slug; organisation and
e-mail digest; organisation and key name; organisation, name and revision; event id), and ids are
read back by natural key, so rows someone else created under the same natural key are used, not
duplicated or changed. A rerun on the same day inserts nothing and writes no audit entry; a rerun
on a later day adds only the days that are new to the window.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

import attrs

from aiaas_db._errors import MigrationRefusedError
from aiaas_db.platform._dbops import ConnOrDsn, format_window, open_connection, parse_window
from aiaas_db.platform._usage import USAGE_EVENT_COLUMNS

if TYPE_CHECKING:
    import psycopg

    from aiaas_core import ApiKey, KeyedHasher
    from aiaas_db.platform._pii import PiiProtector

__all__ = [
    "AIAAS_SEED_NAMESPACE",
    "API_KEY_HASH_KEY_ENV",
    "CI_SEED_SECRET",
    "LOCAL_DEV_SEED_SECRET",
    "LoadProgress",
    "SEED_PACKAGES",
    "SEED_SECRET_ENV",
    "SeedError",
    "SeedReport",
    "derive_api_key",
    "local_dev_api_key",
    "resolve_seed_secret",
    "rich_progress",
    "seed",
    "seed_api_key_hash_key",
    "seed_api_key_hasher",
    "seed_uuid",
]

SeedPackage = Literal["local-dev", "ci"]

#: The seed packages :func:`seed` knows.
SEED_PACKAGES: Final[tuple[SeedPackage, ...]] = ("local-dev", "ci")
#: Namespace of every seeded row id: ``uuid5(AIAAS_SEED_NAMESPACE, "<table>:<natural key>")``.
AIAAS_SEED_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://aiaas.dev/aiaas-db/seeds")
#: The environment variable holding the seed secret.
SEED_SECRET_ENV: Final = "AIAAS_DB_SEED_SECRET"  # noqa: S105 -- a variable name
#: The environment variable holding the API key hash key (``version:key`` or a bare key).
API_KEY_HASH_KEY_ENV: Final = "AIAAS_DB_API_KEY_HASH_KEY"
#: The published seed secret of ``local-dev`` (used when ``AIAAS_DB_SEED_SECRET`` is unset).
LOCAL_DEV_SEED_SECRET: Final = "aiaas-local-dev-seed-secret-not-for-production"  # noqa: S105
#: The published seed secret of ``ci`` (used when ``AIAAS_DB_SEED_SECRET`` is unset).
CI_SEED_SECRET: Final = "aiaas-ci-seed-secret-not-for-production"  # noqa: S105
#: Version of the API key hash key derived from a seed secret.
SEED_HASH_KEY_VERSION: Final = "v1"

_MIN_SECRET: Final = 16
_MAX_WINDOW_DAYS: Final = 366
_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PROTECTED: Final = frozenset({"production"})
_LOCK_KEY: Final = int.from_bytes(hashlib.sha256(b"aiaas-db seed").digest()[:8], "big", signed=True)
_ROLES: Final = ("owner", "admin", "developer", "billing")


class SeedError(MigrationRefusedError):
    """Seeding was refused: unknown package, bad window or secret, no schema, protected env.

    Codes: ``SEED_PACKAGE_UNKNOWN``, ``SEED_WINDOW_INVALID``, ``SEED_SECRET_INVALID``,
    ``SEED_SECRET_MISMATCH``, ``SEED_SCHEMA_MISSING``, ``SEED_PROTECTED_ENVIRONMENT``.
    """

    code = "SEED_REFUSED"
    title = "Seeding refused"


# -- fixture definitions ---------------------------------------------------------------------


@attrs.frozen
class _Org:
    slug: str
    display_name: str
    plan_tier: str
    budget_limit_tokens: int
    events_per_day: int  # local-dev volume; ci uses a tenth


_ORGS: Final = (
    _Org("acme-free", "Acme (Free)", "free", 100_000, 24),
    _Org("acme-starter", "Acme (Starter)", "starter", 2_000_000, 60),
    _Org("acme-pro", "Acme (Pro)", "pro", 25_000_000, 160),
    _Org("acme-enterprise", "Acme (Enterprise)", "enterprise", 500_000_000, 320),
)


@attrs.frozen
class _User:
    org: str
    key: str  # natural key inside the organisation (never the e-mail: ids must not leak it)
    email: str
    role: str
    status: str = "active"
    deletion_requested_days_ago: int | None = None


@attrs.frozen
class _Key:
    org: str
    name: str
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    status: str = "active"
    expired_days_ago: int | None = None
    rotating_grace_days: int | None = None


@attrs.frozen
class _Model:
    org: str | None
    name: str
    revision: str
    deployment_target: str
    cost_per_1k_tokens_usd: Decimal
    metadata: Mapping[str, Any]


GLOBAL_MODEL: Final = "all-MiniLM-L6-v2"
_MODELS: Final = (
    _Model(
        None,
        GLOBAL_MODEL,
        "gt-1",
        "serving/cpu",
        Decimal("0.000020"),
        {"dimensions": 384, "source": "sentence-transformers/all-MiniLM-L6-v2", "task": "embed"},
    ),
    _Model(
        "acme-enterprise",
        "support-embedder",
        "v1",
        "serving/gpu",
        Decimal("0.000150"),
        {"dimensions": 768, "base": GLOBAL_MODEL, "task": "embed"},
    ),
    _Model(
        None,
        "SmolLM2-135M-Instruct",
        "q4_1",
        "serving/cpu",
        Decimal("0.000040"),
        {"context": 8192, "source": "HuggingFaceTB/SmolLM2-135M-Instruct", "task": "generate"},
    ),
)

_INFERENCE_SCOPES: Final = ("completions:create", "embeddings:create", "models:read")


def _users(package: SeedPackage) -> list[_User]:
    users = [
        _User(o.slug, role, f"{role}@{o.slug}.example.com", role) for o in _ORGS for role in _ROLES
    ]
    if package == "ci":
        users += [
            _User("acme-pro", "disabled", "disabled@acme-pro.example.com", "developer", "disabled"),
            _User("acme-pro", "leaver", "leaver@acme-pro.example.com", "developer", "active", 45),
            _User(
                "acme-pro", "newleaver", "newleaver@acme-pro.example.com", "billing", "active", 3
            ),
        ]
    return users


def _keys(package: SeedPackage) -> list[_Key]:
    keys = [_Key("acme-pro", "local-dev", ("developer",), _INFERENCE_SCOPES)]
    keys += [_Key(o.slug, "default", ("service",), _INFERENCE_SCOPES) for o in _ORGS]
    if package == "ci":
        keys += [
            _Key("acme-pro", "ci-revoked", ("developer",), _INFERENCE_SCOPES, "revoked"),
            _Key("acme-pro", "ci-expired", ("developer",), _INFERENCE_SCOPES, "active", 1),
            _Key("acme-pro", "ci-rotating", ("developer",), _INFERENCE_SCOPES, "rotating", None, 1),
        ]
    return keys


# -- deterministic derivations ---------------------------------------------------------------


def seed_uuid(table: str, natural_key: str) -> uuid.UUID:
    """The id of a seeded row: ``uuid5(AIAAS_SEED_NAMESPACE, "<table>:<natural key>")``."""
    return uuid.uuid5(AIAAS_SEED_NAMESPACE, f"{table}:{natural_key}")


def _check_secret(seed_secret: object) -> str:
    if not isinstance(seed_secret, str) or len(seed_secret.strip()) < _MIN_SECRET:
        raise SeedError(
            f"the seed secret must be text of at least {_MIN_SECRET} characters; set "
            f"{SEED_SECRET_ENV} to a longer value",
            code="SEED_SECRET_INVALID",
        )
    return seed_secret.strip()


def _hkdf(seed_secret: str, purpose: str, length: int) -> bytes:
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415 -- heavy, used rarely
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: PLC0415

    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=b"aiaas-db seed v1", info=purpose.encode()
    ).derive(_check_secret(seed_secret).encode("utf-8"))


def _b62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(reversed(chars))


def derive_api_key(seed_secret: str, organization: str, name: str) -> ApiKey:
    """The API key seeded as ``name`` in ``organization``: id and secret derived from the seed
    secret (HKDF-SHA256), so the same secret always gives the same token."""
    from aiaas_core import ApiKey  # noqa: PLC0415 -- keeps import aiaas_db cheap

    raw = _hkdf(seed_secret, f"api-key:{organization}:{name}", 64)
    key_id = _b62(int.from_bytes(raw[:16], "big"), 12)
    secret = _b62(int.from_bytes(raw[16:], "big"), 43)
    return ApiKey("aiaas", key_id, secret)


def local_dev_api_key(seed_secret: str = LOCAL_DEV_SEED_SECRET) -> str:
    """The token of the seeded ``local-dev`` key of ``acme-pro`` (what ``seed --output json``
    prints). Show it to the developer; never log it."""
    return derive_api_key(seed_secret, "acme-pro", "local-dev").token


def seed_api_key_hash_key(seed_secret: str = LOCAL_DEV_SEED_SECRET) -> str:
    """The API key hash key (64 hex characters) derived from ``seed_secret``: the key the seeded
    ``hashed_secret`` digests are made with when ``AIAAS_DB_API_KEY_HASH_KEY`` is unset (give it
    to a local service as its API key hash key, version ``v1``)."""
    return _hkdf(seed_secret, "api-key-hash-key", 32).hex()


def seed_api_key_hasher(seed_secret: str = LOCAL_DEV_SEED_SECRET) -> KeyedHasher:
    """A :class:`~aiaas_core.KeyedHasher` (version ``v1``) over :func:`seed_api_key_hash_key`."""
    from aiaas_core import HashKey, KeyedHasher  # noqa: PLC0415 -- keeps import aiaas_db cheap

    key = HashKey(SEED_HASH_KEY_VERSION, bytes.fromhex(seed_api_key_hash_key(seed_secret)))
    return KeyedHasher([key], SEED_HASH_KEY_VERSION)


def resolve_seed_secret(package: str, environ: Mapping[str, str] | None = None) -> str:
    """``AIAAS_DB_SEED_SECRET`` when set, else the package's published default."""
    _check_package(package)
    env = os.environ if environ is None else environ
    value = env.get(SEED_SECRET_ENV, "")
    if value.strip():
        return _check_secret(value)
    return LOCAL_DEV_SEED_SECRET if package == "local-dev" else CI_SEED_SECRET


def _check_package(package: object) -> SeedPackage:
    if package not in SEED_PACKAGES:
        raise SeedError(
            f"unknown seed package {package!r}: choose one of {', '.join(SEED_PACKAGES)}",
            code="SEED_PACKAGE_UNKNOWN",
        )
    return package


def _check_environment(environment: str | None) -> None:
    if environment is not None and environment.strip().lower() in _PROTECTED:
        raise SeedError(
            f"refusing to seed the {environment.strip().lower()} environment: seeds hold "
            "published secrets and fake people; seed only development and test databases",
            code="SEED_PROTECTED_ENVIRONMENT",
        )


def _check_window(window: str | timedelta) -> int:
    try:
        value = parse_window(window)
    except ValueError as exc:
        raise SeedError(str(exc), code="SEED_WINDOW_INVALID") from None
    days, rest = divmod(value, timedelta(days=1))
    if rest or not 1 <= days <= _MAX_WINDOW_DAYS:
        raise SeedError(
            f"the seed window must be a whole number of days from 1d to {_MAX_WINDOW_DAYS}d, "
            f"got {format_window(value)}",
            code="SEED_WINDOW_INVALID",
        )
    return int(days)


# -- report ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SeedReport:
    """What :func:`seed` did. ``inserted`` counts new rows per table (all zero on a rerun).

    ``api_key`` is the ``local-dev`` token: it is left out of ``repr`` and of :meth:`to_dict`
    unless asked for.
    """

    package: SeedPackage
    window_start: datetime
    window_end: datetime
    inserted: Mapping[str, int]
    organizations: tuple[str, ...]
    api_key_id: str
    api_key: str = attrs.field(repr=False)

    @property
    def changed(self) -> bool:
        """Whether anything was inserted."""
        return any(self.inserted.values())

    def to_dict(self, *, include_api_key: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "package": self.package,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "inserted": dict(sorted(self.inserted.items())),
            "changed": self.changed,
            "organizations": list(self.organizations),
            "api_key_id": self.api_key_id,
        }
        if include_api_key:
            out["api_key"] = self.api_key
        return out


# -- the seed --------------------------------------------------------------------------------


@runtime_checkable
class LoadProgress(Protocol):
    """Receives the progress of a bulk event load (``progress=`` of :func:`seed` and
    :func:`~aiaas_db.load_synthetic` is a factory ``total rows -> LoadProgress``)."""

    def advance(self, rows: int) -> None:
        """Record ``rows`` more rows written."""

    def close(self) -> None:
        """The load is over (also called when it failed)."""


class _RichProgress:
    def __init__(self, total: int, description: str) -> None:
        from rich.console import Console  # noqa: PLC0415 -- only when a bar is shown
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar  # noqa: PLC0415

        self._bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._bar.add_task(description, total=total)
        self._bar.start()

    def advance(self, rows: int) -> None:
        self._bar.advance(self._task, rows)

    def close(self) -> None:
        self._bar.stop()


def rich_progress(total: int, description: str = "usage events") -> LoadProgress:
    """A rich progress bar on stderr for ``total`` rows."""
    return _RichProgress(total, description)


def seed(
    conn_or_dsn: ConnOrDsn,
    package: str = "local-dev",
    *,
    window: str | timedelta = "7d",
    protector: PiiProtector | None = None,
    seed_secret: str | None = None,
    api_key_hasher: KeyedHasher | None = None,
    environment: str | None = None,
    now: datetime | None = None,
    progress: bool | Callable[[int], LoadProgress] = False,
) -> SeedReport:
    """Load seed ``package`` (``local-dev`` or ``ci``) into a database with the platform schema.

    ``seed_secret`` defaults to :func:`resolve_seed_secret`; ``protector`` (the PII keys) to
    ``PiiProtector.for_local_development(seed_secret)``; ``api_key_hasher`` to
    :func:`seed_api_key_hasher`. ``window`` (``7d``; whole days, 1 to 366) sets how many UTC days
    before ``now``'s day get usage events. ``progress``: ``True`` for a rich bar on stderr, or a
    factory ``total -> LoadProgress``.

    ``conn_or_dsn``: a DSN (a connection is opened, committed and closed), or a psycopg
    connection whose transaction is used -- commit it afterwards unless it is in autocommit.

    Runs in one transaction under an advisory lock; idempotent (see the module docs). Raises
    :class:`SeedError` for bad input, a missing schema, a protected ``environment`` or a
    ``local-dev`` key already seeded with another secret (``SEED_SECRET_MISMATCH``), and
    :class:`~aiaas_db.DatabaseUnavailableError` when the database cannot be reached.
    """
    pkg = _check_package(package)
    days = _check_window(window)
    _check_environment(environment)
    secret = _check_secret(seed_secret) if seed_secret is not None else resolve_seed_secret(pkg)
    if protector is None:
        from aiaas_db.platform._pii import PiiProtector  # noqa: PLC0415 -- keeps import aiaas_db cheap

        protector = PiiProtector.for_local_development(secret)
    hasher = api_key_hasher if api_key_hasher is not None else seed_api_key_hasher(secret)
    current = now if now is not None else datetime.now(UTC)
    if current.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    end = datetime.combine(current.astimezone(UTC).date(), time(), tzinfo=UTC)
    start = end - timedelta(days=days)

    with open_connection(conn_or_dsn, "seed") as conn:
        from aiaas_db.platform._dbops import OPERATIONAL_TABLES, require_tables  # noqa: PLC0415

        require_tables(
            conn, OPERATIONAL_TABLES, code="SEED_SCHEMA_MISSING", error=SeedError, what="seeding"
        )
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            writer = _Writer(
                conn, package=pkg, secret=secret, protector=protector, hasher=hasher, now=current
            )
            writer.organizations()
            writer.users()
            writer.api_keys()
            writer.models()
            writer.usage_events(start, end, progress)
            if any(writer.inserted.values()):
                from aiaas_db.platform._audit import write_audit  # noqa: PLC0415

                write_audit(
                    conn,
                    actor_type="service",
                    actor="aiaas-db seed",
                    action="seed.apply",
                    target=f"seed-package:{pkg}",
                    metadata={
                        "inserted": dict(sorted(writer.inserted.items())),
                        "window_start": start.isoformat(),
                        "window_end": end.isoformat(),
                    },
                    protector=protector,
                )
    key = derive_api_key(secret, "acme-pro", "local-dev")
    return SeedReport(
        package=pkg,
        window_start=start,
        window_end=end,
        inserted=dict(writer.inserted),
        organizations=tuple(o.slug for o in _ORGS),
        api_key_id=key.key_id,
        api_key=key.token,
    )


class _Writer:
    """Writes one package's rows; ``inserted`` counts what was new."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        *,
        package: SeedPackage,
        secret: str,
        protector: PiiProtector,
        hasher: KeyedHasher,
        now: datetime,
    ) -> None:
        self.conn = conn
        self.package = package
        self.secret = secret
        self.protector = protector
        self.hasher = hasher
        self.now = now
        self.inserted: dict[str, int] = {}
        self.org_ids: dict[str, uuid.UUID] = {}
        self.key_ids: dict[tuple[str, str], uuid.UUID] = {}
        self.model_ids: dict[tuple[str | None, str], tuple[uuid.UUID, Decimal]] = {}

    def _count(self, table: str, rows: int) -> None:
        self.inserted[table] = self.inserted.get(table, 0) + max(rows, 0)

    def organizations(self) -> None:
        for org in _ORGS:
            cur = self.conn.execute(
                "INSERT INTO organizations (organization_id, slug, display_name, plan_tier,"
                " budget_limit_tokens) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    seed_uuid("organizations", org.slug),
                    org.slug,
                    org.display_name,
                    org.plan_tier,
                    org.budget_limit_tokens,
                ),
            )
            self._count("organizations", cur.rowcount)
        rows = self.conn.execute(
            "SELECT slug, organization_id FROM organizations WHERE slug = ANY(%s)",
            ([o.slug for o in _ORGS],),
        ).fetchall()
        self.org_ids = {str(r[0]): r[1] for r in rows}

    def users(self) -> None:
        for user in _users(self.package):
            org_id = self.org_ids[user.org]
            user_id = seed_uuid("users", f"{user.org}:{user.key}")
            ciphertext, key_version = self.protector.encrypt(user.email, user_id.bytes)
            requested = (
                None
                if user.deletion_requested_days_ago is None
                else self.now - timedelta(days=user.deletion_requested_days_ago)
            )
            cur = self.conn.execute(
                "INSERT INTO users (user_id, organization_id, email_digest, email_ciphertext,"
                " email_key_version, role, status, deletion_requested_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    user_id,
                    org_id,
                    self.protector.email_digest(user.email),
                    ciphertext,
                    key_version,
                    user.role,
                    user.status,
                    requested,
                ),
            )
            self._count("users", cur.rowcount)

    def api_keys(self) -> None:
        for spec in _keys(self.package):
            org_id = self.org_ids[spec.org]
            key = derive_api_key(self.secret, spec.org, spec.name)
            expires_at: datetime | None = None
            if spec.expired_days_ago is not None:
                expires_at = self.now - timedelta(days=spec.expired_days_ago)
            elif spec.rotating_grace_days is not None:
                expires_at = self.now + timedelta(days=spec.rotating_grace_days)
            owner = seed_uuid("users", f"{spec.org}:owner")
            cur = self.conn.execute(
                "INSERT INTO api_keys (api_key_id, organization_id, key_id, name, hashed_secret,"
                " scopes, roles, status, created_by_user_id, expires_at, revoked_at)"
                " SELECT %s, %s, %s, %s, %s, %s, %s, %s,"
                " (SELECT user_id FROM users WHERE user_id = %s), %s, %s"
                " ON CONFLICT DO NOTHING",
                (
                    seed_uuid("api_keys", f"{spec.org}:{spec.name}"),
                    org_id,
                    key.key_id,
                    spec.name,
                    self.hasher.digest(key.secret),
                    list(spec.scopes),
                    list(spec.roles),
                    spec.status,
                    owner,
                    expires_at,
                    self.now if spec.status == "revoked" else None,
                ),
            )
            self._count("api_keys", cur.rowcount)
        rows = self.conn.execute(
            "SELECT o.slug, k.name, k.api_key_id FROM api_keys k"
            " JOIN organizations o USING (organization_id) WHERE o.slug = ANY(%s)",
            (list(self.org_ids),),
        ).fetchall()
        self.key_ids = {(str(r[0]), str(r[1])): r[2] for r in rows}
        self._check_printed_key()

    def _check_printed_key(self) -> None:
        """The ``local-dev`` key stored must be the one the report prints."""
        expected = derive_api_key(self.secret, "acme-pro", "local-dev")
        row = self.conn.execute(
            "SELECT key_id, hashed_secret FROM api_keys WHERE api_key_id = %s",
            (self.key_ids[("acme-pro", "local-dev")],),
        ).fetchone()
        assert row is not None  # just read by natural key
        try:
            same = row[0] == expected.key_id and self.hasher.verify(expected.secret, row[1])
        except ValueError:  # not a digest at all
            same = False
        if not same:
            raise SeedError(
                "the local-dev API key of acme-pro in this database was made with another seed "
                f"secret or API key hash key; seed with the original {SEED_SECRET_ENV} and "
                f"{API_KEY_HASH_KEY_ENV}, or delete that key and seed again",
                code="SEED_SECRET_MISMATCH",
            )

    def models(self) -> None:
        from psycopg.types.json import Jsonb  # noqa: PLC0415

        for model in _MODELS:
            org_id = None if model.org is None else self.org_ids[model.org]
            natural = f"{model.org or '-'}:{model.name}:{model.revision}"
            cur = self.conn.execute(
                "INSERT INTO model_registry_entries (model_registry_entry_id, organization_id,"
                " name, revision, deployment_target, cost_per_1k_tokens_usd, metadata)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    seed_uuid("model_registry_entries", natural),
                    org_id,
                    model.name,
                    model.revision,
                    model.deployment_target,
                    model.cost_per_1k_tokens_usd,
                    Jsonb(dict(model.metadata)),
                ),
            )
            self._count("model_registry_entries", cur.rowcount)
            row = self.conn.execute(
                "SELECT model_registry_entry_id, cost_per_1k_tokens_usd FROM model_registry_entries"
                " WHERE organization_id IS NOT DISTINCT FROM %s AND name = %s AND revision = %s",
                (org_id, model.name, model.revision),
            ).fetchone()
            assert row is not None  # just inserted or already there
            self.model_ids[(model.org, model.name)] = (row[0], Decimal(row[1]))

    def usage_events(
        self, start: datetime, end: datetime, progress: bool | Callable[[int], LoadProgress]
    ) -> None:
        from aiaas_db.platform._dbops import ensure_usage_partitions  # noqa: PLC0415

        ensure_usage_partitions(
            self.conn, start, end, protector=self.protector, actor="aiaas-db seed"
        )
        scale = 1 if self.package == "local-dev" else 10
        days = [start.date() + timedelta(days=i) for i in range((end - start).days)]
        plan = [(org, day, _events_on(org, day, scale)) for org in _ORGS for day in days]
        total = sum(n for _, _, n in plan)
        bar: LoadProgress | None = None
        if progress is True:
            bar = rich_progress(total, f"seeding usage events ({self.package})")
        elif callable(progress):
            bar = progress(total)
        self.conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS aiaas_seed_usage_events"
            " (LIKE usage_events INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        columns = ", ".join(USAGE_EVENT_COLUMNS)
        try:
            with self.conn.cursor().copy(
                f"COPY aiaas_seed_usage_events ({columns}) FROM STDIN"
            ) as copy:
                for org, day, count in plan:
                    for row in self._day_events(org, day, count):
                        copy.write_row(row)
                    if bar is not None:
                        bar.advance(count)
        finally:
            if bar is not None:
                bar.close()
        cur = self.conn.execute(
            f"INSERT INTO usage_events ({columns}) SELECT {columns}"  # noqa: S608 -- constants
            " FROM aiaas_seed_usage_events ORDER BY occurred_at ON CONFLICT DO NOTHING"
        )
        self._count("usage_events", cur.rowcount)
        self.conn.execute("DROP TABLE aiaas_seed_usage_events")

    def _day_events(self, org: _Org, day: date, count: int) -> Iterator[Sequence[Any]]:
        rng = random.Random(_day_seed(f"{self.package}:{org.slug}", day))  # noqa: S311 -- fixtures, not crypto
        org_id = self.org_ids[org.slug]
        keys = [
            self.key_ids[(org.slug, name)]
            for name in ("default", "local-dev")
            if (org.slug, name) in self.key_ids
        ]
        global_model = self.model_ids[(None, GLOBAL_MODEL)]
        own_model = next((v for (o, _), v in self.model_ids.items() if o == org.slug), None)
        region = "eu-west-1" if org.plan_tier in {"pro", "enterprise"} else "us-east-1"
        midnight = datetime.combine(day, time(), tzinfo=UTC)
        offsets = sorted(_diurnal_offset(rng) for _ in range(count))
        for index, offset in enumerate(offsets):
            event_id = seed_uuid(
                "usage_events", f"{self.package}:{org.slug}:{day.isoformat()}:{index}"
            )
            roll = rng.random()
            status = "success"
            error_code: str | None = None
            if roll < 0.01:
                status, error_code = "rate_limited", "RATE_LIMITED"
            elif roll < 0.03:
                status = "error"
                error_code = rng.choice(("MODEL_TIMEOUT", "INTERNAL", "BAD_INPUT"))
            model: tuple[uuid.UUID, Decimal] | None
            if status == "rate_limited":
                model = None
            elif own_model is not None and rng.random() < 0.4:
                model = own_model
            else:
                model = global_model
            tokens = 0 if status == "rate_limited" else _tokens(rng)
            latency = 3 + int(tokens * rng.uniform(0.02, 0.08)) + int(rng.expovariate(1 / 15))
            cost = (
                Decimal(0)
                if model is None or status != "success"
                else (Decimal(tokens) * model[1] / 1000).quantize(Decimal("1e-8"))
            )
            yield (
                event_id,
                midnight + timedelta(seconds=offset),
                org_id,
                keys[index % len(keys)] if keys else None,
                None if model is None else model[0],
                f"req_{event_id.hex[:20]}",
                tokens,
                latency,
                status,
                error_code,
                region,
                cost,
                None,  # prompt_tokens: seeded events do not split their tokens
                None,  # completion_tokens
            )


def _day_seed(slug: str, day: date) -> int:
    return int.from_bytes(hashlib.sha256(f"{slug}:{day.isoformat()}".encode()).digest()[:8], "big")


def _events_on(org: _Org, day: date, scale: int) -> int:
    """Events of ``org`` on ``day``: weekends are quieter; ``ci`` loads a tenth."""
    base = org.events_per_day if day.weekday() < 5 else org.events_per_day // 3
    jitter = _day_seed(org.slug, day) % max(base // 5, 1)
    return max((base + jitter) // scale, 1)


def _diurnal_offset(rng: random.Random) -> float:
    """Seconds into the day, busier in (European) office hours."""
    while True:
        second = rng.uniform(0, 86400)
        hour = second / 3600
        weight = 0.35 + 0.65 * math.exp(-(((hour - 13.0) / 4.0) ** 2))
        if rng.random() < weight:
            return second


def _tokens(rng: random.Random) -> int:
    """Tokens per request: log-normal around ~150, clamped to 8..2048."""
    return max(8, min(2048, int(rng.lognormvariate(5.0, 0.9))))
