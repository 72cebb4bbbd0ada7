"""API keys: generation, offline parsing, keyed-digest storage and verification.

Token format (68 characters with the default prefix)::

    aiaas_<key id: 12 base62>_<secret: 43 base62><checksum: 6 base62>

- ``aiaas`` is the prefix (2 to 16 lowercase letters/digits, starting with a letter), so keys are
  recognisable by people and by secret scanners.
- The key id (~71 random bits) is public: it is the lookup key in the store and what logs show.
- The secret carries 256 random bits (43 base62 characters). It is shown once, when the key is
  created, and stored only as a keyed digest (:class:`~aiaas_core.KeyedHasher`).
- The checksum is the CRC32 of everything before it (``aiaas_<key id>_<secret>``), as 6
  zero-padded base62 digits. It lets :func:`parse_api_key` reject typos, truncations and garbled
  keys offline, before any lookup; CRC32 catches every single-character change.

Base62 (``0-9A-Za-z``) has no punctuation, so a double-click selects the whole token and ``_``
only ever separates fields.

Failures are :class:`~aiaas_core.AuthenticationError` with a stable ``code``:

=====================  ===================================================================
``API_KEY_MALFORMED``  not a string, longer than 256 characters, wrong prefix, wrong length,
                       wrong shape or characters outside base62
``API_KEY_CHECKSUM``   well-formed but the checksum does not match (mistyped or garbled)
``API_KEY_INVALID``    no such key id, **or** the secret does not match: one code and one
                       message for both, so a caller cannot probe which key ids exist (the
                       verifier's log line, keyed by key id, tells the two apart)
``API_KEY_REVOKED``    the secret is right but the key was revoked
``API_KEY_EXPIRED``    the secret is right but the key is past its ``expires_at``
=====================  ===================================================================

Revocation and expiry are reported only to a caller who presented the right secret. No message,
``repr`` or log line ever contains a secret.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, Protocol, runtime_checkable

import attrs

from aiaas_core._context import Actor
from aiaas_core._errors import AuthenticationError, ConflictError, NotFoundError
from aiaas_core._hashing import KeyedHasher, digest_version

__all__ = [
    "API_KEY_CHECKSUM",
    "API_KEY_EXPIRED",
    "API_KEY_INVALID",
    "API_KEY_MALFORMED",
    "API_KEY_REVOKED",
    "MAX_TOKEN_LENGTH",
    "ApiKey",
    "ApiKeyRecord",
    "ApiKeyStatus",
    "ApiKeyStore",
    "ApiKeyVerifier",
    "InMemoryApiKeyStore",
    "generate_api_key",
    "parse_api_key",
    "parse_api_key_entries",
    "parse_api_key_entry",
]

logger = logging.getLogger("aiaas_core.apikeys")

API_KEY_MALFORMED: Final = "API_KEY_MALFORMED"
API_KEY_CHECKSUM: Final = "API_KEY_CHECKSUM"
API_KEY_INVALID: Final = "API_KEY_INVALID"
API_KEY_REVOKED: Final = "API_KEY_REVOKED"
API_KEY_EXPIRED: Final = "API_KEY_EXPIRED"

#: Longest input :func:`parse_api_key` looks at; anything longer is malformed without more work.
MAX_TOKEN_LENGTH: Final = 256
DEFAULT_PREFIX: Final = "aiaas"

_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_CHARS: Final = 12
_SECRET_CHARS: Final = 43  # 43 * log2(62) > 256 bits
_CHECKSUM_CHARS: Final = 6  # 62**6 > 2**32
_BODY_CHARS: Final = _ID_CHARS + 1 + _SECRET_CHARS + _CHECKSUM_CHARS

ApiKeyStatus = Literal["active", "rotating", "revoked"]
_STATUSES: Final = frozenset({"active", "rotating", "revoked"})


def _is_base62(text: str, length: int) -> bool:
    return len(text) == length and text.isascii() and text.isalnum()


def _valid_prefix(prefix: object) -> bool:
    return (
        isinstance(prefix, str)
        and 2 <= len(prefix) <= 16
        and prefix.isascii()
        and prefix[0].isalpha()
        and prefix.islower()
        and prefix.isalnum()
    )


def _require_prefix(value: object) -> None:
    if not _valid_prefix(value):
        raise ValueError(
            "API key prefix must be 2 to 16 lowercase letters or digits starting with a letter, "
            f"got {value!r}"
        )


def _check_prefix(_inst: object, _attribute: attrs.Attribute[str], value: object) -> None:
    _require_prefix(value)


def _check_key_id(_inst: object, _attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not _is_base62(value, _ID_CHARS):
        raise ValueError(f"API key id must be {_ID_CHARS} base62 characters (0-9, A-Z, a-z)")


def _check_secret(_inst: object, _attribute: attrs.Attribute[str], value: object) -> None:
    # The message never includes the value: it is (or is meant to be) a secret.
    if not isinstance(value, str) or not _is_base62(value, _SECRET_CHARS):
        raise ValueError(
            f"API key secret must be {_SECRET_CHARS} base62 characters (0-9, A-Z, a-z)"
        )


def _b62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(reversed(chars))


def _checksum(head: str) -> str:
    return _b62(zlib.crc32(head.encode("ascii")), _CHECKSUM_CHARS)


def _random_b62(length: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(length))


@attrs.frozen(repr=False)
class ApiKey:
    """A parsed or freshly generated API key. ``repr`` and ``str`` never show the secret.

    :attr:`token` is the full key, to show the user once; :attr:`redacted` is what to show
    afterwards and in logs.
    """

    prefix: str = attrs.field(validator=_check_prefix)
    key_id: str = attrs.field(validator=_check_key_id)
    secret: str = attrs.field(validator=_check_secret)

    @property
    def token(self) -> str:
        """The full key string, checksum included."""
        head = f"{self.prefix}_{self.key_id}_{self.secret}"
        return head + _checksum(head)

    @property
    def redacted(self) -> str:
        """``<prefix>_<key id>_****``: identifies the key without revealing it."""
        return f"{self.prefix}_{self.key_id}_****"

    def __repr__(self) -> str:
        return f"ApiKey(prefix={self.prefix!r}, key_id={self.key_id!r}, secret=<redacted>)"

    def __str__(self) -> str:
        return self.redacted


def generate_api_key(*, prefix: str = DEFAULT_PREFIX) -> ApiKey:
    """A new random API key: a 12-character key id and a 256-bit secret."""
    _require_prefix(prefix)
    return ApiKey(prefix, _random_b62(_ID_CHARS), _random_b62(_SECRET_CHARS))


def _malformed(detail: str) -> AuthenticationError:
    return AuthenticationError("API key is malformed", detail=detail, code=API_KEY_MALFORMED)


def parse_api_key(token: str, *, prefix: str = DEFAULT_PREFIX) -> ApiKey:
    """Check ``token``'s shape and checksum offline and split it into an :class:`ApiKey`.

    Raises :class:`AuthenticationError` with code ``API_KEY_MALFORMED`` (not a string, over
    256 characters, wrong prefix, length, shape or characters) or ``API_KEY_CHECKSUM`` (a
    mistyped or garbled key). Nothing from ``token`` appears in the error.
    """
    _require_prefix(prefix)
    if not isinstance(token, str):
        raise _malformed("an API key must be a string")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _malformed(f"an API key is never longer than {MAX_TOKEN_LENGTH} characters")
    head = f"{prefix}_"
    expected = f"expected '{head}' followed by {_BODY_CHARS} characters"
    if not token.startswith(head):
        raise _malformed(f"the key does not start with '{head}'; {expected}")
    body = token[len(head) :]
    if len(body) != _BODY_CHARS:
        raise _malformed(f"the key has the wrong length; {expected}")
    key_id, sep, rest = body[:_ID_CHARS], body[_ID_CHARS], body[_ID_CHARS + 1 :]
    if sep != "_" or not _is_base62(key_id, _ID_CHARS) or not rest.isascii() or not rest.isalnum():
        raise _malformed(
            f"expected '{head}', a {_ID_CHARS}-character key id, '_', then "
            f"{_SECRET_CHARS + _CHECKSUM_CHARS} letters or digits"
        )
    secret, checksum = rest[:_SECRET_CHARS], rest[_SECRET_CHARS:]
    if checksum != _checksum(token[:-_CHECKSUM_CHARS]):
        raise AuthenticationError(
            "API key checksum does not match",
            detail="the key was mistyped, truncated or altered; copy it again from where it "
            "was issued",
            code=API_KEY_CHECKSUM,
        )
    return ApiKey(prefix, key_id, secret)


def _aware(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None and attribute.default is None:
        return
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{attribute.name} must be a timezone-aware datetime, got {value!r}")


def _to_names(value: object) -> tuple[str, ...]:
    """Role or scope names as a tuple: one string is one name; sets are sorted."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(value))
    if isinstance(value, Iterable):
        return tuple(value)
    raise TypeError(f"expected a sequence of names, got {type(value).__name__}")


def _check_names(
    _inst: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[object, ...]
) -> None:
    if not all(isinstance(item, str) and item.strip() for item in value):
        raise ValueError(f"{attribute.name} must be non-empty strings")


def _check_status(_inst: object, _attribute: attrs.Attribute[str], value: object) -> None:
    if value not in _STATUSES:
        raise ValueError(f"API key status must be one of {sorted(_STATUSES)}, got {value!r}")


def _check_digest(_inst: object, _attribute: attrs.Attribute[str], value: object) -> None:
    # Catches a raw secret stored by mistake: only keyed digests belong here.
    try:
        digest_version(value)
    except ValueError:
        raise ValueError(
            "digest must be a keyed digest from KeyedHasher.digest() "
            "('hmac-sha256$<version>$...'), never the secret itself"
        ) from None


def _check_optional_subject(_inst: object, attribute: attrs.Attribute[str], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{attribute.name} must be a non-empty string or None")


@attrs.frozen(kw_only=True)
class ApiKeyRecord:
    """What a store keeps about one API key. The secret itself is never stored, only its
    keyed digest; ``repr`` leaves the digest out too.

    ``status``: ``active``; ``rotating`` (replaced by a newer key, still accepted until its
    ``expires_at``); ``revoked`` (never accepted again).

    ``organization_id`` is the tenant that owns the key and ``record_id`` the store's own id of
    the key (e.g. a database primary key), when the store knows them (both optional), so a
    service can bill a request without a second lookup.
    """

    key_id: str = attrs.field(validator=_check_key_id)
    digest: str = attrs.field(validator=_check_digest, repr=False)
    created_at: datetime = attrs.field(validator=_aware)
    subject: str | None = attrs.field(default=None, validator=_check_optional_subject)
    name: str | None = attrs.field(default=None, validator=_check_optional_subject)
    roles: tuple[str, ...] = attrs.field(default=(), converter=_to_names, validator=_check_names)
    scopes: tuple[str, ...] = attrs.field(default=(), converter=_to_names, validator=_check_names)
    status: ApiKeyStatus = attrs.field(default="active", validator=_check_status)
    expires_at: datetime | None = attrs.field(default=None, validator=_aware)
    last_used_at: datetime | None = attrs.field(default=None, validator=_aware)
    organization_id: str | None = attrs.field(default=None, validator=_check_optional_subject)
    record_id: str | None = attrs.field(default=None, validator=_check_optional_subject)

    def is_expired(self, now: datetime) -> bool:
        """Whether the key is past its expiry at ``now`` (a key expires at ``expires_at``)."""
        return self.expires_at is not None and now >= self.expires_at


# --------------------------------------------------------------------------------------------
# API key entries: how a service's environment lists the keys it accepts

_ENTRY: Final = re.compile(
    r"([^:\s]+):([A-Za-z0-9]+):([A-Za-z0-9_.-]+(?:\+[A-Za-z0-9_.-]+)*):(hmac-sha256\$\S+)"
)
_ENTRY_SHAPE: Final = "an API key entry is subject:key_id:role[+role]:hmac-sha256$v1$<digest>"
_ENTRY_SEPARATORS: Final = re.compile(r"[,\s]+")
#: Longest entry looked at; a real one is under 200 characters.
MAX_ENTRY_LENGTH: Final = 1024


def parse_api_key_entry(entry: str, *, created_at: datetime | None = None) -> ApiKeyRecord:
    """``subject:key_id:role[+role]:digest`` -> the :class:`ApiKeyRecord` it describes.

    This is how a service's environment lists the API keys it accepts: the digest is the keyed
    HMAC digest of the key's secret (``hmac-sha256$v1$...``, made by
    :class:`~aiaas_core.KeyedHasher`), never the secret, so the environment (and git) only ever
    holds digests. ``created_at`` defaults to now. Raises ``ValueError`` naming the expected
    shape; the entry itself never appears in the message.
    """
    if not isinstance(entry, str):
        raise ValueError(f"{_ENTRY_SHAPE}, not {type(entry).__name__}")
    if len(entry) > MAX_ENTRY_LENGTH:
        raise ValueError(f"{_ENTRY_SHAPE} (at most {MAX_ENTRY_LENGTH} characters)")
    match = _ENTRY.fullmatch(entry.strip())
    if match is None:
        raise ValueError(_ENTRY_SHAPE)
    subject, key_id, roles, digest = match.groups()
    try:
        return ApiKeyRecord(
            key_id=key_id,
            digest=digest,
            created_at=created_at if created_at is not None else _utcnow(),
            subject=subject,
            roles=tuple(roles.split("+")),
        )
    except ValueError as exc:  # the key id's length or the digest's form: no value in it
        raise ValueError(f"{_ENTRY_SHAPE}: {exc}") from None


def parse_api_key_entries(
    entries: str | Iterable[str], *, created_at: datetime | None = None
) -> list[ApiKeyRecord]:
    """Every entry of ``entries`` as an :class:`ApiKeyRecord` (see :func:`parse_api_key_entry`).

    ``entries`` is the text of an environment variable (entries separated by commas and/or
    whitespace; empty or blank text is no entries) or the entries one by one. A bad entry
    raises ``ValueError("entry 2: an API key entry is ...")`` (counted from 1), and so does a
    key id listed twice: the caller adds which variable or setting it read.
    """
    if isinstance(entries, str):
        items = [item for item in _ENTRY_SEPARATORS.split(entries) if item]
    else:
        items = list(entries)
    records: list[ApiKeyRecord] = []
    seen: set[str] = set()
    for index, item in enumerate(items, start=1):
        try:
            record = parse_api_key_entry(item, created_at=created_at)
        except ValueError as exc:
            raise ValueError(f"entry {index}: {exc}") from None
        if record.key_id in seen:
            raise ValueError(
                f"entry {index}: key id {record.key_id} is listed twice; keep one entry per key"
            )
        seen.add(record.key_id)
        records.append(record)
    return records


@runtime_checkable
class ApiKeyStore(Protocol):
    """Where API key records live; the database package provides a PostgreSQL one.

    A store may also implement :class:`SupportsDigestUpgrade`, and the verifier will then
    replace digests written under a retired hashing key as keys are used.
    """

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The record for ``key_id``, or ``None`` when there is none."""
        ...

    async def touch(self, key_id: str, when: datetime) -> None:
        """Record that the key was used at ``when``; a missing key is ignored."""
        ...


@runtime_checkable
class SupportsDigestUpgrade(Protocol):
    """A store that can replace a record's digest (after a hashing key rotation)."""

    async def replace_digest(self, key_id: str, old: str, new: str) -> bool:
        """Set the digest to ``new`` only if it is still ``old``; whether it was replaced."""
        ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _require_record(record: object) -> None:
    if not isinstance(record, ApiKeyRecord):
        raise TypeError(f"expected an ApiKeyRecord, got {type(record).__name__}")


class InMemoryApiKeyStore:
    """An :class:`ApiKeyStore` in a dict, for tests and small single-process services.

    Every method completes without awaiting anything, so each is atomic on its event loop.
    """

    def __init__(self, records: Iterable[ApiKeyRecord] = ()) -> None:
        self._records: dict[str, ApiKeyRecord] = {}
        for record in records:
            self._insert(record)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"InMemoryApiKeyStore(<{len(self._records)} keys>)"

    def _insert(self, record: ApiKeyRecord) -> None:
        _require_record(record)
        if record.key_id in self._records:
            raise ConflictError(
                f"an API key with id {record.key_id!r} already exists", code="API_KEY_EXISTS"
            )
        self._records[record.key_id] = record

    def _existing(self, key_id: str) -> ApiKeyRecord:
        record = self._records.get(key_id)
        if record is None:
            raise NotFoundError(f"no API key with id {key_id!r}", code="API_KEY_NOT_FOUND")
        return record

    async def add(self, record: ApiKeyRecord) -> None:
        """Store a new record; :class:`ConflictError` (``API_KEY_EXISTS``) if the id is taken."""
        self._insert(record)

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        return self._records.get(key_id)

    async def touch(self, key_id: str, when: datetime) -> None:
        record = self._records.get(key_id)
        if record is None:
            return
        if record.last_used_at is None or when > record.last_used_at:
            self._records[key_id] = attrs.evolve(record, last_used_at=when)

    async def revoke(self, key_id: str) -> ApiKeyRecord:
        """Revoke a key for good; revoking twice is harmless. Returns the updated record."""
        record = attrs.evolve(self._existing(key_id), status="revoked")
        self._records[key_id] = record
        return record

    async def rotate(
        self,
        key_id: str,
        replacement: ApiKeyRecord,
        *,
        grace: timedelta = timedelta(hours=24),
        now: datetime | None = None,
    ) -> ApiKeyRecord:
        """Replace key ``key_id`` by ``replacement``, keeping the old key usable for ``grace``.

        The old record becomes ``rotating`` and expires at ``now + grace`` (or earlier, if it
        already expired earlier); ``replacement`` is added. Returns the updated old record.
        Raises :class:`NotFoundError` for an unknown id and :class:`ConflictError` when the old
        key is revoked or the replacement's id is taken.
        """
        if grace < timedelta(0):
            raise ValueError(f"grace must not be negative, got {grace!r}")
        _require_record(replacement)
        old = self._existing(key_id)
        if old.status == "revoked":
            raise ConflictError(
                f"API key {key_id!r} is revoked and cannot be rotated", code="API_KEY_REVOKED"
            )
        if replacement.key_id in self._records:
            raise ConflictError(
                f"an API key with id {replacement.key_id!r} already exists",
                code="API_KEY_EXISTS",
            )
        until = (now if now is not None else _utcnow()) + grace
        if old.expires_at is not None:
            until = min(until, old.expires_at)
        updated = attrs.evolve(old, status="rotating", expires_at=until)
        self._insert(replacement)
        self._records[key_id] = updated
        return updated

    async def replace_digest(self, key_id: str, old: str, new: str) -> bool:
        record = self._records.get(key_id)
        if record is None or record.digest != old:
            return False
        self._records[key_id] = attrs.evolve(record, digest=new)
        return True


_REMEMBERED_KEYS: Final = 10_000


def _remember(seen: dict[str, Any], key_id: str, value: Any) -> None:
    """Note ``value`` for ``key_id``, dropping the oldest entry beyond the limit."""
    seen.pop(key_id, None)
    if len(seen) >= _REMEMBERED_KEYS:
        del seen[next(iter(seen))]
    seen[key_id] = value


class ApiKeyVerifier:
    """Turns a presented API key into an :class:`~aiaas_core.Actor`, or refuses it.

    Steps: :func:`parse_api_key` (offline shape and checksum) → ``store.get(key_id)`` →
    constant-time digest comparison → status and expiry. Unknown key ids still cost one HMAC, so
    timing does not tell them apart from wrong secrets.

    After a success the verifier records use with ``store.touch`` at most once per
    ``touch_interval`` per key (``None`` never touches) and, when the record's digest was
    written under an old hashing key and the store supports it, replaces the digest with one
    under the current key. With ``background=True`` (the default) this runs in a task off the
    request path -- failures are logged, never raised -- and :meth:`drain` waits for it.

    The verifier remembers what it has already done for each key (the latest touch it started,
    the old digest it already tried to replace; the most recent 10 000 keys), so a store that
    answers from a cache, or many concurrent requests that all read the record before the first
    touch lands, still cost one write per key per interval rather than one per request.
    """

    def __init__(
        self,
        store: ApiKeyStore,
        hasher: KeyedHasher,
        *,
        clock: Callable[[], datetime] = _utcnow,
        prefix: str = DEFAULT_PREFIX,
        touch_interval: timedelta | None = timedelta(minutes=1),
        background: bool = True,
        upgrade_digests: bool = True,
    ) -> None:
        _require_prefix(prefix)
        self._store = store
        self._hasher = hasher
        self._clock = clock
        self._prefix = prefix
        self._touch_interval = touch_interval
        self._background = background
        self._upgrade = upgrade_digests and isinstance(store, SupportsDigestUpgrade)
        self._tasks: set[asyncio.Task[None]] = set()
        # Bookkeeping already started, per key id (insertion order: the oldest are dropped).
        self._touched: dict[str, datetime] = {}
        self._replaced: dict[str, str] = {}
        # Compared against when the key id is unknown, so that case costs one HMAC as well.
        self._decoy = hasher.digest(_random_b62(_SECRET_CHARS))

    def __repr__(self) -> str:
        return f"ApiKeyVerifier(prefix={self._prefix!r}, hasher={self._hasher!r})"

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the verifier's clock must return timezone-aware datetimes")
        return now

    def make_record(
        self,
        key: ApiKey,
        *,
        subject: str | None = None,
        name: str | None = None,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
        expires_at: datetime | None = None,
        status: ApiKeyStatus = "active",
    ) -> ApiKeyRecord:
        """The record to store for ``key``: its id and the keyed digest of its secret."""
        return ApiKeyRecord(
            key_id=key.key_id,
            digest=self._hasher.digest(key.secret),
            created_at=self._now(),
            subject=subject,
            name=name,
            roles=_to_names(roles),
            scopes=_to_names(scopes),
            status=status,
            expires_at=expires_at,
        )

    def issue(
        self,
        *,
        subject: str | None = None,
        name: str | None = None,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
        ttl: timedelta | None = None,
    ) -> tuple[ApiKey, ApiKeyRecord]:
        """A new key and its record (expiring ``ttl`` from now, if given); store the record,
        show ``key.token`` to its owner once."""
        key = generate_api_key(prefix=self._prefix)
        expires_at = self._now() + ttl if ttl is not None else None
        record = self.make_record(
            key, subject=subject, name=name, roles=roles, scopes=scopes, expires_at=expires_at
        )
        return key, record

    async def verify(self, token: str) -> Actor:
        """The actor ``token`` authenticates: kind ``api_key``, the record's subject (or the key
        id when it has none), its roles and its scopes. Raises :class:`AuthenticationError`
        otherwise."""
        record = await self.verify_record(token)
        return Actor(
            subject=record.subject or record.key_id,
            roles=record.roles,
            kind="api_key",
            scopes=record.scopes,
        )

    async def verify_record(self, token: str) -> ApiKeyRecord:
        """Like :meth:`verify`, but returns the whole record (scopes included).

        Errors from the store itself (a database that is down) propagate unchanged: they are not
        the caller's fault, and the service should answer them as such (typically 503).
        """
        try:
            key = parse_api_key(token, prefix=self._prefix)
        except AuthenticationError as exc:
            logger.debug("API key rejected offline: %s", exc.code)
            raise
        record = await self._store.get(key.key_id)
        if record is None:
            self._hasher.verify(key.secret, self._decoy)
            logger.info("API key %s rejected: unknown key id", key.key_id)
            raise _invalid()
        if not self._hasher.verify(key.secret, record.digest):
            if digest_version(record.digest) not in self._hasher.versions:
                logger.warning(
                    "API key %s rejected: its digest uses a hashing key version that is not "
                    "configured",
                    key.key_id,
                )
            else:
                logger.info("API key %s rejected: secret does not match", key.key_id)
            raise _invalid()
        now = self._now()
        if record.status == "revoked":
            logger.info("API key %s rejected: revoked", key.key_id)
            raise AuthenticationError(
                "API key has been revoked",
                detail="create a new key",
                code=API_KEY_REVOKED,
            )
        if record.is_expired(now):
            logger.info("API key %s rejected: expired", key.key_id)
            raise AuthenticationError(
                "API key has expired",
                detail="create a new key",
                code=API_KEY_EXPIRED,
            )
        await self._after_success(record, key, now)
        return record

    async def _after_success(self, record: ApiKeyRecord, key: ApiKey, now: datetime) -> None:
        key_id = record.key_id
        touch = False
        if self._touch_interval is not None:
            last = record.last_used_at
            started = self._touched.get(key_id)
            if started is not None and (last is None or started > last):
                last = started
            touch = last is None or now - last >= self._touch_interval
        new_digest = None
        if (
            self._upgrade
            and self._replaced.get(key_id) != record.digest
            and self._hasher.needs_rehash(record.digest)
        ):
            new_digest = self._hasher.digest(key.secret)
            _remember(self._replaced, key_id, record.digest)
        if not touch and new_digest is None:
            return
        if touch:
            _remember(self._touched, key_id, now)
        work = self._record_use(record, now if touch else None, new_digest)
        if not self._background:
            await work
            return
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record_use(
        self, record: ApiKeyRecord, when: datetime | None, new_digest: str | None
    ) -> None:
        if when is not None:
            try:
                await self._store.touch(record.key_id, when)
            except Exception:
                logger.warning("could not record use of API key %s", record.key_id, exc_info=True)
        if new_digest is not None:
            store: SupportsDigestUpgrade = self._store  # type: ignore[assignment]
            try:
                await store.replace_digest(record.key_id, record.digest, new_digest)
            except Exception:
                self._replaced.pop(record.key_id, None)  # try again on the key's next use
                logger.warning(
                    "could not upgrade the digest of API key %s", record.key_id, exc_info=True
                )

    async def drain(self) -> None:
        """Wait until the background bookkeeping started so far has finished."""
        while self._tasks:
            await asyncio.gather(*tuple(self._tasks))


def _invalid() -> AuthenticationError:
    return AuthenticationError(
        "API key is not valid",
        detail="check the key, or create a new one",
        code=API_KEY_INVALID,
    )
