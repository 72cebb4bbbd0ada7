"""Test helpers: the Linode API emulator, a fast clock, a client for a remote emulator, a fake
Kubernetes API server (:class:`FakeKubeApiServer`) and sealed-secrets key pairs.

::

    from aiaas_infra import LinodeProvider, load_spec, example_spec_path, plan, apply
    from aiaas_infra.testing import LinodeEmulator, emulator_provider

    with LinodeEmulator() as emulator:
        provider = emulator_provider(emulator)
        result = apply(plan(load_spec(example_spec_path()), provider), provider)

``aiaas-infra emulator --port 8080`` runs the same emulator as a process; a test drives its
faults and reads its request log through :class:`RemoteEmulator`.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs

from aiaas_infra._retry import RetryPolicy
from aiaas_infra.testing._kube._model import SYSTEM_NAMESPACES, ApiCall
from aiaas_infra.testing._kube._server import FakeKubeApiServer
from aiaas_infra.testing._linode._emulator import LinodeEmulator
from aiaas_infra.testing._linode._model import AccountLimits, Fault, RegionConfig, RequestRecord

if TYPE_CHECKING:
    from aiaas_infra.provision._provider import LinodeProvider

__all__ = [
    "AccountLimits",
    "ApiCall",
    "FakeKubeApiServer",
    "FastClock",
    "Fault",
    "LinodeEmulator",
    "RegionConfig",
    "RemoteEmulator",
    "RequestRecord",
    "SYSTEM_NAMESPACES",
    "SealingKeypair",
    "emulator_provider",
    "sealing_keypair",
]


class FastClock:
    """A clock whose waits are compressed: ``sleep(s)`` really sleeps ``min(s * scale,
    max_real)`` and advances ``monotonic`` by the full ``s``. ``sleeps`` records every wait, so a
    test can check that ``Retry-After`` was honoured without waiting for it."""

    def __init__(self, *, scale: float = 0.05, max_real: float = 0.005) -> None:
        self.scale = scale
        self.max_real = max_real
        self._offset = 0.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return time.monotonic() + self._offset

    def sleep(self, seconds: float) -> None:
        real = min(max(seconds, 0.0) * self.scale, self.max_real) if seconds > 0 else 0.0
        with self._lock:
            self.sleeps.append(seconds)
        if real:
            time.sleep(real)
        with self._lock:
            self._offset += max(seconds - real, 0.0)


def emulator_provider(
    emulator: LinodeEmulator,
    *,
    clock: FastClock | None = None,
    poll_interval: float = 0.02,
    request_timeout: float = 5.0,
    retry: RetryPolicy | None = None,
    **kwargs: Any,
) -> LinodeProvider:
    """A :class:`~aiaas_infra.LinodeProvider` for ``emulator``, with waits that do not
    really wait (a :class:`FastClock`) and quick readiness polls."""
    from aiaas_infra.provision._provider import LinodeProvider  # noqa: PLC0415

    return LinodeProvider(
        emulator.token or "emulator-token",
        base_url=emulator.url,
        obj_endpoint=emulator.root,
        clock=clock if clock is not None else FastClock(),
        poll_interval=poll_interval,
        request_timeout=request_timeout,
        retry=retry if retry is not None else RetryPolicy(base_delay=0.5, max_delay=5.0),
        **kwargs,
    )


class RemoteEmulator:
    """Drive an emulator running in another process (``aiaas-infra emulator``) over HTTP."""

    def __init__(self, root: str, *, timeout: float = 10.0) -> None:
        import httpx  # noqa: PLC0415

        self.root = root.rstrip("/")
        self._http = httpx.Client(base_url=f"{self.root}/_emulator", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inject(self, fault: Fault) -> None:
        import attrs  # noqa: PLC0415

        self._http.post("/faults", json=attrs.asdict(fault)).raise_for_status()

    def clear_faults(self) -> None:
        self._http.delete("/faults").raise_for_status()

    def requests(self) -> list[RequestRecord]:
        response = self._http.get("/requests")
        response.raise_for_status()
        return [RequestRecord(**r) for r in response.json()["data"]]

    def s3_requests(self) -> list[RequestRecord]:
        """Requests the emulator's S3 endpoint received (see ``LinodeEmulator.s3_requests``)."""
        response = self._http.get("/s3-requests")
        response.raise_for_status()
        return [RequestRecord(**r) for r in response.json()["data"]]

    def reset_requests(self) -> None:
        """Forget the API and S3 request logs."""
        self._http.delete("/requests").raise_for_status()

    def resources(self, kind: str) -> list[dict[str, Any]]:
        response = self._http.get(f"/resources/{kind}")
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    def delete_out_of_band(self, kind: str, label: str) -> None:
        self._http.delete(f"/resources/{kind}/{label}").raise_for_status()


@attrs.frozen
class SealingKeypair:
    """A sealed-secrets controller key pair for tests: the PEM certificate ``kubeseal
    --fetch-cert`` would print and the PEM private key that opens what it seals."""

    cert_pem: bytes
    key_pem: bytes = attrs.field(repr=False)


def sealing_keypair(
    *,
    key_size: int = 2048,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> SealingKeypair:
    """Make a self-signed RSA sealing certificate like the controller's (``CN=sealed-secret``,
    valid for ten years from now unless told otherwise)."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    start = not_before if not_before is not None else dt.datetime.now(dt.UTC) - dt.timedelta(1)
    end = not_after if not_after is not None else start + dt.timedelta(days=3650)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "sealed-secret"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealed-secret"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    return SealingKeypair(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
