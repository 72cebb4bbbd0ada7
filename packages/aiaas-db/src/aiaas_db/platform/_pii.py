"""Protection of personal data at rest: keyed digests and AES-256-GCM, under versioned keys.

Two keys, both from the environment and never from the database:

* ``AIAAS_DB_PII_HASH_KEY`` -- the HMAC-SHA256 key of :class:`aiaas_core.KeyedHasher`.
  Digests (``hmac-sha256$<version>$<base64url>``) are what lookups and uniqueness use:
  ``users.email_digest``, ``audit_log_entries.actor_id``.
* ``AIAAS_DB_PII_ENCRYPTION_KEY`` -- an AES-256-GCM key (exactly 32 bytes) for the copies that must
  be recoverable: ``users.email_ciphertext``, ``audit_log_entries.actor_ciphertext``. A ciphertext
  is ``12-byte random nonce || ciphertext || 16-byte tag``; the associated data binds it to its row
  (a ciphertext copied onto another row does not decrypt), and the key version is stored beside it.

Both accept ``version:key`` or a bare key (version ``v1``); the key is hex (64 digits) or base64
(43/44 characters), read by the rules of :meth:`aiaas_core.HashKey.from_text`. Rotation: put the
new key in the variable and the old ones, as comma-separated ``version:key`` entries, in
``<variable>_PREVIOUS``; old digests still verify and old ciphertexts still decrypt, while new
values use the new key (:meth:`PiiProtector.needs_reencrypt`, :meth:`PiiProtector.needs_rehash`).

Generate a key with ``python -c "import secrets; print(secrets.token_hex(32))"``.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from typing import Final

from aiaas_core import ConfigError, HashKey, InternalError, KeyedHasher
from aiaas_db._errors import MigrationError

__all__ = [
    "ENCRYPTION_KEY_ENV",
    "HASH_KEY_ENV",
    "PiiDecryptionError",
    "PiiKeyError",
    "PiiProtector",
]

#: The environment variable of the current PII hash key (``_PREVIOUS``: older keys).
HASH_KEY_ENV: Final = "AIAAS_DB_PII_HASH_KEY"
#: The environment variable of the current PII encryption key (``_PREVIOUS``: older keys).
ENCRYPTION_KEY_ENV: Final = "AIAAS_DB_PII_ENCRYPTION_KEY"

_AES_KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16
_VERSION: Final = re.compile(r"[a-z0-9]{1,16}", re.ASCII)
_ENCODINGS: Final = ("hex", "base64", "raw")
_DEV_VERSION: Final = "dev"
_DEV_SALT: Final = b"aiaas-db local development PII keys"
_GENERATE_HINT: Final = (
    'generate one with: python -c "import secrets; print(secrets.token_hex(32))"'
)


class PiiKeyError(MigrationError, ConfigError):
    """The PII keys are missing or malformed, or a stored value names a key not configured.

    ``problems`` lists every problem at once; messages name variables, never a key.
    """

    code = "PII_KEYS_INVALID"
    title = "PII keys missing or invalid"

    def __init__(
        self, message: str, *, problems: tuple[str, ...] = (), code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.problems = tuple(problems)


class PiiDecryptionError(MigrationError, InternalError):
    """A ciphertext does not decrypt: wrong key, wrong associated data, or tampered bytes."""

    code = "PII_DECRYPT_FAILED"
    title = "Personal data could not be decrypted"


def _parse_encryption_keys(
    current: str | None, previous: str | None, *, current_name: str, previous_name: str
) -> tuple[dict[str, bytes], str | None, list[str]]:
    """``(version -> key, current version, problems)``; never echoes key text."""
    keys: dict[str, bytes] = {}
    problems: list[str] = []

    def add(where: str, version: str, text: str) -> str | None:
        if version in keys:
            problems.append(f"{where}: key version {version!r} is given more than once")
            return None
        try:
            material = HashKey.from_text(version, text).material
        except ValueError as exc:
            problems.append(f"{where}: {str(exc).removeprefix(f'hash key {version!r}: ')}")
            return None
        if len(material) != _AES_KEY_BYTES:
            problems.append(
                f"{where}: an AES-256 key is exactly {_AES_KEY_BYTES} bytes (64 hex digits or 43 "
                f"base64 characters), this one is {len(material)} bytes; {_GENERATE_HINT}"
            )
            return None
        keys[version] = material
        return version

    current_version: str | None = None
    text = (current or "").strip()
    if not text:
        problems.append(f"{current_name} is not set: expected 'version:key' or a bare key")
    else:
        head, sep, rest = text.partition(":")
        if not sep or head in _ENCODINGS:
            current_version = add(current_name, "v1", text)
        elif _VERSION.fullmatch(head):
            current_version = add(current_name, head, rest)
        else:
            problems.append(
                f"{current_name}: the text before the first ':' must be a key version of 1 to 16 "
                "lowercase letters or digits"
            )
    for number, entry in enumerate((e.strip() for e in (previous or "").split(",")), start=1):
        if not entry:
            continue
        head, sep, rest = entry.partition(":")
        where = f"{previous_name} entry {number}"
        if not sep or head in _ENCODINGS or not _VERSION.fullmatch(head):
            problems.append(
                f"{where} must be 'version:key' with a version of 1 to 16 lowercase letters or "
                "digits, entries separated by commas"
            )
            continue
        add(where, head, rest)
    return keys, current_version, problems


class PiiProtector:
    """Digests and encrypts personal data under the platform's PII keys.

    ``hasher`` makes the keyed digests; ``encryption_keys`` maps a key version to its 32-byte
    AES-256-GCM key and ``current_encryption`` names the version new ciphertexts use. Keys never
    appear in ``repr`` or in messages.
    """

    __slots__ = ("_current", "_hasher", "_keys")

    def __init__(
        self,
        hasher: KeyedHasher,
        encryption_keys: Mapping[str, bytes],
        current_encryption: str,
    ) -> None:
        if not isinstance(hasher, KeyedHasher):
            raise TypeError(f"hasher must be a KeyedHasher, got {type(hasher).__name__}")
        keys: dict[str, bytes] = {}
        for version, material in encryption_keys.items():
            if not _VERSION.fullmatch(str(version)):
                raise ValueError(
                    "encryption key versions are 1 to 16 lowercase letters or digits, "
                    f"got {version!r}"
                )
            if type(material) is not bytes or len(material) != _AES_KEY_BYTES:
                raise ValueError(
                    f"encryption key {version!r} must be exactly {_AES_KEY_BYTES} bytes"
                )
            keys[version] = material
        if current_encryption not in keys:
            raise ValueError(
                f"current_encryption {current_encryption!r} is not one of the encryption key "
                f"versions {sorted(keys)}"
            )
        self._hasher = hasher
        self._keys = keys
        self._current = current_encryption

    def __repr__(self) -> str:
        return (
            f"PiiProtector(hash_key={self._hasher.current!r}, "
            f"encryption_key={self._current!r}, keys=<redacted>)"
        )

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PiiProtector:
        """Keys from ``AIAAS_DB_PII_HASH_KEY``, ``AIAAS_DB_PII_ENCRYPTION_KEY`` (+ ``_PREVIOUS``).

        Raises :class:`PiiKeyError` -- code ``PII_KEYS_MISSING`` when a variable is unset,
        ``PII_KEYS_INVALID`` when one is malformed -- listing every problem and naming the
        variables to set.
        """
        env = os.environ if environ is None else environ
        problems: list[str] = []
        missing = [v for v in (HASH_KEY_ENV, ENCRYPTION_KEY_ENV) if not env.get(v, "").strip()]
        hasher: KeyedHasher | None = None
        try:
            hasher = KeyedHasher.from_env(env, var=HASH_KEY_ENV)
        except ConfigError as exc:
            problems.extend(str(p) for p in exc.problems)
        keys, current, enc_problems = _parse_encryption_keys(
            env.get(ENCRYPTION_KEY_ENV),
            env.get(f"{ENCRYPTION_KEY_ENV}_PREVIOUS"),
            current_name=ENCRYPTION_KEY_ENV,
            previous_name=f"{ENCRYPTION_KEY_ENV}_PREVIOUS",
        )
        problems.extend(enc_problems)
        if problems or hasher is None or current is None:
            if missing:
                message = (
                    f"personal data keys are not configured: set {' and '.join(missing)} "
                    "(each a 32-byte key as 64 hex digits or base64, optionally 'version:key'; "
                    f"{_GENERATE_HINT})"
                )
            else:
                message = (
                    f"personal data keys are invalid ({HASH_KEY_ENV}, {ENCRYPTION_KEY_ENV}):\n  - "
                    + "\n  - ".join(problems)
                )
            raise PiiKeyError(
                message,
                problems=tuple(problems),
                code="PII_KEYS_MISSING" if missing else "PII_KEYS_INVALID",
            )
        return cls(hasher, keys, current)

    @classmethod
    def for_local_development(cls, seed_secret: str | bytes) -> PiiProtector:
        """Deterministic keys derived (HKDF-SHA256) from ``seed_secret``: local use and tests only.

        The same secret always gives the same keys (version ``dev``), so seeded digests are
        reproducible. Never use it for real data: whoever knows the seed knows the keys.
        """
        seed = seed_secret.encode("utf-8") if isinstance(seed_secret, str) else seed_secret
        if type(seed) is not bytes or not seed:
            raise ValueError("seed_secret must be a non-empty str or bytes")
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415 -- import cost
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: PLC0415

        def derive(purpose: bytes) -> bytes:
            return HKDF(
                algorithm=hashes.SHA256(), length=_AES_KEY_BYTES, salt=_DEV_SALT, info=purpose
            ).derive(seed)

        hasher = KeyedHasher([HashKey(_DEV_VERSION, derive(b"pii hash key"))], _DEV_VERSION)
        return cls(hasher, {_DEV_VERSION: derive(b"pii encryption key")}, _DEV_VERSION)

    # -- digests -------------------------------------------------------------------------------

    @property
    def hasher(self) -> KeyedHasher:
        """The keyed hasher (for verification and rotation checks)."""
        return self._hasher

    @property
    def current_encryption(self) -> str:
        """The key version new ciphertexts are written with."""
        return self._current

    @property
    def encryption_versions(self) -> tuple[str, ...]:
        """Every encryption key version that can decrypt."""
        return tuple(sorted(self._keys))

    def digest(self, value: str) -> str:
        """The keyed digest of ``value`` (``hmac-sha256$<version>$<base64url>``)."""
        return self._hasher.digest(value)

    def email_digest(self, email: str) -> str:
        """The keyed digest of ``aiaas_core.normalize_email(email)`` (raises on a bad address)."""
        return self._hasher.digest_email(email)

    def verify(self, value: str, stored: str) -> bool:
        """Whether ``stored`` is the digest of ``value`` under any configured hash key."""
        return self._hasher.verify(value, stored)

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made with an older hash key."""
        return self._hasher.needs_rehash(stored)

    # -- encryption ----------------------------------------------------------------------------

    def encrypt(self, value: str, aad: bytes) -> tuple[bytes, str]:
        """``(nonce || ciphertext || tag, key version)`` of ``value`` bound to ``aad``."""
        if not isinstance(value, str):
            raise TypeError(f"can only encrypt str, got {type(value).__name__}")
        if not isinstance(aad, bytes):
            raise TypeError(f"aad must be bytes, got {type(aad).__name__}")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(self._keys[self._current]).encrypt(nonce, value.encode("utf-8"), aad)
        return nonce + sealed, self._current

    def decrypt(self, ciphertext: bytes, aad: bytes, version: str) -> str:
        """The text sealed by :meth:`encrypt` with the same ``aad`` under key ``version``.

        Raises :class:`PiiKeyError` (``PII_KEY_UNKNOWN``) when ``version`` is not configured and
        :class:`PiiDecryptionError` when the bytes do not authenticate.
        """
        key = self._keys.get(version)
        if key is None:
            raise PiiKeyError(
                f"encryption key version {version!r} is not configured; add it to "
                f"{ENCRYPTION_KEY_ENV}_PREVIOUS as '{version}:<key>' to read older data",
                code="PII_KEY_UNKNOWN",
            )
        data = bytes(ciphertext)
        if len(data) < _NONCE_BYTES + _TAG_BYTES:
            raise PiiDecryptionError(
                f"ciphertext is {len(data)} bytes; a sealed value is at least "
                f"{_NONCE_BYTES + _TAG_BYTES} (nonce and tag)"
            )
        from cryptography.exceptions import InvalidTag  # noqa: PLC0415
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

        try:
            plain = AESGCM(key).decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], aad)
        except InvalidTag:
            raise PiiDecryptionError(
                f"ciphertext does not authenticate under key {version!r}: wrong key, wrong "
                "associated data (another row's value?) or altered bytes"
            ) from None
        return plain.decode("utf-8")

    def needs_reencrypt(self, version: str) -> bool:
        """Whether a ciphertext under ``version`` should be rewritten with the current key."""
        return version != self._current
