"""S3 endpoints for tests: moto's S3 server (the reference) and the emulator's own S3 endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from linode_api4 import LinodeClient

from aiaas_infra.testing import LinodeEmulator

MOTO_KEY = ("test", "test")


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def wait_for_port(port: int, proc: subprocess.Popen[Any], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not start on port {port}") from None
            time.sleep(0.05)


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server as a real local HTTP server; yields its URL."""
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": MOTO_KEY[0], "AWS_SECRET_ACCESS_KEY": MOTO_KEY[1]}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for_port(port, proc, "moto server")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def s3_client(endpoint: str, access_key: str, secret_key: str, region: str = "us-ord") -> Any:
    """The real boto3 S3 client, path style, as aiaas-infra builds it."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def emulator_bucket(
    emulator: LinodeEmulator | str,
    bucket: str,
    *,
    region: str = "us-ord",
    permissions: str | None = "read_write",
    token: str = "emulator-token",  # noqa: S107 -- the emulator accepts any token
) -> tuple[str, str]:
    """Make ``bucket`` through the emulator's Linode API (``emulator`` or its API URL) and an
    access key for it (``permissions=None``: an unlimited key); returns (access, secret)."""
    url = emulator.url if isinstance(emulator, LinodeEmulator) else emulator
    client = LinodeClient(token, base_url=url, retry=False)
    client.object_storage.bucket_create(region, bucket)
    access = (
        None
        if permissions is None
        else [{"region": region, "bucket_name": bucket, "permissions": permissions}]
    )
    key = client.object_storage.keys_create(f"key-{bucket}-{permissions}", bucket_access=access)
    return key.access_key, key._raw_json["secret_key"]
