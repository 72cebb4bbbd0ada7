"""The rollup targets file (``rollup-targets.yml``): where rollups are stored.

Targets are named in a targets file (YAML; ``${VAR}`` / ``${VAR:-default}`` are read from the
environment)::

    version: 1
    default: postgres
    targets:
      default:   {dialect: postgres, dsn: "${AIAAS_DB_URL}"}
      warehouse: {dialect: duckdb, dsn: "${AIAAS_DB_URL}", path: "${ANALYTICS_DUCKDB:-a.duckdb}"}

The built-in file defines ``postgres`` and ``duckdb``. Only PostgreSQL and DuckDB are offered:
they are the dialects the test suite executes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Final

from aiaas_db.analytics._models import RollupConfigError, RollupTarget

__all__ = ["load_rollup_targets", "rollup_target"]

TARGETS_ENV: Final = "AIAAS_ROLLUP_TARGETS"
_ENV_REF: Final = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def _expand(value: object, env: Mapping[str, str], where: str) -> tuple[str | None, str | None]:
    """``value`` with ``${VAR}`` references expanded; (None, var) when a variable is unset."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        raise RollupConfigError(f"{where} must be a string")
    unset: list[str] = []
    names: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        names.append(name)
        if name in env and env[name] != "":
            return env[name]
        if m.group("default") is not None:
            return m.group("default")
        unset.append(name)
        return ""

    expanded = _ENV_REF.sub(sub, value)
    origin = names[0] if names else None
    return (None if unset else expanded), origin


def load_rollup_targets(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> tuple[dict[str, RollupTarget], str]:
    """The targets of a targets file (default: ``$AIAAS_ROLLUP_TARGETS`` or the built-in one).

    Returns ``(targets by name, default target name)``. Every problem is reported at once in
    a :class:`RollupConfigError`; values of environment variables never appear in messages.
    """
    import yaml  # noqa: PLC0415 -- only when targets are loaded

    env = os.environ if env is None else env
    chosen = path if path is not None else env.get(TARGETS_ENV) or None
    if chosen is None:
        text = resources.files("aiaas_db").joinpath("rollup-targets.yml").read_text("utf-8")
        origin = "built-in rollup-targets.yml"
    else:
        try:
            text = Path(chosen).read_text("utf-8")
        except OSError as exc:
            raise RollupConfigError(
                f"cannot read the rollup targets file {chosen}: {exc.strerror or exc}"
            ) from None
        origin = str(chosen)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RollupConfigError(f"{origin} is not valid YAML: {exc}") from None
    problems: list[str] = []
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise RollupConfigError(f"{origin}: expected a mapping with `version: 1` and `targets`")
    raw_targets = doc.get("targets")
    if not isinstance(raw_targets, dict) or not raw_targets:
        raise RollupConfigError(f"{origin}: `targets` must map names to targets")
    targets: dict[str, RollupTarget] = {}
    for name, spec in raw_targets.items():
        where = f"{origin}: target {name!r}"
        if not isinstance(spec, dict):
            problems.append(f"{where} must be a mapping")
            continue
        unknown = set(spec) - {"dialect", "dsn", "path"}
        if unknown:
            problems.append(f"{where}: unknown key(s) {sorted(unknown)}")
        try:
            dsn, dsn_origin = _expand(spec.get("dsn"), env, f"{where}: dsn")
            path_text, _ = _expand(spec.get("path"), env, f"{where}: path")
            dialect = spec.get("dialect")
            if dialect == "duckdb" and not spec.get("path"):
                problems.append(f"{where}: a duckdb target needs `path`")
            targets[str(name)] = RollupTarget(
                name=str(name),
                dialect=str(dialect),
                dsn=dsn,
                duckdb_path=Path(path_text) if path_text else None,
                dsn_origin=dsn_origin,
            )
        except RollupConfigError as exc:
            problems.append(f"{where}: {exc.message}")
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    default = doc.get("default", next(iter(raw_targets)))
    if default not in raw_targets:
        problems.append(f"{origin}: default target {default!r} is not defined")
    if problems:
        raise RollupConfigError(problems=problems)
    return targets, str(default)


def rollup_target(
    name: str | None = None,
    *,
    dsn: str | None = None,
    duckdb_path: str | os.PathLike[str] | None = None,
    targets_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> RollupTarget:
    """The target ``name`` (default: the file's default) with ``dsn``/``duckdb_path`` applied."""
    import attrs  # noqa: PLC0415

    targets, default = load_rollup_targets(targets_file, env=env)
    chosen = name or default
    if chosen not in targets:
        raise RollupConfigError(
            f"unknown rollup target {chosen!r}; defined: {', '.join(sorted(targets))}"
        )
    target = targets[chosen]
    if dsn is not None:
        target = attrs.evolve(target, dsn=dsn, dsn_origin="--dsn")
    if duckdb_path is not None:
        target = attrs.evolve(target, duckdb_path=Path(duckdb_path))
    return target
