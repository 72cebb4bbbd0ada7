"""The Linode API v4 emulator behind :class:`aiaas_infra.testing.LinodeEmulator`, by API area.

- ``_emulator``: :class:`LinodeEmulator` itself: lifecycle, configuration, faults, the request
  log, out-of-band changes, routing, the admin endpoints and rate limiting;
- ``_http``: the HTTP server and request handler (auth, faults, JSON framing);
- ``_model``: configuration (regions, plans, account limits), faults, request records, errors;
- ``_base``: what every API area shares: the list envelope and ``X-Filter``, body checks;
- ``_store``: the in-memory account state;
- ``_catalog``: regions, availability, Linode types, LKE versions;
- ``_lke``: LKE clusters, node pools, kubeconfigs;
- ``_network``: firewalls, VPCs and subnets;
- ``_objstore``: Object Storage buckets, keys and quotas;
- ``_databases``: managed PostgreSQL databases;
- ``_s3``: the S3 endpoint (bucket lifecycle, objects, ListObjectsV2).

Nothing here is public: :mod:`aiaas_infra.testing` exports what tests use.
"""
