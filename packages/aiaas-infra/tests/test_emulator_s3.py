"""The emulator as its own S3 endpoint, held to the real thing's contract.

Behaviour both sides implement is run with the real boto3 client against the emulator and
against moto's S3 server (the reference) and must agree; what moto does not check (SigV4,
grants, rule validation, checksums) is tested against the emulator alone, with S3's documented
codes and statuses.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from linode_api4 import LinodeClient
from s3_support import MOTO_KEY, emulator_bucket, moto_server, s3_client

from aiaas_infra.provision._provider_write import _rule_from_s3, _s3_rule
from aiaas_infra.testing import LinodeEmulator

BUCKET = "contract-bucket"

RULES = [
    {
        "id": "expire-logs",
        "prefix": "logs/",
        "enabled": True,
        "expiration_days": 30,
        "noncurrent_expiration_days": 7,
        "abort_incomplete_multipart_days": 2,
    },
    {
        "id": "paused",
        "prefix": "",
        "enabled": False,
        "expiration_days": 365,
        "noncurrent_expiration_days": None,
        "abort_incomplete_multipart_days": None,
    },
]
KEYS = ["a/1", "a/2", "a b/c+d", "b/1", "c", "d/e/f", "ü/x", "k%41"]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(params=["emulator", "moto"])
def s3(request: pytest.FixtureRequest, emulator: LinodeEmulator) -> Any:
    """A boto3 client and an empty bucket named BUCKET, on the emulator or on moto."""
    if request.param == "emulator":
        access, secret = emulator_bucket(emulator, BUCKET)
        return s3_client(emulator.root, access, secret)
    client = s3_client(request.getfixturevalue("moto_url"), *MOTO_KEY, region="us-east-1")
    name = f"{BUCKET}-{request.node.name}"
    name = re.sub(r"[^a-z0-9-]", "-", name.lower())[:60].strip("-")
    client.create_bucket(Bucket=name)
    # Tests address BUCKET; moto's bucket names are per test so they never see each other.
    client.meta.events.register(
        "before-parameter-build.s3.*",
        lambda params, **_: params.update(Bucket=name) if params.get("Bucket") == BUCKET else None,
    )
    return client


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


# --------------------------------------------------------------------------------------------
# Behaviour the emulator shares with moto


def test_lifecycle_round_trip(s3: Any) -> None:
    with pytest.raises(ClientError) as missing:
        s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)
    assert error(missing) == (404, "NoSuchLifecycleConfiguration")

    s3.put_bucket_lifecycle_configuration(
        Bucket=BUCKET, LifecycleConfiguration={"Rules": [_s3_rule(r) for r in RULES]}
    )
    got = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert [_rule_from_s3(r) for r in got] == RULES
    assert got[0]["Filter"] == {"Prefix": "logs/"}
    assert got[1]["Status"] == "Disabled"

    deleted = s3.delete_bucket_lifecycle(Bucket=BUCKET)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as gone:
        s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)
    assert error(gone) == (404, "NoSuchLifecycleConfiguration")


def test_a_rule_without_filter_or_prefix_is_malformed(s3: Any) -> None:
    rule = {"ID": "r", "Status": "Enabled", "Expiration": {"Days": 30}}
    with pytest.raises(ClientError) as bad:
        s3.put_bucket_lifecycle_configuration(
            Bucket=BUCKET, LifecycleConfiguration={"Rules": [rule]}
        )
    assert error(bad) == (400, "MalformedXML")


def test_objects_round_trip(s3: Any) -> None:
    put = s3.put_object(Bucket=BUCKET, Key="state/lock", Body=b"{}", ContentType="application/json")
    assert put["ETag"] == f'"{hashlib.md5(b"{}").hexdigest()}"'  # noqa: S324 -- S3's ETag
    got = s3.get_object(Bucket=BUCKET, Key="state/lock")
    assert got["Body"].read() == b"{}"
    assert (got["ETag"], got["ContentType"], got["ContentLength"]) == (
        put["ETag"],
        "application/json",
        2,
    )
    head = s3.head_object(Bucket=BUCKET, Key="state/lock")
    assert (head["ETag"], head["ContentLength"]) == (put["ETag"], 2)
    assert s3.head_bucket(Bucket=BUCKET)["ResponseMetadata"]["HTTPStatusCode"] == 200

    deleted = s3.delete_object(Bucket=BUCKET, Key="state/lock")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.delete_object(Bucket=BUCKET, Key="state/lock")["ResponseMetadata"][
        "HTTPStatusCode"
    ] == (204)
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=BUCKET, Key="state/lock")
    assert error(missing) == (404, "NoSuchKey")
    with pytest.raises(ClientError) as head_missing:
        s3.head_object(Bucket=BUCKET, Key="state/lock")
    assert error(head_missing) == (404, "404")


def test_conditional_writes(s3: Any) -> None:
    first = s3.put_object(Bucket=BUCKET, Key="lock", Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as taken:
        s3.put_object(Bucket=BUCKET, Key="lock", Body=b"two", IfNoneMatch="*")
    assert error(taken) == (412, "PreconditionFailed")
    assert taken.value.response["Error"]["Condition"] == "If-None-Match"
    assert s3.get_object(Bucket=BUCKET, Key="lock")["Body"].read() == b"one"

    with pytest.raises(ClientError) as stale:
        s3.put_object(Bucket=BUCKET, Key="lock", Body=b"two", IfMatch='"0123"')
    assert error(stale) == (412, "PreconditionFailed")
    s3.put_object(Bucket=BUCKET, Key="lock", Body=b"two", IfMatch=first["ETag"])
    assert s3.get_object(Bucket=BUCKET, Key="lock")["Body"].read() == b"two"
    with pytest.raises(ClientError) as absent:
        s3.put_object(Bucket=BUCKET, Key="nothing", Body=b"x", IfMatch=first["ETag"])
    assert error(absent) == (404, "NoSuchKey")


def listing(s3: Any, **kwargs: Any) -> list[tuple[list[str], list[str], bool]]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, **kwargs)
    return [
        (
            [o["Key"] for o in page.get("Contents", [])],
            [p["Prefix"] for p in page.get("CommonPrefixes", [])],
            page["IsTruncated"],
        )
        for page in pages
    ]


def test_list_objects_v2(s3: Any) -> None:
    assert listing(s3) == [([], [], False)]
    for key in KEYS:
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    everything = sorted(KEYS)
    assert listing(s3) == [(everything, [], False)]
    assert listing(s3, PaginationConfig={"PageSize": 3}) == [
        (everything[0:3], [], True),
        (everything[3:6], [], True),
        (everything[6:], [], False),
    ]
    assert listing(s3, Prefix="a") == [(["a b/c+d", "a/1", "a/2"], [], False)]
    assert listing(s3, Delimiter="/") == [(["c", "k%41"], ["a b/", "a/", "b/", "d/", "ü/"], False)]
    assert listing(s3, Delimiter="/", PaginationConfig={"PageSize": 2}) == [
        ([], ["a b/", "a/"], True),
        (["c"], ["b/"], True),
        (["k%41"], ["d/"], True),
        ([], ["ü/"], False),
    ]
    assert listing(s3, Prefix="d/", Delimiter="/") == [([], ["d/e/"], False)]
    assert listing(s3, StartAfter="a/1") == [(everything[2:], [], False)]
    assert listing(s3, StartAfter="a/1", Delimiter="/") == [
        (["c", "k%41"], ["b/", "d/", "ü/"], False)
    ]
    page = s3.list_objects_v2(Bucket=BUCKET, Prefix="c")
    assert page["KeyCount"] == 1
    assert page["Contents"][0]["Size"] == 1
    assert page["Contents"][0]["StorageClass"] == "STANDARD"


def test_a_missing_bucket(s3: Any) -> None:
    for call in (
        lambda: s3.get_bucket_lifecycle_configuration(Bucket="no-such-bucket-here"),
        lambda: s3.get_object(Bucket="no-such-bucket-here", Key="k"),
        lambda: s3.list_objects_v2(Bucket="no-such-bucket-here"),
    ):
        with pytest.raises(ClientError) as missing:
            call()
        assert error(missing) == (404, "NoSuchBucket")


# --------------------------------------------------------------------------------------------
# What only the emulator checks: signatures, grants, rule validation, digests


@pytest.fixture
def keys(emulator: LinodeEmulator) -> dict[str, tuple[str, str]]:
    writer = emulator_bucket(emulator, BUCKET)
    client = LinodeClient("token", base_url=emulator.url, retry=False)
    reader = client.object_storage.keys_create(
        "reader",
        bucket_access=[{"region": "us-ord", "bucket_name": BUCKET, "permissions": "read_only"}],
    )
    admin = client.object_storage.keys_create("admin")  # unlimited
    return {
        "writer": writer,
        "reader": (reader.access_key, reader._raw_json["secret_key"]),
        "admin": (admin.access_key, admin._raw_json["secret_key"]),
    }


def signed(
    emulator: LinodeEmulator,
    method: str,
    path: str,
    key: tuple[str, str],
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    payload_hash: str | None = None,
    sent: bytes | None = None,
) -> httpx.Response:
    """A request signed by botocore's own S3 SigV4 signer, sent with httpx: ``payload_hash``
    replaces the body's SHA-256 in ``x-amz-content-sha256``; ``sent`` replaces the body after
    signing."""
    url = emulator.root + path
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    signer = S3SigV4Auth if payload_hash is None else _PresetPayload
    if payload_hash is not None:
        request.headers["X-Amz-Content-SHA256"] = payload_hash
    signer(Credentials(*key), "s3", "us-ord").add_auth(request)
    prepared = request.prepare()
    return httpx.request(
        method,
        prepared.url,
        content=body if sent is None else sent,
        headers={k: v for k, v in prepared.headers.items() if k.lower() != "content-length"},
        timeout=5,
    )


class _PresetPayload(S3SigV4Auth):  # type: ignore[misc]
    """Signs the ``X-Amz-Content-SHA256`` the request already carries."""

    def _modify_request_before_signing(self, request: AWSRequest) -> None:
        SigV4Auth._modify_request_before_signing(self, request)


def s3_error(response: httpx.Response) -> tuple[int, str]:
    match = re.search(r"<Code>([^<]+)</Code>", response.text)
    return response.status_code, match.group(1) if match else ""


def test_requests_must_be_signed_by_an_issued_key(
    emulator: LinodeEmulator, keys: dict[str, tuple[str, str]]
) -> None:
    good = signed(emulator, "GET", f"/{BUCKET}?list-type=2", keys["writer"])
    assert good.status_code == 200
    assert good.headers["x-amz-request-id"]

    anonymous = httpx.get(f"{emulator.root}/{BUCKET}?list-type=2", timeout=5)
    assert s3_error(anonymous) == (403, "AccessDenied")
    assert f"<Resource>/{BUCKET}</Resource>" in anonymous.text

    unknown = signed(emulator, "GET", f"/{BUCKET}?list-type=2", ("AKNOBODY", "x"))
    assert s3_error(unknown) == (403, "InvalidAccessKeyId")
    wrong_secret = signed(emulator, "GET", f"/{BUCKET}?list-type=2", (keys["writer"][0], "nope"))
    assert s3_error(wrong_secret) == (403, "SignatureDoesNotMatch")
    assert keys["writer"][1] not in wrong_secret.text

    sigv2 = httpx.get(
        f"{emulator.root}/{BUCKET}?list-type=2",
        headers={"Authorization": f"AWS {keys['writer'][0]}:c2lnbmF0dXJl"},
        timeout=5,
    )
    assert s3_error(sigv2) == (400, "InvalidRequest")
    malformed = httpx.get(
        f"{emulator.root}/{BUCKET}?list-type=2",
        headers={"Authorization": "AWS4-HMAC-SHA256 Credential=garbage"},
        timeout=5,
    )
    assert s3_error(malformed) == (400, "AuthorizationHeaderMalformed")

    emulator.s3.now = lambda: time.time() + 3600  # the request is an hour old
    stale = signed(emulator, "GET", f"/{BUCKET}?list-type=2", keys["writer"])
    assert s3_error(stale) == (403, "RequestTimeTooSkewed")


def test_a_body_changed_after_signing_is_refused(
    emulator: LinodeEmulator, keys: dict[str, tuple[str, str]]
) -> None:
    tampered = signed(emulator, "PUT", f"/{BUCKET}/obj", keys["writer"], body=b"good", sent=b"evil")
    assert s3_error(tampered) == (400, "XAmzContentSHA256Mismatch")
    assert emulator.resources("buckets")[0]["objects"] == 0
    bad_hash = signed(emulator, "PUT", f"/{BUCKET}/obj", keys["writer"], payload_hash="abc")
    assert s3_error(bad_hash) == (400, "InvalidArgument")
    unsigned = signed(
        emulator,
        "PUT",
        f"/{BUCKET}/obj",
        keys["writer"],
        body=b"ok",
        payload_hash="UNSIGNED-PAYLOAD",
    )
    assert unsigned.status_code == 200
    streaming = signed(
        emulator,
        "PUT",
        f"/{BUCKET}/obj",
        keys["writer"],
        body=b"0\r\n\r\n",
        payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    )
    assert s3_error(streaming) == (501, "NotImplemented")
    assert [r.status for r in emulator.s3_requests][-4:] == [400, 400, 200, 501]
    assert s3_client(emulator.root, *keys["writer"]).get_object(Bucket=BUCKET, Key="obj")[
        "Body"
    ].read() == (b"ok")


def test_grants_limit_what_a_key_reaches(
    emulator: LinodeEmulator, keys: dict[str, tuple[str, str]]
) -> None:
    writer = s3_client(emulator.root, *keys["writer"])
    reader = s3_client(emulator.root, *keys["reader"])
    admin = s3_client(emulator.root, *keys["admin"])
    writer.put_object(Bucket=BUCKET, Key="k", Body=b"v")
    assert reader.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"v"
    for call in (
        lambda: reader.put_object(Bucket=BUCKET, Key="k", Body=b"w"),
        lambda: reader.delete_object(Bucket=BUCKET, Key="k"),
        lambda: reader.delete_bucket_lifecycle(Bucket=BUCKET),
    ):
        with pytest.raises(ClientError) as denied:
            call()
        assert error(denied) == (403, "AccessDenied")

    emulator_bucket(emulator, "other-bucket", permissions=None)
    with pytest.raises(ClientError) as elsewhere:
        writer.get_object(Bucket="other-bucket", Key="k")
    assert error(elsewhere) == (403, "AccessDenied")
    admin.put_object(Bucket="other-bucket", Key="k", Body=b"x")  # an unlimited key: any bucket
    # The Linode API sees what S3 stored.
    rows = {b["label"]: b for b in emulator.resources("buckets")}
    assert (rows[BUCKET]["objects"], rows[BUCKET]["size"]) == (1, 1)
    assert rows["other-bucket"]["objects"] == 1


@pytest.mark.parametrize(
    ("rules", "code", "fragment"),
    [
        ([{"ID": "x"}, {"ID": "x"}], "InvalidArgument", "Rule ID must be unique"),
        ([{"ID": "x" * 256}], "InvalidArgument", "255"),
        ([{"Expiration": {"Days": 0}}], "InvalidArgument", "'Days' for Expiration"),
        (
            [{"NoncurrentVersionExpiration": {"NoncurrentDays": 0}}],
            "InvalidArgument",
            "'NoncurrentDays'",
        ),
        (
            [{"AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 0}}],
            "InvalidArgument",
            "'DaysAfterInitiation'",
        ),
        ([{"Expiration": None}], "InvalidRequest", "At least one action"),
        ([{"Status": "Maybe"}], "MalformedXML", "not well-formed"),
    ],
)
def test_lifecycle_rules_are_validated_as_s3_does(
    emulator: LinodeEmulator,
    keys: dict[str, tuple[str, str]],
    rules: list[dict[str, Any]],
    code: str,
    fragment: str,
) -> None:
    writer = s3_client(emulator.root, *keys["writer"])
    base = {"ID": "r", "Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": 1}}
    built = [{k: v for k, v in {**base, **rule}.items() if v is not None} for rule in rules]
    with pytest.raises(ClientError) as bad:
        writer.put_bucket_lifecycle_configuration(
            Bucket=BUCKET, LifecycleConfiguration={"Rules": built}
        )
    assert error(bad) == (400, code)
    assert fragment in bad.value.response["Error"]["Message"]
    assert emulator.lifecycle_xml(BUCKET) is None


def test_a_rule_without_id_gets_one(
    emulator: LinodeEmulator, keys: dict[str, tuple[str, str]]
) -> None:
    writer = s3_client(emulator.root, *keys["writer"])
    rule = {"Filter": {"Prefix": "x/"}, "Status": "Enabled", "Expiration": {"Days": 3}}
    writer.put_bucket_lifecycle_configuration(
        Bucket=BUCKET, LifecycleConfiguration={"Rules": [rule]}
    )
    (got,) = writer.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert re.fullmatch(r"[0-9a-f]{32}", got["ID"])
    assert emulator.lifecycle_xml(BUCKET) is not None
    assert 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"' in str(emulator.lifecycle_xml(BUCKET))


LIFECYCLE = (
    b'<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Rule><ID>r</ID>'
    b"<Filter><Prefix></Prefix></Filter><Status>Enabled</Status><Expiration><Days>1</Days>"
    b"</Expiration></Rule></LifecycleConfiguration>"
)


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (LIFECYCLE, {}, (400, "InvalidRequest")),  # S3 needs Content-MD5 or a checksum
        (LIFECYCLE, {"Content-MD5": b64(b"0" * 16)}, (400, "BadDigest")),
        (LIFECYCLE, {"Content-MD5": "not base64!"}, (400, "InvalidDigest")),
        (LIFECYCLE, {"x-amz-checksum-crc32": b64(b"\0\0\0\0")}, (400, "BadDigest")),
        (LIFECYCLE, {"x-amz-checksum-sha256": b64(hashlib.sha256(LIFECYCLE).digest())}, (200, "")),
        (
            LIFECYCLE,
            {"Content-MD5": b64(hashlib.md5(LIFECYCLE).digest())},  # noqa: S324 -- S3's digest
            (200, ""),
        ),
        (
            LIFECYCLE,
            {"x-amz-checksum-crc32": b64(zlib.crc32(LIFECYCLE).to_bytes(4, "big"))},
            (200, ""),
        ),
        (b"<LifecycleConfiguration><Rule>", {"Content-MD5": "x"}, (400, "InvalidDigest")),
    ],
)
def test_lifecycle_digests(
    emulator: LinodeEmulator,
    keys: dict[str, tuple[str, str]],
    body: bytes,
    headers: dict[str, str],
    expected: tuple[int, str],
) -> None:
    response = signed(
        emulator, "PUT", f"/{BUCKET}?lifecycle", keys["writer"], body=body, headers=headers
    )
    assert s3_error(response) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"<LifecycleConfiguration><Rule>",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><LifecycleConfiguration/>',
        b"<Something><Rule/></Something>",
        b"<LifecycleConfiguration/>",
        b"<LifecycleConfiguration><Rule><ID>r</ID><Status>Enabled</Status><Prefix/>"
        b"<Filter/><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>",
    ],
)
def test_hostile_lifecycle_xml_is_malformed(
    emulator: LinodeEmulator, keys: dict[str, tuple[str, str]], body: bytes
) -> None:
    checksum = {"x-amz-checksum-sha256": b64(hashlib.sha256(body).digest())}
    response = signed(
        emulator, "PUT", f"/{BUCKET}?lifecycle", keys["writer"], body=body, headers=checksum
    )
    assert s3_error(response) == (400, "MalformedXML")


# Check values of the CRC variants S3 offers, for b"123456789" (the standard check input).
@pytest.mark.parametrize(
    ("algorithm", "check"),
    [("crc32c", 0xE3069283), ("crc64nvme", 0xAE8B14860A799888)],
)
def test_crc_checksums_are_verified(
    emulator: LinodeEmulator, keys: dict[str, tuple[str, str]], algorithm: str, check: int
) -> None:
    body = b"123456789"
    size = 8 if algorithm == "crc64nvme" else 4
    good = {f"x-amz-checksum-{algorithm}": b64(check.to_bytes(size, "big"))}
    bad = {f"x-amz-checksum-{algorithm}": b64((check ^ 1).to_bytes(size, "big"))}
    ok = signed(emulator, "PUT", f"/{BUCKET}/digits", keys["writer"], body=body, headers=good)
    assert ok.status_code == 200
    assert ok.headers[f"x-amz-checksum-{algorithm}"] == good[f"x-amz-checksum-{algorithm}"]
    wrong = signed(emulator, "PUT", f"/{BUCKET}/digits", keys["writer"], body=body, headers=bad)
    assert s3_error(wrong) == (400, "BadDigest")


@pytest.mark.parametrize(
    "case",
    [
        ("GET", f"/{BUCKET}?list-type=2&continuation-token=garbage", {}, (400, "InvalidArgument")),
        ("GET", f"/{BUCKET}?list-type=2&max-keys=lots", {}, (400, "InvalidArgument")),
        ("GET", f"/{BUCKET}?list-type=2&encoding-type=base64", {}, (400, "InvalidArgument")),
        ("GET", f"/{BUCKET}", {}, (501, "NotImplemented")),  # ListObjects v1
        ("GET", "/", {}, (501, "NotImplemented")),  # ListBuckets
        ("GET", f"/{BUCKET}?acl", {}, (501, "NotImplemented")),
        ("GET", f"/{BUCKET}/k?tagging", {}, (501, "NotImplemented")),
        ("PUT", f"/{BUCKET}/k", {"x-amz-copy-source": f"/{BUCKET}/j"}, (501, "NotImplemented")),
        ("PUT", f"/{BUCKET}/k", {"If-None-Match": '"abc"'}, (501, "NotImplemented")),
        ("POST", f"/{BUCKET}/k?uploads", {}, (501, "NotImplemented")),
    ],
)
def test_what_the_emulator_does_not_serve_says_so(
    emulator: LinodeEmulator,
    keys: dict[str, tuple[str, str]],
    case: tuple[str, str, dict[str, str], tuple[int, str]],
) -> None:
    method, path, headers, expected = case
    response = signed(emulator, method, path, keys["admin"], headers=headers)
    assert s3_error(response) == expected
    if expected[0] == 501:
        assert "not implemented by the emulator" in response.text


def test_head_is_s3_only(emulator: LinodeEmulator, keys: dict[str, tuple[str, str]]) -> None:
    api = httpx.head(f"{emulator.url}/regions", timeout=5)
    assert (api.status_code, api.headers["Allow"]) == (405, "GET, POST, PUT, DELETE")
    missing = signed(emulator, "HEAD", f"/{BUCKET}/nothing", keys["writer"])
    assert (missing.status_code, missing.content) == (404, b"")
    bucket = signed(emulator, "HEAD", f"/{BUCKET}", keys["writer"])
    assert bucket.headers["x-amz-bucket-region"] == "us-ord"


def test_the_admin_api_serves_the_s3_log(
    emulator: LinodeEmulator, keys: dict[str, tuple[str, str]]
) -> None:
    s3_client(emulator.root, *keys["writer"]).put_object(Bucket=BUCKET, Key="a b", Body=b"")
    log = httpx.get(f"{emulator.root}/_emulator/s3-requests", timeout=5).json()["data"]
    assert log[-1] == {"method": "PUT", "path": f"/{BUCKET}/a b", "status": 200, "fault": None}
    emulator.reset_requests()
    assert emulator.s3_requests == []


@pytest.mark.parametrize(
    "case",
    [
        ("{day}/us-ord/s3", "host;x-amz-date", {}, (400, "InvalidRequest")),  # no content hash
        (
            "{day}/us-ord/s3",
            "x-amz-date",
            {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
            (400, "AuthorizationHeaderMalformed"),
        ),
        (
            "{day}/us-ord/ec2",
            "host",
            {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
            (400, "AuthorizationHeaderMalformed"),
        ),
        (
            "20000101/us-ord/s3",
            "host",
            {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
            (400, "AuthorizationHeaderMalformed"),
        ),
    ],
)
def test_malformed_credentials(
    emulator: LinodeEmulator,
    keys: dict[str, tuple[str, str]],
    case: tuple[str, str, dict[str, str], tuple[int, str]],
) -> None:
    scope, signed_headers, headers, expected = case
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={keys['writer'][0]}/{scope.format(day=now[:8])}/"
        f"aws4_request, SignedHeaders={signed_headers}, Signature={'0' * 64}"
    )
    response = httpx.get(
        f"{emulator.root}/{BUCKET}?list-type=2",
        headers={"Authorization": authorization, "x-amz-date": now, **headers},
        timeout=5,
    )
    assert s3_error(response) == expected


def test_a_request_without_a_date_is_refused(
    emulator: LinodeEmulator, keys: dict[str, tuple[str, str]]
) -> None:
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={keys['writer'][0]}/20260101/us-ord/s3/aws4_request, "
        f"SignedHeaders=host, Signature={'0' * 64}"
    )
    response = httpx.get(
        f"{emulator.root}/{BUCKET}?list-type=2", headers={"Authorization": authorization}, timeout=5
    )
    assert s3_error(response) == (403, "AccessDenied")
    assert "x-amz-date" in response.text
