"""The real ``kubectl`` against the fake Kubernetes API server, over TLS: discovery, ``get``,
``apply --server-side``, ``delete``, errors, and a kubeconfig issued by ``aiaas-infra access
issue`` (working in its namespace, refused once revoked).

``kubectl`` must be installed (``apt-get install kubernetes-client`` on Debian; ``.ci/run``
installs it where it is missing): without it these tests fail, they do not skip. Every run has
a timeout, its own ``HOME`` (discovery cache) and ``KUBECONFIG`` under ``tmp_path``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiaas_infra import PlatformSpec, render_environment, spec_to_dict
from aiaas_infra.cli._main import main
from aiaas_infra.testing import SYSTEM_NAMESPACES, FakeKubeApiServer

KUBECTL_TIMEOUT = 60

SET: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}},
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "team", "labels": {"tier": "a"}},
        "data": {"mode": "fast"},
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "reader", "namespace": "team"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
    },
]


@pytest.fixture(scope="module")
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl is not installed, and these tests need the real client: install it "
            "(Debian: `apt-get install kubernetes-client`; .ci/run does this) and rerun"
        )
    return found


@pytest.fixture
def cluster(crds: Path) -> Iterator[FakeKubeApiServer]:
    with FakeKubeApiServer(
        tls=True, crds=crds, namespaces=(*SYSTEM_NAMESPACES, "argocd", "monitoring")
    ) as server:
        yield server


class Kubectl:
    """Runs ``kubectl`` with a kubeconfig and a private home under ``tmp_path``."""

    def __init__(self, binary: str, kubeconfig: Path, home: Path) -> None:
        self.binary, self.kubeconfig, self.home = binary, kubeconfig, home
        home.mkdir(parents=True, exist_ok=True)

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
            "LANG": "C.UTF-8",
        }
        return subprocess.run(
            [self.binary, "--request-timeout=20s", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self(*args, stdin=stdin)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout


@pytest.fixture
def admin(kubectl: str, cluster: FakeKubeApiServer, tmp_path: Path) -> Kubectl:
    return Kubectl(kubectl, cluster.write_kubeconfig(tmp_path / "admin"), tmp_path / "home")


def _write_set(path: Path, objects: Iterable[Mapping[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all([dict(o) for o in objects]), encoding="utf-8")
    return path


def _data(cluster: FakeKubeApiServer) -> Any:
    stored = cluster.get_object("ConfigMap", "settings", "team")
    assert stored is not None
    return stored["data"]


def test_get_namespaces(admin: Kubectl) -> None:
    lines = admin.ok("get", "namespaces").splitlines()
    assert lines[0].split() == ["NAME", "AGE"]
    assert {line.split()[0] for line in lines[1:]} == {*SYSTEM_NAMESPACES, "argocd", "monitoring"}
    names = admin.ok("get", "ns", "-o", "jsonpath={.items[*].metadata.name}").split()
    assert "kube-system" in names


def test_apply_get_reapply_and_delete(
    admin: Kubectl, cluster: FakeKubeApiServer, tmp_path: Path
) -> None:
    manifest = _write_set(tmp_path / "set.yaml", SET)
    out = admin.ok("apply", "--server-side", "-f", str(manifest))
    assert out.splitlines() == [
        "namespace/team serverside-applied",
        "configmap/settings serverside-applied",
        "role.rbac.authorization.k8s.io/reader serverside-applied",
    ]
    stored = cluster.get_object("ConfigMap", "settings", "team")
    assert stored is not None
    assert stored["data"] == {"mode": "fast"}
    assert [(m["manager"], m["operation"]) for m in stored["metadata"]["managedFields"]] == [
        ("kubectl", "Apply")
    ]
    listed = json.loads(admin.ok("get", "configmaps", "-n", "team", "-o", "json"))
    assert [(i["kind"], i["metadata"]["name"], i["data"]) for i in listed["items"]] == [
        ("ConfigMap", "settings", {"mode": "fast"})
    ]
    assert admin.ok("get", "cm", "-n", "team", "-l", "tier=a", "-o", "name") == (
        "configmap/settings\n"
    )
    keys = [
        ("Namespace", "team", None),
        ("ConfigMap", "settings", "team"),
        ("Role", "reader", "team"),
    ]

    def versions() -> list[str]:
        found = [cluster.get_object(kind, name, ns) for kind, name, ns in keys]
        return [str(o["metadata"]["resourceVersion"]) for o in found if o is not None]

    before = versions()
    assert len(before) == 3
    # the same set again changes nothing, not even a resourceVersion
    cluster.reset_calls()
    admin.ok("apply", "--server-side", "-f", str(manifest))
    assert cluster.call_counts()["apply"] == 3
    assert versions() == before
    # a change is applied; a field another manager owns is a conflict until forced
    changed = [SET[1] | {"data": {"mode": "slow"}}]
    admin.ok("apply", "--server-side", "-f", str(_write_set(tmp_path / "c.yaml", changed)))
    assert _data(cluster) == {"mode": "slow"}
    other = admin(
        "apply", "--server-side", "--field-manager=someone", "-f", str(tmp_path / "set.yaml")
    )
    assert other.returncode == 1
    assert 'conflict with "kubectl"' in other.stderr
    admin.ok(
        "apply",
        "--server-side",
        "--field-manager=someone",
        "--force-conflicts",
        "-f",
        str(manifest),
    )
    assert _data(cluster) == {"mode": "fast"}
    # delete, one by one and from the file
    assert admin.ok("delete", "configmap", "settings", "-n", "team") == (
        'configmap "settings" deleted\n'
    )
    assert cluster.get_object("ConfigMap", "settings", "team") is None
    gone = admin("get", "cm", "settings", "-n", "team")
    assert gone.returncode == 1
    assert 'configmaps "settings" not found' in gone.stderr
    role_only = _write_set(tmp_path / "role.yaml", [SET[2]])
    assert "deleted" in admin.ok("delete", "-f", str(role_only))
    assert cluster.get_object("Role", "reader", "team") is None
    admin.ok("delete", "namespace", "team")
    assert cluster.get_object("Namespace", "team") is None


def test_errors_as_kubectl_shows_them(admin: Kubectl, tmp_path: Path) -> None:
    missing = admin("get", "cm", "missing", "-n", "default")
    assert missing.returncode == 1
    assert 'Error from server (NotFound): configmaps "missing" not found' in missing.stderr
    invalid = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "bad", "namespace": "default"},
        "data": {"count": 1},
    }
    refused = admin(
        "apply", "--server-side", "-f", str(_write_set(tmp_path / "bad.yaml", [invalid]))
    )
    assert refused.returncode == 1
    assert 'The ConfigMap "bad" is invalid: data.count' in refused.stderr
    no_ns = admin("get", "cm", "-n", "nowhere", "-o", "name")
    assert (no_ns.returncode, no_ns.stdout) == (0, "")


def test_a_token_the_server_does_not_know_is_unauthorized(
    kubectl: str, cluster: FakeKubeApiServer, tmp_path: Path
) -> None:
    stranger = Kubectl(
        kubectl,
        cluster.write_kubeconfig(tmp_path / "stranger", token="not-a-token"),
        tmp_path / "home",
    )
    done = stranger("get", "namespaces")
    assert done.returncode == 1
    assert "Unauthorized" in done.stderr or "logged in" in done.stderr


def test_the_whole_rendered_environment_applies(
    admin: Kubectl, cluster: FakeKubeApiServer, spec: PlatformSpec, tmp_path: Path
) -> None:
    objects = render_environment(spec, "development")
    manifest = _write_set(tmp_path / "env.yaml", objects)
    out = admin.ok("apply", "--server-side", "-f", str(manifest))
    assert out.count("serverside-applied") == len(objects)
    for obj in objects:
        meta = obj["metadata"]
        assert cluster.get_object(obj["kind"], meta["name"], meta.get("namespace")) is not None
    projects = admin.ok("get", "appprojects", "-n", "argocd", "-o", "name")
    assert projects == "appproject.argoproj.io/aiaas-development\n"


def test_a_package_from_access_issue_works_until_revoked(  # noqa: PLR0917 -- fixtures
    kubectl: str,
    admin: Kubectl,
    cluster: FakeKubeApiServer,
    spec: PlatformSpec,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # bootstrap's part, with kubectl: the environment's Namespace and access Roles
    env = "development"
    namespace = spec.namespace(env)
    seed = [o for o in render_environment(spec, env) if o["kind"] in ("Namespace", "Role")]
    admin.ok("apply", "--server-side", "-f", str(_write_set(tmp_path / "seed.yaml", seed)))
    admin.ok("create", "configmap", "app", "-n", namespace, "--from-literal=k=v")
    # a spec whose access packages point at this cluster
    document = spec_to_dict(spec)
    document["access"] = {"api_server": cluster.url}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(document), encoding="utf-8")
    package = tmp_path / "package"
    code = main(
        [
            "access",
            "issue",
            "--spec",
            str(spec_file),
            "--env",
            env,
            "--role",
            "read-only",
            "--ttl",
            "1h",
            "--out",
            str(package),
            "--kubeconfig",
            str(admin.kubeconfig),
            "--output",
            "json",
        ]
    )
    assert code == 0, capsys.readouterr().err
    issued = json.loads(capsys.readouterr().out)
    kept = tmp_path / "kept-kubeconfig"  # what the user copied: revoking must void it too
    shutil.copyfile(package / "kubeconfig", kept)
    user = Kubectl(kubectl, kept, tmp_path / "user-home")
    # the package's context names the namespace, and the CA is the cluster's
    assert user.ok("config", "view", "--minify", "-o", "jsonpath={..namespace}") == namespace
    assert user.ok("get", "configmaps", "-o", "name") == "configmap/app\n"
    assert "kube-root" not in user.ok("get", "configmaps")
    whoami = [t for t in cluster.tokens() if t["namespace"] == namespace]
    assert [t["valid"] for t in whoami] == [True]
    code = main(
        [
            "access",
            "revoke",
            "--spec",
            str(spec_file),
            "--package",
            str(package),
            "--kubeconfig",
            str(admin.kubeconfig),
        ]
    )
    assert code == 0
    assert f"package {issued['packageId']} in {env} revoked" in capsys.readouterr().out
    refused = user("get", "configmaps")
    assert refused.returncode == 1
    assert "Unauthorized" in refused.stderr or "logged in" in refused.stderr
    assert admin.ok("get", "configmaps", "-n", namespace, "-o", "name") == "configmap/app\n"
