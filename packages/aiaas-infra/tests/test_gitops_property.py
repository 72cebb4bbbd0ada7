"""Properties over generated specs: rendering is deterministic, every object validates strictly,
and environments stay isolated from each other."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from aiaas_infra import (
    ManifestValidator,
    PlatformSpec,
    render_platform,
    spec_from_dict,
    spec_to_dict,
)
from aiaas_infra.cluster._netpol import allowed
from aiaas_infra.cluster._yaml import dump_yaml

NAME = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)
CPU = st.sampled_from(["250m", "500m", "1", "2"])
MEMORY = st.sampled_from(["256Mi", "1Gi", "4Gi"])


@pytest.fixture(scope="module")
def validator(crds: Path) -> ManifestValidator:
    return ManifestValidator(crds_dir=crds, kubernetes_version="1.31")


@st.composite
def allows(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": draw(NAME),
        "direction": draw(st.sampled_from(["ingress", "egress"])),
        "reviewed_by": draw(NAME),
        "reason": "reviewed",
        "ports": [
            {"port": p, "protocol": draw(st.sampled_from(["TCP", "UDP"]))}
            for p in draw(st.lists(st.integers(1, 65535), max_size=3, unique=True))
        ],
    }
    if draw(st.booleans()):
        rule["namespace"] = draw(NAME)
        if draw(st.booleans()):
            rule["pod_labels"] = {"app": draw(NAME)}
    else:
        rule["cidr"] = draw(st.sampled_from(["10.20.8.0/24", "192.168.1.10/32", "::/0"]))
    return rule


@st.composite
def environments(draw: st.DrawFn, gpu: bool) -> dict[str, Any]:
    pools = ["general", "gpu"] if gpu else [draw(st.sampled_from(["general", "production"]))]
    env: dict[str, Any] = {
        "pools": pools,
        "quota": {"cpu": draw(CPU), "memory": draw(MEMORY), "pods": draw(st.integers(1, 500))},
        "limits": {"default_cpu": draw(CPU), "default_memory": draw(MEMORY)},
        "network": {"allow": draw(st.lists(allows(), max_size=3, unique_by=lambda a: a["name"]))},
        "sync": draw(st.sampled_from([None, "auto", "manual"])),
    }
    if draw(st.booleans()):
        extra = draw(
            st.lists(NAME.filter(lambda n: n not in ("api", "metrics")), max_size=2, unique=True)
        )
        env["secrets"] = [
            {
                "name": name,
                "purpose": "p",
                "owner": "team",
                "rotation_days": draw(st.integers(1, 365)),
            }
            for name in ["api-token", "metrics-credentials", *(f"x-{n}" for n in extra)]
        ]
    services: list[dict[str, Any]] = []
    for name in draw(st.lists(NAME, max_size=2, unique=True)):
        low = draw(st.integers(1, 3))
        services.append(
            {
                "name": name,
                "image": f"ghcr.io/example/{name}:{draw(st.integers(0, 9))}.0",
                "pool": pools[-1] if gpu else pools[0],
                "gpus": 1 if gpu else 0,
                "cpu": draw(CPU),
                "memory": draw(MEMORY),
                "port": draw(st.integers(1024, 65535)),
                "replicas": {"min": low, "max": draw(st.integers(low, 4))},
                "target_cpu_utilization": draw(st.integers(10, 95)),
            }
        )
    env["services"] = services
    if gpu:
        env["quota"]["gpus"] = sum(s["replicas"]["max"] for s in services)
    return env


@st.composite
def specs(draw: st.DrawFn, base: dict[str, Any]) -> PlatformSpec:
    data = copy.deepcopy(base)
    names = draw(
        st.lists(NAME.filter(lambda n: n != "system"), min_size=1, max_size=5, unique=True)
    )
    envs = {name: draw(environments(gpu=False)) for name in names}
    if draw(st.booleans()):
        envs["system"] = draw(environments(gpu=True))
    data["environments"] = envs
    data["observability"]["retention_days"] = draw(st.integers(30, 400))
    return spec_from_dict(data)


@pytest.fixture(scope="module")
def base(spec: PlatformSpec) -> dict[str, Any]:
    return spec_to_dict(spec)


def test_generated_specs_render_deterministically_and_validate(
    base: dict[str, Any], validator: ManifestValidator
) -> None:
    @settings(max_examples=20)
    @given(specs(base))
    def check(generated: PlatformSpec) -> None:
        first = render_platform(generated)
        second = render_platform(spec_from_dict(spec_to_dict(generated)))
        assert first.files == second.files
        problems = validator.validate_all(first.objects)
        assert problems == [], [str(p) for p in problems[:5]]
        names = list(generated.environments)
        for src, dst in itertools.pairwise(names):
            verdict = allowed(
                first.objects,
                src_namespace=generated.namespace(src),
                dst_namespace=generated.namespace(dst),
                port=8080,
            )
            assert not verdict.allowed

    check()


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.sampled_from(
        ["yes", "No", "y", "~", "0x1F", "1e3", "1_000", "12:30", "2026-01-01", "- a"]
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=40), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(JSONISH)
def test_the_yaml_emitter_round_trips(value: Any) -> None:
    text = dump_yaml(value)
    assert yaml.safe_load(text) == value
    assert dump_yaml(value) == text


def test_the_yaml_emitter_refuses_what_yaml_cannot_hold() -> None:
    with pytest.raises(TypeError, match="cannot write a bytes"):
        dump_yaml({"a": b"x"})
    with pytest.raises(TypeError, match="keys must be strings"):
        dump_yaml({1: "x"})
    with pytest.raises(ValueError, match="longer than 1000"):
        dump_yaml({"k" * 1001: 1})
    assert yaml.safe_load(dump_yaml([float("inf"), float("-inf")])) == [float("inf"), float("-inf")]
    assert math.isnan(yaml.safe_load(dump_yaml(float("nan"))))
    assert dump_yaml("\U0001f600 \u00e9") == '"\\U0001f600 \\u00e9"\n'
    assert dump_yaml({"s": "multi\nline"}) == "s: |-\n  multi\n  line\n"
