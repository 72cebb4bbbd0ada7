"""aiaas-infra: rendering the GitOps tree for 4 and 64 environments, and validating it.

``render`` is ``render_platform`` (objects plus the YAML text of every file) with every bundle
sealed, so SealedSecrets are included; ``validate`` is strict validation of the rendered objects
(kubernetes-validate's schemas for core kinds, the fixture CRDs for ArgoCD and SealedSecret,
compiled once and reused, as the CLI and the fake API server do). Each rendered set is checked
for validity once before timing (a behaviour, not a timing).
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from aiaas_infra import (
    ManifestValidator,
    PlatformSpec,
    example_spec_path,
    load_spec,
    packaged_crds_dir,
    render_platform,
    spec_from_dict,
    spec_to_dict,
)
from aiaas_infra.secrets._sealing import SealingCertificate
from aiaas_infra.secrets._secrets import SealedStore, seal_secret
from aiaas_infra.testing import sealing_keypair

SIZES = (4, 64)
CRDS = packaged_crds_dir()


def platform(environments: int) -> PlatformSpec:
    """The example spec with ``environments`` environments, each running one service."""
    data: dict[str, Any] = copy.deepcopy(spec_to_dict(load_spec(example_spec_path())))
    for i in range(environments - len(data["environments"])):
        data["environments"][f"team{i:02d}"] = {
            "pools": ["general"],
            "quota": {"cpu": "4", "memory": "8Gi", "pods": 50},
            "network": {
                "allow": [
                    {
                        "name": "from-ingress",
                        "direction": "ingress",
                        "namespace": "ingress-nginx",
                        "ports": [{"port": 8080}],
                        "reviewed_by": "alice",
                        "reason": "public API",
                    }
                ]
            },
            "services": [
                {
                    "name": "api",
                    "image": "ghcr.io/example/api:1.0.0",
                    "pool": "general",
                    "replicas": {"min": 1, "max": 3},
                }
            ],
        }
    return spec_from_dict(data)


def sealed(spec: PlatformSpec) -> SealedStore:
    cert = SealingCertificate.from_pem(sealing_keypair().cert_pem)
    store = SealedStore()
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for env_name, env in spec.environments.items():
        for item in env.secret_items:
            store = seal_secret(store, cert, spec, env_name, item.name, b"value", now=now)
    return store


@pytest.fixture(scope="module")
def validator() -> ManifestValidator:
    return ManifestValidator(crds_dir=CRDS, kubernetes_version="1.31")


@pytest.mark.parametrize("environments", SIZES)
def test_render(benchmark: Any, environments: int, validator: ManifestValidator) -> None:
    spec = platform(environments)
    store = sealed(spec)
    first = render_platform(spec, sealed=store)
    assert validator.validate_all(first.objects) == []
    benchmark.group = "infra-gitops-render"
    benchmark.extra_info["environments"] = environments
    benchmark.extra_info["objects"] = len(first.objects)
    benchmark.extra_info["files"] = len(first.files)
    result = benchmark.pedantic(
        render_platform, args=(spec,), kwargs={"sealed": store}, rounds=5, warmup_rounds=1
    )
    assert result.files == first.files


@pytest.mark.parametrize("environments", SIZES)
def test_validate(benchmark: Any, environments: int, validator: ManifestValidator) -> None:
    spec = platform(environments)
    objects = render_platform(spec, sealed=sealed(spec)).objects
    benchmark.group = "infra-gitops-validate"
    benchmark.extra_info["environments"] = environments
    benchmark.extra_info["objects"] = len(objects)
    problems = benchmark.pedantic(
        validator.validate_all, args=(objects,), rounds=3, warmup_rounds=1
    )
    assert problems == []
