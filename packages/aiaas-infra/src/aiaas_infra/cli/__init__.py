"""The ``aiaas-infra`` command line: one module per command group."""

from __future__ import annotations

from aiaas_infra.cli._common import ExitCode
from aiaas_infra.cli._main import main

__all__ = ["ExitCode", "main"]
