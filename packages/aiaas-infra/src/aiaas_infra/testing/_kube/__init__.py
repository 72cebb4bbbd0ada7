"""The fake Kubernetes API server behind :class:`aiaas_infra.testing.FakeKubeApiServer`.

- ``_server``: :class:`FakeKubeApiServer` itself: lifecycle, kubeconfigs, inspection for tests,
  request dispatch;
- ``_model``: stored objects, calls, ``Status`` errors, field sets for server-side apply,
  validation (admission), label and field selectors;
- ``_storage``: create, update, server-side apply, delete and list of stored objects;
- ``_tokens``: ServiceAccount tokens (TokenRequest, TokenReview, revocation);
- ``_discovery``: API discovery (plain and aggregated) and OpenAPI v2/v3;
- ``_transport``: the HTTP(S) server, TLS material and request-body framing.

Nothing here is public: :mod:`aiaas_infra.testing` exports what tests use.
"""
