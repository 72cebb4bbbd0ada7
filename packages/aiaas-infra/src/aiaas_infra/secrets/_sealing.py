"""Seal values the way the Bitnami Sealed Secrets controller opens them.

The format (bitnami-labs/sealed-secrets, ``pkg/crypto/crypto.go``, ``HybridEncrypt``): a fresh
32-byte AES-256-GCM session key seals the value under an all-zero 12-byte nonce (no additional
data); the session key is RSA-OAEP (SHA-256, MGF1-SHA-256) encrypted with the controller's public
key, with the OAEP *label* binding the value to where it may be opened::

    strict          label = b"<namespace>/<name>"
    namespace-wide  label = b"<namespace>"
    cluster-wide    label = b""

and the sealed bytes are ``uint16_be(len(rsa_ciphertext)) || rsa_ciphertext || gcm_ciphertext``,
base64 (standard alphabet, padded) in ``spec.encryptedData``.

::

    cert = SealingCertificate.from_pem(Path("sealed-secrets.pem").read_bytes())
    data = seal(cert, b"s3cr3t", namespace="env-production", name="production-secrets")

``cryptography`` is imported on first use. Sealing never logs, and no error carries the value.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import struct
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import attrs

from aiaas_core import ValidationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

__all__ = [
    "SCOPE_ANNOTATIONS",
    "SealingCertificate",
    "SealingError",
    "SealingScope",
    "UnsealError",
    "oaep_label",
    "seal",
    "unseal",
]

SealingScope = Literal["strict", "namespace-wide", "cluster-wide"]
SCOPES: Final[tuple[str, ...]] = get_args(SealingScope)

#: The annotation the controller reads to learn a SealedSecret's scope (strict has none).
SCOPE_ANNOTATIONS: Final[dict[str, str]] = {
    "namespace-wide": "sealedsecrets.bitnami.com/namespace-wide",
    "cluster-wide": "sealedsecrets.bitnami.com/cluster-wide",
}

_SESSION_KEY_BYTES: Final = 32
_NONCE: Final = bytes(12)
_MIN_RSA_BITS: Final = 2048


class SealingError(ValidationError):
    """The sealing certificate or a sealing argument is unusable (the message says why)."""

    code = "SEALING_INVALID"
    title = "Cannot seal"


class UnsealError(SealingError):
    """A sealed value did not open: wrong key, wrong namespace/name/scope, or damaged data."""

    code = "UNSEAL_FAILED"
    title = "Cannot unseal"


def oaep_label(namespace: str, name: str, scope: str) -> bytes:
    """The OAEP label that binds a sealed value to ``namespace``/``name`` under ``scope``."""
    if scope not in SCOPES:
        raise SealingError(f"unknown sealing scope {scope!r}; use one of {', '.join(SCOPES)}")
    if scope == "cluster-wide":
        return b""
    if not namespace:
        raise SealingError(f"a {scope} sealed value needs a namespace")
    if scope == "namespace-wide":
        return namespace.encode()
    if not name:
        raise SealingError("a strict sealed value needs a secret name")
    return f"{namespace}/{name}".encode()


def _oaep() -> Any:
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import padding  # noqa: PLC0415

    return hashes, padding


@attrs.frozen
class SealingCertificate:
    """The controller's public sealing key (from its certificate, ``kubeseal --fetch-cert``).

    ``not_after`` is the certificate's expiry (``None`` for a bare public key);
    ``fingerprint`` is the SHA-256 of the DER public key, for reports (it is not secret).
    """

    public_key: RSAPublicKey = attrs.field(repr=False)
    fingerprint: str
    not_after: dt.datetime | None = None

    @classmethod
    def from_pem(cls, pem: bytes | str, *, now: dt.datetime | None = None) -> SealingCertificate:
        """Read a PEM X.509 certificate (or a PEM ``PUBLIC KEY``) holding an RSA key.

        Raises :class:`SealingError` when it is malformed, not RSA, weaker than 2048 bits,
        not yet valid or expired at ``now`` (default: the current time).
        """
        from cryptography import x509  # noqa: PLC0415
        from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

        if isinstance(pem, str):  # be forgiving about text read from a file
            pem = pem.encode()
        not_after: dt.datetime | None = None
        try:
            if b"-----BEGIN CERTIFICATE-----" in pem:
                cert = x509.load_pem_x509_certificate(pem)
                key: Any = cert.public_key()
                not_after = cert.not_valid_after_utc
                not_before = cert.not_valid_before_utc
            elif b"-----BEGIN PUBLIC KEY-----" in pem:
                key = serialization.load_pem_public_key(pem)
                not_before = None
            else:
                raise SealingError(
                    "the sealing certificate is not PEM: expected a '-----BEGIN CERTIFICATE-----' "
                    "block (fetch it with `kubeseal --fetch-cert`)"
                )
        except SealingError:
            raise
        except ValueError as exc:
            raise SealingError(
                f"the sealing certificate is malformed PEM ({exc}); fetch it again with "
                "`kubeseal --fetch-cert`"
            ) from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise SealingError(
                f"the sealing certificate holds a non-RSA key ({type(key).__name__}); the "
                "sealed-secrets controller seals with RSA: use its certificate"
            )
        if key.key_size < _MIN_RSA_BITS:
            raise SealingError(
                f"the sealing key is RSA-{key.key_size}; use at least RSA-{_MIN_RSA_BITS}"
            )
        at = now if now is not None else dt.datetime.now(dt.UTC)
        if not_after is not None and at > not_after:
            raise SealingError(
                f"the sealing certificate expired at {not_after.isoformat()}; fetch the "
                "controller's current certificate (it renews its key every 30 days)"
            )
        if not_before is not None and at < not_before:
            raise SealingError(
                f"the sealing certificate is not valid before {not_before.isoformat()}"
            )
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashes.Hash(hashes.SHA256())
        digest.update(der)
        return cls(public_key=key, fingerprint=digest.finalize().hex(), not_after=not_after)


def seal(
    cert: SealingCertificate,
    value: bytes,
    *,
    namespace: str,
    name: str,
    scope: SealingScope | str = "strict",
) -> str:
    """Seal ``value`` for the secret ``namespace``/``name``; returns the base64 text the
    controller expects in ``spec.encryptedData``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    if not isinstance(value, bytes | bytearray):
        raise SealingError("seal takes the value as bytes")
    label = oaep_label(namespace, name, scope)
    hashes, padding = _oaep()
    session_key = os.urandom(_SESSION_KEY_BYTES)
    rsa_ciphertext = cert.public_key.encrypt(
        session_key,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label),
    )
    sealed = AESGCM(session_key).encrypt(_NONCE, bytes(value), None)
    out = struct.pack(">H", len(rsa_ciphertext)) + rsa_ciphertext + sealed
    return base64.b64encode(out).decode("ascii")


def unseal(
    private_key_pem: bytes,
    data_b64: str,
    *,
    namespace: str,
    name: str,
    scope: SealingScope | str = "strict",
    password: bytes | None = None,
) -> bytes:
    """Open a sealed value with the controller's private key (for verification and tests).

    Raises :class:`UnsealError` when the key, namespace, name or scope does not match the
    one it was sealed for, or the data is damaged; the message never includes key material.
    """
    from cryptography.exceptions import InvalidTag  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    label = oaep_label(namespace, name, scope)
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=password)
    except (ValueError, TypeError):
        raise UnsealError("the private key is not a readable PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UnsealError("the private key is not an RSA key")
    try:
        raw = base64.b64decode(data_b64, validate=True)
    except (binascii.Error, ValueError):
        raise UnsealError("the sealed value is not base64") from None
    if len(raw) < 2:
        raise UnsealError("the sealed value is truncated")
    (rsa_len,) = struct.unpack(">H", raw[:2])
    if len(raw) < 2 + rsa_len + 16:
        raise UnsealError("the sealed value is truncated")
    hashes, padding = _oaep()
    try:
        session_key = key.decrypt(
            raw[2 : 2 + rsa_len],
            padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label),
        )
    except ValueError:
        raise UnsealError(
            f"the sealed value does not open as {scope} for {namespace}/{name}: it was sealed "
            "for another namespace, name or scope, or with another controller key"
        ) from None
    if len(session_key) != _SESSION_KEY_BYTES:
        raise UnsealError("the sealed session key has the wrong length")
    try:
        return AESGCM(session_key).decrypt(_NONCE, raw[2 + rsa_len :], None)
    except InvalidTag:
        raise UnsealError("the sealed value is damaged (authentication failed)") from None
