"""API keys: token format, offline parsing, records, the in-memory store and the verifier."""

from __future__ import annotations

import asyncio
import logging
import re
import zlib
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiaas_core._apikeys import (
    MAX_TOKEN_LENGTH,
    ApiKey,
    ApiKeyRecord,
    ApiKeyStore,
    ApiKeyVerifier,
    InMemoryApiKeyStore,
    SupportsDigestUpgrade,
    generate_api_key,
    parse_api_key,
)
from aiaas_core._context import Actor
from aiaas_core._errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    error_body,
)
from aiaas_core._hashing import HashKey, KeyedHasher, digest_version

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TOKEN_RE = re.compile(r"aiaas_[0-9A-Za-z]{12}_[0-9A-Za-z]{49}")
KEY_V1 = HashKey("v1", bytes(range(32)))
KEY_V2 = HashKey("v2", bytes(range(50, 90)))
HASHER = KeyedHasher([KEY_V1], "v1")
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

# A fixed, valid key (its checksum is computed by the library, then checked here independently).
FIXED = ApiKey("aiaas", "AbCdEf012345", "s" * 20 + "Secret" + "9" * 17)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> InMemoryApiKeyStore:
    return InMemoryApiKeyStore()


@pytest.fixture
def verifier(store: InMemoryApiKeyStore, clock: Clock) -> ApiKeyVerifier:
    return ApiKeyVerifier(store, HASHER, clock=clock)


def assert_auth_error(info: pytest.ExceptionInfo[AuthenticationError], code: str) -> None:
    err = info.value
    assert type(err) is AuthenticationError
    assert err.code == code
    assert err.status == 401
    assert err.headers["WWW-Authenticate"].startswith("Bearer")


def all_text_of(err: BaseException) -> str:
    body = error_body(err, request_id="r" * 16, trace_id="0" * 32)
    return " ".join([str(err), repr(err), str(getattr(err, "detail", "")), str(body)])


def b62(number: int, width: int) -> str:
    out = ""
    for _ in range(width):
        number, digit = divmod(number, 62)
        out = BASE62[digit] + out
    return out


# ----------------------------------------------------------------------------- generation


def test_generated_keys_have_the_documented_format() -> None:
    key = generate_api_key()
    token = key.token
    assert TOKEN_RE.fullmatch(token)
    assert len(token) == 68
    assert token.startswith(f"aiaas_{key.key_id}_{key.secret}")
    # The last 6 characters are the base62 CRC32 of everything before them.
    assert token[-6:] == b62(zlib.crc32(token[:-6].encode()), 6)


def test_generated_keys_are_unique() -> None:
    keys = [generate_api_key() for _ in range(200)]
    assert len({k.key_id for k in keys}) == 200
    assert len({k.secret for k in keys}) == 200


def test_generate_with_a_custom_prefix() -> None:
    key = generate_api_key(prefix="acme2")
    assert key.token.startswith("acme2_")
    assert parse_api_key(key.token, prefix="acme2") == key
    with pytest.raises(AuthenticationError) as info:
        parse_api_key(key.token)
    assert_auth_error(info, "API_KEY_MALFORMED")


@pytest.mark.parametrize("prefix", ["", "a", "Aiaas", "ai_as", "1abc", "a" * 17, "ai-as", "é" * 3])
def test_bad_prefixes_are_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        generate_api_key(prefix=prefix)
    with pytest.raises(ValueError, match="prefix"):
        parse_api_key(FIXED.token, prefix=prefix)
    with pytest.raises(ValueError, match="prefix"):
        ApiKeyVerifier(InMemoryApiKeyStore(), HASHER, prefix=prefix)


def test_api_key_repr_and_str_never_show_the_secret() -> None:
    key = generate_api_key()
    for text in (repr(key), str(key), f"{key}", repr([key]), key.redacted):
        assert key.secret not in text
        assert key.token not in text
    assert str(key) == key.redacted == f"aiaas_{key.key_id}_****"
    assert key.key_id in repr(key)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key_id", "short"),
        ("key_id", "AbCdEf01234_"),
        ("key_id", "AbCdEf01234é"),
        ("key_id", 123456789012),
        ("secret", "x" * 42),
        ("secret", "x" * 44),
        ("secret", "x" * 42 + "-"),
        ("secret", None),
    ],
)
def test_api_key_fields_are_validated(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field.replace("_", " ")) as info:
        attrs.evolve(FIXED, **{field: value})
    if field == "secret" and isinstance(value, str):
        assert value not in str(info.value)


# -------------------------------------------------------------------------------- parsing

API_KEYS = st.builds(
    ApiKey,
    prefix=st.sampled_from(["aiaas", "acme", "k9"]),
    key_id=st.text(alphabet=BASE62, min_size=12, max_size=12),
    secret=st.text(alphabet=BASE62, min_size=43, max_size=43),
)


@given(API_KEYS)
def test_any_valid_key_round_trips_through_its_token(key: ApiKey) -> None:
    assert parse_api_key(key.token, prefix=key.prefix) == key
    assert key.secret not in repr(key)
    assert key.secret not in str(key)


def test_generated_keys_parse_back() -> None:
    for _ in range(50):
        key = generate_api_key()
        assert parse_api_key(key.token) == key


def test_fixed_key_round_trips() -> None:
    token = FIXED.token
    assert token.startswith("aiaas_AbCdEf012345_sssss")
    assert parse_api_key(token) == FIXED


def _replace(token: str, index: int, char: str) -> str:
    return token[:index] + char + token[index + 1 :]


MALFORMED_CASES = {
    "not a string": b"aiaas_AbCdEf012345_" + b"x" * 49,
    "none": None,
    "empty": "",
    "oversized": "aiaas_" + "A" * 300,
    "just over the cap": FIXED.token + "A" * (MAX_TOKEN_LENGTH + 1 - 68),
    "other prefix": "ghp_" + FIXED.token[6:],
    "upper-case prefix": "AIAAS_" + FIXED.token[6:],
    "no separator": "aiaas" + FIXED.token[5:].replace("_", "", 1),
    "short": FIXED.token[:-1],
    "truncated": FIXED.token[:30],
    "long": FIXED.token + "A",
    "leading space": " " + FIXED.token,
    "trailing newline": FIXED.token + "\n",
    "bearer kept": "Bearer " + FIXED.token,
    "id separator moved": "aiaas_AbCdEf01234_5" + FIXED.token[19:],
    "punctuation in secret": _replace(FIXED.token, 30, "-"),
    "non-ascii letter in secret": _replace(FIXED.token, 30, "é"),
    "full-width digit in id": _replace(FIXED.token, 8, "\uff11"),
    "nul in checksum": _replace(FIXED.token, 67, "\x00"),
}


@pytest.mark.parametrize("case", MALFORMED_CASES)
def test_malformed_tokens_are_rejected(case: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        parse_api_key(MALFORMED_CASES[case])  # type: ignore[arg-type]
    assert_auth_error(info, "API_KEY_MALFORMED")
    assert info.value.message == "API key is malformed"
    assert FIXED.secret not in all_text_of(info.value)


def test_oversized_input_is_rejected_before_any_parsing() -> None:
    huge = FIXED.token + "\x00" * 10_000_000
    with pytest.raises(AuthenticationError, match="malformed") as info:
        parse_api_key(huge)
    assert "256" in str(info.value.detail)


@pytest.mark.parametrize(
    "token",
    [
        _replace(FIXED.token, 20, "t"),  # one secret character
        _replace(FIXED.token, 7, "c"),  # one key id character (case changed)
        _replace(FIXED.token, 67, "0" if FIXED.token[67] != "0" else "1"),  # checksum
        FIXED.token[:19] + FIXED.token[20:62] + FIXED.token[19] + FIXED.token[62:],  # transposed
        "aiaas_AbCdEf012345_" + "A" * 49,  # forged: right shape, made-up checksum
    ],
)
def test_garbled_tokens_fail_the_checksum(token: str) -> None:
    assert token != FIXED.token
    with pytest.raises(AuthenticationError) as info:
        parse_api_key(token)
    assert_auth_error(info, "API_KEY_CHECKSUM")
    assert FIXED.secret not in all_text_of(info.value)
    assert token not in all_text_of(info.value)


@given(data=st.data())
def test_any_single_character_change_is_rejected(data: st.DataObject) -> None:
    token = FIXED.token
    index = data.draw(st.integers(0, len(token) - 1), label="index")
    char = data.draw(st.characters().filter(lambda c: c != token[index]), label="char")
    with pytest.raises(AuthenticationError) as info:
        parse_api_key(_replace(token, index, char))
    assert info.value.code in {"API_KEY_MALFORMED", "API_KEY_CHECKSUM"}


@given(data=st.data())
def test_any_single_base62_change_fails_the_checksum(data: st.DataObject) -> None:
    token = data.draw(API_KEYS, label="key").token
    start = token.index("_") + 1
    index = data.draw(
        st.integers(start, len(token) - 1).filter(lambda i: token[i] != "_"), label="index"
    )
    char = data.draw(st.sampled_from(BASE62).filter(lambda c: c != token[index]), label="char")
    with pytest.raises(AuthenticationError) as info:
        parse_api_key(_replace(token, index, char), prefix=token.partition("_")[0])
    assert info.value.code == "API_KEY_CHECKSUM"


@given(
    st.one_of(
        st.text(max_size=300),
        st.text(alphabet=BASE62 + "_", min_size=55, max_size=75).map(lambda s: "aiaas_" + s),
        st.binary(max_size=80),
        st.none(),
        st.integers(),
    )
)
def test_garbage_only_ever_raises_authentication_error(garbage: object) -> None:
    with pytest.raises(AuthenticationError) as info:
        parse_api_key(garbage)  # type: ignore[arg-type]
    assert info.value.code in {"API_KEY_MALFORMED", "API_KEY_CHECKSUM"}


# -------------------------------------------------------------------------------- records


def make_record(key: ApiKey = FIXED, **changes: object) -> ApiKeyRecord:
    fields: dict[str, object] = {
        "key_id": key.key_id,
        "digest": HASHER.digest(key.secret),
        "created_at": T0,
        "subject": "svc-billing",
        "roles": ("reader",),
    }
    fields.update(changes)
    return ApiKeyRecord(**fields)  # type: ignore[arg-type]


def test_record_defaults_and_conversions() -> None:
    record = make_record(roles=["writer", "reader"], scopes={"b", "a"})
    assert record.roles == ("writer", "reader")
    assert record.scopes == ("a", "b")
    assert record.status == "active"
    assert record.expires_at is None
    assert record.last_used_at is None
    assert (record.organization_id, record.record_id) == (None, None)
    owned = make_record(organization_id="org-1", record_id="row-7")
    assert (owned.organization_id, owned.record_id) == ("org-1", "row-7")
    assert make_record(roles="admin").roles == ("admin",)
    assert make_record(roles=(r for r in ["x", "y"])).roles == ("x", "y")


def test_record_repr_shows_neither_secret_nor_digest() -> None:
    record = make_record()
    for text in (repr(record), str(record)):
        assert FIXED.secret not in text
        assert record.digest not in text
        assert "hmac-sha256" not in text
        assert FIXED.key_id in text


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"key_id": "nope"}, "key id"),
        ({"digest": FIXED.secret}, "never the secret"),
        ({"digest": ""}, "keyed digest"),
        ({"created_at": datetime(2025, 1, 1)}, "created_at must be a timezone-aware"),  # noqa: DTZ001
        ({"created_at": None}, "created_at must be a timezone-aware"),
        ({"expires_at": datetime(2025, 1, 1)}, "expires_at must be a timezone-aware"),  # noqa: DTZ001
        ({"last_used_at": "2025-01-01"}, "last_used_at must be a timezone-aware"),
        ({"status": "disabled"}, "status must be one of"),
        ({"roles": ("ok", "")}, "roles must be non-empty"),
        ({"scopes": (1,)}, "scopes must be non-empty"),
        ({"subject": "  "}, "subject must be a non-empty"),
        ({"name": 5}, "must be a non-empty string or None"),
        ({"organization_id": ""}, "organization_id must be a non-empty string or None"),
        ({"record_id": 7}, "record_id must be a non-empty string or None"),
    ],
)
def test_record_fields_are_validated(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        make_record(**changes)
    assert FIXED.secret not in str(info.value)


def test_record_roles_must_be_a_sequence() -> None:
    with pytest.raises(TypeError, match="sequence of names"):
        make_record(roles=42)


def test_record_expiry_is_inclusive() -> None:
    record = make_record(expires_at=T0 + timedelta(hours=1))
    assert not record.is_expired(T0)
    assert not record.is_expired(T0 + timedelta(minutes=59))
    assert record.is_expired(T0 + timedelta(hours=1))
    assert not make_record().is_expired(T0 + timedelta(days=10_000))


# ----------------------------------------------------------------------------------- store


def test_in_memory_store_satisfies_the_protocols(store: InMemoryApiKeyStore) -> None:
    assert isinstance(store, ApiKeyStore)
    assert isinstance(store, SupportsDigestUpgrade)
    assert not isinstance(object(), ApiKeyStore)


async def test_store_add_get_and_duplicates(store: InMemoryApiKeyStore) -> None:
    record = make_record()
    await store.add(record)
    assert await store.get(FIXED.key_id) == record
    assert await store.get("ZZZZZZZZZZZZ") is None
    assert len(store) == 1
    assert repr(store) == "InMemoryApiKeyStore(<1 keys>)"
    with pytest.raises(ConflictError) as info:
        await store.add(make_record(subject="someone-else"))
    assert info.value.code == "API_KEY_EXISTS"
    with pytest.raises(TypeError, match="ApiKeyRecord"):
        await store.add({"key_id": "x"})  # type: ignore[arg-type]
    assert len(InMemoryApiKeyStore([record, make_record(generate_api_key())])) == 2


async def test_store_touch_only_moves_forward(store: InMemoryApiKeyStore) -> None:
    await store.add(make_record())
    await store.touch(FIXED.key_id, T0 + timedelta(minutes=5))
    await store.touch(FIXED.key_id, T0 + timedelta(minutes=1))
    record = await store.get(FIXED.key_id)
    assert record is not None
    assert record.last_used_at == T0 + timedelta(minutes=5)
    await store.touch("ZZZZZZZZZZZZ", T0)  # unknown: ignored
    assert len(store) == 1


async def test_store_revoke(store: InMemoryApiKeyStore) -> None:
    await store.add(make_record())
    revoked = await store.revoke(FIXED.key_id)
    assert revoked.status == "revoked"
    assert await store.get(FIXED.key_id) == revoked
    assert (await store.revoke(FIXED.key_id)).status == "revoked"
    with pytest.raises(NotFoundError) as info:
        await store.revoke("ZZZZZZZZZZZZ")
    assert info.value.code == "API_KEY_NOT_FOUND"


async def test_store_rotate(store: InMemoryApiKeyStore) -> None:
    await store.add(make_record())
    new_key = generate_api_key()
    replacement = make_record(new_key)
    old = await store.rotate(FIXED.key_id, replacement, grace=timedelta(hours=2), now=T0)
    assert old.status == "rotating"
    assert old.expires_at == T0 + timedelta(hours=2)
    assert await store.get(new_key.key_id) == replacement
    assert await store.get(FIXED.key_id) == old

    with pytest.raises(ConflictError) as exists:
        await store.rotate(FIXED.key_id, replacement, now=T0)
    assert exists.value.code == "API_KEY_EXISTS"
    with pytest.raises(NotFoundError):
        await store.rotate("ZZZZZZZZZZZZ", make_record(generate_api_key()))
    with pytest.raises(ValueError, match="negative"):
        await store.rotate(FIXED.key_id, make_record(generate_api_key()), grace=-timedelta(1))
    with pytest.raises(TypeError, match="ApiKeyRecord"):
        await store.rotate(FIXED.key_id, "new")  # type: ignore[arg-type]

    await store.revoke(new_key.key_id)
    with pytest.raises(ConflictError) as revoked:
        await store.rotate(new_key.key_id, make_record(generate_api_key()))
    assert revoked.value.code == "API_KEY_REVOKED"


async def test_store_rotate_keeps_an_earlier_expiry(store: InMemoryApiKeyStore) -> None:
    await store.add(make_record(expires_at=T0 + timedelta(minutes=10)))
    second = make_record(generate_api_key())
    old = await store.rotate(FIXED.key_id, second, now=T0)
    assert old.expires_at == T0 + timedelta(minutes=10)
    # Without `now`, the grace period starts at the current time.
    before = datetime.now(UTC)
    rotated = await store.rotate(second.key_id, make_record(generate_api_key()))
    assert rotated.status == "rotating"
    assert rotated.expires_at is not None
    assert rotated.expires_at >= before + timedelta(hours=24)


async def test_store_replace_digest_is_compare_and_set(store: InMemoryApiKeyStore) -> None:
    record = make_record()
    await store.add(record)
    new = KeyedHasher([KEY_V2], "v2").digest(FIXED.secret)
    assert not await store.replace_digest(FIXED.key_id, "hmac-sha256$v1$" + "A" * 43, new)
    assert await store.replace_digest(FIXED.key_id, record.digest, new)
    stored = await store.get(FIXED.key_id)
    assert stored is not None
    assert stored.digest == new
    assert not await store.replace_digest("ZZZZZZZZZZZZ", record.digest, new)


# -------------------------------------------------------------------------------- verifier


async def test_issue_verify_and_touch(
    store: InMemoryApiKeyStore, verifier: ApiKeyVerifier, clock: Clock
) -> None:
    key, record = verifier.issue(subject="svc-a", roles=["writer"], scopes=["models:read"])
    assert record.key_id == key.key_id
    assert record.created_at == T0
    assert verifier._hasher.verify(key.secret, record.digest)
    assert key.secret not in repr(record)
    await store.add(record)

    clock.advance(timedelta(seconds=3))
    actor = await verifier.verify(key.token)
    assert actor == Actor(
        subject="svc-a", roles=("writer",), kind="api_key", scopes=("models:read",)
    )
    assert actor.has_scope("models:read")
    assert not actor.has_scope("embeddings:create")
    await verifier.drain()
    used = await store.get(key.key_id)
    assert used is not None
    assert used.last_used_at == T0 + timedelta(seconds=3)
    assert (await verifier.verify_record(key.token)).scopes == ("models:read",)


async def test_subject_defaults_to_the_key_id(
    store: InMemoryApiKeyStore, verifier: ApiKeyVerifier
) -> None:
    key, record = verifier.issue()
    await store.add(record)
    actor = await verifier.verify(key.token)
    assert actor.subject == key.key_id
    assert actor.roles == ()
    assert actor.kind == "api_key"
    await verifier.drain()


async def test_issue_with_ttl_expires(
    store: InMemoryApiKeyStore, verifier: ApiKeyVerifier, clock: Clock
) -> None:
    key, record = verifier.issue(subject="tmp", ttl=timedelta(hours=1))
    assert record.expires_at == T0 + timedelta(hours=1)
    await store.add(record)
    assert (await verifier.verify(key.token)).subject == "tmp"
    clock.advance(timedelta(hours=1))
    with pytest.raises(AuthenticationError) as info:
        await verifier.verify(key.token)
    assert_auth_error(info, "API_KEY_EXPIRED")
    await verifier.drain()


async def test_make_record_for_an_existing_key(verifier: ApiKeyVerifier) -> None:
    record = verifier.make_record(
        FIXED, subject="s", name="ci", roles="admin", scopes={"b", "a"}, status="rotating"
    )
    assert record.key_id == FIXED.key_id
    assert record.roles == ("admin",)
    assert record.scopes == ("a", "b")
    assert record.name == "ci"
    assert record.status == "rotating"
    assert digest_version(record.digest) == "v1"


async def test_unknown_key_and_wrong_secret_look_the_same(
    store: InMemoryApiKeyStore, verifier: ApiKeyVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    key, record = verifier.issue(subject="svc")
    await store.add(record)
    wrong_secret = ApiKey("aiaas", key.key_id, generate_api_key().secret)
    unknown = generate_api_key()

    caplog.set_level(logging.INFO, logger="aiaas_core.apikeys")
    errors = []
    for token in (wrong_secret.token, unknown.token):
        with pytest.raises(AuthenticationError) as info:
            await verifier.verify(token)
        assert_auth_error(info, "API_KEY_INVALID")
        errors.append(info.value)
        for secret in (key.secret, wrong_secret.secret, unknown.secret):
            assert secret not in all_text_of(info.value)
    first, second = errors
    assert (first.message, first.detail, first.code) == (second.message, second.detail, second.code)
    # Only the server's log tells the two apart, by public key id.
    assert f"API key {key.key_id} rejected: secret does not match" in caplog.text
    assert f"API key {unknown.key_id} rejected: unknown key id" in caplog.text
    for secret in (key.secret, wrong_secret.secret, unknown.secret):
        assert secret not in caplog.text
    await verifier.drain()
    assert (await store.get(key.key_id)).last_used_at is None  # type: ignore[union-attr]


async def test_revoked_key_is_refused(store: InMemoryApiKeyStore, verifier: ApiKeyVerifier) -> None:
    key, record = verifier.issue(subject="svc")
    await store.add(record)
    await store.revoke(key.key_id)
    with pytest.raises(AuthenticationError) as info:
        await verifier.verify(key.token)
    assert_auth_error(info, "API_KEY_REVOKED")
    # Revocation is only disclosed to someone holding the right secret.
    impostor = ApiKey("aiaas", key.key_id, generate_api_key().secret)
    with pytest.raises(AuthenticationError) as other:
        await verifier.verify(impostor.token)
    assert_auth_error(other, "API_KEY_INVALID")


async def test_expired_key_is_refused(
    store: InMemoryApiKeyStore, verifier: ApiKeyVerifier, clock: Clock
) -> None:
    key = generate_api_key()
    await store.add(make_record(key, expires_at=T0 - timedelta(seconds=1)))
    with pytest.raises(AuthenticationError) as info:
        await verifier.verify(key.token)
    assert_auth_error(info, "API_KEY_EXPIRED")
    assert info.value.message == "API key has expired"
    clock.now = T0 - timedelta(minutes=1)
    assert (await verifier.verify(key.token)).subject == "svc-billing"
    await verifier.drain()


async def test_rotating_key_works_until_its_grace_period_ends(
    store: InMemoryApiKeyStore, verifier: ApiKeyVerifier, clock: Clock
) -> None:
    old_key, old_record = verifier.issue(subject="svc", roles=["reader"])
    await store.add(old_record)
    new_key, new_record = verifier.issue(subject="svc", roles=["reader"])
    await store.rotate(old_key.key_id, new_record, grace=timedelta(minutes=30), now=clock())

    assert (await verifier.verify(old_key.token)).subject == "svc"
    assert (await verifier.verify(new_key.token)).subject == "svc"
    clock.advance(timedelta(minutes=30))
    with pytest.raises(AuthenticationError) as info:
        await verifier.verify(old_key.token)
    assert_auth_error(info, "API_KEY_EXPIRED")
    assert (await verifier.verify(new_key.token)).subject == "svc"
    await verifier.drain()


@pytest.mark.parametrize("case", ["short", "oversized", "other prefix", "none"])
async def test_verifier_rejects_malformed_tokens(verifier: ApiKeyVerifier, case: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        await verifier.verify(MALFORMED_CASES[case])  # type: ignore[arg-type]
    assert_auth_error(info, "API_KEY_MALFORMED")


async def test_verifier_rejects_garbled_tokens_before_lookup(clock: Clock) -> None:
    class CountingStore(InMemoryApiKeyStore):
        lookups = 0

        async def get(self, key_id: str) -> ApiKeyRecord | None:
            self.lookups += 1
            return await super().get(key_id)

    store = CountingStore([make_record()])
    verifier = ApiKeyVerifier(store, HASHER, clock=clock)
    with pytest.raises(AuthenticationError) as info:
        await verifier.verify(_replace(FIXED.token, 30, "Q"))
    assert_auth_error(info, "API_KEY_CHECKSUM")
    assert store.lookups == 0
    assert (await verifier.verify(FIXED.token)).subject == "svc-billing"
    assert store.lookups == 1
    await verifier.drain()


@given(st.text(max_size=120))
async def test_verifier_only_raises_authentication_error_on_garbage(garbage: str) -> None:
    verifier = ApiKeyVerifier(InMemoryApiKeyStore([make_record()]), HASHER, clock=Clock())
    with pytest.raises(AuthenticationError) as info:
        await verifier.verify(garbage)
    assert info.value.code in {"API_KEY_MALFORMED", "API_KEY_CHECKSUM", "API_KEY_INVALID"}


async def test_touch_is_throttled(store: InMemoryApiKeyStore, clock: Clock) -> None:
    touches: list[datetime] = []

    class RecordingStore(InMemoryApiKeyStore):
        async def touch(self, key_id: str, when: datetime) -> None:
            touches.append(when)
            await super().touch(key_id, when)

    recording = RecordingStore([make_record()])
    verifier = ApiKeyVerifier(recording, HASHER, clock=clock, touch_interval=timedelta(seconds=60))
    for _ in range(3):
        await verifier.verify(FIXED.token)
        await verifier.drain()
        clock.advance(timedelta(seconds=20))
    await verifier.verify(FIXED.token)  # 60 s after the first use
    await verifier.drain()
    assert touches == [T0, T0 + timedelta(seconds=60)]


class StaleStore(InMemoryApiKeyStore):
    """Answers ``get`` with the record as first stored, as a caching store does between
    refreshes; counts the writes the verifier makes."""

    def __init__(self, record: ApiKeyRecord, *, touch_delay: float = 0.0) -> None:
        super().__init__([record])
        self.first = record
        self.touches: list[datetime] = []
        self.replacements = 0
        self.fail_replace = False
        self.touch_delay = touch_delay

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        return self.first if key_id == self.first.key_id else None

    async def touch(self, key_id: str, when: datetime) -> None:
        self.touches.append(when)
        await asyncio.sleep(self.touch_delay)
        await super().touch(key_id, when)

    async def replace_digest(self, key_id: str, old: str, new: str) -> bool:
        self.replacements += 1
        if self.fail_replace:
            raise ConnectionError("read-only replica")
        return await super().replace_digest(key_id, old, new)


async def test_touch_is_throttled_when_the_store_answers_from_a_cache(clock: Clock) -> None:
    store = StaleStore(make_record())  # last_used_at stays None in what get() returns
    verifier = ApiKeyVerifier(store, HASHER, clock=clock, touch_interval=timedelta(seconds=60))
    for _ in range(6):
        await verifier.verify(FIXED.token)
        await verifier.drain()
        clock.advance(timedelta(seconds=10))
    assert store.touches == [T0]  # once per interval, not once per request
    await verifier.verify(FIXED.token)  # 60 s after the first use
    await verifier.drain()
    assert store.touches == [T0, T0 + timedelta(seconds=60)]


async def test_concurrent_requests_touch_once(clock: Clock) -> None:
    # Every request reads the record before the first (slow) touch lands.
    store = StaleStore(make_record(), touch_delay=0.05)
    verifier = ApiKeyVerifier(store, HASHER, clock=clock, touch_interval=timedelta(seconds=60))
    actors = await asyncio.gather(*(verifier.verify(FIXED.token) for _ in range(20)))
    await verifier.drain()
    assert {a.subject for a in actors} == {"svc-billing"}
    assert store.touches == [T0]


async def test_a_digest_upgrade_is_tried_once_and_again_after_a_failure(clock: Clock) -> None:
    rotated = KeyedHasher([KEY_V1, KEY_V2], "v2")
    store = StaleStore(make_record())  # keeps answering with the v1 digest
    verifier = ApiKeyVerifier(store, rotated, clock=clock, touch_interval=None)
    for _ in range(5):
        await verifier.verify(FIXED.token)
        await verifier.drain()
    assert store.replacements == 1
    failing = StaleStore(make_record())
    failing.fail_replace = True
    retrying = ApiKeyVerifier(failing, rotated, clock=clock, touch_interval=None)
    for _ in range(3):
        await retrying.verify(FIXED.token)
        await retrying.drain()
    assert failing.replacements == 3  # a failed upgrade is not remembered as done


def test_bookkeeping_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiaas_core import _apikeys

    monkeypatch.setattr(_apikeys, "_REMEMBERED_KEYS", 3)
    seen: dict[str, int] = {}
    for i, key_id in enumerate(["a", "b", "c", "a", "d", "e"]):
        _apikeys._remember(seen, key_id, i)
    assert seen == {"a": 3, "d": 4, "e": 5}  # the least recently noted go first


async def test_touch_can_be_inline_or_off(clock: Clock) -> None:
    inline_store = InMemoryApiKeyStore([make_record()])
    inline = ApiKeyVerifier(
        inline_store, HASHER, clock=clock, background=False, touch_interval=timedelta(0)
    )
    await inline.verify(FIXED.token)
    assert (await inline_store.get(FIXED.key_id)).last_used_at == T0  # type: ignore[union-attr]

    off_store = InMemoryApiKeyStore([make_record()])
    off = ApiKeyVerifier(off_store, HASHER, clock=clock, touch_interval=None)
    await off.verify(FIXED.token)
    await off.drain()
    assert (await off_store.get(FIXED.key_id)).last_used_at is None  # type: ignore[union-attr]


async def test_touch_failure_is_logged_not_raised(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenTouchStore(InMemoryApiKeyStore):
        async def touch(self, key_id: str, when: datetime) -> None:
            await asyncio.sleep(0)
            raise ConnectionError("database went away")

    verifier = ApiKeyVerifier(BrokenTouchStore([make_record()]), HASHER, clock=clock)
    actor = await verifier.verify(FIXED.token)
    assert actor.subject == "svc-billing"
    await verifier.drain()
    assert f"could not record use of API key {FIXED.key_id}" in caplog.text
    assert FIXED.secret not in caplog.text


async def test_digest_is_upgraded_after_hashing_key_rotation(clock: Clock) -> None:
    store = InMemoryApiKeyStore([make_record()])  # digest written with v1
    rotated = KeyedHasher([KEY_V1, KEY_V2], "v2")
    verifier = ApiKeyVerifier(store, rotated, clock=clock)
    assert (await verifier.verify(FIXED.token)).subject == "svc-billing"
    await verifier.drain()
    record = await store.get(FIXED.key_id)
    assert record is not None
    assert digest_version(record.digest) == "v2"
    assert not rotated.needs_rehash(record.digest)
    assert record.last_used_at == T0
    # Only v2 is needed from now on.
    only_v2 = ApiKeyVerifier(store, KeyedHasher([KEY_V2], "v2"), clock=clock)
    assert (await only_v2.verify(FIXED.token)).subject == "svc-billing"
    await only_v2.drain()


async def test_digest_upgrade_can_be_disabled_and_failures_are_logged(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    rotated = KeyedHasher([KEY_V1, KEY_V2], "v2")
    store = InMemoryApiKeyStore([make_record()])
    verifier = ApiKeyVerifier(store, rotated, clock=clock, upgrade_digests=False)
    await verifier.verify(FIXED.token)
    await verifier.drain()
    assert digest_version((await store.get(FIXED.key_id)).digest) == "v1"  # type: ignore[union-attr]

    class BrokenUpgradeStore(InMemoryApiKeyStore):
        async def replace_digest(self, key_id: str, old: str, new: str) -> bool:
            raise ConnectionError("read-only replica")

    broken = ApiKeyVerifier(
        BrokenUpgradeStore([make_record()]), rotated, clock=clock, touch_interval=None
    )
    assert (await broken.verify(FIXED.token)).subject == "svc-billing"
    await broken.drain()
    assert f"could not upgrade the digest of API key {FIXED.key_id}" in caplog.text


async def test_store_without_upgrade_support_still_verifies(clock: Clock) -> None:
    class MinimalStore:
        def __init__(self, record: ApiKeyRecord) -> None:
            self.record = record
            self.touched: list[datetime] = []

        async def get(self, key_id: str) -> ApiKeyRecord | None:
            return self.record if key_id == self.record.key_id else None

        async def touch(self, key_id: str, when: datetime) -> None:
            self.touched.append(when)

    minimal = MinimalStore(make_record())
    assert isinstance(minimal, ApiKeyStore)
    assert not isinstance(minimal, SupportsDigestUpgrade)
    verifier = ApiKeyVerifier(minimal, KeyedHasher([KEY_V1, KEY_V2], "v2"), clock=clock)
    assert (await verifier.verify(FIXED.token)).subject == "svc-billing"
    await verifier.drain()
    assert minimal.touched == [T0]
    assert digest_version(minimal.record.digest) == "v1"


async def test_digest_under_a_retired_hashing_key_is_invalid_and_warned(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = InMemoryApiKeyStore([make_record()])  # v1 digest
    verifier = ApiKeyVerifier(store, KeyedHasher([KEY_V2], "v2"), clock=clock)
    with pytest.raises(AuthenticationError) as info:
        await verifier.verify(FIXED.token)
    assert_auth_error(info, "API_KEY_INVALID")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "hashing key version that is not configured" in warnings[0].getMessage()


async def test_naive_clock_is_a_programming_error(store: InMemoryApiKeyStore) -> None:
    verifier = ApiKeyVerifier(store, HASHER, clock=lambda: datetime(2025, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        verifier.issue()


def test_verifier_repr_has_no_key_material(verifier: ApiKeyVerifier) -> None:
    text = repr(verifier)
    assert text == (
        "ApiKeyVerifier(prefix='aiaas', hasher=KeyedHasher(current='v1', versions=('v1',)))"
    )
