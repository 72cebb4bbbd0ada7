"""PiiProtector (keyed digests + AES-256-GCM, rotation, env keys) and the audit writer."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiaas_core import ConfigError, KeyedHasher, ValidationError
from aiaas_core._hashing import HashKey
from aiaas_db import (
    MigrationError,
    Migrator,
    PiiDecryptionError,
    PiiKeyError,
    PiiProtector,
    platform_source,
)
from aiaas_db.cli._common import EXIT_CODES
from aiaas_db.platform._audit import AuditRow, reveal_actor, write_audit, write_audit_async

HASH_A = "aa" * 32
HASH_B = "bb" * 32
ENC_A = "cc" * 32
ENC_B = base64.urlsafe_b64encode(b"\x0d" * 32).decode().rstrip("=")
DEV = PiiProtector.for_local_development("test-pii")


def protector(enc: dict[str, bytes], current: str, hash_version: str = "v1") -> PiiProtector:
    hasher = KeyedHasher([HashKey(hash_version, bytes.fromhex(HASH_A))], hash_version)
    return PiiProtector(hasher, enc, current)


@given(st.text(max_size=300), st.binary(max_size=64))
def test_encrypt_decrypt_round_trip(value: str, aad: bytes) -> None:
    sealed, version = DEV.encrypt(value, aad)
    assert version == "dev"
    assert len(sealed) == 12 + len(value.encode()) + 16
    assert DEV.decrypt(sealed, aad, version) == value


def test_ciphertexts_are_randomised_and_bound_to_their_aad() -> None:
    one, _ = DEV.encrypt("ada@example.com", b"user-1")
    two, _ = DEV.encrypt("ada@example.com", b"user-1")
    assert one != two  # fresh nonce each time
    with pytest.raises(PiiDecryptionError, match="does not authenticate") as info:
        DEV.decrypt(one, b"user-2", "dev")  # copied onto another row
    assert info.value.code == "PII_DECRYPT_FAILED"
    tampered = bytearray(one)
    tampered[-1] ^= 1
    with pytest.raises(PiiDecryptionError):
        DEV.decrypt(bytes(tampered), b"user-1", "dev")
    with pytest.raises(PiiDecryptionError, match="at least 28"):
        DEV.decrypt(b"short", b"user-1", "dev")


def test_wrong_key_fails_and_unknown_version_names_the_variable() -> None:
    sealed, version = DEV.encrypt("secret", b"aad")
    other = PiiProtector.for_local_development("another-seed")
    with pytest.raises(PiiDecryptionError):
        other.decrypt(sealed, b"aad", version)
    with pytest.raises(PiiKeyError, match="AIAAS_DB_PII_ENCRYPTION_KEY_PREVIOUS") as info:
        DEV.decrypt(sealed, b"aad", "v9")
    assert info.value.code == "PII_KEY_UNKNOWN"


def test_local_development_keys_are_deterministic_and_distinct_per_seed() -> None:
    again = PiiProtector.for_local_development(b"test-pii")
    assert again.digest("x") == DEV.digest("x")
    assert again.decrypt(*DEV.encrypt("x", b"a")[:1], b"a", "dev") == "x"
    assert PiiProtector.for_local_development("other").digest("x") != DEV.digest("x")
    assert DEV.digest("x").startswith("hmac-sha256$dev$")
    with pytest.raises(ValueError, match="non-empty"):
        PiiProtector.for_local_development("")


def test_email_digest_normalises_and_verifies() -> None:
    assert DEV.email_digest("Ada@Example.COM ") == DEV.email_digest("ada@example.com")
    assert DEV.verify("ada@example.com", DEV.digest("ada@example.com"))
    assert not DEV.verify("bob@example.com", DEV.digest("ada@example.com"))
    with pytest.raises(ValidationError):
        DEV.email_digest("not an address")


def test_rotation_keeps_old_values_readable() -> None:
    env_old = {"AIAAS_DB_PII_HASH_KEY": f"v1:{HASH_A}", "AIAAS_DB_PII_ENCRYPTION_KEY": ENC_A}
    old = PiiProtector.from_env(env_old)
    sealed, version = old.encrypt("ada@example.com", b"u1")
    digest = old.digest("ada@example.com")
    assert version == "v1"
    env_new = {
        "AIAAS_DB_PII_HASH_KEY": f"v2:{HASH_B}",
        "AIAAS_DB_PII_HASH_KEY_PREVIOUS": f"v1:{HASH_A}",
        "AIAAS_DB_PII_ENCRYPTION_KEY": f"e2:{ENC_B}",
        "AIAAS_DB_PII_ENCRYPTION_KEY_PREVIOUS": f"v1:{ENC_A}, ",
    }
    new = PiiProtector.from_env(env_new)
    assert new.decrypt(sealed, b"u1", version) == "ada@example.com"
    assert new.needs_reencrypt(version)
    assert new.verify("ada@example.com", digest)
    assert new.needs_rehash(digest)
    resealed, new_version = new.encrypt("ada@example.com", b"u1")
    assert new_version == "e2"
    assert new.current_encryption == "e2"
    assert not new.needs_reencrypt(new_version)
    assert new.encryption_versions == ("e2", "v1")
    assert new.digest("ada@example.com").startswith("hmac-sha256$v2$")
    with pytest.raises(PiiKeyError):  # the old protector lacks the new key
        old.decrypt(resealed, b"u1", new_version)


def test_from_env_names_every_missing_variable() -> None:
    with pytest.raises(PiiKeyError) as info:
        PiiProtector.from_env({})
    err = info.value
    assert isinstance(err, ConfigError)
    assert isinstance(err, MigrationError)
    assert err.code == "PII_KEYS_MISSING"
    assert "AIAAS_DB_PII_HASH_KEY and AIAAS_DB_PII_ENCRYPTION_KEY" in err.message
    assert EXIT_CODES["PII_KEYS_MISSING"] == EXIT_CODES["PII_KEYS_INVALID"] == 2
    with pytest.raises(PiiKeyError, match="set AIAAS_DB_PII_ENCRYPTION_KEY"):
        PiiProtector.from_env({"AIAAS_DB_PII_HASH_KEY": HASH_A})


@pytest.mark.parametrize(
    ("enc", "previous", "expected"),
    [
        ("ab" * 16, None, "gives 16 bytes"),
        ("ab" * 40, None, "exactly 32 bytes"),
        ("Bad Version:" + "ab" * 32, None, "before the first ':'"),
        ("hex:zz", None, "hex"),
        (ENC_A, "no-version-here", "must be 'version:key'"),
        (ENC_A, f"v1:{ENC_A}", "given more than once"),
        (ENC_A, "v2:short", "AIAAS_DB_PII_ENCRYPTION_KEY_PREVIOUS entry 1"),
    ],
)
def test_from_env_rejects_malformed_keys_without_echoing_them(
    enc: str, previous: str | None, expected: str
) -> None:
    env = {"AIAAS_DB_PII_HASH_KEY": HASH_A, "AIAAS_DB_PII_ENCRYPTION_KEY": enc}
    if previous is not None:
        env["AIAAS_DB_PII_ENCRYPTION_KEY_PREVIOUS"] = previous
    with pytest.raises(PiiKeyError, match=expected) as info:
        PiiProtector.from_env(env)
    assert info.value.code == "PII_KEYS_INVALID"
    assert "ab" * 16 not in info.value.message
    assert ENC_A not in info.value.message


def test_malformed_hash_key_is_reported_with_the_encryption_key() -> None:
    with pytest.raises(PiiKeyError) as info:
        PiiProtector.from_env(
            {"AIAAS_DB_PII_HASH_KEY": "tooshort", "AIAAS_DB_PII_ENCRYPTION_KEY": "ab" * 10}
        )
    problems = " ".join(info.value.problems)
    assert "AIAAS_DB_PII_HASH_KEY" in problems
    assert "AIAAS_DB_PII_ENCRYPTION_KEY" in problems


def test_constructor_validation_and_redacted_repr() -> None:
    hasher = KeyedHasher([HashKey("v1", bytes.fromhex(HASH_A))], "v1")
    with pytest.raises(TypeError, match="KeyedHasher"):
        PiiProtector("nope", {"v1": b"k" * 32}, "v1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="versions are 1 to 16"):
        PiiProtector(hasher, {"V1!": b"k" * 32}, "V1!")
    with pytest.raises(ValueError, match="exactly 32 bytes"):
        PiiProtector(hasher, {"v1": b"k" * 16}, "v1")
    with pytest.raises(ValueError, match="not one of"):
        PiiProtector(hasher, {"v1": b"k" * 32}, "v2")
    p = PiiProtector(hasher, {"v1": b"k" * 32}, "v1")
    assert repr(p) == "PiiProtector(hash_key='v1', encryption_key='v1', keys=<redacted>)"
    assert "kkkk" not in repr(p)
    assert p.hasher is hasher
    with pytest.raises(TypeError):
        p.encrypt(b"bytes", b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        p.encrypt("x", "aad")  # type: ignore[arg-type]


def test_import_stays_cheap() -> None:
    code = (
        "import sys, aiaas_db; aiaas_db.PiiProtector; aiaas_db.write_audit;"
        "print('cryptography' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


@pytest.fixture
def audited(db_url: str) -> str:
    Migrator(db_url, platform_source("operational"), component="operational", protector=DEV).up()
    return db_url


def test_write_audit_protects_the_actor(audited: str) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with psycopg.connect(audited) as conn:
        entry_id = write_audit(
            conn,
            actor_type="user",
            actor="user:ada",
            action="api_key.create",
            target="api_key:k1",
            metadata={"when": moment, "n": 1},
            request_id="req-1",
            protector=DEV,
            occurred_at=moment,
        )
        row = conn.execute(
            "SELECT actor_type, actor_id, actor_ciphertext, actor_key_version, action, target,"
            " metadata, request_id, occurred_at FROM audit_log_entries"
            " WHERE audit_log_entry_id = %s",
            (entry_id,),
        ).fetchone()
    assert row is not None
    actor_type, actor_id, ct, version, action, target, metadata, request_id, occurred = row
    assert (actor_type, action, target, request_id) == (
        "user",
        "api_key.create",
        "api_key:k1",
        "req-1",
    )
    assert actor_id == DEV.digest("user:ada")
    assert b"ada" not in bytes(ct)
    assert metadata == {"when": str(moment), "n": 1}
    assert occurred == moment
    assert reveal_actor(DEV, actor_id=actor_id, actor_ciphertext=ct, actor_key_version=version) == (
        "user:ada"
    )
    assert (
        reveal_actor(DEV, actor_id=actor_id, actor_ciphertext=None, actor_key_version=None) is None
    )
    # The ciphertext is bound to its digest: another row's actor_id does not open it.
    with pytest.raises(PiiDecryptionError):
        reveal_actor(DEV, actor_id=DEV.digest("x"), actor_ciphertext=ct, actor_key_version=version)


async def test_write_audit_async(audited: str) -> None:
    async with await psycopg.AsyncConnection.connect(audited) as conn:
        entry_id = await write_audit_async(
            conn, actor_type="service", actor="svc", action="a", target="t", protector=DEV
        )
        cur = await conn.execute(
            "SELECT actor_id FROM audit_log_entries WHERE audit_log_entry_id = %s", (entry_id,)
        )
        assert await cur.fetchone() == (DEV.digest("svc"),)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"actor_type": "robot"}, "actor_type must be one of"),
        ({"actor": ""}, "actor must be a non-empty string"),
        ({"actor": 42}, "actor must be a non-empty string"),
        ({"action": "x" * 201}, "at most 200"),
        ({"target": " "}, "target must be a non-empty"),
        ({"metadata": ["not", "a", "mapping"]}, "metadata must be a mapping"),
        ({"request_id": 7}, "request_id must be a string"),
        ({"occurred_at": datetime(2026, 1, 1)}, "timezone-aware"),  # noqa: DTZ001
    ],
)
def test_bad_audit_entries_are_refused_before_the_database(
    changes: dict[str, Any], expected: str
) -> None:
    fields: dict[str, Any] = {
        "actor_type": "user",
        "actor": "a",
        "action": "x",
        "target": "t",
        "protector": DEV,
    }
    fields.update(changes)
    with pytest.raises(ValidationError, match=expected) as info:
        AuditRow.build(**fields)
    assert info.value.code == "AUDIT_ENTRY_INVALID"


def test_audit_log_is_append_only(audited: str) -> None:
    with psycopg.connect(audited, autocommit=True) as conn:
        write_audit(conn, actor_type="service", actor="s", action="a", target="t", protector=DEV)
        for statement in (
            "UPDATE audit_log_entries SET action = 'forged'",
            "DELETE FROM audit_log_entries",
            "TRUNCATE audit_log_entries",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="AUDIT_APPEND_ONLY") as info:
                conn.execute(statement)
            assert info.value.sqlstate == "P0001"
        count = conn.execute("SELECT count(*) FROM audit_log_entries WHERE action = 'a'")
        assert count.fetchone() == (1,)
        # The table refuses raw actors: actor_id must be a keyed digest.
        with pytest.raises(psycopg.errors.CheckViolation, match="ck_audit_log_entries_actor_id"):
            conn.execute(
                "INSERT INTO audit_log_entries (actor_type, actor_id, action, target)"
                " VALUES ('user', 'ada@example.com', 'a', 't')"
            )
        with pytest.raises(psycopg.errors.CheckViolation, match="actor_ciphertext"):
            conn.execute(
                "INSERT INTO audit_log_entries (actor_type, actor_id, actor_ciphertext, action,"
                " target) VALUES ('user', %s, '\\x00', 'a', 't')",
                (DEV.digest("x"),),
            )
