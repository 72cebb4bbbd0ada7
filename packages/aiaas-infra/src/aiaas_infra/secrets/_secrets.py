"""The sealed secrets bundle of each environment: a committable store, rotation, freshness.

Values never live in the spec or the store. :class:`SealedStore` is a YAML file holding, per
environment and item, only the sealed value (see :mod:`aiaas_infra.secrets._sealing`), when it was
last
rotated, its scope, where it is bound (namespace, SealedSecret name) and an optional keyed
digest (HMAC-SHA256 under a key only its operators hold) that lets ``rotate`` refuse to reuse a
value. Each environment's bundle becomes one Bitnami ``SealedSecret`` named ``<env>-secrets``::

    store = SealedStore.load("sealed-secrets.yaml")
    store = rotate(store, cert, spec, "production", "api-token", new_value)
    store.save("sealed-secrets.yaml")
    manifest = sealed_secret_manifest(
        "production",
        spec.namespace("production"),
        store,
        spec.environments["production"].secret_items,
    )
    report = freshness_report(spec, store, now)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from aiaas_core import NotFoundError, ValidationError
from aiaas_infra.secrets._sealing import SCOPE_ANNOTATIONS, SCOPES, SealingCertificate, seal

if TYPE_CHECKING:
    from aiaas_infra.spec._model import PlatformSpec, SecretItem

__all__ = [
    "FreshnessItem",
    "FreshnessReport",
    "SealedItem",
    "SealedStore",
    "SecretNotSealedError",
    "SecretsError",
    "freshness_report",
    "rotate_secret",
    "seal_secret",
    "sealed_secret_manifest",
    "secret_name",
    "value_digest",
]

#: Items whose rotation falls due within this many days are reported as ``due-soon``.
DUE_SOON_DAYS: Final = 7
_ANNOTATION_PREFIX: Final = "secrets.aiaas.dev"
_MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "aiaas"}

FreshnessStatus = Literal["fresh", "due-soon", "overdue", "missing"]


class SecretsError(ValidationError):
    """A secrets bundle operation cannot go ahead (the message says why and what to do)."""

    code = "SECRETS_INVALID"
    title = "Secrets bundle problem"


class SecretNotSealedError(NotFoundError):
    """An item the spec declares has no sealed value in the store yet."""

    code = "SECRET_NOT_SEALED"
    title = "Secret not sealed"


def secret_name(env: str) -> str:
    """The name of an environment's SealedSecret (and of the Secret it opens into)."""
    return f"{env}-secrets"


def value_digest(key: bytes, value: bytes) -> str:
    """A keyed digest of ``value`` (``hmac-sha256:<hex>``); without ``key`` it reveals nothing."""
    if not key:
        raise SecretsError("the digest key is empty; set a long random key")
    return "hmac-sha256:" + hmac.new(key, value, hashlib.sha256).hexdigest()


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise SecretsError("timestamps must be timezone-aware (UTC)")
    return value.astimezone(dt.UTC)


def _iso(value: dt.datetime) -> str:
    return _utc(value).isoformat().replace("+00:00", "Z")


def _parse_time(value: object, where: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return _utc(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    if not isinstance(value, str):
        raise SecretsError(f"{where}: rotated_at must be an ISO 8601 timestamp, got {value!r}")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SecretsError(f"{where}: rotated_at {value!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise SecretsError(f"{where}: rotated_at {value!r} has no timezone (use ...Z)")
    return parsed.astimezone(dt.UTC)


def _check_scope(_inst: object, _attr: object, value: str) -> None:
    if value not in SCOPES:
        raise SecretsError(f"unknown sealing scope {value!r}; use one of {', '.join(SCOPES)}")


@attrs.frozen
class SealedItem:
    """One sealed value and its metadata (nothing here is secret)."""

    encrypted: str = attrs.field(repr=False)
    rotated_at: dt.datetime = attrs.field(converter=_utc)
    namespace: str
    secret: str
    scope: str = attrs.field(default="strict", validator=_check_scope)
    value_digest: str | None = attrs.field(default=None, repr=False)
    certificate: str | None = None  # the sealing certificate's fingerprint

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "encrypted": self.encrypted,
            "rotated_at": _iso(self.rotated_at),
            "namespace": self.namespace,
            "secret": self.secret,
            "scope": self.scope,
        }
        if self.value_digest is not None:
            out["value_digest"] = self.value_digest
        if self.certificate is not None:
            out["certificate"] = self.certificate
        return out

    @classmethod
    def from_dict(cls, data: object, where: str) -> SealedItem:
        if not isinstance(data, Mapping):
            raise SecretsError(f"{where}: expected a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in attrs.fields(cls)})
        if unknown:
            raise SecretsError(f"{where}: unknown fields {', '.join(map(str, unknown))}")
        for required in ("encrypted", "rotated_at", "namespace", "secret"):
            if not isinstance(data.get(required), str | dt.datetime) or not data.get(required):
                raise SecretsError(f"{where}.{required}: required")
        return cls(
            encrypted=str(data["encrypted"]),
            rotated_at=_parse_time(data["rotated_at"], where),
            namespace=str(data["namespace"]),
            secret=str(data["secret"]),
            scope=str(data.get("scope", "strict")),
            value_digest=data.get("value_digest"),
            certificate=data.get("certificate"),
        )


@attrs.frozen
class SealedStore:
    """Sealed items per environment: ``{env: {item: SealedItem}}``. Immutable; the changing
    operations return a new store. Safe to commit: it holds ciphertext and metadata only."""

    environments: Mapping[str, Mapping[str, SealedItem]] = attrs.field(factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> SealedStore:
        """Read a store file; a missing file is an empty store."""
        import yaml  # noqa: PLC0415

        p = Path(path)
        if not p.exists():
            return cls()
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SecretsError(f"{p}: not YAML ({exc.__class__.__name__})") from None
        return cls.from_dict(doc or {}, source=str(p))

    @classmethod
    def from_dict(cls, doc: object, *, source: str = "sealed store") -> SealedStore:
        if not isinstance(doc, Mapping):
            raise SecretsError(f"{source}: expected a mapping of environments")
        envs: dict[str, dict[str, SealedItem]] = {}
        for env, items in doc.items():
            if not isinstance(items, Mapping):
                raise SecretsError(f"{source}: {env}: expected a mapping of items")
            envs[str(env)] = {
                str(name): SealedItem.from_dict(data, f"{source}: {env}.{name}")
                for name, data in items.items()
            }
        return cls(envs)

    def to_dict(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {
            env: {name: items[name].to_dict() for name in sorted(items)}
            for env, items in sorted(self.environments.items())
        }

    def dumps(self) -> str:
        import yaml  # noqa: PLC0415

        header = "# aiaas-infra sealed secrets: ciphertext and metadata only (safe to commit)\n"
        return header + yaml.safe_dump(self.to_dict(), sort_keys=True, default_flow_style=False)

    def save(self, path: str | Path) -> None:
        """Write the store atomically (a temporary file renamed over the old one)."""
        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(self.dumps(), encoding="utf-8")
        tmp.replace(p)

    def get(self, env: str, item: str) -> SealedItem | None:
        return self.environments.get(env, {}).get(item)

    def with_item(self, env: str, item: str, sealed: SealedItem) -> SealedStore:
        envs = {e: dict(items) for e, items in self.environments.items()}
        envs.setdefault(env, {})[item] = sealed
        return SealedStore(envs)


def _spec_item(spec: PlatformSpec, env: str, item: str) -> SecretItem:
    if env not in spec.environments:
        raise SecretsError(
            f"the spec has no environment {env!r} (it has {', '.join(sorted(spec.environments))})"
        )
    items = {i.name: i for i in spec.environments[env].secret_items}
    if item not in items:
        raise SecretsError(
            f"environment {env!r} declares no secret {item!r} (it declares "
            f"{', '.join(sorted(items))}); add it to the spec's secrets first"
        )
    return items[item]


def seal_secret(  # noqa: PLR0917 -- store, key, spec, where, what: the natural order
    store: SealedStore,
    cert: SealingCertificate,
    spec: PlatformSpec,
    env: str,
    item: str,
    value: bytes,
    *,
    scope: str = "strict",
    now: dt.datetime | None = None,
    digest_key: bytes | None = None,
    replace: bool = False,
) -> SealedStore:
    """Seal ``value`` as ``env``'s item ``item`` and record it; returns the new store.

    Refuses an item the spec does not declare, an empty value, and (unless ``replace``) an
    item already sealed: use :func:`rotate_secret` to change a value.
    """
    _spec_item(spec, env, item)
    _check_scope(None, None, scope)
    if not value:
        raise SecretsError(f"the value for {env}/{item} is empty; nothing to seal")
    if not replace and store.get(env, item) is not None:
        raise SecretsError(
            f"{env}/{item} is already sealed; rotate it (`aiaas-infra secrets rotate`)"
        )
    namespace, name = spec.namespace(env), secret_name(env)
    others = {i.scope for n, i in store.environments.get(env, {}).items() if n != item}
    if others and others != {scope}:
        raise SecretsError(
            f"{env}'s bundle is sealed {', '.join(sorted(others))}; one SealedSecret has one "
            f"scope, so {item} cannot be {scope}"
        )
    sealed = SealedItem(
        encrypted=seal(cert, value, namespace=namespace, name=name, scope=scope),
        rotated_at=now if now is not None else dt.datetime.now(dt.UTC),
        namespace=namespace,
        secret=name,
        scope=scope,
        value_digest=value_digest(digest_key, value) if digest_key is not None else None,
        certificate=cert.fingerprint,
    )
    return store.with_item(env, item, sealed)


def rotate_secret(  # noqa: PLR0917 -- as seal_secret
    store: SealedStore,
    cert: SealingCertificate,
    spec: PlatformSpec,
    env: str,
    item: str,
    value: bytes,
    *,
    now: dt.datetime | None = None,
    digest_key: bytes | None = None,
) -> SealedStore:
    """Replace ``env``/``item`` with a new value, recording the rotation time; keeps its scope.

    With ``digest_key`` (the one its digest was made with) a rotation to the same value is
    refused: a rotation must change the value.
    """
    old = store.get(env, item)
    if old is None:
        raise SecretNotSealedError(
            f"{env}/{item} has never been sealed; seal it first (`aiaas-infra secrets seal`)"
        )
    if (
        digest_key is not None
        and old.value_digest is not None
        and hmac.compare_digest(old.value_digest, value_digest(digest_key, value))
    ):
        raise SecretsError(
            f"the new value for {env}/{item} equals the current one; a rotation needs a new value"
        )
    return seal_secret(
        store,
        cert,
        spec,
        env,
        item,
        value,
        scope=old.scope,
        now=now,
        digest_key=digest_key,
        replace=True,
    )


def sealed_secret_manifest(
    env: str,
    namespace: str,
    store: SealedStore,
    spec_items: Iterable[SecretItem],
) -> dict[str, Any]:
    """The Bitnami ``SealedSecret`` (``bitnami.com/v1alpha1``) holding ``env``'s bundle.

    One ``encryptedData`` key per spec item; owner, purpose, rotation period and last rotation
    are annotations (``secrets.aiaas.dev/<item>.owner`` ...). Deterministic. Raises
    :class:`SecretNotSealedError` listing every item not sealed yet, and :class:`SecretsError`
    when an item was sealed for another namespace or secret name (it would not open).
    """
    items = sorted(spec_items, key=lambda i: i.name)
    name = secret_name(env)
    missing = [i.name for i in items if store.get(env, i.name) is None]
    if missing:
        raise SecretNotSealedError(
            f"{env}: not sealed yet: {', '.join(missing)}; seal each with "
            f"`aiaas-infra secrets seal --env {env} --item NAME`"
        )
    labels = {**_MANAGED_BY, "aiaas.dev/environment": env}
    annotations: dict[str, str] = {}
    encrypted: dict[str, str] = {}
    scopes: set[str] = set()
    for item in items:
        sealed = store.get(env, item.name)
        assert sealed is not None
        if sealed.scope != "cluster-wide" and sealed.namespace != namespace:
            raise SecretsError(
                f"{env}/{item.name} was sealed for namespace {sealed.namespace!r}, not "
                f"{namespace!r}; reseal it"
            )
        if sealed.scope == "strict" and sealed.secret != name:
            raise SecretsError(
                f"{env}/{item.name} was sealed for secret {sealed.secret!r}, not {name!r}; "
                "reseal it"
            )
        scopes.add(sealed.scope)
        encrypted[item.name] = sealed.encrypted
        prefix = f"{_ANNOTATION_PREFIX}/{item.name}"
        annotations[f"{prefix}.owner"] = item.owner
        annotations[f"{prefix}.purpose"] = item.purpose
        annotations[f"{prefix}.rotation-days"] = str(item.rotation_days)
        annotations[f"{prefix}.rotated-at"] = _iso(sealed.rotated_at)
    if len(scopes) > 1:
        raise SecretsError(
            f"{env}'s items are sealed with mixed scopes ({', '.join(sorted(scopes))}); one "
            "SealedSecret has one scope: reseal them alike"
        )
    scope = scopes.pop() if scopes else "strict"
    if scope in SCOPE_ANNOTATIONS:
        annotations[SCOPE_ANNOTATIONS[scope]] = "true"
    template_meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    return {
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": dict(sorted(annotations.items())),
        },
        "spec": {
            "encryptedData": encrypted,
            "template": {"metadata": template_meta, "type": "Opaque"},
        },
    }


@attrs.frozen
class FreshnessItem:
    """How one item stands against its rotation period."""

    env: str
    name: str
    owner: str
    rotation_days: int
    status: FreshnessStatus
    rotated_at: dt.datetime | None = None
    age_days: float | None = None
    due_at: dt.datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "name": self.name,
            "owner": self.owner,
            "rotation_days": self.rotation_days,
            "status": self.status,
            "rotated_at": _iso(self.rotated_at) if self.rotated_at else None,
            "age_days": round(self.age_days, 2) if self.age_days is not None else None,
            "due_at": _iso(self.due_at) if self.due_at else None,
        }


@attrs.frozen
class FreshnessReport:
    """Every declared item of every environment, its age against its rotation period."""

    now: dt.datetime
    items: tuple[FreshnessItem, ...]

    @property
    def overdue(self) -> tuple[FreshnessItem, ...]:
        """Items past their rotation period, or never sealed."""
        return tuple(i for i in self.items if i.status in ("overdue", "missing"))

    @property
    def ok(self) -> bool:
        return not self.overdue

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": _iso(self.now),
            "ok": self.ok,
            "overdue": len(self.overdue),
            "items": [i.to_dict() for i in self.items],
        }


def freshness_report(
    spec: PlatformSpec, store: SealedStore, now: dt.datetime | None = None
) -> FreshnessReport:
    """Each declared item's age against its ``rotation_days``: ``fresh``, ``due-soon``
    (within 7 days of its period), ``overdue``, or ``missing`` (never sealed)."""
    at = _utc(now) if now is not None else dt.datetime.now(dt.UTC)
    out: list[FreshnessItem] = []
    for env in sorted(spec.environments):
        for item in sorted(spec.environments[env].secret_items, key=lambda i: i.name):
            sealed = store.get(env, item.name)
            if sealed is None:
                out.append(FreshnessItem(env, item.name, item.owner, item.rotation_days, "missing"))
                continue
            age = at - sealed.rotated_at
            due = sealed.rotated_at + dt.timedelta(days=item.rotation_days)
            status: FreshnessStatus
            if at >= due:
                status = "overdue"
            elif due - at <= dt.timedelta(days=DUE_SOON_DAYS):
                status = "due-soon"
            else:
                status = "fresh"
            out.append(
                FreshnessItem(
                    env,
                    item.name,
                    item.owner,
                    item.rotation_days,
                    status,
                    rotated_at=sealed.rotated_at,
                    age_days=age.total_seconds() / 86400,
                    due_at=due,
                )
            )
    return FreshnessReport(now=at, items=tuple(out))
