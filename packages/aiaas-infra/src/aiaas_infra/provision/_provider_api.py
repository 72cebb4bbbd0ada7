"""The Linode API plumbing the provider stands on: the API and S3 endpoints, the inventory
and scope types, the per-thread ``linode_api4`` client with counted calls, retries and error
translation.

Retries are ours, not the SDK's (see :mod:`aiaas_infra.provision._provider`).
"""

# linode_api4, boto3 and botocore ship no type information.

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

import attrs

from aiaas_infra._errors import AccountLimitError, LinodeApiError
from aiaas_infra._retry import Clock, RetryPolicy, SystemClock, parse_retry_after
from aiaas_infra.provision._resources import LiveResource

if TYPE_CHECKING:
    from aiaas_core import Secret

__all__ = [
    "DEFAULT_API_URL",
    "Inventory",
    "Scope",
]

DEFAULT_API_URL: Final = "https://api.linode.com/v4"


def api_s3_endpoint(api_url: str) -> str | None:
    """The S3 endpoint a Linode API URL implies: ``None`` for Linode's own API (``*.linode.com``,
    where each bucket's regional endpoint, ``https://<cluster>.linodeobjects.com``, serves S3);
    for any other API server -- the emulator, a test double -- that server's root URL, which
    serves the S3 API beside ``/v4`` (``http://127.0.0.1:8080/v4`` -> ``http://127.0.0.1:8080``).
    """
    parts = urlsplit(api_url)
    host = (parts.hostname or "").lower()
    if not parts.scheme or not host or host == "linode.com" or host.endswith(".linode.com"):
        return None
    return f"{parts.scheme}://{parts.netloc}"


_T = TypeVar("_T")
JSON = dict[str, Any]


def fingerprint(value: str) -> str:
    """What state keeps instead of a secret: a short SHA-256 digest."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


@attrs.frozen
class Scope:
    """Which live resources count as this platform's.

    Taggable kinds (clusters, firewalls) are found by ``owner_tag``; the others by label
    (``labels``: the labels the spec declares plus those recorded in state).
    """

    owner_tag: str
    labels: Mapping[str, frozenset[str]] = attrs.field(factory=dict)

    def wants(self, kind: str) -> bool:
        return bool(self.labels.get(kind))

    def has(self, kind: str, label: str) -> bool:
        return label in self.labels.get(kind, frozenset())


@attrs.frozen
class Inventory:
    """Live resources in scope, by address; ``duplicates`` are extra copies of a label."""

    resources: Mapping[str, LiveResource]
    duplicates: tuple[LiveResource, ...] = ()


@attrs.frozen
class CreateOutcome:
    """What a create produced: the resource (and children made with it) and its secrets."""

    resources: tuple[LiveResource, ...]
    secrets: Mapping[str, Secret] = attrs.field(factory=dict)
    adopted: bool = False
    uncertain: bool = False


def _raw(obj: Any) -> JSON:
    raw = getattr(obj, "_raw_json", None)
    return dict(raw) if isinstance(raw, dict) else {}


def _rule_json(rule: Mapping[str, Any]) -> JSON:
    out: JSON = {
        "label": rule["label"],
        "action": rule["action"],
        "protocol": rule["protocol"],
        "addresses": {k: list(v) for k, v in rule["addresses"].items() if v},
    }
    if rule.get("ports"):
        out["ports"] = rule["ports"]
    if rule.get("description"):
        out["description"] = rule["description"]
    return out


def _rule_attrs(rule: Mapping[str, Any]) -> JSON:
    addresses = rule.get("addresses") or {}
    return {
        "label": rule.get("label", ""),
        "action": rule.get("action"),
        "protocol": rule.get("protocol"),
        "ports": rule.get("ports") or None,
        "addresses": {
            "ipv4": list(addresses.get("ipv4") or []),
            "ipv6": list(addresses.get("ipv6") or []),
        },
        "description": rule.get("description") or "",
    }


def _rules_json(attrs_: Mapping[str, Any]) -> JSON:
    return {
        "inbound": [_rule_json(r) for r in attrs_["inbound"]],
        "outbound": [_rule_json(r) for r in attrs_["outbound"]],
        "inbound_policy": attrs_["inbound_policy"],
        "outbound_policy": attrs_["outbound_policy"],
    }


def _engine_major(engine: str, version: str) -> str:
    return f"{engine}/{version.split('.', maxsplit=1)[0]}"


def _adapter(timeout: float) -> Any:
    from requests.adapters import HTTPAdapter  # noqa: PLC0415

    class TimeoutAdapter(HTTPAdapter):
        """No retries (ours are smarter) and a default timeout on every request."""

        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            return super().send(request, **kwargs)

    return TimeoutAdapter(max_retries=0, pool_connections=4, pool_maxsize=16)


class _LinodeClient:
    """The Linode API plumbing under :class:`~aiaas_infra.provision._provider.LinodeProvider`:
    its settings, one ``linode_api4`` client per thread, counted calls, retries (with the
    lost-answer probe of a create) and error translation."""

    def __init__(
        self,
        token: str | Secret,
        *,
        base_url: str = DEFAULT_API_URL,
        obj_endpoint: str | None = None,
        obj_credentials: tuple[str, Secret] | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        request_timeout: float = 30.0,
        poll_interval: float = 10.0,
        readiness_timeout: float = 1800.0,
        user_agent: str = "aiaas-infra",
    ) -> None:
        raw_token = token if isinstance(token, str) else token.get_secret_value()
        if not raw_token:
            from aiaas_core import ConfigError  # noqa: PLC0415

            raise ConfigError(
                "no Linode API token: set LINODE_TOKEN (a personal access token with read/write "
                "on LKE, Firewalls, VPCs, Object Storage and Databases)"
            )
        self._token = raw_token
        self.base_url = base_url.rstrip("/")
        self.obj_endpoint = obj_endpoint
        self.obj_credentials = obj_credentials
        self.retry = retry or RetryPolicy()
        self.clock: Clock = clock or SystemClock()
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self.readiness_timeout = readiness_timeout
        self.user_agent = user_agent
        self._local = threading.local()
        self._calls = 0
        self._calls_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LinodeProvider(base_url={self.base_url!r})"

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def calls(self) -> int:
        """HTTP requests sent to the Linode API so far (retries included)."""
        with self._calls_lock:
            return self._calls

    def _count(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        with self._calls_lock:
            self._calls += 1
        return response

    @property
    def client(self) -> Any:
        """This thread's ``linode_api4.LinodeClient`` (one per thread: requests sessions are not
        thread-safe)."""
        client = getattr(self._local, "client", None)
        if client is None:
            from linode_api4 import LinodeClient  # noqa: PLC0415

            client = LinodeClient(
                self._token, base_url=self.base_url, retry=False, user_agent=self.user_agent
            )
            adapter = _adapter(self.request_timeout)
            client.session.mount("http://", adapter)
            client.session.mount("https://", adapter)
            client.session.hooks["response"].append(self._count)
            self._local.client = client
        return client

    def _call(
        self,
        operation: str,
        func: Callable[[], _T],
        *,
        probe: Callable[[], _T | None] | None = None,
        missing_ok: bool = False,
    ) -> _T:
        """Run ``func`` with retries. For a create, ``probe`` looks for the resource before any
        retry (its answer may have been lost although it was made)."""
        import requests  # noqa: PLC0415
        from linode_api4 import ApiError  # noqa: PLC0415

        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                return func()
            except ApiError as exc:
                status = int(exc.status)
                if missing_ok and status == 404:
                    return None  # type: ignore[return-value]
                if probe is not None and attempt > 1 and status in (400, 409):
                    # "label must be unique": an earlier attempt landed after all.
                    found = probe()
                    if found is not None:
                        return found
                if status not in self.retry.statuses or attempt >= self.retry.max_attempts:
                    raise self._translate(operation, exc) from None
                response = getattr(exc, "response", None)
                headers = getattr(response, "headers", None) or {}
                retry_after = parse_retry_after(headers.get("Retry-After"))
                uncertain = status >= 500
            except (requests.ConnectionError, requests.Timeout) as exc:
                if probe is not None:
                    self._local.uncertain = True
                if attempt >= self.retry.max_attempts:
                    raise LinodeApiError(
                        f"{operation}: no answer from the Linode API after {attempt} attempts "
                        f"({type(exc).__name__})",
                        operation=operation,
                    ) from None
                uncertain = True
            # Wait first: a request that timed out may still land while we wait.
            self.clock.sleep(self.retry.delay(attempt, retry_after))
            if probe is not None and uncertain:
                self._local.uncertain = True
                found = probe()
                if found is not None:
                    return found

    @staticmethod
    def _translate(operation: str, exc: Any) -> LinodeApiError:
        reasons = []
        for err in (exc.json or {}).get("errors", []) if isinstance(exc.json, dict) else []:
            field = err.get("field")
            reasons.append(f"{field}: {err.get('reason')}" if field else str(err.get("reason")))
        text = "; ".join(reasons) or str(exc)
        cls = AccountLimitError if "Account Limit reached" in text else LinodeApiError
        hint = ""
        if exc.status == 401:
            hint = " (check LINODE_TOKEN)"
        elif exc.status == 403:
            hint = " (the token lacks a scope this needs)"
        return cls(
            f"{operation}: Linode answered {exc.status}: {text}{hint}",
            api_status=int(exc.status),
            reasons=reasons,
            operation=operation,
        )

    def list_all(self, operation: str, fetch: Callable[[], Any]) -> list[Any]:
        return self._call(operation, lambda: list(fetch()))

    def filter_by(self, spec: JSON) -> Any:
        from linode_api4.objects.filtering import Filter  # noqa: PLC0415

        return Filter(spec)
