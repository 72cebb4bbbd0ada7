"""Keyed hashing: HashKey, KeyedHasher (digests, rotation, configuration) and normalize_email."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from aiaas_core._errors import ConfigError, ValidationError
from aiaas_core._hashing import (
    MIN_KEY_BYTES,
    HashKey,
    KeyedHasher,
    SupportsSecretValue,
    digest_version,
    normalize_email,
)

DIGEST_RE = re.compile(r"hmac-sha256\$([a-z0-9]{1,16})\$[A-Za-z0-9_-]{43}")
MATERIAL_1 = bytes(range(32))
MATERIAL_2 = bytes(range(100, 140))
KEY_1 = HashKey("v1", MATERIAL_1)
KEY_2 = HashKey("v2", MATERIAL_2)


class FakeSecret:
    """Stands in for the config package's Secret: hides its value behind get_secret_value()."""

    def __init__(self, value: str | bytes) -> None:
        self._value = value

    def get_secret_value(self) -> str | bytes:
        return self._value

    def __repr__(self) -> str:
        return "FakeSecret(**********)"


def mac_b64(material: bytes, value: bytes) -> str:
    mac = hmac.new(material, value, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


# --------------------------------------------------------------------------------- HashKey


def test_hash_key_holds_version_and_material() -> None:
    key = HashKey("v7", MATERIAL_1)
    assert key.version == "v7"
    assert key.material == MATERIAL_1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        key.version = "v8"  # type: ignore[misc]


@pytest.mark.parametrize("length", [0, 1, 16, 31])
def test_short_material_is_rejected_naming_the_minimum(length: int) -> None:
    material = b"\xab" * length
    with pytest.raises(ValueError, match="at least 32") as info:
        HashKey("v1", material)
    assert str(length) in str(info.value)
    if length:
        assert material.hex() not in str(info.value)
        assert repr(material) not in str(info.value)


def test_material_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        HashKey("v1", "x" * 40)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["", "V1", "v-1", "v 1", "a" * 17, "v1\n", "ü1"])
def test_bad_versions_are_rejected(version: str) -> None:
    with pytest.raises(ValueError, match="version"):
        HashKey(version, MATERIAL_1)


@pytest.mark.parametrize("version", ["hex", "base64", "raw"])
def test_encoding_names_are_reserved_as_versions(version: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        HashKey(version, MATERIAL_1)


def test_non_string_version_is_rejected() -> None:
    with pytest.raises(ValueError, match="version"):
        HashKey(1, MATERIAL_1)  # type: ignore[arg-type]


def test_repr_and_str_never_show_the_material() -> None:
    material = b"S3cr3t-material-that-is-long-enough!!"
    key = HashKey("v1", material)
    for text in (repr(key), str(key), repr([key]), repr(KeyedHasher([key], "v1"))):
        assert "S3cr3t" not in text
        assert material.hex() not in text
        assert base64.b64encode(material).decode()[:20] not in text
    assert repr(key) == "HashKey(version='v1', material=<redacted>)"


def test_generate_makes_fresh_random_keys() -> None:
    one, two = HashKey.generate(), HashKey.generate("v9")
    assert one.version == "v1"
    assert two.version == "v9"
    assert len(one.material) == MIN_KEY_BYTES
    assert one.material != two.material


# ----------------------------------------------------------------------- HashKey.from_text

RAW = bytes(range(200, 232))  # 32 bytes


@pytest.mark.parametrize(
    "text",
    [
        RAW.hex(),
        RAW.hex().upper(),
        base64.b64encode(RAW).decode(),  # standard, padded
        base64.b64encode(RAW).decode().rstrip("="),  # standard, unpadded
        base64.urlsafe_b64encode(RAW).decode(),  # urlsafe, padded
        base64.urlsafe_b64encode(RAW).decode().rstrip("="),  # urlsafe, unpadded
        f"hex:{RAW.hex()}",
        f"base64:{base64.urlsafe_b64encode(RAW).decode()}",
        f"  {RAW.hex()}\n",  # surrounding whitespace from key files
    ],
)
def test_from_text_decodes_hex_and_base64(text: str) -> None:
    assert HashKey.from_text("v1", text).material == RAW


def test_from_text_uses_raw_text_as_utf8() -> None:
    text = "this pass phrase: has punctuation, spaces & symbols!"
    assert HashKey.from_text("v1", text).material == text.encode()
    assert HashKey.from_text("v1", "raw:" + "é" * 16).material == ("é" * 16).encode()
    # The raw: prefix forces raw reading even for text that would otherwise be hex.
    assert HashKey.from_text("v1", "raw:" + "ab" * 32).material == b"ab" * 32


def test_from_text_rules_are_deterministic_for_ambiguous_text() -> None:
    # 64 hex digits are also valid base64: hex wins.
    assert HashKey.from_text("v1", "0" * 64).material == bytes(32)
    # 44 letters are valid base64 (33 bytes); a 45-letter text cannot be base64, so it is raw.
    assert HashKey.from_text("v1", "Z" * 44).material == base64.b64decode("Z" * 44)
    assert HashKey.from_text("v1", "Z" * 45).material == b"Z" * 45
    # Mixed standard and urlsafe alphabets are not base64: raw.
    mixed = "+" + "-" + "A" * 42
    assert HashKey.from_text("v1", mixed).material == mixed.encode()
    # Padding on a body of the wrong length is not base64: raw.
    assert HashKey.from_text("v1", "Z" * 41 + "==").material == ("Z" * 41 + "==").encode()


def test_from_text_accepts_bytes_and_secret_wrappers() -> None:
    assert HashKey.from_text("v1", RAW.hex().encode()).material == RAW
    assert HashKey.from_text("v1", FakeSecret(RAW.hex())).material == RAW
    assert HashKey.from_text("v1", FakeSecret(RAW.hex().encode())).material == RAW
    assert isinstance(FakeSecret("x"), SupportsSecretValue)


@pytest.mark.parametrize(
    ("text", "how"),
    [
        ("ab" * 16, "hex gives 16 bytes"),
        ("hex:" + "ab" * 31, "hex gives 31 bytes"),
        (base64.b64encode(b"k" * 31).decode(), "base64 gives 31 bytes"),
        ("base64:" + base64.b64encode(b"k" * 20).decode(), "base64 gives 20 bytes"),
        ("short pass phrase!", "raw text gives 18 bytes"),
        ("raw:" + "x" * 31, "raw text gives 31 bytes"),
    ],
)
def test_from_text_rejects_short_keys_without_echoing_them(text: str, how: str) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes") as info:
        HashKey.from_text("v3", text)
    message = str(info.value)
    assert how in message
    assert "'v3'" in message
    assert text not in message
    assert (text.partition(":")[2] or text) not in message


@pytest.mark.parametrize("text", ["", "   ", "\n", b"", FakeSecret("  ")])
def test_from_text_rejects_empty_keys(text: str | bytes | FakeSecret) -> None:
    with pytest.raises(ValueError, match="empty"):
        HashKey.from_text("v1", text)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("hex:" + "zz" * 40, "not an even number of hex digits"),
        ("hex:" + "a" * 65, "not an even number of hex digits"),
        ("base64:" + "!" * 50, "not base64"),
        ("base64:" + "A" * 45, "not base64"),
    ],
)
def test_from_text_rejects_bad_explicit_encodings(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        HashKey.from_text("v1", text)
    assert text not in str(info.value)


def test_from_text_rejects_non_utf8_bytes_and_other_types() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        HashKey.from_text("v1", b"\xff" * 40)
    with pytest.raises(TypeError, match="get_secret_value"):
        HashKey.from_text("v1", 12345)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="get_secret_value"):
        HashKey.from_text("v1", FakeSecret(42))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- KeyedHasher


def test_digest_is_self_describing_hmac_sha256() -> None:
    hasher = KeyedHasher([KEY_1], "v1")
    stored = hasher.digest("alice@example.com")
    assert DIGEST_RE.fullmatch(stored)
    assert stored == "hmac-sha256$v1$" + mac_b64(MATERIAL_1, b"alice@example.com")
    assert digest_version(stored) == "v1"


def test_digest_matches_rfc4231_test_case_6() -> None:
    # RFC 4231 section 4.7: a 131-byte key, larger than the block size.
    key = HashKey("rfc", b"\xaa" * 131)
    data = b"Test Using Larger Than Block-Size Key - Hash Key First"
    expected = bytes.fromhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    stored = KeyedHasher([key], "rfc").digest(data)
    assert stored == "hmac-sha256$rfc$" + base64.urlsafe_b64encode(expected).rstrip(b"=").decode()


def test_str_values_are_digested_as_utf8() -> None:
    hasher = KeyedHasher([KEY_1], "v1")
    assert hasher.digest("zoë") == hasher.digest("zoë".encode())
    assert hasher.verify(b"zo\xc3\xab", hasher.digest("zoë"))


def test_digest_rejects_non_text_values() -> None:
    hasher = KeyedHasher([KEY_1], "v1")
    with pytest.raises(TypeError, match="str or bytes"):
        hasher.digest(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or bytes"):
        hasher.verify(None, hasher.digest("x"))  # type: ignore[arg-type]


@given(value=st.one_of(st.text(), st.binary()))
def test_digest_is_deterministic(value: str | bytes) -> None:
    first = KeyedHasher([KEY_1], "v1")
    second = KeyedHasher([HashKey("v1", MATERIAL_1)], "v1")
    assert first.digest(value) == first.digest(value) == second.digest(value)
    assert first.verify(value, first.digest(value))


@given(
    value=st.one_of(st.text(), st.binary()),
    one=st.binary(min_size=32, max_size=64),
    two=st.binary(min_size=32, max_size=64),
)
def test_different_keys_give_different_digests(value: str | bytes, one: bytes, two: bytes) -> None:
    # HMAC pads keys shorter than the block size with zeros, so compare after that padding.
    if one.ljust(64, b"\0") == two.ljust(64, b"\0"):
        two = bytes([two[0] ^ 1]) + two[1:]
    first = KeyedHasher([HashKey("v1", one)], "v1").digest(value)
    second = KeyedHasher([HashKey("v1", two)], "v1").digest(value)
    assert first != second
    assert not KeyedHasher([HashKey("v1", two)], "v1").verify(value, first)


@given(one=st.text(), two=st.text())
def test_different_values_give_different_digests(one: str, two: str) -> None:
    hasher = KeyedHasher([KEY_1], "v1")
    assert (hasher.digest(one) == hasher.digest(two)) == (one == two)
    assert hasher.verify(one, hasher.digest(two)) == (one == two)


def test_rotation_verifies_old_digests_and_writes_with_the_new_key() -> None:
    before = KeyedHasher([KEY_1], "v1")
    stored = before.digest("bob@example.com")
    assert not before.needs_rehash(stored)

    after = KeyedHasher([KEY_1, KEY_2], "v2")
    assert after.current == "v2"
    assert after.versions == ("v1", "v2")
    assert after.verify("bob@example.com", stored)
    assert not after.verify("eve@example.com", stored)
    assert after.needs_rehash(stored)

    fresh = after.digest("bob@example.com")
    assert digest_version(fresh) == "v2"
    assert fresh != stored
    assert not after.needs_rehash(fresh)
    assert after.verify("bob@example.com", fresh)
    # Once v1 is retired, v1 digests no longer verify, but they are still recognised as digests.
    retired = KeyedHasher([KEY_2], "v2")
    assert not retired.verify("bob@example.com", stored)
    assert retired.needs_rehash(stored)


def test_digest_with_version_relabelled_does_not_verify() -> None:
    hasher = KeyedHasher([KEY_1, KEY_2], "v2")
    stored = hasher.digest("carol@example.com")
    forged = stored.replace("$v2$", "$v1$")
    assert not hasher.verify("carol@example.com", forged)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not a digest",
        "hmac-sha256$v1$",
        "hmac-sha256$v1$" + "A" * 42,
        "hmac-sha256$v1$" + "A" * 44,
        "hmac-sha256$V1$" + "A" * 43,
        "hmac-sha256$$" + "A" * 43,
        "hmac-sha512$v1$" + "A" * 43,
        "hmac-sha256$v1$" + "A" * 42 + "=",
        "hmac-sha256$v1$" + "A" * 42 + "+",
        "hmac-sha256$v1$" + "A" * 43 + "\n",
        "hmac-sha256v1" + "A" * 43,
        "$2b$12$abcdefghijklmnopqrstuv",  # a bcrypt hash is not ours
        None,
        b"hmac-sha256$v1$" + b"A" * 43,
    ],
)
def test_garbage_stored_digests_raise_value_error(stored: object) -> None:
    hasher = KeyedHasher([KEY_1], "v1")
    with pytest.raises(ValueError, match="malformed"):
        hasher.verify("x", stored)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="malformed"):
        hasher.needs_rehash(stored)  # type: ignore[arg-type]


def test_unknown_but_well_formed_version_is_false() -> None:
    hasher = KeyedHasher([KEY_1], "v1")
    stored = KeyedHasher([HashKey("v9", MATERIAL_1)], "v9").digest("x")
    assert hasher.verify("x", stored) is False
    assert hasher.needs_rehash(stored)


@given(stored=st.text(max_size=80))
def test_verify_on_arbitrary_text_is_false_or_value_error(stored: str) -> None:
    hasher = KeyedHasher([KEY_1], "v1")
    if DIGEST_RE.fullmatch(stored):
        assert hasher.verify("value", stored) is False
    else:
        with pytest.raises(ValueError, match="malformed"):
            hasher.verify("value", stored)


def test_hasher_construction_is_validated() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        KeyedHasher([], "v1")
    with pytest.raises(ValueError, match="more than once"):
        KeyedHasher([KEY_1, HashKey("v1", MATERIAL_2)], "v1")
    with pytest.raises(ValueError, match="not among the keys"):
        KeyedHasher([KEY_1], "v2")
    with pytest.raises(TypeError, match="HashKey"):
        KeyedHasher([MATERIAL_1], "v1")  # type: ignore[list-item]


def test_hasher_repr_lists_versions_only() -> None:
    hasher = KeyedHasher([KEY_2, KEY_1], "v2")
    assert repr(hasher) == "KeyedHasher(current='v2', versions=('v1', 'v2'))"


def test_digest_email_normalises_first() -> None:
    hasher = KeyedHasher([KEY_1], "v1")
    stored = hasher.digest_email("  Alice@Example.COM ")
    assert stored == hasher.digest("alice@example.com")
    assert hasher.verify_email("ALICE@example.com", stored)
    assert not hasher.verify_email("alice@example.org", stored)
    with pytest.raises(ValidationError):
        hasher.digest_email("not an address")


# ------------------------------------------------------------------------ from_env / config

KEY_TEXT_1 = base64.urlsafe_b64encode(MATERIAL_1).decode().rstrip("=")
KEY_TEXT_2 = MATERIAL_2.hex()


def test_from_env_bare_key_is_version_v1() -> None:
    hasher = KeyedHasher.from_env({"EMAIL_HASH_KEY": KEY_TEXT_1})
    assert hasher.current == "v1"
    assert hasher.versions == ("v1",)
    assert hasher.digest("x") == KeyedHasher([KEY_1], "v1").digest("x")


def test_from_env_versioned_key_with_previous_keys() -> None:
    env = {
        "EMAIL_HASH_KEY": f"v3:{KEY_TEXT_2}\n",
        "EMAIL_HASH_KEY_PREVIOUS": f" v1:{KEY_TEXT_1} , ,v2:raw:{'p' * 40},",
    }
    hasher = KeyedHasher.from_env(env)
    assert hasher.current == "v3"
    assert hasher.versions == ("v1", "v2", "v3")
    old = KeyedHasher([KEY_1], "v1").digest("dave@example.com")
    assert hasher.verify("dave@example.com", old)
    assert hasher.needs_rehash(old)
    assert digest_version(hasher.digest("x")) == "v3"
    v2 = KeyedHasher([HashKey("v2", b"p" * 40)], "v2").digest("x")
    assert hasher.verify("x", v2)


def test_from_env_encoding_prefix_is_not_a_version() -> None:
    hasher = KeyedHasher.from_env({"EMAIL_HASH_KEY": f"hex:{MATERIAL_1.hex()}"})
    assert hasher.current == "v1"
    assert hasher.digest("x") == KeyedHasher([KEY_1], "v1").digest("x")


def test_from_env_reads_os_environ_and_custom_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKEY_HASH_KEY", f"k2:{KEY_TEXT_2}")
    monkeypatch.setenv("APIKEY_HASH_KEY_PREVIOUS", f"k1:{KEY_TEXT_1}")
    hasher = KeyedHasher.from_env(var="APIKEY_HASH_KEY")
    assert hasher.versions == ("k1", "k2")
    assert hasher.current == "k2"


def test_from_env_missing_key_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        KeyedHasher.from_env({"EMAIL_HASH_KEY_PREVIOUS": f"v1:{KEY_TEXT_1}"})
    err = info.value
    assert err.code == "HASH_KEY_INVALID"
    assert "EMAIL_HASH_KEY is not set" in err.message
    assert "at least 32 bytes" in err.message
    assert KEY_TEXT_1 not in err.message


@pytest.mark.parametrize("value", ["", "   "])
def test_from_env_blank_key_is_not_set(value: str) -> None:
    with pytest.raises(ConfigError, match="EMAIL_HASH_KEY is not set"):
        KeyedHasher.from_env({"EMAIL_HASH_KEY": value})


def test_from_env_reports_every_problem_without_values() -> None:
    short = "tooshort-secret-value"
    env = {
        "EMAIL_HASH_KEY": f"v2:{short}",
        "EMAIL_HASH_KEY_PREVIOUS": f"{short}-without-version!,v1:{short},v1:{KEY_TEXT_1},"
        f"v1:{KEY_TEXT_2},hex:{KEY_TEXT_2}",
    }
    with pytest.raises(ConfigError) as info:
        KeyedHasher.from_env(env)
    err = info.value
    assert err.code == "HASH_KEY_INVALID"
    problems = [str(p) for p in err.problems]
    assert len(problems) == 5
    assert problems[0].startswith("EMAIL_HASH_KEY: ")
    assert "at least 32 bytes" in problems[0]
    assert problems[1].startswith("EMAIL_HASH_KEY_PREVIOUS entry 1 must be 'version:key'")
    assert problems[2].startswith("EMAIL_HASH_KEY_PREVIOUS entry 2: ")
    assert "more than once" in problems[4 - 1]
    assert problems[4].startswith("EMAIL_HASH_KEY_PREVIOUS entry 5 must be 'version:key'")
    for text in (err.message, repr(err), *problems):
        for secret in (short, KEY_TEXT_1, KEY_TEXT_2):
            assert secret not in text


@pytest.mark.parametrize("value", [f"V2:{KEY_TEXT_1}", f"my_key:{KEY_TEXT_1}", f"v-1:{KEY_TEXT_1}"])
def test_from_env_current_key_with_a_bad_version_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        KeyedHasher.from_env({"EMAIL_HASH_KEY": value})
    (problem,) = info.value.problems
    assert str(problem).startswith("EMAIL_HASH_KEY: the text before the first ':' must be a key")
    assert "raw:" in str(problem)
    assert KEY_TEXT_1 not in str(problem)
    assert value.partition(":")[0] not in str(problem)


def test_from_env_raw_text_keys_must_say_raw() -> None:
    text = "correct:horse:battery:staple:pass:phrase"
    hasher = KeyedHasher.from_env({"EMAIL_HASH_KEY": f"raw:{text}"})
    assert hasher.current == "v1"
    assert hasher.digest("x") == KeyedHasher([HashKey("v1", text.encode())], "v1").digest("x")
    assert KeyedHasher.from_env({"EMAIL_HASH_KEY": f"v4:raw:{text}"}).current == "v4"
    # Unmarked, "correct" would become a version written into every digest: refused instead,
    # and the message names neither it nor the rest of the pass phrase.
    for value in (text, "an unmarked pass phrase that is long enough!"):
        with pytest.raises(ConfigError) as info:
            KeyedHasher.from_env({"EMAIL_HASH_KEY": value})
        (problem,) = info.value.problems
        assert "neither hex nor base64" in str(problem)
        assert "'raw:<text>'" in str(problem)
        for fragment in value.replace(":", " ").split():
            if len(fragment) > 3:
                assert fragment not in str(problem)


def test_from_env_previous_key_may_not_repeat_the_current_version() -> None:
    env = {"EMAIL_HASH_KEY": f"v1:{KEY_TEXT_1}", "EMAIL_HASH_KEY_PREVIOUS": f"v1:{KEY_TEXT_2}"}
    with pytest.raises(ConfigError, match="'v1' is given more than once"):
        KeyedHasher.from_env(env)


def test_from_config_accepts_secret_objects() -> None:
    hasher = KeyedHasher.from_config(
        FakeSecret(f"v2:{KEY_TEXT_2}"), FakeSecret(f"v1:{KEY_TEXT_1}".encode())
    )
    assert hasher.versions == ("v1", "v2")
    assert hasher.current == "v2"


def test_from_config_reports_unreadable_values() -> None:
    with pytest.raises(ConfigError) as info:
        KeyedHasher.from_config(
            FakeSecret(b"\xff" * 40),
            FakeSecret(b"\xfe" * 40),
            current_name="SECRET_A",
            previous_name="SECRET_B",
        )
    problems = [str(p) for p in info.value.problems]
    assert problems[0].startswith("SECRET_A: key text is not valid UTF-8")
    assert problems[1].startswith("SECRET_B: key text is not valid UTF-8")


# ------------------------------------------------------------------------- normalize_email


def full_width(text: str) -> str:
    """The full-width compatibility forms of printable ASCII (U+FF01..U+FF5E)."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice@example.com", "alice@example.com"),
        ("  Alice@Example.COM\n", "alice@example.com"),
        ("First.Last+Tag@Sub.Example.org", "first.last+tag@sub.example.org"),  # dots, tags kept
        (full_width("ALICE@EXAMPLE.COM"), "alice@example.com"),
        ("ZOË@exämple.de", "zoë@exämple.de"),
        ("Zoe\u0308@example.de", "zoë@example.de"),  # combining diaeresis composes
        ("用户@例子.广告", "用户@例子.广告"),
        ("\u3000bob@example.com\u3000", "bob@example.com"),  # ideographic spaces trimmed
    ],
)
def test_normalize_email(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("alice.example.com", "no '@'"),
        ("@example.com", "before '@' is empty"),
        ("alice@", "domain after '@' is empty"),
        ("alice@@example.com", "more than one '@'"),
        ('"a@b"@example.com', "more than one '@'"),
        ("al ice@example.com", "whitespace"),
        ("alice@exa\tmple.com", "whitespace"),
        ("alice\u200b@example.com", "invisible"),  # zero-width space
        ("alice\x00@example.com", "control"),
        ("alice\ud800@example.com", "control"),  # lone surrogate: not encodable
        ("alice@.example.com", "empty label"),
        ("alice@example.com.", "empty label"),
        ("alice@example..com", "empty label"),
        ("a" * 65 + "@example.com", "longer than 64"),
        ("a@" + "b" * 250 + ".com", "longer than 254"),
        ("a@" + "b" * 5000, "longer than 254"),
    ],
)
def test_normalize_email_rejects_invalid_addresses(raw: str, why: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(why)) as info:
        normalize_email(raw)
    err = info.value
    assert err.code == "EMAIL_INVALID"
    assert err.status == 422
    if raw.strip():
        assert raw.strip() not in err.message


@pytest.mark.parametrize("value", [None, 42, b"alice@example.com", ["alice@example.com"]])
def test_normalize_email_rejects_non_strings(value: object) -> None:
    with pytest.raises(ValidationError, match="expected a string") as info:
        normalize_email(value)
    assert info.value.code == "EMAIL_INVALID"


def test_normalize_email_accepts_the_longest_valid_address() -> None:
    local, domain = "a" * 64, ".".join(["b" * 63, "b" * 63, "b" * 58, "cd"])
    address = f"{local}@{domain}"
    assert len(address) == 254
    assert normalize_email(address.upper()) == address


_ATOM = st.text(
    alphabet=st.characters(
        codec="utf-8",
        exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"),
        exclude_characters="@.",
    ),
    min_size=1,
    max_size=20,
)


def _normalised_or_error(value: object) -> tuple[str | None, ValidationError | None]:
    try:
        return normalize_email(value), None
    except ValidationError as exc:
        return None, exc


@given(local=_ATOM, labels=st.lists(_ATOM, min_size=1, max_size=4))
def test_normalize_email_is_idempotent(local: str, labels: list[str]) -> None:
    once, error = _normalised_or_error(f" {local}@{'.'.join(labels)} ")
    # A few compatibility characters normalise to spaces or '@'; those are rightly refused.
    assume(error is None)
    assert once is not None
    assert normalize_email(once) == once
    assert once == once.strip()
    assert unicodedata.normalize("NFKC", once) == once
    assert once.lower() == once
    assert once.count("@") == 1


@given(st.emails().filter(lambda e: len(e) <= 254 and len(e.rpartition("@")[0]) <= 64))
def test_normalize_email_accepts_rfc_addresses(address: str) -> None:
    assert normalize_email(address) == address.lower()
    assert normalize_email(address.upper()) == normalize_email(address)


@given(st.text(max_size=300))
def test_normalize_email_on_any_text_returns_or_raises_validation_error(value: str) -> None:
    result, error = _normalised_or_error(value)
    if error is not None:
        assert error.code == "EMAIL_INVALID"
        assert result is None
    else:
        assert result is not None
        assert normalize_email(result) == result
        assert result.encode("utf-8")  # always digestible
