"""The published contracts aiaas-core implements, shipped as package data.

``contracts/error-response.schema.json`` is the error body :func:`aiaas_core.error_body` renders
(JSON Schema draft 7). Services built on aiaas-core validate their error responses against it in
their own tests::

    import jsonschema
    from aiaas_core import error_response_schema

    jsonschema.Draft7Validator(error_response_schema()).validate(response.json())
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

__all__ = ["error_response_schema"]

_ERROR_SCHEMA = ("contracts", "error-response.schema.json")


@functools.cache
def _load(parts: tuple[str, ...]) -> dict[str, Any]:
    text = resources.files("aiaas_core").joinpath(*parts).read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


def error_response_schema() -> dict[str, Any]:
    """The shared error body's JSON Schema (draft 7), as shipped with this version.

    The file is read once per process; each call returns a fresh deep copy, so a caller may
    change what it gets without affecting later calls.
    """
    return copy.deepcopy(_load(_ERROR_SCHEMA))
