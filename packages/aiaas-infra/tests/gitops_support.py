"""Spec data shared by the GitOps tests: the example plus a GPU inference service."""

from __future__ import annotations

import copy
import datetime as dt
import functools
from typing import Any

from aiaas_infra import PlatformSpec, spec_from_dict, spec_to_dict
from aiaas_infra.secrets._sealing import SealingCertificate
from aiaas_infra.secrets._secrets import SealedStore, seal_secret
from aiaas_infra.testing import sealing_keypair

GPU_SERVICE: dict[str, Any] = {
    "name": "inference",
    "image": "ghcr.io/example/inference:1.0.0",
    "pool": "gpu",
    "port": 8080,
    "gpus": 1,
    "cpu": "2",
    "memory": "8Gi",
    "replicas": {"min": 1, "max": 4},
    "target_cpu_utilization": 70,
}


def with_gpu_service(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a spec dict) with the GPU inference service in ``system`` (quota 4 GPUs)."""
    out = copy.deepcopy(data)
    system = out["environments"]["system"]
    system["services"] = [copy.deepcopy(GPU_SERVICE)]
    system["quota"]["gpus"] = 4
    return out


def gpu_spec(spec: PlatformSpec) -> PlatformSpec:
    return spec_from_dict(with_gpu_service(spec_to_dict(spec)))


def sealed_store(spec: PlatformSpec, *, skip: tuple[str, str] | None = None) -> SealedStore:
    """A store with every bundle item of every environment sealed (``skip``: (env, item) left
    out), with a fixed rotation time so renders are comparable."""
    cert = _certificate()
    store = SealedStore()
    for env_name, env in spec.environments.items():
        for item in env.secret_items:
            if (env_name, item.name) == skip:
                continue
            store = seal_secret(
                store, cert, spec, env_name, item.name, f"value-{item.name}".encode(), now=SEALED_AT
            )
    return store


SEALED_AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@functools.cache
def _certificate() -> SealingCertificate:
    return SealingCertificate.from_pem(sealing_keypair().cert_pem)
