"""What the fake Kubernetes API server works with: stored objects and the calls it counted,
``Status`` errors, field sets for server-side apply, validation (admission) and selectors."""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

import attrs

from aiaas_infra.cluster._apply import (
    _SERVER_META,
    FieldPath,
    ResourceType,
)

__all__ = ["SYSTEM_NAMESPACES", "ApiCall"]

Obj = dict[str, Any]


_TOKEN_MIN_SECONDS: Final = 600
#: The largest request body the fake reads (the real API server's limit is 3 MiB).
MAX_REQUEST_BODY: Final = 3 * 1024 * 1024
_MAX_CHUNK_LINE: Final = 4096


@attrs.frozen
class ApiCall:
    """One request the fake answered: the verb (get, list, create, update, apply, delete,
    token, tokenreview, discovery), the path, and the status code."""

    method: str
    path: str
    verb: str
    status: int


class _ApiError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: Obj | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> Obj:
        out: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


# -- field sets (server-side apply) -----------------------------------------------------------


def _set(obj: Obj, path: FieldPath, value: Any) -> None:
    cur = obj
    for key in path[:-1]:
        if not isinstance(cur.get(key), dict):
            cur[key] = {}
        cur = cur[key]
    cur[path[-1]] = copy.deepcopy(value)


def _delete(obj: Obj, path: FieldPath) -> None:
    parents: list[tuple[Obj, str]] = []
    cur: Any = obj
    for key in path[:-1]:
        if not isinstance(cur, dict) or key not in cur:
            return
        parents.append((cur, key))
        cur = cur[key]
    if isinstance(cur, dict):
        cur.pop(path[-1], None)
    for parent, key in reversed(parents):  # drop maps left empty
        if parent[key] == {}:
            del parent[key]


def _fields_v1(paths: set[FieldPath]) -> Obj:
    out: Obj = {}
    for path in sorted(paths):
        cur = out
        for key in path:
            cur = cur.setdefault(f"f:{key}", {})
    return out


def _dotted(path: FieldPath) -> str:
    return "." + ".".join(path)


# -- validation -------------------------------------------------------------------------------


class _Validators:
    """Admission: the same strict validators ``render`` uses
    (:mod:`aiaas_infra.cluster._validate`)."""

    _shared: ClassVar[dict[tuple[Path | None, str], Any]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, crds: Path | None, kubernetes_version: str) -> None:
        from aiaas_infra.cluster._validate import ManifestValidator  # noqa: PLC0415

        key = (crds.resolve() if crds is not None else None, kubernetes_version)
        with self._shared_lock:  # compiled schemas are costly: share them between servers
            if key not in self._shared:
                self._shared[key] = ManifestValidator(
                    crds_dir=crds, kubernetes_version=kubernetes_version
                )
            self._validator = self._shared[key]
        self._custom = {
            *self._validator.custom_kinds,
            ("monitoring.coreos.com/v1", "PrometheusRule"),
        }

    def installed(self, rt: ResourceType) -> bool:
        """Whether the cluster serves ``rt`` (a custom kind needs its CRD)."""
        return rt.builtin or (rt.api_version, rt.kind) in self._custom

    def problems(self, obj: Obj) -> list[Obj]:
        """Causes (``{"field", "message", "reason"}``) why ``obj`` is invalid; empty if valid."""
        meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_META}
        problems = self._validator.validate({**obj, "metadata": meta})
        return [_cause(p.path, p.message) for p in problems]


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Obj:
    return {"field": field, "message": message, "reason": reason}


# -- the store --------------------------------------------------------------------------------


@attrs.define
class _Stored:
    obj: Obj
    managers: dict[str, tuple[str, set[FieldPath]]]  # manager -> (operation, fields)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: The namespaces a new cluster has.
SYSTEM_NAMESPACES: Final = ("default", "kube-node-lease", "kube-public", "kube-system")


class _KubeBase:
    """The state the parts of :class:`FakeKubeApiServer` share."""

    clock: Callable[[], dt.datetime]
    admin_token: str
    calls: list[ApiCall]
    _validators: _Validators
    _signing_key: bytes
    _lock: threading.RLock
    _objects: dict[tuple[ResourceType, str | None, str], _Stored]
    _rv: int
    _revoked: set[str]
    _issued: list[Obj]


def _classify(method: str, path: str) -> str:
    """The verb of a request, from its method and path shape (what an audit log records)."""
    if path.endswith("/tokenreviews"):
        return "tokenreview"
    if method == "POST" and path.endswith("/token"):
        return "token"
    if method == "GET":
        parts = path.strip("/").split("/")
        if (
            parts[:1] == ["openapi"]
            or (parts[:1] == ["api"] and len(parts) <= 2)
            or (parts[:1] == ["apis"] and len(parts) <= 3)
        ):
            return "discovery"
        depth = len(parts) - (2 if parts[:1] == ["api"] else 3)  # segments after the version
        return "list" if depth in (1, 3) else "get"
    return {"POST": "create", "PUT": "update", "PATCH": "apply", "DELETE": "delete"}.get(
        method, method.lower()
    )


def _parse_body(raw: bytes, headers: Mapping[str, str]) -> Obj:
    ctype = headers.get("content-type", "")
    try:
        if "yaml" in ctype:
            import yaml  # noqa: PLC0415

            doc = yaml.safe_load(raw)
        else:
            doc = json.loads(raw)
    except ValueError as exc:
        raise _ApiError(400, "BadRequest", f"the request body is not valid: {exc}") from None
    if not isinstance(doc, dict):
        raise _ApiError(400, "BadRequest", "the request body must be an object")
    return doc


def _not_found(plural: str, name: str) -> _ApiError:
    return _ApiError(
        404, "NotFound", f'{plural} "{name}" not found', details={"name": name, "kind": plural}
    )


def _conflict(rt: ResourceType, name: str) -> _ApiError:
    return _ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.plural} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        details={"name": name, "kind": rt.plural},
    )


def _invalid(kind: str, name: str, causes: list[Obj]) -> _ApiError:
    summary = ", ".join(f"{c['field']}: {c['message']}" for c in causes[:5])
    return _ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {summary}',
        details={"name": name, "kind": kind, "causes": causes},
    )


def _field_selector(text: str | None) -> Callable[[Mapping[str, str]], bool]:
    """A field selector (``metadata.name=x,metadata.namespace!=y``): the fields every kind
    supports on a real server; any other field is a 400, as there."""
    terms: list[tuple[bool, str, str]] = []  # (equal, field, value)
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        equal = "!=" not in term
        field, sep, value = term.replace("!=", "=").replace("==", "=").partition("=")
        field = field.strip()
        if not sep or field not in ("metadata.name", "metadata.namespace"):
            raise _ApiError(
                400,
                "BadRequest",
                f'unable to parse requirement: field label not supported: "{field}" (the '
                "fake API server selects on metadata.name and metadata.namespace)",
            )
        terms.append((equal, field, value.strip()))

    def match(values: Mapping[str, str]) -> bool:
        return all((values.get(f) == v) == equal for equal, f, v in terms)

    return match


def _selector(text: str | None) -> Callable[[Mapping[str, str]], bool]:
    """An equality/existence label selector (``a=b,c!=d,e,!f``)."""
    terms: list[tuple[str, str, str]] = []  # (operator, key, value)
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            terms.append(("!=", k.strip(), v.strip()))
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            terms.append(("=", k.strip(), v.strip()))
        elif term.startswith("!"):
            terms.append(("!", term[1:].strip(), ""))
        else:
            terms.append(("exists", term, ""))

    def match(labels: Mapping[str, str]) -> bool:
        for op, key, value in terms:
            ok = {
                "!=": labels.get(key) != value,
                "=": labels.get(key) == value,
                "!": key not in labels,
                "exists": key in labels,
            }[op]
            if not ok:
                return False
        return True

    return match
