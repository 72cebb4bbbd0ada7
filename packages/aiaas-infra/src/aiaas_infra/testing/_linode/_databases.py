"""The emulator's managed databases API: PostgreSQL instances, engines, types, credentials."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any, Final

from aiaas_infra.testing._linode._base import _ApiBase
from aiaas_infra.testing._linode._model import (
    JSON,
    _bad,
    _limit,
    _now,
    _public,
)

__all__: list[str] = []

_DB_ENGINES: Final = ("postgresql/14", "postgresql/15", "postgresql/16", "mysql/8")
_DB_TYPES: Final = (
    "g6-nanode-1",
    "g6-standard-1",
    "g6-standard-2",
    "g6-dedicated-2",
    "g6-dedicated-4",
)

# The engine_config Linode returns for a PostgreSQL instance (defaults, same shape as the API).
_PG_ENGINE_CONFIG: Final[JSON] = {
    "pg": {
        "autovacuum_analyze_scale_factor": 0.1,
        "autovacuum_analyze_threshold": 50,
        "autovacuum_max_workers": 3,
        "autovacuum_naptime": 60,
        "autovacuum_vacuum_cost_delay": 2,
        "autovacuum_vacuum_cost_limit": 200,
        "autovacuum_vacuum_scale_factor": 0.2,
        "autovacuum_vacuum_threshold": 50,
        "bgwriter_delay": 200,
        "bgwriter_flush_after": 512,
        "bgwriter_lru_maxpages": 100,
        "bgwriter_lru_multiplier": 2.0,
        "deadlock_timeout": 1000,
        "default_toast_compression": "lz4",
        "idle_in_transaction_session_timeout": 0,
        "jit": True,
        "max_files_per_process": 1000,
        "max_locks_per_transaction": 64,
        "max_logical_replication_workers": 4,
        "max_parallel_workers": 8,
        "max_parallel_workers_per_gather": 2,
        "max_pred_locks_per_transaction": 64,
        "max_replication_slots": 20,
        "max_slot_wal_keep_size": -1,
        "max_stack_depth": 2097152,
        "max_standby_archive_delay": 30000,
        "max_standby_streaming_delay": 30000,
        "max_wal_senders": 20,
        "max_worker_processes": 8,
        "password_encryption": "scram-sha-256",
        "pg_partman_bgw.interval": 3600,
        "pg_partman_bgw.role": "akmadmin",
        "pg_stat_monitor.pgsm_enable_query_plan": False,
        "pg_stat_monitor.pgsm_max_buckets": 10,
        "pg_stat_statements.track": "top",
        "temp_file_limit": -1,
        "timezone": "UTC",
        "track_activity_query_size": 1024,
        "track_commit_timestamp": "off",
        "track_functions": "none",
        "track_io_timing": "off",
        "wal_sender_timeout": 60000,
        "wal_writer_delay": 200,
    },
    "pg_stat_monitor_enable": False,
    "pglookout": {"max_failover_replication_time_lag": 60},
    "shared_buffers_percentage": 25.0,
    "work_mem": 4,
}


class _DatabaseApi(_ApiBase):
    """The emulator's managed databases API."""

    # -- databases ------------------------------------------------------------------------------

    def _db_engines(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        rows = [
            {"engine": e.split("/")[0], "id": e, "version": e.split("/")[1]} for e in _DB_ENGINES
        ]
        return self._page(rows, query, headers)

    def _db_types(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        rows: list[JSON] = []
        for type_id in _DB_TYPES:
            plan = self.plan(type_id)
            if plan is None:  # pragma: no cover - the tables above agree
                continue
            price = {
                "price": {
                    "hourly": plan["price"]["hourly"] * 2,
                    "monthly": plan["price"]["monthly"] * 2,
                },
                "quantity": 1,
            }
            rows.append(
                {
                    "class": plan["class"],
                    "deprecated": False,
                    "disk": plan["disk"],
                    "engines": {"mysql": [price], "postgresql": [price]},
                    "id": type_id,
                    "label": f"DBaaS - {plan['label']}",
                    "memory": plan["memory"],
                    "vcpus": plan["vcpus"],
                }
            )
        return self._page(rows, query, headers)

    def _database(self, did: str | int) -> JSON:
        return self._find(self.store.databases, did)

    def _list_databases(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([_public(d) for d in self.store.databases.values()], query, headers)

    def _list_all_databases(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        rows = []
        for db in self.store.databases.values():
            row = {
                k: db[k]
                for k in (
                    "allow_list",
                    "cluster_size",
                    "created",
                    "encrypted",
                    "engine",
                    "hosts",
                    "id",
                    "label",
                    "region",
                    "status",
                    "type",
                    "updated",
                    "updates",
                    "version",
                    "private_network",
                )
            }
            row["instance_uri"] = f"/v4/databases/postgresql/instances/{db['id']}"
            rows.append(row)
        return self._page(rows, query, headers)

    def _private_network(self, value: Any) -> JSON | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _bad("private_network must be an object", "private_network")
        vpc_id, subnet_id = value.get("vpc_id"), value.get("subnet_id")
        subnet = self.store.subnets.get(subnet_id) if isinstance(subnet_id, int) else None
        if subnet is None or subnet["_vpc"] != vpc_id:
            raise _bad("Subnet not found in the VPC", "private_network.subnet_id")
        return {
            "vpc_id": vpc_id,
            "subnet_id": subnet_id,
            "public_access": bool(value.get("public_access", False)),
        }

    def _create_database(self, *, body: Any, **_: Any) -> JSON:
        body = self._require(body, "label", "region", "type", "engine")
        label = body["label"]
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{1,30}[A-Za-z0-9]", str(label)):
            raise _bad("Label must be 3-32 characters", "label")
        self._unique_label(
            self.store.databases.values(), label, "Label must be unique among your databases"
        )
        self._check_region(body["region"], "Managed Databases")
        if body["type"] not in _DB_TYPES:
            raise _bad(f"Invalid database type {body['type']!r}", "type")
        if body["engine"] not in _DB_ENGINES or not body["engine"].startswith("postgresql/"):
            raise _bad(f"Invalid engine {body['engine']!r}", "engine")
        size = body.get("cluster_size", 1)
        if size not in (1, 2, 3):
            raise _bad("cluster_size must be 1, 2 or 3", "cluster_size")
        network = self._private_network(body.get("private_network"))
        if len(self.store.databases) >= self.limits.databases:
            raise _limit("Managed Database")
        did = self.store.new_id()
        now = _now()
        db: JSON = {
            "allow_list": list(body.get("allow_list", [])),
            "cluster_size": size,
            "created": now,
            "encrypted": True,
            "engine": "postgresql",
            "hosts": {
                "primary": f"lin-{did}-pgsql-primary.servers.linodedb.net",
                "standby": f"lin-{did}-pgsql-primary-private.servers.linodedb.net",
            },
            "id": did,
            "label": label,
            "port": 5432,
            "region": body["region"],
            "replication_commit_type": "local",
            "replication_type": "asynch" if size > 1 else "none",
            "ssl_connection": True,
            "status": "provisioning",
            "type": body["type"],
            "updated": now,
            "updates": {
                "day_of_week": 1,
                "duration": 3,
                "frequency": "weekly",
                "hour_of_day": 0,
                "week_of_month": None,
            },
            "version": body["engine"].split("/")[1],
            "engine_config": json.loads(json.dumps(_PG_ENGINE_CONFIG)),
            "private_network": network,
        }
        self.store.databases[did] = db
        self.store.ready_at[("database", did)] = time.monotonic() + self.database_delay
        self.store.secrets[-did] = secrets.token_urlsafe(24)
        return _public(db)

    def _get_database(self, *, did: str, **_: Any) -> JSON:
        return _public(self._database(did))

    def _update_database(self, *, did: str, body: Any, **_: Any) -> JSON:
        db = self._database(did)
        body = self._require(body)
        if db["status"] != "active":
            raise _bad("The database is not active yet")
        if "type" in body:
            if body["type"] not in _DB_TYPES:
                raise _bad(f"Invalid database type {body['type']!r}", "type")
            db["type"] = body["type"]
        if "cluster_size" in body:
            if body["cluster_size"] < db["cluster_size"]:
                raise _bad("cluster_size cannot be decreased", "cluster_size")
            db["cluster_size"] = body["cluster_size"]
        if "allow_list" in body:
            db["allow_list"] = list(body["allow_list"])
        if "label" in body:
            db["label"] = body["label"]
        if "private_network" in body:
            db["private_network"] = self._private_network(body["private_network"])
        db["updated"] = _now()
        return _public(db)

    def _delete_database(self, *, did: str, **_: Any) -> JSON:
        db = self._database(did)
        del self.store.databases[db["id"]]
        self.store.secrets.pop(-db["id"], None)
        return {}

    def _db_credentials(self, *, did: str, **_: Any) -> JSON:
        db = self._database(did)
        return {"password": self.store.secrets[-db["id"]], "username": "akmadmin"}
