"""The emulator's Object Storage API: buckets, access keys and quotas."""

from __future__ import annotations

import re
import secrets
from typing import Any

from aiaas_infra.testing._linode._base import _ApiBase
from aiaas_infra.testing._linode._model import (
    JSON,
    _bad,
    _limit,
    _not_found,
    _now,
    _public,
)

__all__: list[str] = []


class _ObjectStorageApi(_ApiBase):
    """The emulator's Object Storage API: buckets, access keys and quotas."""

    # -- Object Storage -------------------------------------------------------------------------

    def _list_buckets(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([_public(b) for b in self.store.buckets.values()], query, headers)

    def _list_buckets_in(self, *, region: str, query: Any, headers: Any, **_: Any) -> JSON:
        rows = [
            _public(b) for b in self.store.buckets.values() if region in (b["region"], b["cluster"])
        ]
        return self._page(rows, query, headers)

    def _create_bucket(self, *, body: Any, **_: Any) -> JSON:
        body = self._require(body, "label")
        region = body.get("region") or (body.get("cluster") or "").rsplit("-", 1)[0]
        label = body["label"]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", str(label)):
            raise _bad("Invalid bucket label", "label")
        self._check_region(region, "Object Storage")
        existing = self.store.bucket_by_label(label)
        if existing is not None:
            if existing["region"] == region:
                # Linode answers 200 with the bucket when you already own it.
                return _public(existing)
            raise _bad("A bucket with this label already exists", "label")
        in_region = [b for b in self.store.buckets.values() if b["region"] == region]
        if len(in_region) >= self.bucket_quota:
            raise _limit("Object Storage bucket")
        cluster = f"{region}-1"
        bucket: JSON = {
            "cluster": cluster,
            "region": region,
            "created": _now(),
            "hostname": f"{label}.{cluster}.linodeobjects.com",
            "label": label,
            "objects": 0,
            "size": 0,
            "endpoint_type": "E1",
            "s3_endpoint": f"{cluster}.linodeobjects.com",
        }
        self.store.buckets[f"{region}/{label}"] = bucket
        return _public(bucket)

    def _bucket(self, region: str, label: str) -> JSON:
        for bucket in self.store.buckets.values():
            if bucket["label"] == label and region in (bucket["region"], bucket["cluster"]):
                return bucket
        raise _not_found()

    def _get_bucket(self, *, region: str, label: str, **_: Any) -> JSON:
        return _public(self._bucket(region, label))

    def _delete_bucket(self, *, region: str, label: str, **_: Any) -> JSON:
        bucket = self._bucket(region, label)
        if bucket["objects"]:
            raise _bad("Bucket is not empty: delete its objects first")
        del self.store.buckets[f"{bucket['region']}/{label}"]
        self.store.lifecycle.pop(label, None)
        self.store.objects.pop(label, None)
        return {}

    def _key_json(self, key: JSON, *, secret: str | None = None) -> JSON:
        out = _public(key)
        out["secret_key"] = secret if secret is not None else "[REDACTED]"
        if not key["limited"]:
            out.pop("bucket_access", None)
        return out

    def _list_keys(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([self._key_json(k) for k in self.store.keys.values()], query, headers)

    def _create_key(self, *, body: Any, **_: Any) -> JSON:
        body = self._require(body, "label")
        access = body.get("bucket_access")
        grants: list[JSON] = []
        for i, grant in enumerate(access or []):
            if grant.get("permissions") not in ("read_only", "read_write"):
                raise _bad(
                    "permissions must be read_only or read_write", f"bucket_access[{i}].permissions"
                )
            region = grant.get("region")
            bucket = next(
                (
                    b
                    for b in self.store.buckets.values()
                    if b["label"] == grant.get("bucket_name") and b["region"] == region
                ),
                None,
            )
            if bucket is None:
                raise _bad("Bucket not found", f"bucket_access[{i}].bucket_name")
            grants.append(
                {
                    "cluster": bucket["cluster"],
                    "bucket_name": bucket["label"],
                    "permissions": grant["permissions"],
                    "region": bucket["region"],
                }
            )
        if len(self.store.keys) >= self.limits.keys:
            raise _limit("Object Storage key")
        kid = self.store.new_id()
        regions = sorted({g["region"] for g in grants}) or sorted(self._regions)
        key: JSON = {
            "id": kid,
            "label": body["label"],
            "access_key": "AK" + secrets.token_hex(9).upper(),
            "limited": bool(grants),
            "bucket_access": grants,
            "regions": [{"id": r, "s3_endpoint": f"{r}-1.linodeobjects.com"} for r in regions],
        }
        secret = secrets.token_urlsafe(30)
        self.store.keys[kid] = key
        self.store.secrets[kid] = secret
        return self._key_json(key, secret=secret)

    def _key(self, kid: str) -> JSON:
        return self._find(self.store.keys, kid)

    def _get_key(self, *, kid: str, **_: Any) -> JSON:
        return self._key_json(self._key(kid))

    def _update_key(self, *, kid: str, body: Any, **_: Any) -> JSON:
        key = self._key(kid)
        body = self._require(body)
        if "label" in body:
            key["label"] = body["label"]
        return self._key_json(key)

    def _delete_key(self, *, kid: str, **_: Any) -> JSON:
        key = self._key(kid)
        del self.store.keys[key["id"]]
        self.store.secrets.pop(key["id"], None)
        return {}

    def _quota_rows(self) -> list[JSON]:
        rows: list[JSON] = []
        for cfg in self._regions.values():
            if "Object Storage" not in cfg.capabilities:
                continue
            cluster = f"{cfg.id}-1"
            rows.append(
                {
                    "quota_id": f"obj-buckets-{cluster}",
                    "quota_name": "Object Storage Maximum Buckets",
                    "description": (
                        "Maximum number of buckets this customer is allowed to have on this "
                        "endpoint."
                    ),
                    "endpoint_type": "E1",
                    "s3_endpoint": f"{cluster}.linodeobjects.com",
                    "quota_limit": self.bucket_quota,
                    "resource_metric": "bucket",
                    "quota_type": "obj-buckets",
                    "has_usage": True,
                }
            )
        return rows

    def _list_quotas(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page(self._quota_rows(), query, headers)

    def _get_quota(self, *, qid: str, **_: Any) -> JSON:
        for row in self._quota_rows():
            if row["quota_id"] == qid:
                return row
        raise _not_found()

    def _quota_usage(self, *, qid: str, **_: Any) -> JSON:
        row = self._get_quota(qid=qid)
        region = row["s3_endpoint"].split(".")[0].rsplit("-", 1)[0]
        used = sum(1 for b in self.store.buckets.values() if b["region"] == region)
        return {"quota_limit": row["quota_limit"], "usage": used}

    def _global_rows(self) -> list[JSON]:
        return [
            {
                "quota_id": "obj-access-keys-per-account",
                "quota_type": "obj-access-keys",
                "quota_name": "Object Storage Access Keys per Account",
                "description": (
                    "Maximum number of access keys this customer is allowed to have on their "
                    "account."
                ),
                "resource_metric": "access_key",
                "quota_limit": self.limits.keys,
                "has_usage": True,
            }
        ]

    def _list_global_quotas(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page(self._global_rows(), query, headers)

    def _global_quota_usage(self, *, qid: str, **_: Any) -> JSON:
        if qid != "obj-access-keys-per-account":
            raise _not_found()
        return {"quota_limit": self.limits.keys, "usage": len(self.store.keys)}
