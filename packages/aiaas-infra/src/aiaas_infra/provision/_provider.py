"""The Linode provider: reads and changes resources through the official ``linode_api4`` SDK.

Retries are ours, not the SDK's: the SDK's own retry (which re-sends a POST after a 429/502)
is switched off, and every call goes through :class:`RetryPolicy` with an injectable clock,
honouring ``Retry-After``. A create whose answer was lost (connection dropped, timeout, 5xx) is
never blindly re-sent: the provider first looks the resource up by its ownership tag and label
and adopts it when found, so a lost response cannot leave a duplicate behind.

:class:`LinodeProvider` is built in layers, one module each: the API plumbing
(:mod:`._provider_api`: client, retries, error translation), reading (:mod:`._provider_read`:
inventory and lookups) and changing (:mod:`._provider_write`: create, update, delete,
readiness, S3 lifecycle rules); this module adds the account facts preflight reads.
"""

# linode_api4, boto3 and botocore ship no type information.

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from aiaas_infra._errors import LinodeApiError
from aiaas_infra.provision._provider_api import DEFAULT_API_URL, JSON, _raw
from aiaas_infra.provision._provider_write import _Writer

__all__ = [
    "LinodeProvider",
]


class LinodeProvider(_Writer):
    """Reads and changes the platform's Linode resources.

    ``token`` comes from ``LINODE_TOKEN`` and ``base_url`` from ``LINODE_API_URL`` with
    :meth:`from_env`. ``clock`` and ``retry`` are injectable so tests and benchmarks do not
    really wait; ``poll_interval`` is how often readiness is checked. S3 calls (bucket lifecycle
    rules) go to :meth:`s3_endpoint_url`.
    """

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> LinodeProvider:
        """Build from ``LINODE_TOKEN``, ``LINODE_API_URL`` and, for S3 calls,
        ``LINODE_OBJ_ENDPOINT`` (default: see :meth:`s3_endpoint_url`),
        ``LINODE_OBJ_ACCESS_KEY`` and ``LINODE_OBJ_SECRET_KEY``;
        ``AIAAS_INFRA_POLL_INTERVAL`` and ``AIAAS_INFRA_REQUEST_TIMEOUT`` (seconds) tune waits."""
        from aiaas_core import Secret  # noqa: PLC0415

        env = os.environ if environ is None else environ
        creds = None
        if env.get("LINODE_OBJ_ACCESS_KEY") and env.get("LINODE_OBJ_SECRET_KEY"):
            creds = (env["LINODE_OBJ_ACCESS_KEY"], Secret(env["LINODE_OBJ_SECRET_KEY"]))
        kwargs.setdefault("base_url", env.get("LINODE_API_URL") or DEFAULT_API_URL)
        kwargs.setdefault("obj_endpoint", env.get("LINODE_OBJ_ENDPOINT") or None)
        kwargs.setdefault("obj_credentials", creds)
        for name, key in (
            ("AIAAS_INFRA_POLL_INTERVAL", "poll_interval"),
            ("AIAAS_INFRA_REQUEST_TIMEOUT", "request_timeout"),
        ):
            if env.get(name):
                try:
                    kwargs.setdefault(key, float(env[name]))
                except ValueError:
                    raise LinodeApiError(
                        f"{name} must be a number of seconds, got {env[name]!r}"
                    ) from None
        return cls(Secret(env.get("LINODE_TOKEN", "")), **kwargs)

    # -- preflight facts ------------------------------------------------------------------------

    def region(self, region: str) -> JSON | None:
        found: JSON | None = self._call(
            "get region", lambda: self.client.get(f"/regions/{region}"), missing_ok=True
        )
        return found

    def account_availability(self, region: str) -> JSON | None:
        found: JSON | None = self._call(
            "get account availability",
            lambda: self.client.get(f"/account/availability/{region}"),
            missing_ok=True,
        )
        return found

    def plan_availability(self, region: str) -> list[JSON]:
        raw = self._call(
            "get region availability",
            lambda: self.client.get(f"/regions/{region}/availability"),
            missing_ok=True,
        )
        if raw is None:
            return []
        return list(raw) if isinstance(raw, list) else list(raw.get("data", []))

    def linode_types(self) -> dict[str, JSON]:
        rows = self.list_all("list Linode types", self.client.linode.types)
        return {_raw(t)["id"]: _raw(t) for t in rows}

    def kubernetes_versions(self) -> list[str]:
        return [_raw(v)["id"] for v in self.list_all("list LKE versions", self.client.lke.versions)]

    def database_engines(self) -> list[str]:
        return [
            _raw(e)["id"]
            for e in self.list_all("list database engines", self.client.database.engines)
        ]

    def database_types(self) -> list[str]:
        return [
            _raw(t)["id"] for t in self.list_all("list database types", self.client.database.types)
        ]

    def bucket_quota(self, region: str) -> tuple[int, int] | None:
        """(limit, used) of the bucket quota of ``region``'s endpoint, when Linode reports one."""
        c = self.client
        rows = self._call("list object storage quotas", lambda: c.get("/object-storage/quotas"))
        for row in rows.get("data", []):
            endpoint = str(row.get("s3_endpoint", ""))
            if row.get("resource_metric") == "bucket" and endpoint.startswith(f"{region}-"):
                usage = self._call(
                    "get quota usage",
                    functools.partial(c.get, f"/object-storage/quotas/{row['quota_id']}/usage"),
                )
                return int(usage.get("quota_limit", row["quota_limit"])), int(
                    usage.get("usage") or 0
                )
        return None

    def key_quota(self) -> tuple[int, int] | None:
        c = self.client
        usage = self._call(
            "get key quota usage",
            lambda: c.get("/object-storage/global-quotas/obj-access-keys-per-account/usage"),
            missing_ok=True,
        )
        if not usage:
            return None
        return int(usage["quota_limit"]), int(usage.get("usage") or 0)
