"""inference-service's version (what ``--version`` prints and the telemetry reports)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
