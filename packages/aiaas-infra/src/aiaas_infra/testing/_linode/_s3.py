"""The Linode API emulator's S3 endpoint: the Object Storage calls aiaas-infra makes.

Linode Object Storage is S3-compatible; bucket lifecycle rules and the S3 state backend go
through it with boto3. The emulator answers those calls itself, path style
(``http://127.0.0.1:PORT/{bucket}/{key}``), for the buckets and access keys made through its
Linode API:

* bucket lifecycle configuration: ``GET``/``PUT``/``DELETE /{bucket}?lifecycle`` (rules are
  validated as S3 does: well-formed XML, 1-1000 rules, unique IDs of at most 255 characters,
  ``Enabled``/``Disabled``, a ``Filter`` or ``Prefix``, at least one action, positive days; the
  request needs ``Content-MD5`` or an ``x-amz-checksum-*`` header);
* objects: ``PUT`` (``If-None-Match: *`` and ``If-Match`` conditions), ``GET``, ``HEAD``,
  ``DELETE``; ``GET /{bucket}?list-type=2`` (ListObjectsV2: ``prefix``, ``delimiter``,
  ``max-keys``, ``start-after``, ``continuation-token``, ``encoding-type=url``);
  ``HEAD /{bucket}``.

Every request must be signed with AWS Signature Version 4 (the ``Authorization`` header) by an
access key the emulator issued; the signature is verified with the key's secret, the payload
against ``x-amz-content-sha256`` and the ``Content-MD5``/``x-amz-checksum-*`` headers, and a
limited key only reaches the buckets it was granted (``read_only``: reads). Errors are S3's XML
``<Error>`` documents with S3's codes and statuses. Anything else answers ``501
NotImplemented``.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import json
import re
import secrets
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator, Mapping
from email.utils import formatdate
from typing import Any, Final
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

import attrs

from aiaas_infra.testing._linode._store import S3Object, _Store

# Nothing public: reached through LinodeEmulator (aiaas_infra.testing), which uses these names.
__all__: list[str] = []

S3_NS: Final = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_KEYS: Final = 1000
MAX_RULES: Final = 1000
MAX_SKEW_SECONDS: Final = 15 * 60
_ALGORITHM: Final = "AWS4-HMAC-SHA256"
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request\s*,\s*SignedHeaders=(?P<signed>[a-z0-9;-]+)\s*,\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})"
)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ACTIONS: Final = (
    "Expiration",
    "NoncurrentVersionExpiration",
    "AbortIncompleteMultipartUpload",
    "Transition",
    "NoncurrentVersionTransition",
)
# Days that must be positive integers, per action: (action, element).
_POSITIVE_DAYS: Final = (
    ("Expiration", "Days"),
    ("NoncurrentVersionExpiration", "NoncurrentDays"),
    ("AbortIncompleteMultipartUpload", "DaysAfterInitiation"),
)


@attrs.frozen
class S3Response:
    """What the HTTP handler sends: status, body and headers."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = attrs.Factory(dict)


class S3Error(Exception):
    """An S3 error answer: ``<Error><Code/><Message/>...</Error>``."""

    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def _not_implemented(what: str) -> S3Error:
    return S3Error(
        501,
        "NotImplemented",
        f"{what} is not implemented by the emulator, which serves bucket lifecycle "
        "configuration, object PUT/GET/HEAD/DELETE, ListObjectsV2 and HeadBucket",
    )


# --------------------------------------------------------------------------------------------
# Checksums


def _crc_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE: Final = _crc_table(0x82F63B78)
_CRC64NVME_TABLE: Final = _crc_table(0x9A6C9329AC4BC9B5)


def _reflected_crc(data: bytes, table: tuple[int, ...], width: int) -> int:
    mask = (1 << width) - 1
    crc = mask
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ mask


def _checksum(algorithm: str, data: bytes) -> bytes:
    if algorithm == "crc32":
        return zlib.crc32(data).to_bytes(4, "big")
    if algorithm == "crc32c":
        return _reflected_crc(data, _CRC32C_TABLE, 32).to_bytes(4, "big")
    if algorithm == "crc64nvme":
        return _reflected_crc(data, _CRC64NVME_TABLE, 64).to_bytes(8, "big")
    return hashlib.new(algorithm, data).digest()


_CHECKSUMS: Final = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")


def _verify_digests(headers: Mapping[str, str], body: bytes) -> bool:
    """Check ``Content-MD5`` and ``x-amz-checksum-*``; True when at least one was sent."""
    sent = False
    md5 = headers.get("content-md5")
    if md5 is not None:
        sent = True
        try:
            expected = base64.b64decode(md5, validate=True)
        except binascii.Error:
            expected = b""
        if len(expected) != 16:
            raise S3Error(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
        if not hmac.compare_digest(expected, hashlib.md5(body).digest()):  # noqa: S324 -- S3's
            raise S3Error(
                400, "BadDigest", "The Content-MD5 you specified did not match what we received."
            )
    for algorithm in _CHECKSUMS:
        value = headers.get(f"x-amz-checksum-{algorithm}")
        if value is None:
            continue
        sent = True
        try:
            expected = base64.b64decode(value, validate=True)
        except binascii.Error:
            expected = b""
        if not hmac.compare_digest(expected, _checksum(algorithm, body)):
            raise S3Error(
                400,
                "BadDigest",
                f"The {algorithm.upper()} you specified did not match the calculated checksum.",
            )
    return sent


# --------------------------------------------------------------------------------------------
# Signature Version 4


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def _canonical_query(raw_query: str) -> str:
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_uri_encode(unquote(name)), _uri_encode(unquote(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sigv4_signature(
    *,
    secret: str,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    signed_headers: str,
    payload_hash: str,
    amz_date: str,
    region: str,
    service: str = "s3",
) -> str:
    """The hex SigV4 signature of a request (S3 flavour: the path is signed as sent)."""
    canonical_headers = "".join(
        f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed_headers.split(";")
    )
    canonical_request = "\n".join(
        (
            method,
            raw_path or "/",
            _canonical_query(raw_query),
            canonical_headers,
            signed_headers,
            payload_hash,
        )
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        (_ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
    )
    key = _signing_key(secret, amz_date[:8], region, service)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------------------------
# XML


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _strip_namespaces(elem: ET.Element) -> ET.Element:
    out = ET.Element(_local(elem.tag))
    out.text = elem.text.strip() if elem.text and elem.text.strip() else None
    for child in elem:
        out.append(_strip_namespaces(child))
    return out


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in elem if c.tag == name), None)


def _parse_xml(body: bytes) -> ET.Element:
    malformed = S3Error(
        400,
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema",
    )
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise malformed
    try:
        root = ET.fromstring(body)  # noqa: S314 -- no DTD or entities reach the parser (above)
    except ET.ParseError:
        raise malformed from None
    return _strip_namespaces(root)


def _validate_lifecycle(config: ET.Element) -> ET.Element:
    """Validate a LifecycleConfiguration as S3 does; returns it with missing IDs assigned."""
    malformed = S3Error(
        400,
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema",
    )
    rules = [r for r in config if r.tag == "Rule"]
    if config.tag != "LifecycleConfiguration" or not rules or len(rules) != len(config):
        raise malformed
    if len(rules) > MAX_RULES:
        raise malformed
    ids: set[str] = set()
    for rule in rules:
        rule_id = _child(rule, "ID")
        if rule_id is None:
            rule_id = ET.Element("ID")
            rule_id.text = secrets.token_hex(16)
            rule.insert(0, rule_id)
        text = rule_id.text or ""
        if len(text) > 255:
            raise S3Error(
                400, "InvalidArgument", "ID length should not exceed allowed limit of 255"
            )
        if text in ids:
            raise S3Error(
                400,
                "InvalidArgument",
                "Rule ID must be unique. Found same ID for more than one rule",
            )
        ids.add(text)
        status = _child(rule, "Status")
        if status is None or status.text not in ("Enabled", "Disabled"):
            raise malformed
        if (_child(rule, "Filter") is None) == (_child(rule, "Prefix") is None):
            raise malformed
        if not any(_child(rule, action) is not None for action in _ACTIONS):
            raise S3Error(
                400, "InvalidRequest", "At least one action needs to be specified in a rule"
            )
        for action, field in _POSITIVE_DAYS:
            elem = _child(rule, action)
            days = _child(elem, field) if elem is not None else None
            if days is None:
                continue
            if not (days.text or "").isdigit() or int(days.text or "0") <= 0:
                raise S3Error(
                    400,
                    "InvalidArgument",
                    f"'{field}' for {action} action must be a positive integer",
                )
    return config


def _document(root: ET.Element) -> bytes:
    root.set("xmlns", S3_NS)
    body: bytes = ET.tostring(root, encoding="unicode").encode()
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def _sub(parent: ET.Element, tag: str, text: str) -> ET.Element:
    elem = ET.SubElement(parent, tag)
    elem.text = text
    return elem


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


def error_body(error: S3Error, resource: str, request_id: str) -> bytes:
    parts = [f"<Code>{escape(error.code)}</Code>", f"<Message>{escape(error.message)}</Message>"]
    parts += [f"<{k}>{escape(v)}</{k}>" for k, v in error.extra.items()]
    parts += [f"<Resource>{escape(resource)}</Resource>", f"<RequestId>{request_id}</RequestId>"]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>' + "".join(parts) + "</Error>"
    ).encode()


# --------------------------------------------------------------------------------------------
# The service


@attrs.frozen
class _Request:
    method: str
    bucket: str
    key: str | None  # None: a bucket-level request
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes


class S3Service:
    """Answers S3 requests against the emulator's store (its buckets, keys and secrets)."""

    def __init__(self, store: _Store, *, now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.now = now

    # -- entry point ----------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> S3Response:
        """Serve one request; ``headers`` have lower-case names."""
        request_id = secrets.token_hex(8).upper()
        base = {"x-amz-request-id": request_id}
        bucket, _, raw_key = raw_path.lstrip("/").partition("/")
        resource = unquote(raw_path) or "/"
        try:
            query = self._query(raw_query)
            key = self._authenticate(method, raw_path, raw_query, headers, body)
            if not bucket:
                raise _not_implemented("ListBuckets")
            request = _Request(
                method, unquote(bucket), unquote(raw_key) or None, query, headers, body
            )
            with self.store.lock:
                status, out, extra = self._dispatch(request, key)
        except S3Error as exc:
            payload = b"" if method == "HEAD" else error_body(exc, resource, request_id)
            return S3Response(exc.status, payload, {**base, "Content-Type": "application/xml"})
        return S3Response(status, out, {**base, **extra})

    @staticmethod
    def _query(raw_query: str) -> dict[str, str]:
        query: dict[str, str] = {}
        for part in raw_query.split("&"):
            if part:
                name, _, value = part.partition("=")
                query[unquote(name)] = unquote(value)
        query.pop("x-id", None)  # botocore's operation hint, not a parameter
        return query

    # -- authentication -------------------------------------------------------------------------

    def _authenticate(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> dict[str, Any]:
        auth = headers.get("authorization")
        if auth is None:
            raise S3Error(403, "AccessDenied", "Anonymous access is not allowed: sign requests")
        if not auth.startswith(_ALGORITHM):
            raise S3Error(
                400,
                "InvalidRequest",
                "The authorization mechanism you have provided is not supported. "
                "Please use AWS4-HMAC-SHA256.",
            )
        match = _AUTH.fullmatch(auth.strip())
        if match is None:
            raise S3Error(
                400,
                "AuthorizationHeaderMalformed",
                "The authorization header is malformed; expected Credential=KEY/DATE/REGION/s3/"
                "aws4_request, SignedHeaders=..., Signature=...",
            )
        signed = match["signed"]
        if "host" not in signed.split(";"):
            raise S3Error(
                400, "AuthorizationHeaderMalformed", "The host header must be signed (SigV4)"
            )
        if match["service"] != "s3":
            raise S3Error(
                400,
                "AuthorizationHeaderMalformed",
                f"The credential scope names service {match['service']!r}; expected 's3'",
            )
        key = next((k for k in self.store.keys.values() if k["access_key"] == match["key"]), None)
        if key is None:
            raise S3Error(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
                AWSAccessKeyId=match["key"],
            )
        amz_date = headers.get("x-amz-date", "")
        try:
            stamp = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise S3Error(
                403, "AccessDenied", "AWS authentication requires a valid x-amz-date header"
            ) from None
        if amz_date[:8] != match["date"]:
            raise S3Error(
                400,
                "AuthorizationHeaderMalformed",
                f"The credential date {match['date']} does not match x-amz-date {amz_date}",
            )
        if abs(self.now() - stamp) > MAX_SKEW_SECONDS:
            raise S3Error(
                403,
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
            )
        payload_hash = headers.get("x-amz-content-sha256")
        if payload_hash is None:
            raise S3Error(
                400,
                "InvalidRequest",
                "Missing required header for this request: x-amz-content-sha256",
            )
        if payload_hash.startswith("STREAMING-"):
            raise _not_implemented(f"A streaming (aws-chunked) payload ({payload_hash})")
        if payload_hash != "UNSIGNED-PAYLOAD":
            if not _HEX64.fullmatch(payload_hash):
                raise S3Error(
                    400, "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or hex"
                )
            if payload_hash != hashlib.sha256(body).hexdigest():
                raise S3Error(
                    400,
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                )
        expected = sigv4_signature(
            secret=self.store.secrets.get(key["id"], ""),
            method=method,
            raw_path=raw_path,
            raw_query=raw_query,
            headers=headers,
            signed_headers=signed,
            payload_hash=payload_hash,
            amz_date=amz_date,
            region=match["region"],
        )
        if not hmac.compare_digest(expected, match["signature"]):
            raise S3Error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
                AWSAccessKeyId=match["key"],
            )
        return key

    @staticmethod
    def _authorize(key: Mapping[str, Any], bucket: str, write: bool) -> None:
        if not key["limited"]:
            return
        for grant in key["bucket_access"]:
            if grant["bucket_name"] == bucket and (
                grant["permissions"] == "read_write" or not write
            ):
                return
        raise S3Error(403, "AccessDenied", "Access Denied")

    # -- dispatch -------------------------------------------------------------------------------

    def _dispatch(
        self, request: _Request, key: Mapping[str, Any]
    ) -> tuple[int, bytes, dict[str, str]]:
        bucket = self.store.bucket_by_label(request.bucket)
        if bucket is None:
            raise S3Error(
                404,
                "NoSuchBucket",
                "The specified bucket does not exist",
                BucketName=request.bucket,
            )
        self._authorize(key, request.bucket, request.method in ("PUT", "POST", "DELETE"))
        if request.key is None:
            return self._bucket_request(request, bucket)
        if request.query:
            raise _not_implemented(f"The object subresource ?{sorted(request.query)[0]}")
        return self._object_request(request, bucket)

    def _bucket_request(
        self, request: _Request, bucket: Mapping[str, Any]
    ) -> tuple[int, bytes, dict[str, str]]:
        method, query = request.method, request.query
        if "lifecycle" in query:
            if method == "GET":
                return self._get_lifecycle(request.bucket)
            if method == "PUT":
                return self._put_lifecycle(request)
            if method == "DELETE":
                self.store.lifecycle.pop(request.bucket, None)
                return 204, b"", {}
        elif method == "GET" and query.get("list-type") == "2":
            return self._list_v2(request)
        elif method == "HEAD" and not query:
            return 200, b"", {"x-amz-bucket-region": str(bucket["region"])}
        what = f"{method} /{request.bucket}" + (f"?{sorted(query)[0]}" if query else "")
        raise _not_implemented(what)

    # -- lifecycle ------------------------------------------------------------------------------

    def _get_lifecycle(self, bucket: str) -> tuple[int, bytes, dict[str, str]]:
        xml = self.store.lifecycle.get(bucket)
        if xml is None:
            raise S3Error(
                404,
                "NoSuchLifecycleConfiguration",
                "The lifecycle configuration does not exist",
                BucketName=bucket,
            )
        return 200, xml.encode(), {"Content-Type": "application/xml"}

    def _put_lifecycle(self, request: _Request) -> tuple[int, bytes, dict[str, str]]:
        if not _verify_digests(request.headers, request.body):
            raise S3Error(
                400,
                "InvalidRequest",
                "Missing required header for this request: Content-MD5 (or an "
                "x-amz-checksum-* header)",
            )
        config = _validate_lifecycle(_parse_xml(request.body))
        self.store.lifecycle[request.bucket] = _document(config).decode()
        return 200, b"", {}

    # -- objects --------------------------------------------------------------------------------

    def _objects(self, bucket: str) -> dict[str, S3Object]:
        return self.store.objects.setdefault(bucket, {})

    def _recount(self, bucket: Mapping[str, Any]) -> None:
        objects = self._objects(str(bucket["label"]))
        row: dict[str, Any] = bucket  # type: ignore[assignment]
        row["objects"] = len(objects)
        row["size"] = sum(len(o.data) for o in objects.values())

    @staticmethod
    def _object_headers(obj: S3Object) -> dict[str, str]:
        return {
            "ETag": obj.etag,
            "Last-Modified": formatdate(obj.last_modified, usegmt=True),
            "Content-Type": obj.content_type,
            "Accept-Ranges": "bytes",
        }

    def _object_request(
        self, request: _Request, bucket: Mapping[str, Any]
    ) -> tuple[int, bytes, dict[str, str]]:
        objects = self._objects(request.bucket)
        assert request.key is not None
        name = request.key
        if request.method in ("GET", "HEAD"):
            obj = objects.get(name)
            if obj is None:
                raise S3Error(404, "NoSuchKey", "The specified key does not exist.", Key=name)
            headers = self._object_headers(obj)
            if request.method == "HEAD":
                headers["Content-Length"] = str(len(obj.data))
                return 200, b"", headers
            return 200, obj.data, headers
        if request.method == "DELETE":
            objects.pop(name, None)
            self._recount(bucket)
            return 204, b"", {}
        if request.method == "PUT":
            return self._put_object(request, bucket, objects, name)
        raise _not_implemented(f"{request.method} on an object")

    def _put_object(
        self,
        request: _Request,
        bucket: Mapping[str, Any],
        objects: dict[str, S3Object],
        name: str,
    ) -> tuple[int, bytes, dict[str, str]]:
        headers = request.headers
        if "x-amz-copy-source" in headers:
            raise _not_implemented("CopyObject")
        existing = objects.get(name)
        if_none_match = headers.get("if-none-match")
        if if_none_match is not None:
            if if_none_match.strip() != "*":
                raise _not_implemented("If-None-Match other than '*' on PUT")
            if existing is not None:
                raise S3Error(
                    412,
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold",
                    Condition="If-None-Match",
                )
        if_match = headers.get("if-match")
        if if_match is not None:
            if existing is None:
                raise S3Error(404, "NoSuchKey", "The specified key does not exist.", Key=name)
            if if_match.strip() not in (existing.etag, "*"):
                raise S3Error(
                    412,
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold",
                    Condition="If-Match",
                )
        _verify_digests(headers, request.body)
        obj = S3Object.of(
            request.body, headers.get("content-type") or "binary/octet-stream", self.now()
        )
        objects[name] = obj
        self._recount(bucket)
        out = {"ETag": obj.etag}
        for algorithm in _CHECKSUMS:
            value = headers.get(f"x-amz-checksum-{algorithm}")
            if value is not None:
                out[f"x-amz-checksum-{algorithm}"] = value
        return 200, b"", out

    # -- ListObjectsV2 --------------------------------------------------------------------------

    @staticmethod
    def _token(after: str) -> str:
        return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()

    @staticmethod
    def _after(token: str) -> str:
        try:
            after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise S3Error(
                400, "InvalidArgument", "The continuation token provided is incorrect"
            ) from None
        if not isinstance(after, str):
            raise S3Error(400, "InvalidArgument", "The continuation token provided is incorrect")
        return after

    def _list_v2(self, request: _Request) -> tuple[int, bytes, dict[str, str]]:
        query = request.query
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        encoding = query.get("encoding-type")
        if encoding not in (None, "url"):
            raise S3Error(400, "InvalidArgument", "Invalid Encoding Method specified in Request")
        raw_max = query.get("max-keys", str(MAX_KEYS))
        if not raw_max.isdigit():
            raise S3Error(
                400, "InvalidArgument", "Provided max-keys not an integer or within integer range"
            )
        max_keys = min(int(raw_max), MAX_KEYS)
        start_after = query.get("start-after", "")
        token = query.get("continuation-token")
        after = self._after(token) if token is not None else start_after

        contents: list[S3Object] = []
        names: list[str] = []
        prefixes: list[str] = []
        truncated = False
        last = ""
        for name, obj, group in self._groups(request.bucket, prefix, delimiter):
            # A common prefix at or before the marker was listed already (S3 and moto agree).
            if group <= after or (prefixes and group == prefixes[-1]):
                continue
            if len(names) + len(prefixes) >= max_keys:
                truncated = True
                break
            if group == name:
                names.append(name)
                contents.append(obj)
            else:
                prefixes.append(group)
            last = group

        def enc(text: str) -> str:
            return quote(text, safe="/") if encoding == "url" else text

        root = ET.Element("ListBucketResult")
        _sub(root, "Name", request.bucket)
        _sub(root, "Prefix", enc(prefix))
        if delimiter:
            _sub(root, "Delimiter", enc(delimiter))
        _sub(root, "MaxKeys", str(max_keys))
        if encoding:
            _sub(root, "EncodingType", encoding)
        _sub(root, "KeyCount", str(len(names) + len(prefixes)))
        _sub(root, "IsTruncated", "true" if truncated else "false")
        if token is not None:
            _sub(root, "ContinuationToken", token)
        if truncated:
            _sub(root, "NextContinuationToken", self._token(last))
        if "start-after" in query:
            _sub(root, "StartAfter", enc(start_after))
        for name, obj in zip(names, contents, strict=True):
            item = ET.SubElement(root, "Contents")
            _sub(item, "Key", enc(name))
            _sub(item, "LastModified", _iso(obj.last_modified))
            _sub(item, "ETag", obj.etag)
            _sub(item, "Size", str(len(obj.data)))
            _sub(item, "StorageClass", "STANDARD")
        for common in prefixes:
            _sub(ET.SubElement(root, "CommonPrefixes"), "Prefix", enc(common))
        return 200, _document(root), {"Content-Type": "application/xml"}

    def _groups(
        self, bucket: str, prefix: str, delimiter: str
    ) -> Iterator[tuple[str, S3Object, str]]:
        """(key, object, group) in key order; the group is the key, or its common prefix."""
        objects = self._objects(bucket)
        for name in sorted(objects):
            if not name.startswith(prefix):
                continue
            group = name
            if delimiter:
                cut = name.find(delimiter, len(prefix))
                if cut >= 0:
                    group = name[: cut + len(delimiter)]
            yield name, objects[name], group
