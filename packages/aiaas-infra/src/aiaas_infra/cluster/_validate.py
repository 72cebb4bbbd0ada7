"""Strict validation of rendered Kubernetes objects.

* Core kinds (Namespace, Deployment, NetworkPolicy, ...) against the official schemas that
  ``kubernetes-validate`` ships (its *strict* variants: unknown fields are errors), for the
  cluster's Kubernetes version (the newest shipped version not newer than it). Install with
  ``pip install 'aiaas-infra[validate]'``.
* Custom resources (ArgoCD AppProject/ApplicationSet/Application, Bitnami SealedSecret) against
  the ``openAPIV3Schema`` of their CustomResourceDefinitions: by default the copies packaged with
  aiaas-infra (:func:`packaged_crds_dir`, attribution in its ``README.md``), or those in a
  directory the caller names. Strict like ``kubectl apply --validate=strict``: an object that
  would have fields pruned is an error; ``metadata`` is checked as an ObjectMeta.
* ``monitoring.coreos.com/v1`` PrometheusRule against a schema of its documented fields.
* Every object: label keys and values, names, and references inside the set (a RoleBinding's
  Role, an autoscaler's Deployment, Service and PodDisruptionBudget selectors).

Validators are compiled once per kind and cached: validating thousands of objects is fast.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

__all__ = [
    "DEFAULT_KUBERNETES_VERSION",
    "PACKAGED_CRDS_DIR",
    "ManifestProblem",
    "ManifestValidator",
    "packaged_crds_dir",
    "validate_objects",
]

DEFAULT_KUBERNETES_VERSION: Final = "1.31"

_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?")
# Kinds whose names must be DNS labels (the rest: DNS subdomains).
_LABEL_NAMED: Final = frozenset({"Namespace", "Service"})


@attrs.frozen
class ManifestProblem:
    """One problem of one rendered object: which object, where in it, and what."""

    object: str  # "Kind namespace/name"
    path: str  # dotted path inside the object ("" for the whole object)
    message: str

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"{self.object}{where}: {self.message}"


def _describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    ns = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{obj.get('kind', '?')} {ns}/{name}" if ns else f"{obj.get('kind', '?')} {name}"


def _json_path(parts: Iterable[object]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# -- schemas ------------------------------------------------------------------------------------


def packaged_crds_dir() -> Path:
    """The directory of the ArgoCD and SealedSecret CRDs shipped with aiaas-infra.

    Validation uses it unless given another ``crds_dir``; its ``README.md`` names the upstream
    source, commit and licence of each file.
    """
    from importlib.resources import files  # noqa: PLC0415

    return Path(str(files("aiaas_infra") / "crds"))


#: :func:`packaged_crds_dir`, the default ``crds_dir`` of validation.
PACKAGED_CRDS_DIR: Final = packaged_crds_dir()


_OBJECT_META: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
}

_PROMETHEUS_RULE: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"enum": ["monitoring.coreos.com/v1"]},
        "kind": {"enum": ["PrometheusRule"]},
        "metadata": _OBJECT_META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": r"^(\d+(ms|s|m|h|d|w|y))+$"},
                            "query_offset": {"type": "string"},
                            "limit": {"type": "integer"},
                            "partial_response_strategy": {"type": "string"},
                            "labels": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "additionalProperties": False,
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string", "minLength": 1},
                                        "record": {"type": "string", "minLength": 1},
                                        "expr": {
                                            "anyOf": [
                                                {"type": "integer"},
                                                {"type": "string", "minLength": 1},
                                            ]
                                        },
                                        "for": {
                                            "type": "string",
                                            "pattern": r"^(0|(\d+(ms|s|m|h|d|w|y))+)$",
                                        },
                                        "keep_firing_for": {"type": "string"},
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


def _strict_openapi(schema: Any) -> Any:
    """An OpenAPI v3 structural schema as a strict JSON schema (unknown fields rejected)."""
    if isinstance(schema, list):
        return [_strict_openapi(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {
        k: _strict_openapi(v) if k not in ("enum", "required", "default", "example") else v
        for k, v in schema.items()
        if not k.startswith("x-kubernetes-") and k != "nullable"
    }
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in schema and "additionalProperties" not in schema and not preserve:
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=4)
def _load_crds(crds_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    import yaml  # noqa: PLC0415

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(crds_dir.glob("*.y*ml")):
        for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader):
            if not isinstance(doc, Mapping) or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec.get("versions", ()):
                raw = version.get("schema", {}).get("openAPIV3Schema")
                if raw is None:
                    continue
                api_version = f"{spec['group']}/{version['name']}"
                schema = _strict_openapi(raw)
                props = schema.setdefault("properties", {})
                props["metadata"] = _OBJECT_META
                props["apiVersion"] = {"enum": [api_version]}
                props["kind"] = {"enum": [spec["names"]["kind"]]}
                schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind"})
                schemas[(api_version, spec["names"]["kind"])] = schema
    return schemas


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


@functools.lru_cache(maxsize=8)
def _core_schemas(kubernetes_version: str) -> tuple[str, Any, Path]:
    """(schema version used, definitions resource, schema directory) for a cluster version."""
    from importlib.resources import files  # noqa: PLC0415

    from referencing import Resource  # noqa: PLC0415

    try:
        package = files("kubernetes_validate")
    except ModuleNotFoundError:
        raise ImportError(
            "validating core Kubernetes kinds needs kubernetes-validate: "
            "pip install 'aiaas-infra[validate]'"
        ) from None

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".")[:2])

    root = Path(str(package)) / "kubernetes-json-schema"
    shipped = sorted(
        (d.name[1:].split("-")[0] for d in root.iterdir() if d.name.endswith("-local-strict")),
        key=key,
    )
    wanted = key(kubernetes_version)
    usable = [v for v in shipped if key(v) <= wanted]
    if not usable:
        raise ValueError(
            f"kubernetes-validate ships schemas for {_minor(shipped[0])} to "
            f"{_minor(shipped[-1])}, not "
            f"{kubernetes_version}"
        )
    version = usable[-1]
    directory = root / f"v{version}-local-strict"
    definitions = Resource.from_contents(
        json.loads((directory / "_definitions.json").read_text(encoding="utf-8"))
    )
    return version, definitions, directory


class ManifestValidator:
    """Validates objects strictly; compiled schemas are cached per kind.

    ``crds_dir`` holds CustomResourceDefinition YAML files; by default the CRDs packaged with
    aiaas-infra (:func:`packaged_crds_dir`). ``crds_dir=None`` validates without any CRD: custom
    resources other than PrometheusRule are then reported as unvalidated.
    """

    def __init__(
        self,
        *,
        crds_dir: str | Path | None = PACKAGED_CRDS_DIR,
        kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    ) -> None:
        self.kubernetes_version = kubernetes_version
        self._crds = _load_crds(Path(crds_dir).resolve()) if crds_dir is not None else {}
        if crds_dir is not None and not self._crds:
            raise ValueError(f"no CustomResourceDefinition with a schema found in {crds_dir}")
        self._validators: dict[tuple[str, str], Any] = {}

    @property
    def custom_kinds(self) -> tuple[tuple[str, str], ...]:
        """(apiVersion, kind) of the custom resources this validator knows."""
        return tuple(sorted(self._crds))

    def _validator(self, api_version: str, kind: str) -> Any | None:
        cached = self._validators.get((api_version, kind))
        if cached is not None:
            return cached
        import jsonschema  # noqa: PLC0415

        validator: Any
        if (api_version, kind) == ("monitoring.coreos.com/v1", "PrometheusRule"):
            validator = jsonschema.Draft7Validator(_PROMETHEUS_RULE)
        elif (api_version, kind) in self._crds:
            validator = jsonschema.Draft7Validator(self._crds[(api_version, kind)])
        elif "." in (group := api_version.split("/", maxsplit=1)[0]) and not group.endswith(
            ".k8s.io"
        ):
            return None  # a custom resource without a CRD
        else:
            from referencing import Registry, Resource  # noqa: PLC0415

            _version, definitions, directory = _core_schemas(self.kubernetes_version)
            short = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
            path = directory / f"{kind.lower()}-{short}.json"
            if not path.is_file():
                return None
            schema = json.loads(path.read_text(encoding="utf-8"))
            registry = Resource.from_contents(schema) @ (definitions @ Registry())
            validator = jsonschema.Draft202012Validator(schema, registry=registry)
        self._validators[(api_version, kind)] = validator
        return validator

    def validate(self, obj: Mapping[str, Any]) -> list[ManifestProblem]:
        """Every problem of one object (empty when it is valid)."""
        what = _describe(obj)
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            return [ManifestProblem(what, "", "apiVersion and kind are required strings")]
        validator = self._validator(api_version, kind)
        if validator is None:
            return [
                ManifestProblem(
                    what,
                    "",
                    f"no schema for {api_version} {kind}: pass the directory of its "
                    "CustomResourceDefinition (--crds)",
                )
            ]
        problems = [
            ManifestProblem(what, _json_path(error.absolute_path), error.message)
            for error in sorted(validator.iter_errors(dict(obj)), key=lambda e: list(e.path))
        ]
        problems += _check_metadata(what, kind, obj.get("metadata"))
        return problems

    def validate_all(self, objects: Iterable[Mapping[str, Any]]) -> list[ManifestProblem]:
        """Every problem of every object, plus references that do not resolve in the set."""
        objects = list(objects)
        problems: list[ManifestProblem] = []
        for obj in objects:
            problems += self.validate(obj)
        problems += _check_references(objects)
        return problems


def _check_metadata(what: str, kind: str, meta: object) -> list[ManifestProblem]:
    if not isinstance(meta, Mapping):
        return []  # the schema reported it
    problems: list[ManifestProblem] = []
    name = meta.get("name")
    pattern = _DNS_LABEL if kind in _LABEL_NAMED else _DNS_SUBDOMAIN
    if isinstance(name, str) and not pattern.fullmatch(name):
        problems.append(ManifestProblem(what, "metadata.name", f"{name!r} is not a valid name"))
    ns = meta.get("namespace")
    if isinstance(ns, str) and not _DNS_LABEL.fullmatch(ns):
        problems.append(ManifestProblem(what, "metadata.namespace", f"{ns!r} is not a DNS label"))
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            prefix, _, short = str(key).rpartition("/")
            if (prefix and not _DNS_SUBDOMAIN.fullmatch(prefix)) or not _LABEL_NAME.fullmatch(
                short
            ):
                problems.append(
                    ManifestProblem(what, f"metadata.{field}", f"{key!r} is not a valid key")
                )
            if field == "labels" and isinstance(value, str) and not _LABEL_VALUE.fullmatch(value):
                problems.append(
                    ManifestProblem(
                        what, f"metadata.labels.{key}", f"{value!r} is not a valid label value"
                    )
                )
    return problems


def _selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _check_references(objects: list[Mapping[str, Any]]) -> list[ManifestProblem]:
    def key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
        meta = obj.get("metadata") or {}
        return (str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name")))

    present = {key(o) for o in objects}
    pod_labels: dict[str, list[Mapping[str, str]]] = {}
    for obj in objects:
        if obj.get("kind") == "Deployment":
            template = obj.get("spec", {}).get("template", {}).get("metadata", {})
            ns = str(obj["metadata"].get("namespace"))
            pod_labels.setdefault(ns, []).append(template.get("labels", {}))
    problems: list[ManifestProblem] = []
    for obj in objects:
        kind, ns, _name = key(obj)
        spec = obj.get("spec") or {}
        what = _describe(obj)
        if kind == "RoleBinding":
            ref = obj.get("roleRef") or {}
            if ref.get("kind") == "Role" and ("Role", ns, str(ref.get("name"))) not in present:
                problems.append(
                    ManifestProblem(what, "roleRef.name", f"no Role {ref.get('name')!r} in {ns}")
                )
        elif kind == "HorizontalPodAutoscaler":
            target = spec.get("scaleTargetRef") or {}
            if (str(target.get("kind")), ns, str(target.get("name"))) not in present:
                problems.append(
                    ManifestProblem(
                        what,
                        "spec.scaleTargetRef",
                        f"no {target.get('kind')} {target.get('name')!r} in {ns}",
                    )
                )
        elif kind == "Deployment":
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not _selector_matches(selector, labels):
                problems.append(
                    ManifestProblem(
                        what, "spec.selector", "does not match the pod template's labels"
                    )
                )
        elif kind in ("Service", "PodDisruptionBudget"):
            selector = spec.get("selector") or {}
            if kind == "PodDisruptionBudget":
                selector = selector.get("matchLabels") or {}
            if selector and not any(
                _selector_matches(selector, labels) for labels in pod_labels.get(ns, ())
            ):
                problems.append(
                    ManifestProblem(what, "spec.selector", "selects no pods rendered in the set")
                )
    return problems


def validate_objects(
    objects: Iterable[Mapping[str, Any]],
    *,
    crds_dir: str | Path | None = PACKAGED_CRDS_DIR,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
) -> list[ManifestProblem]:
    """Validate rendered objects strictly (see the module docs); returns every problem.

    ``crds_dir`` as in :class:`ManifestValidator`: the packaged CRDs unless another directory
    (or ``None``, no CRDs) is given.
    """
    validator = ManifestValidator(crds_dir=crds_dir, kubernetes_version=kubernetes_version)
    return validator.validate_all(objects)
