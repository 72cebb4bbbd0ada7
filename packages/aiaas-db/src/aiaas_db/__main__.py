"""``python -m aiaas_db`` runs the ``aiaas-db`` command line."""

from __future__ import annotations

from aiaas_db.cli._main import main

if __name__ == "__main__":  # pragma: no cover - exercised through subprocess tests
    raise SystemExit(main())
