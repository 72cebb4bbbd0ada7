"""The installed aiaas-serving version, for the private modules.

The package's ``__version__`` lives in its ``__init__`` (where the release tool writes it); a
private module must not import the package it belongs to, so it reads the installed
distribution's version instead -- the same string, which ``tests/test_public_api.py`` checks.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

# Nothing public: the package exports ``__version__`` itself.
__all__: list[str] = []

#: What :func:`package_version` answers when the package runs from a source tree it was never
#: installed from.
UNKNOWN_VERSION = "0+unknown"


@cache
def package_version() -> str:
    """The installed ``aiaas-serving`` distribution's version (looked up once)."""
    try:
        return version("aiaas-serving")
    except PackageNotFoundError:
        return UNKNOWN_VERSION
