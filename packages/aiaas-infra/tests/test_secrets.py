"""The sealed store, the SealedSecret manifest, rotation, freshness and the `secrets` CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import attrs
import jsonschema
import pytest
import yaml

from aiaas_infra import PlatformSpec, example_spec_path
from aiaas_infra.cli._main import main
from aiaas_infra.secrets._sealing import SealingCertificate, seal, unseal
from aiaas_infra.secrets._secrets import (
    FreshnessReport,
    SealedItem,
    SealedStore,
    SecretNotSealedError,
    SecretsError,
    freshness_report,
    rotate_secret,
    seal_secret,
    sealed_secret_manifest,
    secret_name,
    value_digest,
)
from aiaas_infra.testing import SealingKeypair, sealing_keypair

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def keys() -> SealingKeypair:
    return sealing_keypair()


@pytest.fixture(scope="module")
def cert(keys: SealingKeypair) -> SealingCertificate:
    return SealingCertificate.from_pem(keys.cert_pem)


@pytest.fixture(scope="module")
def crd_schema(crds: Path) -> dict[str, object]:
    doc = yaml.safe_load((crds / "sealed-secrets-crd.yaml").read_text())
    (version,) = [v for v in doc["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, object] = version["schema"]["openAPIV3Schema"]
    return schema


def item_of(store: SealedStore, env: str, name: str) -> SealedItem:
    item = store.get(env, name)
    assert item is not None
    return item


def full_store(
    spec: PlatformSpec, cert: SealingCertificate, *, when: dt.datetime = T0
) -> SealedStore:
    store = SealedStore()
    for env in spec.environments:
        for item in spec.environments[env].secret_items:
            store = seal_secret(
                store,
                cert,
                spec,
                env,
                item.name,
                f"{env}:{item.name}".encode(),
                now=when,
                digest_key=b"k",
            )
    return store


def test_seal_records_metadata_and_opens(
    spec: PlatformSpec, cert: SealingCertificate, keys: SealingKeypair
) -> None:
    env = sorted(spec.environments)[0]
    store = seal_secret(
        SealedStore(), cert, spec, env, "api-token", b"tok", now=T0, digest_key=b"key"
    )
    item = store.get(env, "api-token")
    assert item is not None
    assert item.rotated_at == T0
    assert item.scope == "strict"
    assert item.namespace == spec.namespace(env)
    assert item.secret == f"{env}-secrets"
    assert item.certificate == cert.fingerprint
    assert item.value_digest == value_digest(b"key", b"tok") != value_digest(b"other", b"tok")
    assert unseal(keys.key_pem, item.encrypted, namespace=item.namespace, name=item.secret) == (
        b"tok"
    )
    assert "encrypted" not in repr(item)
    assert "tok" not in repr(item)


def test_seal_refusals(spec: PlatformSpec, cert: SealingCertificate) -> None:
    env = sorted(spec.environments)[0]
    with pytest.raises(SecretsError, match="no environment 'nope'"):
        seal_secret(SealedStore(), cert, spec, "nope", "api-token", b"v")
    with pytest.raises(SecretsError, match="declares no secret 'db-pass'"):
        seal_secret(SealedStore(), cert, spec, env, "db-pass", b"v")
    with pytest.raises(SecretsError, match="empty"):
        seal_secret(SealedStore(), cert, spec, env, "api-token", b"")
    store = seal_secret(SealedStore(), cert, spec, env, "api-token", b"v")
    with pytest.raises(SecretsError, match="already sealed; rotate"):
        seal_secret(store, cert, spec, env, "api-token", b"w")
    with pytest.raises(SecretsError, match="one SealedSecret has one scope"):
        seal_secret(store, cert, spec, env, "metrics-credentials", b"w", scope="cluster-wide")
    with pytest.raises(SecretsError, match="unknown sealing scope"):
        seal_secret(SealedStore(), cert, spec, env, "api-token", b"v", scope="planet")
    with pytest.raises(SecretsError, match="empty"):
        value_digest(b"", b"v")


def test_rotate(spec: PlatformSpec, cert: SealingCertificate, keys: SealingKeypair) -> None:
    env = sorted(spec.environments)[0]
    store = seal_secret(
        SealedStore(),
        cert,
        spec,
        env,
        "api-token",
        b"one",
        now=T0,
        scope="namespace-wide",
        digest_key=b"k",
    )
    later = T0 + dt.timedelta(days=10)
    rotated = rotate_secret(store, cert, spec, env, "api-token", b"two", now=later, digest_key=b"k")
    item = rotated.get(env, "api-token")
    assert item is not None
    assert item.rotated_at == later
    assert item.scope == "namespace-wide"
    assert (
        unseal(
            keys.key_pem,
            item.encrypted,
            namespace=item.namespace,
            name="any",
            scope="namespace-wide",
        )
        == b"two"
    )
    assert store.get(env, "api-token") != item  # the old store is unchanged
    with pytest.raises(SecretsError, match="equals the current one"):
        rotate_secret(rotated, cert, spec, env, "api-token", b"two", digest_key=b"k")
    with pytest.raises(SecretNotSealedError, match="never been sealed"):
        rotate_secret(rotated, cert, spec, env, "metrics-credentials", b"x")


def test_store_round_trip(tmp_path: Path, spec: PlatformSpec, cert: SealingCertificate) -> None:
    store = full_store(spec, cert)
    path = tmp_path / "sealed.yaml"
    store.save(path)
    text = path.read_text()
    assert "safe to commit" in text
    assert ":api-token" not in text
    assert SealedStore.load(path) == store
    assert SealedStore.load(tmp_path / "absent.yaml") == SealedStore()
    doc = yaml.safe_load(text)
    env = sorted(spec.environments)[0]
    assert set(doc[env]["api-token"]) == {
        "encrypted",
        "rotated_at",
        "namespace",
        "secret",
        "scope",
        "value_digest",
        "certificate",
    }
    assert doc[env]["api-token"]["rotated_at"] == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("- a list", "mapping of environments"),
        ("prod: 3", "mapping of items"),
        ("prod: {x: 3}", "expected a mapping"),
        ("prod: {x: {encrypted: a}}", "rotated_at: required"),
        ("prod: {x: {encrypted: a, rotated_at: x, namespace: n, secret: s}}", "not an ISO"),
        (
            "prod: {x: {encrypted: a, rotated_at: '2026-01-01T00:00:00', namespace: n, secret: s}}",
            "no timezone",
        ),
        ("prod: {x: {encrypted: a, rotated_at: 5, namespace: n, secret: s}}", "rotated_at: req"),
        (
            "prod: {x: {encrypted: a, rotated_at: '2026-01-01T00:00:00Z', namespace: n, "
            "secret: s, y: 1}}",
            "unknown fields y",
        ),
        (
            "prod: {x: {encrypted: a, rotated_at: '2026-01-01T00:00:00Z', namespace: n, secret: s, "
            "scope: wide}}",
            "unknown sealing scope",
        ),
        ("prod: [unclosed", "not YAML"),
    ],
)
def test_store_rejects_bad_files(tmp_path: Path, doc: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(doc)
    with pytest.raises(SecretsError, match=match):
        SealedStore.load(path)


def test_store_accepts_yaml_timestamps() -> None:
    store = SealedStore.from_dict(
        {
            "p": {
                "x": {
                    "encrypted": "a",
                    "rotated_at": dt.datetime(2026, 1, 1),  # noqa: DTZ001
                    "namespace": "n",
                    "secret": "s",
                }
            }
        }
    )
    item = store.get("p", "x")
    assert item is not None
    assert item.rotated_at == T0
    with pytest.raises(SecretsError, match="timezone-aware"):
        SealedItem("a", dt.datetime(2026, 1, 1), "n", "s")  # noqa: DTZ001


def test_manifest_valid_against_crd(
    spec: PlatformSpec, cert: SealingCertificate, crd_schema: dict[str, object]
) -> None:
    store = full_store(spec, cert)
    for env, environment in spec.environments.items():
        manifest = sealed_secret_manifest(env, spec.namespace(env), store, environment.secret_items)
        jsonschema.validate(manifest, crd_schema)
        assert manifest["apiVersion"] == "bitnami.com/v1alpha1"
        assert manifest["metadata"]["name"] == secret_name(env)
        assert manifest["metadata"]["namespace"] == spec.namespace(env)
        assert manifest["metadata"]["labels"] == {
            "app.kubernetes.io/managed-by": "aiaas",
            "aiaas.dev/environment": env,
        }
        names = sorted(i.name for i in environment.secret_items)
        assert sorted(manifest["spec"]["encryptedData"]) == names
        ann = manifest["metadata"]["annotations"]
        for item in environment.secret_items:
            assert ann[f"secrets.aiaas.dev/{item.name}.owner"] == item.owner
            assert ann[f"secrets.aiaas.dev/{item.name}.rotation-days"] == str(item.rotation_days)
            assert ann[f"secrets.aiaas.dev/{item.name}.rotated-at"] == "2026-01-01T00:00:00Z"
        assert not any(k.startswith("sealedsecrets.bitnami.com") for k in ann)  # strict
        # deterministic
        assert manifest == sealed_secret_manifest(
            env, spec.namespace(env), store, environment.secret_items
        )


def test_manifest_crd_schema_catches_a_broken_manifest(
    spec: PlatformSpec, cert: SealingCertificate, crd_schema: dict[str, object]
) -> None:
    env = sorted(spec.environments)[0]
    manifest = sealed_secret_manifest(
        env, spec.namespace(env), full_store(spec, cert), spec.environments[env].secret_items
    )
    del manifest["spec"]["encryptedData"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, crd_schema)


@pytest.mark.parametrize("scope", ["namespace-wide", "cluster-wide"])
def test_manifest_scope_annotation(
    spec: PlatformSpec, cert: SealingCertificate, keys: SealingKeypair, scope: str
) -> None:
    env = sorted(spec.environments)[0]
    store = SealedStore()
    for item in spec.environments[env].secret_items:
        store = seal_secret(store, cert, spec, env, item.name, b"v", scope=scope)
    manifest = sealed_secret_manifest(
        env, spec.namespace(env), store, spec.environments[env].secret_items
    )
    assert manifest["metadata"]["annotations"][f"sealedsecrets.bitnami.com/{scope}"] == "true"
    for data in manifest["spec"]["encryptedData"].values():
        assert (
            unseal(keys.key_pem, data, namespace=spec.namespace(env), name="renamed", scope=scope)
            == b"v"
        )


def test_manifest_refusals(spec: PlatformSpec, cert: SealingCertificate) -> None:
    env = sorted(spec.environments)[0]
    items = spec.environments[env].secret_items
    with pytest.raises(SecretNotSealedError, match="not sealed yet: api-token, metrics"):
        sealed_secret_manifest(env, spec.namespace(env), SealedStore(), items)
    store = full_store(spec, cert)
    with pytest.raises(SecretsError, match="sealed for namespace"):
        sealed_secret_manifest(env, "elsewhere", store, items)
    moved = store.with_item(
        env, "api-token", attrs.evolve(item_of(store, env, "api-token"), secret="other")
    )
    with pytest.raises(SecretsError, match="sealed for secret 'other'"):
        sealed_secret_manifest(env, spec.namespace(env), moved, items)
    mixed = store.with_item(
        env, "api-token", attrs.evolve(item_of(store, env, "api-token"), scope="namespace-wide")
    )
    with pytest.raises(SecretsError, match="mixed scopes"):
        sealed_secret_manifest(env, spec.namespace(env), mixed, items)


def test_freshness(spec: PlatformSpec, cert: SealingCertificate) -> None:
    store = full_store(spec, cert)
    report = freshness_report(spec, store, T0 + dt.timedelta(days=10))
    assert report.ok
    assert {i.status for i in report.items} == {"fresh"}
    first = report.items[0]
    assert first.age_days == pytest.approx(10.0)
    # api-token rotates every 30 days, metrics-credentials every 90
    at25 = freshness_report(spec, store, T0 + dt.timedelta(days=25))
    by = {(i.env, i.name): i.status for i in at25.items}
    env = sorted(spec.environments)[0]
    assert by[(env, "api-token")] == "due-soon"
    assert by[(env, "metrics-credentials")] == "fresh"
    assert at25.ok
    late = freshness_report(spec, store, T0 + dt.timedelta(days=31))
    assert not late.ok
    assert {(i.env, i.name) for i in late.overdue} == {
        (e, "api-token")
        for e in spec.environments
        if "api-token" in {s.name for s in spec.environments[e].secret_items}
    }
    doc = late.to_dict()
    assert doc["overdue"] == len(late.overdue)
    assert doc["ok"] is False
    overdue_item = next(i for i in doc["items"] if i["status"] == "overdue")
    assert overdue_item["due_at"] == "2026-01-31T00:00:00Z"
    missing = freshness_report(spec, SealedStore(), T0)
    assert {i.status for i in missing.items} == {"missing"}
    assert isinstance(freshness_report(spec, store), FreshnessReport)


# -- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli_files(tmp_path: Path, keys: SealingKeypair) -> dict[str, Path]:
    spec_path = tmp_path / "platform.yaml"
    spec_path.write_text(example_spec_path().read_text())
    cert_path = tmp_path / "cert.pem"
    cert_path.write_bytes(keys.cert_pem)
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(keys.key_pem)
    return {
        "spec": spec_path,
        "cert": cert_path,
        "key": key_path,
        "store": tmp_path / "sealed-secrets.yaml",
    }


def test_cli_seal_rotate_freshness(
    cli_files: dict[str, Path],
    spec: PlatformSpec,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    keys: SealingKeypair,
) -> None:
    import io

    env = sorted(spec.environments)[0]
    secret_value = "Sup3r-Secret-Value"
    monkeypatch.setenv("AIAAS_SECRETS_DIGEST_KEY", "digest-key")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(f"{secret_value}\n".encode())))
    base = ["--spec", str(cli_files["spec"])]
    rc = main(
        [
            "secrets",
            "seal",
            *base,
            "--env",
            env,
            "--item",
            "api-token",
            "--cert",
            str(cli_files["cert"]),
            "--from-stdin",
            "-o",
            "json",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out
    assert secret_value not in out.out + out.err
    doc = json.loads(out.out)
    assert doc["action"] == "sealed"
    assert doc["scope"] == "strict"
    store = SealedStore.load(cli_files["store"])  # default: beside the spec
    item = store.get(env, "api-token")
    assert item is not None
    assert unseal(keys.key_pem, item.encrypted, namespace=item.namespace, name=item.secret) == (
        secret_value.encode()
    )
    monkeypatch.setenv("NEW_TOKEN", "rotated-value")
    rc = main(
        [
            "secrets",
            "rotate",
            *base,
            "--env",
            env,
            "--item",
            "api-token",
            "--cert",
            str(cli_files["cert"]),
            "--from-env",
            "NEW_TOKEN",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0
    assert "rotated" in out.out
    assert "rotated-value" not in out.out
    # same value again: refused by the digest
    rc = main(
        [
            "secrets",
            "rotate",
            *base,
            "--env",
            env,
            "--item",
            "api-token",
            "--cert",
            str(cli_files["cert"]),
            "--from-env",
            "NEW_TOKEN",
        ]
    )
    out = capsys.readouterr()
    assert rc == 1
    assert "equals the current one" in out.err
    assert "rotated-value" not in out.err
    # freshness: the other items are missing -> non-zero
    rc = main(["secrets", "freshness", *base, "-o", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 2
    assert doc["ok"] is False
    assert any(i["status"] == "missing" for i in doc["items"])
    rc = main(["secrets", "freshness", *base])
    out = capsys.readouterr()
    assert rc == 2
    assert "overdue or never sealed" in out.out


def test_cli_all_sealed_fresh_then_overdue(
    cli_files: dict[str, Path],
    spec: PlatformSpec,
    cert: SealingCertificate,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIAAS_SECRETS_DIGEST_KEY", "k")
    full_store(spec, cert).save(cli_files["store"])
    base = ["--spec", str(cli_files["spec"]), "--store", str(cli_files["store"])]
    assert main(["secrets", "freshness", *base, "--now", "2026-01-05T00:00:00Z"]) == 0
    assert "fresh" in capsys.readouterr().out
    assert main(["secrets", "freshness", *base, "--now", "2026-06-01", "-o", "json"]) == 2
    assert json.loads(capsys.readouterr().out)["overdue"] > 0
    assert main(["secrets", "freshness", *base, "--now", "yesterday"]) == 64
    capsys.readouterr()
    # unseal-check: every value opens and matches its digest
    assert (
        main(
            ["secrets", "unseal-check", *base, "--private-key", str(cli_files["key"]), "-o", "json"]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"]
    assert len(doc["items"]) == sum(len(e.secret_items) for e in spec.environments.values())
    monkeypatch.setenv("AIAAS_SECRETS_DIGEST_KEY", "another key")
    env = sorted(spec.environments)[0]
    assert (
        main(
            ["secrets", "unseal-check", *base, "--private-key", str(cli_files["key"]), "--env", env]
        )
        == 1
    )
    assert "does not match its recorded digest" in capsys.readouterr().out


def test_cli_unseal_check_failures(
    cli_files: dict[str, Path],
    spec: PlatformSpec,
    cert: SealingCertificate,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = sorted(spec.environments)[0]
    store = seal_secret(SealedStore(), cert, spec, env, "api-token", b"v")
    bad = attrs.evolve(
        item_of(store, env, "api-token"), encrypted=seal(cert, b"v", namespace="other", name="x")
    )
    store.with_item(env, "api-token", bad).save(cli_files["store"])
    rc = main(
        [
            "secrets",
            "unseal-check",
            "--spec",
            str(cli_files["spec"]),
            "--store",
            str(cli_files["store"]),
            "--private-key",
            str(cli_files["key"]),
            "--env",
            env,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1
    assert "api-token: FAILS" in out
    assert "metrics-credentials: FAILS (not sealed)" in out


def test_cli_value_sources(
    cli_files: dict[str, Path],
    spec: PlatformSpec,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = sorted(spec.environments)[0]
    base = [
        "secrets",
        "seal",
        "--spec",
        str(cli_files["spec"]),
        "--env",
        env,
        "--item",
        "api-token",
        "--cert",
        str(cli_files["cert"]),
    ]
    assert main(base) == 64  # no value source
    assert "exactly one way" in capsys.readouterr().err
    value_file = tmp_path / "value.bin"
    value_file.write_bytes(b"\x00\x01file")
    assert main([*base, "--from-env", "X", "--from-file", str(value_file)]) == 64
    capsys.readouterr()
    monkeypatch.delenv("UNSET_VAR", raising=False)
    assert main([*base, "--from-env", "UNSET_VAR"]) == 64
    assert "UNSET_VAR is not set" in capsys.readouterr().err
    assert main([*base, "--from-file", str(value_file), "--scope", "cluster-wide"]) == 0
    assert "cluster-wide" in capsys.readouterr().out
    item = SealedStore.load(cli_files["store"]).get(env, "api-token")
    assert item is not None
    assert item.value_digest is None
    bad_cert = tmp_path / "bad.pem"
    bad_cert.write_text("nonsense")
    assert main([*base[:-1], str(bad_cert), "--from-file", str(value_file)]) == 1
    assert "SEALING_INVALID" in capsys.readouterr().err
