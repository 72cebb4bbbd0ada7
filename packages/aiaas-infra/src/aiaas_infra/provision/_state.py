"""State: a snapshot after every apply, a lock, environment statuses and drift reports.

A :class:`StateStore` keeps its documents in an object store: a local directory
(:class:`LocalStateBackend`) or an S3-compatible bucket such as Linode Object Storage
(:class:`S3StateBackend`). Every write is atomic (a temporary file renamed into place, or one
S3 PUT); the last :data:`KEEP_SNAPSHOTS` snapshots are kept; drift reports are kept
:data:`KEEP_REPORTS_DAYS` days; the lock is created only if absent (``O_EXCL`` locally,
``If-None-Match: *`` on S3), so two applies can never both hold it.

No secret is ever stored: resources carry ``secret_fingerprints`` (SHA-256 prefixes) only.

Layout::

    snapshots/000042.json     one snapshot per apply (serial, zero-padded)
    environments.json         current environment statuses and their audited history
    reports/drift/<stamp>-<id>.json|.md
    lock.json                 present while an apply runs
"""

# linode_api4, boto3 and botocore ship no type information.

from __future__ import annotations

import builtins
import contextlib
import json
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import attrs
from attrs import field

from aiaas_infra._errors import SnapshotNotFoundError, StateError, StateLockedError

__all__ = [
    "KEEP_REPORTS_DAYS",
    "KEEP_SNAPSHOTS",
    "EnvironmentRecord",
    "LocalStateBackend",
    "LockInfo",
    "ResourceRecord",
    "S3StateBackend",
    "SnapshotInfo",
    "StateBackend",
    "StateSnapshot",
    "StateStore",
    "Transition",
    "open_state",
]

KEEP_SNAPSHOTS: Final = 30
KEEP_REPORTS_DAYS: Final = 90
STATE_FORMAT: Final = 1

Outcome = Literal["applied", "rolled_back", "partial"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------------------------
# Documents


@attrs.frozen
class ResourceRecord:
    """A managed resource as last applied: id, normalised attributes, secret fingerprints."""

    kind: str
    name: str
    id: str
    attrs: Mapping[str, Any]
    parent_id: str | None = None
    environments: tuple[str, ...] = ()
    secret_fingerprints: Mapping[str, str] = field(factory=dict)

    @property
    def address(self) -> str:
        return f"{self.kind}.{self.name}"


@attrs.frozen
class Transition:
    """One audited environment status change."""

    environment: str
    from_status: str | None
    to_status: str
    at: str
    actor: str
    reason: str
    run_id: str


@attrs.frozen
class EnvironmentRecord:
    status: str
    since: str
    history: tuple[Transition, ...] = ()


@attrs.frozen
class StateSnapshot:
    """What one apply left behind. ``spec`` is the plain spec it applied (``rollback --to``
    plans back to it); ``outcome`` says whether the apply succeeded."""

    serial: int
    lineage: str
    created_at: str
    platform: str
    outcome: Outcome
    run_id: str
    actor: str
    spec: Mapping[str, Any]
    spec_fingerprint: str
    resources: Mapping[str, ResourceRecord]
    environments: Mapping[str, str] = attrs.field(factory=dict)
    format: int = STATE_FORMAT

    @property
    def id(self) -> str:
        return f"{self.serial:06d}"

    def to_json(self) -> bytes:
        return json.dumps(_unstructure(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str = "state") -> StateSnapshot:
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StateError(f"{where} is not JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
            raise StateError(
                f"{where} has format {raw.get('format') if isinstance(raw, dict) else None!r}; "
                f"this aiaas-infra reads format {STATE_FORMAT}"
            )
        try:
            resources = {
                addr: ResourceRecord(
                    kind=r["kind"],
                    name=r["name"],
                    id=str(r["id"]),
                    attrs=r["attrs"],
                    parent_id=r.get("parent_id"),
                    environments=tuple(r.get("environments", ())),
                    secret_fingerprints=dict(r.get("secret_fingerprints", {})),
                )
                for addr, r in raw["resources"].items()
            }
            return cls(
                serial=int(raw["serial"]),
                lineage=raw["lineage"],
                created_at=raw["created_at"],
                platform=raw["platform"],
                outcome=raw["outcome"],
                run_id=raw["run_id"],
                actor=raw["actor"],
                spec=raw["spec"],
                spec_fingerprint=raw["spec_fingerprint"],
                resources=resources,
                environments=dict(raw.get("environments", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{where} is missing or has a malformed field: {exc}") from None

    def info(self) -> SnapshotInfo:
        return SnapshotInfo(
            id=self.id,
            serial=self.serial,
            created_at=self.created_at,
            outcome=self.outcome,
            actor=self.actor,
            run_id=self.run_id,
            spec_fingerprint=self.spec_fingerprint,
            resources=len(self.resources),
        )


def _unstructure(value: Any) -> Any:
    if attrs.has(type(value)):
        return {f.name: _unstructure(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, Mapping):
        return {str(k): _unstructure(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unstructure(v) for v in value]
    return value


@attrs.frozen
class SnapshotInfo:
    id: str
    serial: int
    created_at: str
    outcome: str
    actor: str
    run_id: str
    spec_fingerprint: str
    resources: int


@attrs.frozen
class LockInfo:
    holder: str
    run_id: str
    acquired_at: str
    host: str
    pid: int
    operation: str = "apply"


# --------------------------------------------------------------------------------------------
# Backends: a tiny object-store interface


class StateBackend(Protocol):
    """Where state documents live. Keys are ``/``-separated relative names."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None:
        """Write atomically (readers see the old or the new content, never a mix)."""

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist; False when it does."""

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> builtins.list[str]: ...

    def describe(self) -> str: ...


class LocalStateBackend:
    """State in a local directory (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStateBackend({str(self.root)!r})"

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid state key {key!r}")
        return self.root / key

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def list(self, prefix: str) -> builtins.list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)).replace(os.sep, "/")
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )


class S3StateBackend:
    """State in an S3-compatible bucket (Linode Object Storage): ``s3://bucket/prefix``.

    Credentials come from the usual boto3 sources or the arguments; for Linode Object Storage
    pass ``endpoint_url`` (``https://us-ord-1.linodeobjects.com``). The lock relies on
    conditional writes (``If-None-Match: *``), which Linode Object Storage and AWS S3 support.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if client is None:
            import boto3  # noqa: PLC0415
            from botocore.config import Config  # noqa: PLC0415

            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=Config(
                    retries={"max_attempts": 5, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=30,
                ),
            )
        self._s3 = client

    def __repr__(self) -> str:
        return f"S3StateBackend({self.describe()!r})"

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @staticmethod
    def _code(exc: Any) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            obj = self._s3.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if self._code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        data: bytes = obj["Body"].read()
        return data

    def put(self, key: str, data: bytes) -> None:
        self._s3.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ContentType="application/json"
        )

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            self._s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except ClientError as exc:
            if self._code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> builtins.list[str]:
        full = self._key(prefix)
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                keys.append(key[len(self.prefix) + 1 :] if self.prefix else key)
        return sorted(keys)


def open_state(location: str | os.PathLike[str], **s3_options: Any) -> StateStore:
    """A :class:`StateStore` for a directory path or an ``s3://bucket/prefix`` URL.

    For S3 the endpoint comes from ``s3_options['endpoint_url']``, else
    ``AIAAS_STATE_S3_ENDPOINT``, else ``LINODE_OBJ_ENDPOINT``, else the S3 endpoint a
    non-Linode ``LINODE_API_URL`` implies (the emulator's root, see
    :func:`~aiaas_infra.provision._provider_api.api_s3_endpoint`), else boto3's default.
    Credentials: the ``access_key``/``secret_key`` options, else ``LINODE_OBJ_ACCESS_KEY`` and
    ``LINODE_OBJ_SECRET_KEY`` when both are set, else boto3's usual sources.
    """
    from aiaas_infra.provision._provider_api import api_s3_endpoint  # noqa: PLC0415

    text = os.fspath(location)
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in state URL {text!r}")
        env = os.environ
        s3_options.setdefault(
            "endpoint_url",
            env.get("AIAAS_STATE_S3_ENDPOINT")
            or env.get("LINODE_OBJ_ENDPOINT")
            or api_s3_endpoint(env.get("LINODE_API_URL", "")),
        )
        if env.get("LINODE_OBJ_ACCESS_KEY") and env.get("LINODE_OBJ_SECRET_KEY"):
            s3_options.setdefault("access_key", env["LINODE_OBJ_ACCESS_KEY"])
            s3_options.setdefault("secret_key", env["LINODE_OBJ_SECRET_KEY"])
        return StateStore(S3StateBackend(bucket, prefix, **s3_options))
    return StateStore(LocalStateBackend(text))


# --------------------------------------------------------------------------------------------
# The store


class StateStore:
    """Snapshots, the apply lock, environment statuses and reports over a backend."""

    def __init__(
        self,
        backend: StateBackend,
        *,
        keep: int = KEEP_SNAPSHOTS,
        keep_reports_days: int = KEEP_REPORTS_DAYS,
    ) -> None:
        self.backend = backend
        self.keep = keep
        self.keep_reports_days = keep_reports_days

    def __repr__(self) -> str:
        return f"StateStore({self.backend!r})"

    # -- snapshots ------------------------------------------------------------------------------

    def _snapshot_keys(self) -> builtins.list[str]:
        return [k for k in self.backend.list("snapshots/") if k.endswith(".json")]

    def latest(self) -> StateSnapshot | None:
        keys = self._snapshot_keys()
        if not keys:
            return None
        data = self.backend.get(keys[-1])
        if data is None:  # pragma: no cover - deleted between list and get
            return None
        return StateSnapshot.from_json(data, where=keys[-1])

    def get(self, ref: str | int) -> StateSnapshot:
        """A snapshot by serial (``12``, ``"000012"``) or ``"latest"``."""
        if ref == "latest":
            snap = self.latest()
            if snap is None:
                raise SnapshotNotFoundError("there are no snapshots yet: apply first")
            return snap
        try:
            serial = int(ref)
        except ValueError:
            raise SnapshotNotFoundError(
                f"snapshot {ref!r} is not a serial number; see `aiaas-infra state list`"
            ) from None
        key = f"snapshots/{serial:06d}.json"
        data = self.backend.get(key)
        if data is None:
            raise SnapshotNotFoundError(
                f"no snapshot {serial:06d} (the last {self.keep} are kept); see "
                "`aiaas-infra state list`"
            )
        return StateSnapshot.from_json(data, where=key)

    def list(self) -> builtins.list[SnapshotInfo]:
        out = []
        for key in self._snapshot_keys():
            data = self.backend.get(key)
            if data is not None:
                out.append(StateSnapshot.from_json(data, where=key).info())
        return out

    def write(self, snapshot: StateSnapshot) -> None:
        """Store ``snapshot`` and drop all but the newest :attr:`keep`."""
        self.backend.put(f"snapshots/{snapshot.id}.json", snapshot.to_json())
        keys = self._snapshot_keys()
        for old in keys[: max(0, len(keys) - self.keep)]:
            self.backend.delete(old)

    def next_serial(self) -> int:
        keys = self._snapshot_keys()
        return int(keys[-1].rsplit("/", 1)[1].split(".")[0]) + 1 if keys else 1

    # -- lock -----------------------------------------------------------------------------------

    def lock_info(self) -> LockInfo | None:
        data = self.backend.get("lock.json")
        if data is None:
            return None
        try:
            return LockInfo(**json.loads(data))
        except (json.JSONDecodeError, TypeError):
            return LockInfo("unknown", "unknown", "unknown", "unknown", 0)

    @contextlib.contextmanager
    def lock(
        self, *, holder: str, run_id: str | None = None, operation: str = "apply"
    ) -> Iterator[LockInfo]:
        """Hold the state lock for a block; raises :class:`StateLockedError` when held."""
        info = LockInfo(
            holder=holder,
            run_id=run_id or uuid.uuid4().hex,
            acquired_at=iso(utcnow()),
            host=socket.gethostname(),
            pid=os.getpid(),
            operation=operation,
        )
        data = json.dumps(attrs.asdict(info)).encode()
        if not self.backend.put_if_absent("lock.json", data):
            held = self.lock_info()
            who = attrs.asdict(held) if held is not None else {}
            raise StateLockedError(
                f"state at {self.backend.describe()} is locked by {who.get('holder', '?')} "
                f"({who.get('operation', '?')} run {who.get('run_id', '?')} on "
                f"{who.get('host', '?')} since {who.get('acquired_at', '?')}); wait for it, or "
                "`aiaas-infra state unlock` if that run is dead",
                holder=who,
            )
        try:
            yield info
        finally:
            current = self.lock_info()
            if current is not None and current.run_id == info.run_id:
                self.backend.delete("lock.json")

    def force_unlock(self) -> LockInfo | None:
        info = self.lock_info()
        self.backend.delete("lock.json")
        return info

    # -- environments ---------------------------------------------------------------------------

    def environments(self) -> dict[str, EnvironmentRecord]:
        data = self.backend.get("environments.json")
        if data is None:
            return {}
        raw = json.loads(data)
        return {
            name: EnvironmentRecord(
                status=rec["status"],
                since=rec["since"],
                history=tuple(Transition(**t) for t in rec.get("history", [])),
            )
            for name, rec in raw.items()
        }

    def write_environments(self, records: Mapping[str, EnvironmentRecord]) -> None:
        self.backend.put(
            "environments.json",
            json.dumps(_unstructure(dict(records)), indent=2, sort_keys=True).encode(),
        )

    # -- reports --------------------------------------------------------------------------------

    def write_report(
        self, kind: str, stamp: datetime, files: Mapping[str, bytes]
    ) -> builtins.list[str]:
        """Store a report's files (``{"json": ..., "md": ...}``) and prune old reports."""
        base = f"reports/{kind}/{stamp.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
        keys = []
        for ext, data in files.items():
            key = f"{base}.{ext}"
            self.backend.put(key, data)
            keys.append(key)
        self.prune_reports(kind)
        return keys

    def reports(self, kind: str) -> builtins.list[str]:
        return self.backend.list(f"reports/{kind}/")

    def prune_reports(self, kind: str, *, now: datetime | None = None) -> builtins.list[str]:
        cutoff = (now or utcnow()) - timedelta(days=self.keep_reports_days)
        removed = []
        for key in self.reports(kind):
            stamp = key.rsplit("/", 1)[1].split("-", 1)[0]
            try:
                when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            except ValueError:
                continue
            if when < cutoff:
                self.backend.delete(key)
                removed.append(key)
        return removed
