"""Checks on change sets and schemas: the migration linter and the schema documentation."""

from __future__ import annotations

from aiaas_db.quality._docs import (
    SchemaDocs,
    generate_docs,
    platform_docs,
)
from aiaas_db.quality._lint import LintReport, lint_catalog, lint_change_sets
from aiaas_db.quality._rules import LintRule, LintViolation, lint_classification

__all__ = [
    "LintReport",
    "LintRule",
    "LintViolation",
    "SchemaDocs",
    "generate_docs",
    "lint_catalog",
    "lint_change_sets",
    "lint_classification",
    "platform_docs",
]
