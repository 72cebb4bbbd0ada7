"""Stored objects of the fake Kubernetes API server: create, update, server-side apply,
delete and list."""

from __future__ import annotations

import copy
import uuid

from aiaas_infra.cluster._apply import (
    _BY_KIND,
    _MISSING,
    _SERVER_META,
    FieldPath,
    ResourceType,
    _get,
    _owned_view,
)
from aiaas_infra.testing._kube._model import (
    Obj,
    _ApiError,
    _cause,
    _conflict,
    _delete,
    _dotted,
    _field_selector,
    _fields_v1,
    _invalid,
    _KubeBase,
    _not_found,
    _selector,
    _set,
    _Stored,
    _ts,
)

__all__: list[str] = []


class _ObjectStore(_KubeBase):
    """Stored objects of the fake Kubernetes API server: create, update, server-side apply,"""

    # -- storage ----------------------------------------------------------------------------

    def _resource_of(self, obj: Obj) -> ResourceType:
        try:
            return _BY_KIND[(obj["apiVersion"], obj["kind"])]
        except KeyError:
            raise _ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource "
                f"({obj.get('apiVersion')}, {obj.get('kind')})",
            ) from None

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _check_namespace(self, rt: ResourceType, namespace: str | None) -> None:
        if rt.namespaced and (_BY_KIND[("v1", "Namespace")], None, namespace) not in self._objects:
            raise _not_found("namespaces", str(namespace))

    def _admit(self, rt: ResourceType, obj: Obj, name: str) -> None:
        causes = self._validators.problems(obj)
        if causes:
            raise _invalid(rt.kind, name, causes)

    def _render_managed(self, stored: _Stored, when: str) -> None:
        stored.obj["metadata"]["managedFields"] = [
            {
                "manager": manager,
                "operation": op,
                "apiVersion": stored.obj["apiVersion"],
                "time": when,
                "fieldsType": "FieldsV1",
                "fieldsV1": _fields_v1(fields),
            }
            for manager, (op, fields) in sorted(stored.managers.items())
            if fields
        ]

    def _create(self, rt: ResourceType, namespace: str | None, body: Obj, manager: str) -> Obj:
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise _invalid(rt.kind, "", [_cause("metadata.name", "Required value: name")])
        key = (rt, namespace, name)
        if key in self._objects:
            raise _ApiError(
                409,
                "AlreadyExists",
                f'{rt.plural} "{name}" already exists',
                details={"name": name, "kind": rt.plural},
            )
        self._check_namespace(rt, namespace)
        for server_field in _SERVER_META:
            meta.pop(server_field, None)
        if rt.namespaced:
            meta["namespace"] = namespace
        when = _ts(self.clock())
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=self._next_rv(),
            creationTimestamp=when,
            generation=1,
        )
        stored = _Stored(body, {manager: ("Update", set(_owned_view(body)))})
        self._render_managed(stored, when)
        self._admit(rt, body, name)
        self._objects[key] = stored
        return copy.deepcopy(body)

    def _update(
        self, rt: ResourceType, namespace: str | None, name: str, body: Obj, manager: str
    ) -> Obj:
        stored = self._objects.get((rt, namespace, name))
        if stored is None:
            raise _not_found(rt.plural, name)
        meta = body.setdefault("metadata", {})
        rv = meta.get("resourceVersion")
        if not rv:
            raise _invalid(
                rt.kind,
                name,
                [
                    _cause(
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        if rv != stored.obj["metadata"]["resourceVersion"]:
            raise _conflict(rt, name)
        old_view = _owned_view(stored.obj)
        new_view = _owned_view(body)
        changed = {
            p
            for p in set(old_view) | set(new_view)
            if old_view.get(p, _MISSING) != new_view.get(p, _MISSING)
        }
        managers = {
            m: (op, {p for p in f if p not in changed and p in new_view})
            for m, (op, f) in stored.managers.items()
            if m != manager
        }
        managers[manager] = ("Update", set(new_view))
        return self._commit(rt, namespace, name, stored, body, managers)

    def _commit(  # noqa: PLR0917 -- internal
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        stored: _Stored,
        body: Obj,
        managers: dict[str, tuple[str, set[FieldPath]]],
    ) -> Obj:
        old_meta = stored.obj["metadata"]
        meta = body["metadata"]
        for keep in ("uid", "creationTimestamp"):
            meta[keep] = old_meta[keep]
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = namespace
        if _owned_view(body) == _owned_view(stored.obj) and {
            m: v for m, v in managers.items() if v[1]
        } == {m: v for m, v in stored.managers.items() if v[1]}:
            return copy.deepcopy(stored.obj)  # a no-op: nothing changes, not even the version
        spec_changed = body.get("spec") != stored.obj.get("spec")
        meta["generation"] = old_meta.get("generation", 1) + (1 if spec_changed else 0)
        meta["resourceVersion"] = self._next_rv()
        new = _Stored(body, managers)
        self._render_managed(new, _ts(self.clock()))
        self._admit(rt, body, name)
        self._objects[(rt, namespace, name)] = new
        return copy.deepcopy(body)

    def _apply(  # noqa: PLR0917 -- internal
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch: Obj,
        manager: str,
        force: bool,
    ) -> tuple[int, Obj]:
        if patch.get("apiVersion") != rt.api_version or patch.get("kind") != rt.kind:
            raise _ApiError(
                400,
                "BadRequest",
                f"apply patch apiVersion/kind {patch.get('apiVersion')}/{patch.get('kind')} "
                f"does not match the resource {rt.api_version}/{rt.kind}",
            )
        meta = patch.get("metadata") or {}
        if meta.get("name") != name:
            raise _ApiError(
                400,
                "BadRequest",
                "the name of the object "
                f"({meta.get('name')}) does not match the name on the URL ({name})",
            )
        if rt.namespaced and meta.get("namespace", namespace) != namespace:
            raise _ApiError(
                400,
                "BadRequest",
                "the namespace of the object does not match the namespace on the request",
            )
        if any(f in meta for f in ("managedFields",)):
            raise _ApiError(400, "BadRequest", "metadata.managedFields must be nil")
        applied = _owned_view(patch)
        stored = self._objects.get((rt, namespace, name))
        if stored is None:
            body = copy.deepcopy(patch)
            self._check_namespace(rt, namespace)
            created = self._create(rt, namespace, body, manager)
            entry = self._objects[(rt, namespace, name)]
            entry.managers = {manager: ("Apply", set(applied))}
            self._render_managed(entry, created["metadata"]["creationTimestamp"])
            return 201, copy.deepcopy(entry.obj)
        live = stored.obj
        conflicts: list[tuple[str, FieldPath]] = []
        for other, (_op, fields) in stored.managers.items():
            if other != manager:
                conflicts += [
                    (other, p) for p in fields & set(applied) if _get(live, p) != applied[p]
                ]
        if conflicts and not force:
            raise _ApiError(
                409,
                "Conflict",
                f"Apply failed with {len(conflicts)} conflict"
                f"{'s' if len(conflicts) > 1 else ''}: "
                + "; ".join(f'conflict with "{m}": {_dotted(p)}' for m, p in sorted(conflicts)),
                details={
                    "name": name,
                    "kind": rt.plural,
                    "causes": [
                        {
                            "reason": "FieldManagerConflict",
                            "message": f'conflict with "{m}"',
                            "field": _dotted(p),
                        }
                        for m, p in sorted(conflicts)
                    ],
                },
            )
        taken = {p for _m, p in conflicts}
        managers = {
            m: (op, fields - taken) for m, (op, fields) in stored.managers.items() if m != manager
        }
        others = set().union(*(f for _op, f in managers.values())) if managers else set()
        body = copy.deepcopy(live)
        previous = stored.managers.get(manager, ("Apply", set()))[1]
        for path in previous - set(applied) - others:
            _delete(body, path)
        for path, value in applied.items():
            _set(body, path, value)
        managers[manager] = ("Apply", set(applied))
        return 200, self._commit(rt, namespace, name, stored, body, managers)

    def _delete_object(self, rt: ResourceType, namespace: str | None, name: str, body: Obj) -> Obj:
        stored = self._objects.get((rt, namespace, name))
        if stored is None:
            raise _not_found(rt.plural, name)
        pre = dict(body.get("preconditions") or {})
        if (
            "resourceVersion" in pre
            and pre["resourceVersion"] != stored.obj["metadata"]["resourceVersion"]
        ):
            raise _conflict(rt, name)
        if "uid" in pre and pre["uid"] != stored.obj["metadata"]["uid"]:
            raise _conflict(rt, name)
        del self._objects[(rt, namespace, name)]
        if rt.kind == "Namespace":
            for key in [k for k in self._objects if k[1] == name]:
                del self._objects[key]
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "kind": rt.plural, "uid": stored.obj["metadata"]["uid"]},
        }

    def _list(
        self,
        rt: ResourceType,
        namespace: str | None,
        selector: str | None,
        field_selector: str | None = None,
    ) -> Obj:
        match = _selector(selector)
        fields = _field_selector(field_selector)
        items = []
        for (r, ns, _n), s in sorted(
            self._objects.items(), key=lambda kv: (kv[0][1] or "", kv[0][2])
        ):
            if r != rt or (namespace is not None and ns != namespace):
                continue
            if not match(dict(s.obj["metadata"].get("labels") or {})):
                continue
            if not fields({"metadata.name": _n, "metadata.namespace": ns or ""}):
                continue
            item = copy.deepcopy(s.obj)
            if rt.builtin:
                item.pop("apiVersion", None)
                item.pop("kind", None)
            items.append(item)
        return {
            "apiVersion": rt.api_version,
            "kind": f"{rt.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }
