"""Keyed hashing (HMAC-SHA256) with versioned keys, and e-mail normalisation.

Values that must be looked up but never stored in the clear -- e-mail addresses, API key
secrets -- are stored as keyed digests. A plain hash of an e-mail address is trivially reversed
by hashing a list of addresses; an HMAC under a secret key is not, as long as the key stays out of
the database.

Digests are self-describing strings::

    hmac-sha256$v2$<43 characters of base64url, no padding>

The key version travels with the stored value, which makes key rotation a configuration change:
add the new key as current, keep the old one for verification, and re-digest stored values as they
are next seen (:meth:`KeyedHasher.needs_rehash`).

The digest is a plain ``HMAC-SHA256(key, value)`` of the value's UTF-8 bytes, with no extra
framing, so the same digest can be computed elsewhere (for example in SQL with pgcrypto's
``hmac(value, key, 'sha256')``). Use a different key for each purpose (e-mail addresses, API key
secrets): one key per purpose keeps a leak of one from weakening the other.

Generating a key: ``python -c "import secrets; print(secrets.token_urlsafe(32))"`` (43 base64url
characters, 256 bits) or ``openssl rand -hex 32`` (64 hex characters).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Final, Protocol, runtime_checkable

import attrs

from aiaas_core._errors import ConfigError, ValidationError

__all__ = [
    "ALGORITHM",
    "MIN_KEY_BYTES",
    "HashKey",
    "KeyedHasher",
    "normalize_email",
]

#: The algorithm name at the head of every digest string.
ALGORITHM: Final = "hmac-sha256"
#: Minimum key length: HMAC-SHA256 gains nothing from more, and is weakened by less.
MIN_KEY_BYTES: Final = 32
#: Key versions: a short lowercase token, stored inside every digest.
_VERSION = re.compile(r"[a-z0-9]{1,16}", re.ASCII)
#: Names that select a key encoding in :meth:`HashKey.from_text`; never valid as versions.
_ENCODINGS: Final = ("hex", "base64", "raw")
_MAC_BYTES: Final = 32
_MAC_CHARS: Final = 43  # len(base64url(32 bytes)) without padding
_DIGEST = re.compile(
    rf"{re.escape(ALGORITHM)}\$([a-z0-9]{{1,16}})\$([A-Za-z0-9_-]{{{_MAC_CHARS}}})", re.ASCII
)
_HEX = re.compile(r"[0-9a-fA-F]+", re.ASCII)
_B64 = re.compile(r"(?:[A-Za-z0-9+/]+|[A-Za-z0-9_-]+)={0,2}", re.ASCII)
_KEY_LENGTHS: Final = (
    f"at least {MIN_KEY_BYTES} bytes: {2 * MIN_KEY_BYTES} hex characters, "
    f"43 or more base64 characters, or {MIN_KEY_BYTES} or more bytes of text"
)


@runtime_checkable
class SupportsSecretValue(Protocol):
    """Anything that hides a secret behind ``get_secret_value()`` (such as a config ``Secret``)."""

    def get_secret_value(self) -> str | bytes: ...


#: What key-taking functions accept: text, bytes, or a secret wrapper.
SecretLike = str | bytes | SupportsSecretValue


def _reveal(value: object) -> str:
    """The text of ``value``, unwrapping secret wrappers; never includes the value in errors."""
    if isinstance(value, SupportsSecretValue):
        value = value.get_secret_value()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(
                "key text is not valid UTF-8; pass binary key material to "
                "HashKey(version, material) instead"
            ) from None
    if isinstance(value, str):
        return value
    raise TypeError(
        f"a key must be str, bytes or an object with get_secret_value(), got {type(value).__name__}"
    )


def _check_version(_inst: object, _attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise ValueError(
            "hash key version must be 1 to 16 lowercase letters or digits (such as 'v1'), "
            f"got {value!r}"
        )
    if value in _ENCODINGS:
        raise ValueError(
            f"hash key version {value!r} is reserved: 'hex', 'base64' and 'raw' name key "
            "encodings; use another version such as 'v1'"
        )


def _check_material(_inst: object, _attribute: attrs.Attribute[bytes], value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"hash key material must be bytes, got {type(value).__name__}")
    if len(value) < MIN_KEY_BYTES:
        raise ValueError(
            f"hash key material is {len(value)} bytes; a key needs at least {MIN_KEY_BYTES} "
            "random bytes"
        )


def _decode_b64(text: str) -> bytes | None:
    """Decode standard or urlsafe base64, padded or not; ``None`` when ``text`` is not base64."""
    if not _B64.fullmatch(text):
        return None
    body = text.rstrip("=")
    if len(body) % 4 == 1 or (len(body) != len(text) and len(text) % 4 != 0):
        return None
    body = body.translate(str.maketrans("-_", "+/"))
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error:  # pragma: no cover - the pattern and length checks exclude this
        return None


@attrs.frozen(repr=False)
class HashKey:
    """One version of a hashing key: a version token and at least 32 bytes of key material.

    The material never appears in ``repr`` or in error messages.
    """

    version: str = attrs.field(validator=_check_version)
    material: bytes = attrs.field(validator=_check_material)

    def __repr__(self) -> str:
        return f"HashKey(version={self.version!r}, material=<redacted>)"

    @classmethod
    def generate(cls, version: str = "v1") -> HashKey:
        """A fresh key of 32 random bytes."""
        return cls(version, secrets.token_bytes(MIN_KEY_BYTES))

    @classmethod
    def from_text(cls, version: str, text: SecretLike) -> HashKey:
        """Build a key from configuration text.

        Surrounding whitespace is removed first (key files often end in a newline). Then, in
        this order:

        1. an explicit encoding prefix decides: ``hex:...``, ``base64:...`` (standard or
           urlsafe alphabet, padding optional) or ``raw:...`` (the UTF-8 bytes of the rest);
        2. otherwise text made only of hex digits, of even length, is **hex**;
        3. otherwise text in the base64 alphabet (standard ``+/`` or urlsafe ``-_``, not both;
           padding optional) is **base64**;
        4. anything else is **raw text**, used as its UTF-8 bytes.

        The rules are deterministic: the same text always gives the same key. Whatever the
        encoding, the decoded key must be at least 32 bytes, so a hex key needs 64 characters, a
        base64 key 43 and raw text 32 bytes. A 32 to 42 character alphanumeric pass phrase
        therefore reads as too-short base64: write it as ``raw:<text>`` or, better, use a random
        key. ``bytes`` are read as UTF-8 text; pass binary material to ``HashKey(...)`` directly.

        Raises :class:`ValueError` naming what was wrong (never the key itself).
        """
        try:
            material = _decode_key(_reveal(text), implicit_raw=True)
        except ValueError as exc:
            raise ValueError(f"hash key {version!r}: {exc}") from None
        return cls(version, material)


def _decode_key(text: str, *, implicit_raw: bool) -> bytes:
    """Key material from text by the rules of :meth:`HashKey.from_text`.

    With ``implicit_raw=False``, text that is neither hex nor base64 is refused unless it says
    ``raw:``. Error messages never include the text.
    """
    raw = text.strip()
    if not raw:
        raise ValueError(f"the key is empty; it needs {_KEY_LENGTHS}")
    scheme, sep, rest = raw.partition(":")
    material: bytes | None
    if sep and scheme in _ENCODINGS:
        if scheme == "hex":
            if not _HEX.fullmatch(rest) or len(rest) % 2:
                raise ValueError("the key says 'hex:' but is not an even number of hex digits")
            how, material = "hex", bytes.fromhex(rest)
        elif scheme == "base64":
            material = _decode_b64(rest)
            if material is None:
                raise ValueError("the key says 'base64:' but is not base64")
            how = "base64"
        else:
            how, material = "raw text", rest.encode("utf-8")
    elif _HEX.fullmatch(raw) and len(raw) % 2 == 0:
        how, material = "hex", bytes.fromhex(raw)
    elif (material := _decode_b64(raw)) is not None:
        how = "base64"
    elif implicit_raw:
        how, material = "raw text", raw.encode("utf-8")
    else:
        raise ValueError(
            f"the key is neither hex nor base64; it needs {_KEY_LENGTHS}, and a raw-text key "
            "must be written as 'raw:<text>'"
        )
    if len(material) < MIN_KEY_BYTES:
        raise ValueError(
            f"the key read as {how} gives {len(material)} bytes; it needs {_KEY_LENGTHS}"
        )
    return material


def _format(version: str, mac: bytes) -> str:
    return f"{ALGORITHM}${version}${base64.urlsafe_b64encode(mac).rstrip(b'=').decode('ascii')}"


def _as_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise TypeError(f"can only digest str or bytes, got {type(value).__name__}")


_MALFORMED: Final = (
    f"stored digest is malformed: expected '{ALGORITHM}$<version>$<{_MAC_CHARS} base64url "
    "characters>'"
)
_VERSIONED = re.compile(r"([a-z0-9]{1,16}):(.*)", re.ASCII | re.DOTALL)


def digest_version(stored: object) -> str:
    """The key version inside a digest string; :class:`ValueError` when it is not one."""
    match = _DIGEST.fullmatch(stored) if isinstance(stored, str) else None
    if match is None:
        raise ValueError(_MALFORMED)
    return match.group(1)


class KeyedHasher:
    """HMAC-SHA256 digests under versioned keys: write with the current key, verify with any.

    Rotation: construct with the new key as ``current`` and the old keys still listed. Digests
    written under an old key still verify; :meth:`needs_rehash` says which stored digests to
    replace (with :meth:`digest` of the value) the next time the value is at hand.
    """

    __slots__ = ("_current", "_keys")

    def __init__(self, keys: Sequence[HashKey], current: str) -> None:
        by_version: dict[str, HashKey] = {}
        for key in keys:
            if not isinstance(key, HashKey):
                raise TypeError(f"keys must be HashKey instances, got {type(key).__name__}")
            if key.version in by_version:
                raise ValueError(f"hash key version {key.version!r} is given more than once")
            by_version[key.version] = key
        if not by_version:
            raise ValueError("a KeyedHasher needs at least one key")
        if current not in by_version:
            raise ValueError(
                f"current hash key version {current!r} is not among the keys {sorted(by_version)}"
            )
        self._keys = by_version
        self._current = by_version[current]

    def __repr__(self) -> str:
        return f"KeyedHasher(current={self.current!r}, versions={self.versions!r})"

    @property
    def current(self) -> str:
        """The version new digests are written with."""
        return self._current.version

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version this hasher verifies, sorted."""
        return tuple(sorted(self._keys))

    def digest(self, value: str | bytes) -> str:
        """The digest of ``value`` (``str`` as UTF-8) under the current key."""
        key = self._current
        return _format(key.version, hmac.digest(key.material, _as_bytes(value), "sha256"))

    def verify(self, value: str | bytes, stored: str) -> bool:
        """Whether ``stored`` is the digest of ``value``, compared in constant time.

        A well-formed digest under a version this hasher does not know returns ``False`` (the
        key may have been retired). A ``stored`` value that is not a digest at all raises
        :class:`ValueError`: stored digests come from your own database, so garbage there is
        corruption or a programming error, which should be loud rather than a silent mismatch.
        """
        version = digest_version(stored)
        data = _as_bytes(value)
        key = self._keys.get(version)
        if key is None:
            return False
        expected = _format(version, hmac.digest(key.material, data, "sha256"))
        return hmac.compare_digest(expected, stored)

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was written with a key other than the current one.

        Raises :class:`ValueError` when ``stored`` is not a digest.
        """
        return digest_version(stored) != self._current.version

    def digest_email(self, email: str) -> str:
        """The digest of ``email`` after :func:`normalize_email`."""
        return self.digest(normalize_email(email))

    def verify_email(self, email: str, stored: str) -> bool:
        """Whether ``stored`` is the digest of ``email`` after :func:`normalize_email`."""
        return self.verify(normalize_email(email), stored)

    @classmethod
    def from_config(
        cls,
        current: SecretLike | None,
        previous: SecretLike | None = None,
        *,
        current_name: str = "current hash key",
        previous_name: str = "previous hash keys",
    ) -> KeyedHasher:
        """Build a hasher from configuration values (text or config ``Secret`` objects).

        ``current`` is ``version:key`` or a bare key, which means version ``v1``. A bare key that
        contains ``:`` must say its encoding (``raw:...``) or be given a version: otherwise the
        text before the first ``:`` is read as the version (and refused when it is not one).
        ``previous`` holds older keys, still accepted for verification, as comma-separated
        ``version:key`` entries (so raw-text keys there cannot contain commas); blank entries are
        ignored. Keys are read by the rules of :meth:`HashKey.from_text`, except that raw text
        must say so (``raw:<text>``): a pass phrase that happens to contain ``:`` would otherwise
        be split into a "version" -- a piece of the secret written into every stored digest.
        Error messages name the setting, never a key or its version.

        Raises :class:`ConfigError` (code ``HASH_KEY_INVALID``) listing every problem, each
        naming ``current_name`` or ``previous_name`` and what is expected, never a key.
        """
        problems: list[str] = []
        keys: list[HashKey] = []
        current_version: str | None = None

        def add(where: str, version: str, text: str) -> HashKey | None:
            try:
                key = HashKey(version, _decode_key(text, implicit_raw=False))
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                return None
            if any(k.version == key.version for k in keys):
                problems.append(f"{where}: key version {key.version!r} is given more than once")
                return None
            keys.append(key)
            return key

        try:
            current_text = "" if current is None else _reveal(current).strip()
        except (TypeError, ValueError) as exc:
            problems.append(f"{current_name}: {exc}")
            current_text = None
        if current_text == "":
            problems.append(
                f"{current_name} is not set: expected 'version:key' or a bare key "
                f"(version v1) of {_KEY_LENGTHS}"
            )
        elif current_text is not None:
            head, sep, rest = current_text.partition(":")
            if not sep or head in _ENCODINGS:
                key = add(current_name, "v1", current_text)
            elif _VERSION.fullmatch(head):
                key = add(current_name, head, rest)
            else:
                key = None
                problems.append(
                    f"{current_name}: the text before the first ':' must be a key version of 1 "
                    "to 16 lowercase letters or digits; write a raw-text key that contains ':' "
                    "as 'raw:<text>' or 'v1:raw:<text>'"
                )
            current_version = key.version if key else None

        try:
            previous_text = "" if previous is None else _reveal(previous)
        except (TypeError, ValueError) as exc:
            problems.append(f"{previous_name}: {exc}")
            previous_text = ""
        entries = [e.strip() for e in previous_text.split(",")]
        for number, entry in enumerate((e for e in entries if e), start=1):
            where = f"{previous_name} entry {number}"
            match = _VERSIONED.fullmatch(entry)
            if match is None or match.group(1) in _ENCODINGS:
                problems.append(
                    f"{where} must be 'version:key' with a version of 1 to 16 lowercase "
                    "letters or digits, entries separated by commas"
                )
                continue
            add(where, match.group(1), match.group(2))

        if problems or current_version is None:
            raise ConfigError(problems=problems, code="HASH_KEY_INVALID")
        return cls(keys, current_version)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, var: str = "EMAIL_HASH_KEY"
    ) -> KeyedHasher:
        """Build a hasher from environment variables (``os.environ`` by default).

        ``<var>`` (``EMAIL_HASH_KEY``) holds the current key as ``version:key`` or a bare key
        meaning version ``v1``; ``<var>_PREVIOUS`` optionally holds older keys, for verification
        only, as comma-separated ``version:key`` entries. Example::

            EMAIL_HASH_KEY=v2:3q2-7wXYZ...
            EMAIL_HASH_KEY_PREVIOUS=v1:8fJk2...

        See :meth:`from_config` for the parsing rules and :meth:`HashKey.from_text` for the key
        encodings. A missing, malformed or short key raises :class:`ConfigError` (code
        ``HASH_KEY_INVALID``) naming the variable and what it expects, never its value.
        """
        env = os.environ if environ is None else environ
        previous_var = f"{var}_PREVIOUS"
        return cls.from_config(
            env.get(var),
            env.get(previous_var),
            current_name=var,
            previous_name=previous_var,
        )


_MAX_EMAIL_INPUT: Final = 1024  # bound the work before normalising (NFKC can expand text)
_MAX_EMAIL: Final = 254  # RFC 5321 path limit, less the angle brackets
_MAX_LOCAL: Final = 64  # RFC 5321 local-part limit
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Zs"})


def _email_error(why: str) -> ValidationError:
    return ValidationError(f"e-mail address is invalid: {why}", code="EMAIL_INVALID")


def _nfkc_lower(text: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).lower())


def normalize_email(value: object) -> str:
    """The canonical form of an e-mail address, for hashing and uniqueness checks.

    Steps: surrounding whitespace is removed, the text is NFKC-normalised (full-width and other
    compatibility forms become their plain equivalents) and the **whole** address is lower-cased.
    RFC 5321 allows a case-sensitive local part, but no mainstream mail provider treats it so,
    and an account lookup in which ``Alice@x.org`` and ``alice@x.org`` are different people is a
    duplicate-account and impersonation hazard. Nothing provider-specific is done: dots and
    ``+tags`` are kept.

    Obviously invalid input raises :class:`ValidationError` (code ``EMAIL_INVALID``), with a
    message that never repeats the address: a non-string; no ``@`` or more than one (quoted local
    parts are not supported); an empty local part or domain; whitespace, control or invisible
    formatting characters anywhere; a domain with an empty label (``a@.x``, ``a@x..y``,
    ``a@x.``); a local part over 64 characters or an address over 254.

    The result is a fixed point: ``normalize_email(normalize_email(x)) == normalize_email(x)``.
    """
    if not isinstance(value, str):
        raise _email_error(f"expected a string, got {type(value).__name__}")
    if len(value) > _MAX_EMAIL_INPUT:
        raise _email_error(f"longer than {_MAX_EMAIL} characters")
    text = _nfkc_lower(value.strip())
    for _ in range(3):  # lower-casing and NFKC settle after one round in practice
        again = _nfkc_lower(text)
        if again == text:
            break
        text = again  # pragma: no cover - no known input needs a second round
    if not text:
        raise _email_error("it is empty")
    if any(ch.isspace() or unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in text):
        raise _email_error("it contains whitespace, control or invisible characters")
    if len(text) > _MAX_EMAIL:
        raise _email_error(f"longer than {_MAX_EMAIL} characters")
    local, at, domain = text.rpartition("@")
    if not at:
        raise _email_error("it has no '@'")
    if "@" in local:
        raise _email_error("it has more than one '@'")
    if not local:
        raise _email_error("the part before '@' is empty")
    if not domain:
        raise _email_error("the domain after '@' is empty")
    if len(local) > _MAX_LOCAL:
        raise _email_error(f"the part before '@' is longer than {_MAX_LOCAL} characters")
    if "" in domain.split("."):
        raise _email_error("the domain has an empty label (a leading, trailing or double dot)")
    return text
