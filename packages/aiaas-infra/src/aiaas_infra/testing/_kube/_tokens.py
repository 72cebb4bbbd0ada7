"""ServiceAccount tokens of the fake Kubernetes API server: TokenRequest, TokenReview,
revocation."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid

from aiaas_infra.cluster._apply import (
    _BY_KIND,
)
from aiaas_infra.testing._kube._model import (
    _TOKEN_MIN_SECONDS,
    Obj,
    _cause,
    _invalid,
    _KubeBase,
    _not_found,
    _ts,
)

__all__: list[str] = []


class _TokenApi(_KubeBase):
    """ServiceAccount tokens of the fake Kubernetes API server: TokenRequest, TokenReview,"""

    # -- tokens -----------------------------------------------------------------------------

    def tokens(self) -> list[Obj]:
        """Every token issued: namespace, serviceaccount, expirationTimestamp, valid."""
        with self._lock:
            return [
                {
                    **{k: v for k, v in t.items() if k != "token"},
                    "valid": self._token_user(t["token"]) is not None,
                }
                for t in self._issued
            ]

    def revoke_tokens(self, namespace: str, serviceaccount: str) -> int:
        """Revoke every token of a ServiceAccount; returns how many."""
        with self._lock:
            hits = [
                t
                for t in self._issued
                if t["namespace"] == namespace and t["serviceaccount"] == serviceaccount
            ]
            self._revoked.update(t["token"] for t in hits)
            return len(hits)

    def review_token(self, token: str) -> str | None:
        """The username a token authenticates as, or ``None`` (bad, expired, revoked, or its
        ServiceAccount was deleted)."""
        with self._lock:
            return self._token_user(token)

    def _sign(self, payload: Obj) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64(json.dumps(payload, sort_keys=True).encode())
        sig = hmac.new(self._signing_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(sig)}"

    def _token_user(self, token: str) -> str | None:
        if token == self.admin_token:
            return "aiaas-admin"
        parts = token.split(".")
        if len(parts) != 3 or token in self._revoked:
            return None
        expected = self._sign_check(parts[0], parts[1])
        if not hmac.compare_digest(expected, parts[2]):
            return None
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        if payload["exp"] <= self.clock().timestamp():
            return None
        sa = payload["kubernetes.io"]["serviceaccount"]
        ns = payload["kubernetes.io"]["namespace"]
        live = self._objects.get((_BY_KIND[("v1", "ServiceAccount")], ns, sa["name"]))
        if live is None or live.obj["metadata"]["uid"] != sa["uid"]:
            return None
        return str(payload["sub"])

    def _sign_check(self, head: str, body: str) -> str:
        sig = hmac.new(self._signing_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(sig).rstrip(b"=").decode()

    def _token_request(self, namespace: str, name: str, body: Obj) -> Obj:
        sa = self._objects.get((_BY_KIND[("v1", "ServiceAccount")], namespace, name))
        if sa is None:
            raise _not_found("serviceaccounts", name)
        spec = dict(body.get("spec") or {})
        seconds = spec.get("expirationSeconds", 3600)
        if not isinstance(seconds, int) or seconds < _TOKEN_MIN_SECONDS:
            raise _invalid(
                "TokenRequest",
                name,
                [
                    _cause(
                        "spec.expirationSeconds",
                        f"may not specify a duration less than {_TOKEN_MIN_SECONDS} seconds",
                    )
                ],
            )
        now = self.clock()
        expires = now + dt.timedelta(seconds=seconds)
        audiences = list(spec.get("audiences") or ["https://kubernetes.default.svc"])
        token = self._sign(
            {
                "iss": "https://kubernetes.default.svc",
                "sub": f"system:serviceaccount:{namespace}:{name}",
                "aud": audiences,
                "iat": int(now.timestamp()),
                "exp": int(expires.timestamp()),
                "jti": uuid.uuid4().hex,
                "kubernetes.io": {
                    "namespace": namespace,
                    "serviceaccount": {"name": name, "uid": sa.obj["metadata"]["uid"]},
                },
            }
        )
        self._issued.append(
            {
                "namespace": namespace,
                "serviceaccount": name,
                "expirationTimestamp": _ts(expires),
                "token": token,
            }
        )
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": None},
            "status": {"token": token, "expirationTimestamp": _ts(expires)},
        }
