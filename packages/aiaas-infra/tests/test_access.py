"""Access packages against the fake Kubernetes API server: TokenRequest with an expiry, files
and modes, the rules, audit events, and revocation that really invalidates the token."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from handoff_support import Contract
from hypothesis import given
from hypothesis import strategies as st

from aiaas_infra import (
    AccessRequestError,
    EnvironmentLockedError,
    KubeApiError,
    PackageNotFoundError,
    PlatformSpec,
    check_access_request,
    issue_access,
    read_package,
    render_environment,
    revoke_access,
    revoke_package,
    spec_from_dict,
    spec_to_dict,
)
from aiaas_infra.access._access import MIN_TTL
from aiaas_infra.access._handoff import ACCESS_ROLES
from aiaas_infra.cli._main import main
from aiaas_infra.testing import FakeKubeApiServer

FILES = {
    "kubeconfig",
    "rbac.json",
    "observability-links.json",
    "handoff-package.json",
    "package.json",
}


@pytest.fixture(scope="module")
def contract(handoff_contract_path: Path) -> Contract:
    return Contract(handoff_contract_path)


def _seed(fake: FakeKubeApiServer, spec: PlatformSpec) -> None:
    """What bootstrap leaves: each environment's Namespace and access Roles."""
    for env in spec.environments:
        for obj in render_environment(spec, env):
            if obj["kind"] in ("Namespace", "Role"):
                fake.put_object(obj, manager="aiaas")


@pytest.fixture
def fake(spec: PlatformSpec) -> Iterator[FakeKubeApiServer]:
    with FakeKubeApiServer() as server:
        _seed(server, spec)
        server.reset_calls()
        yield server


@pytest.fixture
async def kube(fake: FakeKubeApiServer, tmp_path: Path) -> AsyncIterator[Any]:
    from kubernetes_asyncio import client, config

    path = fake.write_kubeconfig(tmp_path / "admin-kubeconfig")
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        yield api


def _token(package_dir: Path) -> str:
    doc = yaml.safe_load((package_dir / "kubeconfig").read_text())
    token: str = doc["users"][0]["user"]["token"]
    return token


async def test_issue_app_team_package(  # noqa: PLR0917 -- fixtures
    spec: PlatformSpec,
    fake: FakeKubeApiServer,
    kube: Any,
    tmp_path: Path,
    contract: Contract,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiaas.infra")
    out = tmp_path / "pkg"
    before = datetime.now(UTC).replace(microsecond=0)
    package = await issue_access(
        spec, "staging", "app-team", ttl=timedelta(hours=4), kube=kube, out_dir=out, actor="alice"
    )
    # Files, modes.
    assert {p.name for p in out.iterdir()} == FILES
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for path in package.files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # The token: a TokenRequest with expirationSeconds = the TTL, for the package's own account.
    token = _token(out)
    sa = f"access-app-team-{package.package_id}"
    assert package.service_account == sa
    assert fake.review_token(token) == f"system:serviceaccount:env-staging:{sa}"
    (issued,) = fake.tokens()
    assert issued["serviceaccount"] == sa
    expires = datetime.fromisoformat(issued["expirationTimestamp"])
    assert expires == package.expires_at
    assert before + timedelta(hours=4) <= expires <= datetime.now(UTC) + timedelta(hours=4)
    assert fake.call_counts()["token"] == 1
    # The account and its binding to the environment's app-team Role.
    account = fake.get_object("ServiceAccount", sa, "env-staging")
    assert account is not None
    assert account["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "aiaas-access"
    assert account["metadata"]["annotations"]["aiaas.dev/issued-by"] == "alice"
    binding = fake.get_object("RoleBinding", sa, "env-staging")
    assert binding is not None
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "app-team",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa, "namespace": "env-staging"}
    ]
    # kubeconfig: one context, confined to the namespace, pointing at the spec's API server.
    kubeconfig = yaml.safe_load((out / "kubeconfig").read_text())
    (context,) = kubeconfig["contexts"]
    assert context["context"]["namespace"] == "env-staging"
    assert kubeconfig["current-context"] == context["name"]
    assert kubeconfig["clusters"][0]["cluster"]["server"] == spec.access.api_server  # type: ignore[union-attr]
    # rbac.json is the rendered Role's rules.
    (role,) = [
        o
        for o in render_environment(spec, "staging")
        if o["kind"] == "Role" and o["metadata"]["name"] == "app-team"
    ]
    rbac = json.loads((out / "rbac.json").read_text())
    assert rbac == {
        "environment": "staging",
        "namespace": "env-staging",
        "role": "app-team",
        "rules": role["rules"],
    }
    # The handoff document conforms to the contract and points at the files.
    document = json.loads((out / "handoff-package.json").read_text())
    contract.validate(document, "HandoffPackage")
    assert document["kubeconfigUrl"] == f"{out.resolve().as_uri()}/kubeconfig"
    assert document["rbacUrl"] == f"{out.resolve().as_uri()}/rbac.json"
    assert datetime.fromisoformat(document["expiresAt"]) == package.expires_at
    links = json.loads((out / "observability-links.json").read_text())
    assert links == document["observabilityLinks"]
    assert any("var-namespace=env-staging" in link["url"] for link in links)
    # Audit event, and the token nowhere but the kubeconfig.
    (event,) = [r for r in caplog.records if getattr(r, "event", None) == "access_package_issued"]
    assert event.audit is True  # type: ignore[attr-defined]
    assert event.package_id == package.package_id  # type: ignore[attr-defined]
    assert event.role == "app-team"  # type: ignore[attr-defined]
    assert event.ttl_s == 4 * 3600  # type: ignore[attr-defined]
    assert token not in caplog.text
    assert token not in repr(package)
    assert token not in json.dumps(package.to_dict())
    assert token not in (out / "package.json").read_text()
    assert read_package(out)["packageId"] == package.package_id


async def test_default_ttls_and_break_glass(
    spec: PlatformSpec, fake: FakeKubeApiServer, kube: Any, tmp_path: Path
) -> None:
    prod = await issue_access(spec, "production", "read-only", kube=kube, out_dir=tmp_path / "a")
    dev = await issue_access(
        spec, "development", "platform-engineer", kube=kube, out_dir=tmp_path / "b"
    )
    glass = await issue_access(
        spec, "production", "break-glass", incident="INC-4711", kube=kube, out_dir=tmp_path / "c"
    )
    assert prod.expires_at - prod.issued_at == pytest.approx(
        timedelta(hours=8), abs=timedelta(seconds=5)
    )
    assert dev.expires_at - dev.issued_at == pytest.approx(
        timedelta(hours=24), abs=timedelta(seconds=5)
    )
    assert glass.expires_at - glass.issued_at == pytest.approx(
        timedelta(hours=24), abs=timedelta(seconds=5)
    )
    account = fake.get_object("ServiceAccount", glass.service_account, "env-production")
    assert account is not None
    assert account["metadata"]["annotations"]["aiaas.dev/incident"] == "INC-4711"
    binding = fake.get_object("RoleBinding", glass.service_account, "env-production")
    assert binding is not None
    assert binding["roleRef"]["name"] == "break-glass"
    # The rendered break-glass RoleBinding is left as bootstrap made it (no subjects).
    assert json.loads((tmp_path / "c" / "package.json").read_text())["incident"] == "INC-4711"


async def test_revoke_invalidates_only_that_package(
    spec: PlatformSpec,
    fake: FakeKubeApiServer,
    kube: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiaas.infra")
    one = await issue_access(spec, "staging", "app-team", kube=kube, out_dir=tmp_path / "one")
    two = await issue_access(spec, "staging", "app-team", kube=kube, out_dir=tmp_path / "two")
    token_one, token_two = _token(tmp_path / "one"), _token(tmp_path / "two")
    assert fake.review_token(token_one) is not None
    result = await revoke_package(spec, tmp_path / "one", kube=kube, reason="left the team")
    assert result.package_id == one.package_id
    assert result.already_revoked is False
    assert fake.review_token(token_one) is None  # invalid at once
    assert fake.review_token(token_two) is not None  # the other package still works
    assert fake.get_object("ServiceAccount", one.service_account, "env-staging") is None
    assert fake.get_object("RoleBinding", one.service_account, "env-staging") is None
    assert not (tmp_path / "one" / "kubeconfig").exists()
    recorded = read_package(tmp_path / "one")["revoked"]
    assert recorded["reason"] == "left the team"
    assert recorded["alreadyRevoked"] is False
    (event,) = [r for r in caplog.records if getattr(r, "event", None) == "access_package_revoked"]
    assert event.audit is True  # type: ignore[attr-defined]
    assert event.package_id == one.package_id  # type: ignore[attr-defined]
    # Revoking again is harmless and says so.
    again = await revoke_access(spec, "staging", one.package_id, kube=kube)
    assert again.already_revoked is True
    assert two.package_id != one.package_id
    assert token_one not in caplog.text
    assert token_two not in caplog.text


async def test_refused_requests_touch_nothing(
    spec: PlatformSpec, fake: FakeKubeApiServer, kube: Any, tmp_path: Path
) -> None:
    with pytest.raises(AccessRequestError, match="at most 8 h") as info:
        await issue_access(
            spec,
            "production",
            "app-team",
            ttl=timedelta(hours=9),
            kube=kube,
            out_dir=tmp_path / "x",
        )
    assert info.value.code == "ACCESS_TTL_TOO_LONG"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "other").write_text("x")
    with pytest.raises(AccessRequestError) as info:
        await issue_access(spec, "staging", "app-team", kube=kube, out_dir=tmp_path / "busy")
    assert info.value.code == "ACCESS_OUTPUT_NOT_EMPTY"
    assert sum(fake.call_counts().values()) == 0
    assert not (tmp_path / "x").exists()


async def test_cluster_errors_leave_nothing_behind(
    spec: PlatformSpec, kube: Any, fake: FakeKubeApiServer, tmp_path: Path
) -> None:
    data = spec_to_dict(spec)
    data["environments"]["qa"] = {"pools": ["general"]}
    qa = spec_from_dict(data)  # no namespace for qa on the cluster
    with pytest.raises(KubeApiError, match="404") as info:
        await issue_access(qa, "qa", "app-team", kube=kube, out_dir=tmp_path / "qa")
    assert info.value.api_status == 404
    assert not (tmp_path / "qa").exists()
    assert [o for o in fake.objects("ServiceAccount") if "access-" in o["metadata"]["name"]] == []


async def test_an_unreachable_cluster_is_an_error(spec: PlatformSpec, tmp_path: Path) -> None:
    from kubernetes_asyncio import client, config

    gone = FakeKubeApiServer().start()
    path = gone.write_kubeconfig(tmp_path / "kc")
    gone.stop()
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        with pytest.raises(KubeApiError, match="ClientConnectorError") as info:
            await revoke_access(spec, "staging", "0123abcd", kube=api)
        assert info.value.api_status is None
        with pytest.raises(KubeApiError):
            await issue_access(spec, "staging", "app-team", kube=api, out_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists()


async def test_a_token_longer_than_asked_is_refused(spec: PlatformSpec, tmp_path: Path) -> None:
    from kubernetes_asyncio import client, config

    skewed = FakeKubeApiServer(clock=lambda: datetime.now(UTC) + timedelta(hours=2))
    with skewed:
        _seed(skewed, spec)
        path = skewed.write_kubeconfig(tmp_path / "kc")
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(path), client_configuration=cfg)
        async with client.ApiClient(cfg) as api:
            with pytest.raises(AccessRequestError) as info:
                await issue_access(spec, "staging", "read-only", kube=api, out_dir=tmp_path / "p")
        assert info.value.code == "ACCESS_TOKEN_TOO_LONG"
        assert [
            o for o in skewed.objects("ServiceAccount") if "access-" in o["metadata"]["name"]
        ] == []
        assert not (tmp_path / "p").exists()


def test_rules(spec: PlatformSpec) -> None:
    assert check_access_request(spec, "production", "app-team") == timedelta(hours=8)
    assert check_access_request(spec, "staging", "app-team") == timedelta(hours=24)
    cases: list[tuple[tuple[str, str], dict[str, Any], str]] = [
        (("qa", "app-team"), {}, "ACCESS_ENVIRONMENT_UNKNOWN"),
        (("staging", "owner"), {}, "ACCESS_ROLE_UNKNOWN"),
        (("staging", "break-glass"), {}, "ACCESS_INCIDENT_REQUIRED"),
        (("staging", "app-team"), {"incident": "a b"}, "ACCESS_INCIDENT_INVALID"),
        (("staging", "app-team"), {"ttl": timedelta(0)}, "ACCESS_TTL_INVALID"),
        (("staging", "app-team"), {"ttl": timedelta(hours=-1)}, "ACCESS_TTL_INVALID"),
        (("staging", "app-team"), {"ttl": timedelta(hours=24, seconds=1)}, "ACCESS_TTL_TOO_LONG"),
    ]
    for args, kwargs, code in cases:
        with pytest.raises(AccessRequestError) as info:
            check_access_request(spec, *args, **kwargs)
        assert info.value.code == code, (args, kwargs)
    data = spec_to_dict(spec)
    data["access"] = None
    with pytest.raises(AccessRequestError) as info:
        check_access_request(spec_from_dict(data), "staging", "app-team")
    assert info.value.code == "ACCESS_NOT_CONFIGURED"
    assert "access.api_server" in info.value.message


def test_locked_environment_admits_only_engineers(spec: PlatformSpec) -> None:
    data = spec_to_dict(spec)
    data["environments"]["staging"]["maintenance"] = {"locked": True, "reason": "upgrade"}
    locked = spec_from_dict(data)
    for role in ("app-team", "read-only"):
        with pytest.raises(EnvironmentLockedError, match="upgrade"):
            check_access_request(locked, "staging", role)
    assert check_access_request(locked, "staging", "platform-engineer") == timedelta(hours=24)
    assert check_access_request(locked, "staging", "break-glass", incident="INC-1")


@given(
    env=st.sampled_from(["development", "staging", "production", "system"]),
    role=st.sampled_from(ACCESS_ROLES),
    minutes=st.integers(min_value=-60, max_value=30 * 60),
)
def test_ttl_rule_property(spec: PlatformSpec, env: str, role: str, minutes: int) -> None:
    ttl = timedelta(minutes=minutes)
    longest = timedelta(hours=8 if env == "production" and role != "break-glass" else 24)
    incident = "INC-1" if role == "break-glass" else None
    if MIN_TTL <= ttl <= longest:
        assert check_access_request(spec, env, role, ttl=ttl, incident=incident) == ttl
    else:
        with pytest.raises(AccessRequestError):
            check_access_request(spec, env, role, ttl=ttl, incident=incident)


def test_revoke_input_checks(spec: PlatformSpec, tmp_path: Path) -> None:
    import asyncio

    from aiaas_infra import EnvironmentNotFoundError

    with pytest.raises(EnvironmentNotFoundError):
        asyncio.run(revoke_access(spec, "qa", "0123abcd", kube=None))
    with pytest.raises(AccessRequestError) as info:
        asyncio.run(revoke_access(spec, "staging", "../etc", kube=None))
    assert info.value.code == "ACCESS_PACKAGE_ID_INVALID"
    with pytest.raises(PackageNotFoundError):
        read_package(tmp_path)


def test_cli_issue_and_revoke(
    spec: PlatformSpec,
    fake: FakeKubeApiServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    example_spec: Path,
) -> None:
    kubeconfig = fake.write_kubeconfig(tmp_path / "admin")
    out = tmp_path / "pkg"
    code = main(
        [
            "access",
            "issue",
            "--spec",
            str(example_spec),
            "--env",
            "development",
            "--role",
            "read-only",
            "--ttl",
            "2h",
            "--out",
            str(out),
            "--kubeconfig",
            str(kubeconfig),
            "--output",
            "json",
        ]
    )
    assert code == 0
    issued = json.loads(capsys.readouterr().out)
    assert issued["role"] == "read-only"
    token = _token(out)
    assert fake.review_token(token) is not None
    assert token not in json.dumps(issued)
    code = main(
        [
            "access",
            "revoke",
            "--spec",
            str(example_spec),
            "--package",
            str(out),
            "--kubeconfig",
            str(kubeconfig),
        ]
    )
    assert code == 0
    assert f"package {issued['packageId']} in development revoked" in capsys.readouterr().out
    assert fake.review_token(token) is None
    code = main(
        [
            "access",
            "revoke",
            "--spec",
            str(example_spec),
            "--env",
            "development",
            "--id",
            issued["packageId"],
            "--kubeconfig",
            str(kubeconfig),
            "--output",
            "json",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["alreadyRevoked"] is True


@pytest.fixture
def example_spec() -> Path:
    from aiaas_infra import example_spec_path

    return example_spec_path()


def _self_signed_ca() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-ca")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


async def test_the_package_trusts_the_clusters_ca(
    spec: PlatformSpec, fake: FakeKubeApiServer, tmp_path: Path
) -> None:
    import base64

    from kubernetes_asyncio import client, config

    ca = _self_signed_ca()
    path = fake.write_kubeconfig(tmp_path / "admin")
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    # What load_kube_config sets for an https cluster with certificate-authority-data.
    (tmp_path / "ca.crt").write_bytes(ca)
    cfg.ssl_ca_cert = str(tmp_path / "ca.crt")
    async with client.ApiClient(cfg) as api:
        await issue_access(spec, "staging", "read-only", kube=api, out_dir=tmp_path / "a")
        await issue_access(
            spec, "staging", "read-only", kube=api, out_dir=tmp_path / "b", ca_data=b"other"
        )
    for name, expected in (("a", ca), ("b", b"other")):
        kubeconfig = yaml.safe_load((tmp_path / name / "kubeconfig").read_text())
        cluster = kubeconfig["clusters"][0]["cluster"]
        assert base64.b64decode(cluster["certificate-authority-data"]) == expected
