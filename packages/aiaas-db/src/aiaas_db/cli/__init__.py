"""The ``aiaas-db`` command line: one module per command group."""

from __future__ import annotations

from aiaas_db.cli._main import main
from aiaas_db.cli._rollup import rollup

__all__ = ["main", "rollup"]
