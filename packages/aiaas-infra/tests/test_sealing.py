"""Sealing in the Bitnami Sealed Secrets format, checked byte for byte against an independent
decoder written here from the format's description (DESIGN.md, "Facts worth knowing")."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from aiaas_infra.secrets._sealing import (
    SCOPE_ANNOTATIONS,
    SealingCertificate,
    SealingError,
    UnsealError,
    oaep_label,
    seal,
    unseal,
)
from aiaas_infra.testing import SealingKeypair, sealing_keypair

SCOPES = ("strict", "namespace-wide", "cluster-wide")


@pytest.fixture(scope="module")
def keys() -> SealingKeypair:
    return sealing_keypair()


@pytest.fixture(scope="module")
def cert(keys: SealingKeypair) -> SealingCertificate:
    return SealingCertificate.from_pem(keys.cert_pem)


# -- an independent decoder: raw RSA (pow), OAEP/MGF1 by hand with hashlib, GCM via Cipher ----


def _mgf1(seed: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def independent_open(key_pem: bytes, data_b64: str, label: bytes) -> bytes:
    raw = base64.b64decode(data_b64)
    (rsa_len,) = struct.unpack(">H", raw[:2])  # 2-byte big-endian length
    rsa_ct, gcm_ct = raw[2 : 2 + rsa_len], raw[2 + rsa_len :]
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    numbers = key.private_numbers()
    n, d = numbers.public_numbers.n, numbers.d
    k = (n.bit_length() + 7) // 8
    assert rsa_len == k
    em = pow(int.from_bytes(rsa_ct, "big"), d, n).to_bytes(k, "big")
    h_len = 32
    assert em[0] == 0
    masked_seed, masked_db = em[1 : 1 + h_len], em[1 + h_len :]
    seed = _xor(masked_seed, _mgf1(masked_db, h_len))
    db = _xor(masked_db, _mgf1(seed, k - h_len - 1))
    if db[:h_len] != hashlib.sha256(label).digest():
        raise ValueError("OAEP label mismatch")
    rest = db[h_len:].lstrip(b"\x00")
    assert rest[0] == 1
    session_key = rest[1:]
    assert len(session_key) == 32  # AES-256
    ciphertext, tag = gcm_ct[:-16], gcm_ct[-16:]
    decryptor = Cipher(algorithms.AES(session_key), modes.GCM(bytes(12), tag)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


# -- round trips and scope binding ------------------------------------------------------------


@pytest.mark.parametrize("scope", SCOPES)
def test_round_trip_each_scope(keys: SealingKeypair, cert: SealingCertificate, scope: str) -> None:
    data = seal(cert, b"hunter2", namespace="env-prod", name="prod-secrets", scope=scope)
    assert unseal(keys.key_pem, data, namespace="env-prod", name="prod-secrets", scope=scope) == (
        b"hunter2"
    )


@pytest.mark.parametrize("scope", SCOPES)
def test_independent_decoder_opens_it(
    keys: SealingKeypair, cert: SealingCertificate, scope: str
) -> None:
    value = b"\x00binary\xffvalue" * 7
    data = seal(cert, value, namespace="env-a", name="a-secrets", scope=scope)
    label = {"strict": b"env-a/a-secrets", "namespace-wide": b"env-a", "cluster-wide": b""}[scope]
    assert independent_open(keys.key_pem, data, label) == value
    with pytest.raises(ValueError, match="label"):
        independent_open(keys.key_pem, data, label + b"x")


def test_byte_layout(cert: SealingCertificate) -> None:
    value = b"twelve bytes"
    raw = base64.b64decode(seal(cert, value, namespace="n", name="s"), validate=True)
    (rsa_len,) = struct.unpack(">H", raw[:2])
    assert rsa_len == 256  # RSA-2048 ciphertext
    assert len(raw) == 2 + rsa_len + len(value) + 16  # GCM ciphertext + 16-byte tag, no nonce


def test_fresh_session_key_each_time(cert: SealingCertificate) -> None:
    one = seal(cert, b"same", namespace="n", name="s")
    two = seal(cert, b"same", namespace="n", name="s")
    assert one != two
    assert base64.b64decode(one)[-20:] != base64.b64decode(two)[-20:]


def test_strict_is_bound_to_namespace_and_name(
    keys: SealingKeypair, cert: SealingCertificate
) -> None:
    data = seal(cert, b"v", namespace="env-a", name="s1", scope="strict")
    with pytest.raises(UnsealError, match="sealed for another"):
        unseal(keys.key_pem, data, namespace="env-a", name="s2", scope="strict")
    with pytest.raises(UnsealError):
        unseal(keys.key_pem, data, namespace="env-b", name="s1", scope="strict")
    with pytest.raises(UnsealError):  # the scope is part of the binding too
        unseal(keys.key_pem, data, namespace="env-a", name="s1", scope="namespace-wide")


def test_namespace_wide_opens_under_any_name(
    keys: SealingKeypair, cert: SealingCertificate
) -> None:
    data = seal(cert, b"v", namespace="env-a", name="s1", scope="namespace-wide")
    assert unseal(keys.key_pem, data, namespace="env-a", name="other", scope="namespace-wide")
    with pytest.raises(UnsealError):
        unseal(keys.key_pem, data, namespace="env-b", name="s1", scope="namespace-wide")


def test_cluster_wide_opens_anywhere(keys: SealingKeypair, cert: SealingCertificate) -> None:
    data = seal(cert, b"v", namespace="env-a", name="s1", scope="cluster-wide")
    assert unseal(keys.key_pem, data, namespace="x", name="y", scope="cluster-wide") == b"v"
    assert unseal(keys.key_pem, data, namespace="", name="", scope="cluster-wide") == b"v"


@settings(max_examples=15)
@given(value=st.binary(max_size=2048), scope=st.sampled_from(SCOPES))
def test_round_trip_property(
    keys: SealingKeypair, cert: SealingCertificate, value: bytes, scope: str
) -> None:
    data = seal(cert, value, namespace="env-p", name="p", scope=scope)
    assert unseal(keys.key_pem, data, namespace="env-p", name="p", scope=scope) == value


def test_labels_and_annotations() -> None:
    assert oaep_label("ns", "n", "strict") == b"ns/n"
    assert oaep_label("ns", "n", "namespace-wide") == b"ns"
    assert oaep_label("ns", "n", "cluster-wide") == b""
    assert set(SCOPE_ANNOTATIONS) == {"namespace-wide", "cluster-wide"}
    with pytest.raises(SealingError, match="unknown sealing scope"):
        oaep_label("ns", "n", "global")
    with pytest.raises(SealingError, match="needs a namespace"):
        oaep_label("", "n", "strict")
    with pytest.raises(SealingError, match="needs a secret name"):
        oaep_label("ns", "", "strict")


def test_seal_rejects_text(cert: SealingCertificate) -> None:
    with pytest.raises(SealingError, match="bytes"):
        seal(cert, "text", namespace="n", name="s")  # type: ignore[arg-type]


# -- unseal errors ---------------------------------------------------------------------------


def test_unseal_with_another_key_fails(cert: SealingCertificate) -> None:
    data = seal(cert, b"v", namespace="n", name="s")
    other = sealing_keypair()
    with pytest.raises(UnsealError, match="another controller key"):
        unseal(other.key_pem, data, namespace="n", name="s")


def test_unseal_damaged_data(keys: SealingKeypair, cert: SealingCertificate) -> None:
    raw = bytearray(base64.b64decode(seal(cert, b"value", namespace="n", name="s")))
    raw[-1] ^= 1
    with pytest.raises(UnsealError, match="damaged"):
        unseal(keys.key_pem, base64.b64encode(bytes(raw)).decode(), namespace="n", name="s")
    with pytest.raises(UnsealError, match="not base64"):
        unseal(keys.key_pem, "***", namespace="n", name="s")
    with pytest.raises(UnsealError, match="truncated"):
        unseal(keys.key_pem, base64.b64encode(b"\x01").decode(), namespace="n", name="s")
    with pytest.raises(UnsealError, match="truncated"):
        unseal(keys.key_pem, base64.b64encode(bytes(raw[:100])).decode(), namespace="n", name="s")


def test_unseal_bad_private_key(cert: SealingCertificate) -> None:
    data = seal(cert, b"v", namespace="n", name="s")
    with pytest.raises(UnsealError, match="not a readable PEM"):
        unseal(b"garbage", data, namespace="n", name="s")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(UnsealError, match="not an RSA key"):
        unseal(ec_pem, data, namespace="n", name="s")


# -- certificates ----------------------------------------------------------------------------


def test_certificate_fields(keys: SealingKeypair, cert: SealingCertificate) -> None:
    assert len(cert.fingerprint) == 64
    assert cert.not_after is not None
    assert "PRIVATE" not in repr(cert)
    assert SealingCertificate.from_pem(keys.cert_pem.decode()) == cert


def test_bare_public_key(keys: SealingKeypair, cert: SealingCertificate) -> None:
    pem = cert.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bare = SealingCertificate.from_pem(pem)
    assert bare.not_after is None
    assert bare.fingerprint == cert.fingerprint
    data = seal(bare, b"v", namespace="n", name="s")
    assert unseal(keys.key_pem, data, namespace="n", name="s") == b"v"


def test_expired_certificate() -> None:
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    old = sealing_keypair(not_before=past, not_after=past + dt.timedelta(days=30))
    with pytest.raises(SealingError, match="expired at 2020-01-31"):
        SealingCertificate.from_pem(old.cert_pem)
    assert SealingCertificate.from_pem(old.cert_pem, now=past + dt.timedelta(days=1)).not_after


def test_not_yet_valid_certificate(keys: SealingKeypair) -> None:
    with pytest.raises(SealingError, match="not valid before"):
        SealingCertificate.from_pem(keys.cert_pem, now=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))


def test_non_rsa_certificate() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = dt.datetime.now(dt.UTC)
    pem = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(1))
        .not_valid_after(now + dt.timedelta(1))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(SealingError, match=r"non-RSA key \(\w+\).* seals with RSA"):
        SealingCertificate.from_pem(pem)


def test_weak_rsa_key() -> None:
    weak = sealing_keypair(key_size=1024)
    with pytest.raises(SealingError, match="RSA-1024"):
        SealingCertificate.from_pem(weak.cert_pem)


@pytest.mark.parametrize(
    ("pem", "match"),
    [
        (b"not a pem at all", "not PEM"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "malformed"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "malformed"),
    ],
)
def test_malformed_certificate(pem: bytes, match: str) -> None:
    with pytest.raises(SealingError, match=match) as info:
        SealingCertificate.from_pem(pem)
    assert info.value.code == "SEALING_INVALID"
