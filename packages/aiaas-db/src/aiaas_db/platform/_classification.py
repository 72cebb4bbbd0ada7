"""Data classification of the platform schema: every column, its class, protection and retention.

The shared contract (``contracts/data-classification.yml``) lists only some fields per entity, under
names that are not always our column names (``event_id``, ``email``). The platform's own map,
shipped as package data ``aiaas_db/schemas/classification.yml``, uses the contract's format plus:

* ``table:`` on each entity -- the table it classifies (partitions inherit their parent's);
* ``column:`` on each field -- the column it classifies (defaults to ``name``);
* ``contract_field:`` -- the contract field it stands for, when the names differ (one contract
  field may map to several columns: ``email`` is ``email_digest`` and ``email_ciphertext``);
* ``protection:`` -- ``hmac`` (a keyed digest in a ``text`` column), ``aes-gcm`` (ciphertext in a
  ``bytea`` column) or ``none``;
* ``retention_anchor:`` on an entity with a retention -- the column the retention counts from
  (``occurred_at`` for events, ``deletion_requested_at`` for users).

``retention_days: 0`` means "kept while the row is in use" (no lifecycle limit), as in the
contract. A classification is *stricter* when its class ranks higher (public < internal <
confidential < restricted); a retention is stricter when it is limited and not longer.

Where the contract is wrong we deviate, documented here and tested: ``APIKey.hashed_secret`` says
``encryption_required: true``, but the column holds a one-way keyed digest of the secret (the
secret itself is never stored), which the contract's own encryption policy names as approved
protection ("deterministic HMAC hashing or symmetric encryption"); encrypting a digest would add
nothing. So ``encryption_required``/``hash_required`` are both satisfied by ``hmac`` or
``aes-gcm`` protection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from aiaas_core import ValidationError
from aiaas_db._errors import MigrationError

__all__ = [
    "CLASSIFICATION_LEVELS",
    "RETENTION_POLICY",
    "Classification",
    "ClassificationError",
    "ClassifiedEntity",
    "ClassifiedField",
    "contract_coverage_problems",
    "load_classification",
    "platform_classification",
]

#: Classification levels, least to most sensitive.
CLASSIFICATION_LEVELS: Final = ("public", "internal", "confidential", "restricted")
Protection = Literal["hmac", "aes-gcm", "none"]
_PROTECTIONS: Final = ("hmac", "aes-gcm", "none")
#: The retention the platform's lifecycle jobs enforce, per table: (days, anchor column).
#: ``aiaas-db partitions retain`` drops usage-event partitions older than 730 days;
#: ``aiaas-db purge`` anonymises users 30 days after their deletion request.
RETENTION_POLICY: Final[Mapping[str, tuple[int, str]]] = {
    "usage_events": (730, "occurred_at"),
    "users": (30, "deletion_requested_at"),
}
_PACKAGE_FILE: Final = ("schemas", "classification.yml")


class ClassificationError(MigrationError, ValidationError):
    """A classification file is malformed; ``problems`` lists every problem at once."""

    code = "CLASSIFICATION_INVALID"
    title = "Invalid data classification"

    def __init__(self, problems: Sequence[str], *, origin: str | None = None) -> None:
        self.problems = tuple(problems)
        where = f" in {origin}" if origin else ""
        super().__init__(
            f"{len(self.problems)} problem(s) with the data classification{where}:\n  - "
            + "\n  - ".join(self.problems)
        )


def _level_ok(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if value not in CLASSIFICATION_LEVELS:
        raise ValueError(f"classification must be one of {CLASSIFICATION_LEVELS}, got {value!r}")


def _days_ok(_inst: object, _attr: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"retention_days must be a whole number >= 0, got {value!r}")


def _name_ok(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attr.name} must be a non-empty string, got {value!r}")


def _opt_name_ok(inst: object, attr: attrs.Attribute[str | None], value: object) -> None:
    if value is not None:
        _name_ok(inst, attr, value)


def rank(level: str) -> int:
    """Position of ``level`` in :data:`CLASSIFICATION_LEVELS` (higher is more sensitive)."""
    return CLASSIFICATION_LEVELS.index(level)


def retention_at_least_as_strict(ours: int, theirs: int) -> bool:
    """True when a retention of ``ours`` days is the same as or stricter than ``theirs``."""
    if theirs == 0:
        return True
    return ours != 0 and ours <= theirs


@attrs.frozen(kw_only=True)
class ClassifiedField:
    """One classified column."""

    name: str = attrs.field(validator=_name_ok)
    classification: str = attrs.field(validator=_level_ok)
    retention_days: int = attrs.field(default=0, validator=_days_ok)
    encryption_required: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
    hash_required: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    column: str | None = attrs.field(default=None, validator=_opt_name_ok)
    contract_field: str | None = attrs.field(default=None, validator=_opt_name_ok)
    protection: Protection = attrs.field(
        default="none", validator=attrs.validators.in_(_PROTECTIONS)
    )
    protection_notes: str | None = attrs.field(default=None)

    @property
    def column_name(self) -> str:
        """The column this entry classifies."""
        return self.column or self.name

    @property
    def protected(self) -> bool:
        return self.protection != "none"


def _field_tuple(fields: Iterable[ClassifiedField]) -> tuple[ClassifiedField, ...]:
    return tuple(fields)


@attrs.frozen(kw_only=True)
class ClassifiedEntity:
    """One classified entity (a table, when ``table`` is set)."""

    name: str = attrs.field(validator=_name_ok)
    retention_days: int = attrs.field(default=0, validator=_days_ok)
    fields: tuple[ClassifiedField, ...] = attrs.field(converter=_field_tuple)
    table: str | None = attrs.field(default=None, validator=_opt_name_ok)
    retention_anchor: str | None = attrs.field(default=None, validator=_opt_name_ok)

    def field(self, column: str) -> ClassifiedField | None:
        """The entry for ``column``, if any."""
        for f in self.fields:
            if f.column_name == column:
                return f
        return None


def _entity_tuple(entities: Iterable[ClassifiedEntity]) -> tuple[ClassifiedEntity, ...]:
    return tuple(entities)


@attrs.frozen
class Classification:
    """A whole classification map (ours or the contract's)."""

    entities: tuple[ClassifiedEntity, ...] = attrs.field(converter=_entity_tuple)
    origin: str = attrs.field(default="", validator=attrs.validators.instance_of(str))

    def for_table(self, table: str) -> ClassifiedEntity | None:
        """The entity that classifies ``table``, if any."""
        for entity in self.entities:
            if entity.table == table:
                return entity
        return None

    def entity(self, name: str) -> ClassifiedEntity | None:
        for entity in self.entities:
            if entity.name == name:
                return entity
        return None

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(sorted(e.table for e in self.entities if e.table))


_FIELD_KEYS: Final = frozenset(a.name for a in attrs.fields(ClassifiedField))
_ENTITY_KEYS: Final = frozenset(a.name for a in attrs.fields(ClassifiedEntity))


def _build(data: Any, origin: str) -> Classification:
    problems: list[str] = []
    if not isinstance(data, Mapping) or not isinstance(data.get("entities"), list):
        raise ClassificationError(["expected a mapping with an 'entities' list"], origin=origin)
    entities: list[ClassifiedEntity] = []
    for i, raw in enumerate(data["entities"]):
        where = f"entities[{i}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: expected a mapping")
            continue
        where = f"entities[{i}] ({raw.get('name', '?')})"
        unknown = sorted(set(raw) - _ENTITY_KEYS)
        if unknown:
            problems.append(f"{where}: unknown key(s) {unknown}")
        fields: list[ClassifiedField] = []
        raw_fields = raw.get("fields")
        if not isinstance(raw_fields, list):
            problems.append(f"{where}: 'fields' must be a list")
            raw_fields = []
        for j, rf in enumerate(raw_fields):
            fwhere = f"{where}.fields[{j}]"
            if not isinstance(rf, Mapping):
                problems.append(f"{fwhere}: expected a mapping")
                continue
            fwhere = f"{where}.fields[{j}] ({rf.get('name', '?')})"
            unknown = sorted(set(rf) - _FIELD_KEYS)
            if unknown:
                problems.append(f"{fwhere}: unknown key(s) {unknown}")
                continue
            try:
                fields.append(ClassifiedField(**rf))
            except (TypeError, ValueError) as exc:
                problems.append(f"{fwhere}: {exc}")
        columns = [f.column_name for f in fields]
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            problems.append(f"{where}: column(s) classified twice: {duplicates}")
        try:
            entities.append(
                ClassifiedEntity(
                    **{k: v for k, v in raw.items() if k in _ENTITY_KEYS and k != "fields"},
                    fields=fields,
                )
            )
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}: {exc}")
    tables = [e.table for e in entities if e.table]
    twice = sorted({t for t in tables if tables.count(t) > 1})
    if twice:
        problems.append(f"table(s) classified by more than one entity: {twice}")
    if problems:
        raise ClassificationError(problems, origin=origin)
    return Classification(entities, origin=origin)


def load_classification(path: str | Path) -> Classification:
    """Read and validate a classification file (the contract's format, or ours)."""
    import yaml  # noqa: PLC0415 -- only the commands that need it pay for it

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClassificationError(
            [f"cannot read {p}: {exc.strerror or exc}"], origin=str(p)
        ) from None
    except yaml.YAMLError as exc:
        raise ClassificationError([f"not valid YAML: {exc}"], origin=str(p)) from None
    return _build(data, str(p))


def platform_classification() -> Classification:
    """The platform's own classification (package data ``schemas/classification.yml``)."""
    import yaml  # noqa: PLC0415 -- only the commands that need it pay for it

    resource = resources.files("aiaas_db").joinpath(*_PACKAGE_FILE)
    origin = "aiaas_db:" + "/".join(_PACKAGE_FILE)
    return _build(yaml.safe_load(resource.read_text(encoding="utf-8")), origin)


def contract_coverage_problems(ours: Classification, contract: Classification) -> list[str]:
    """Why ``ours`` is not a superset of ``contract`` (empty when it is).

    Every contract entity must be one of ours (same name) with a retention as strict or stricter;
    every contract field must map (by ``contract_field``, else by name) to at least one of our
    fields, and every field it maps to must be classified the same or higher, with a retention
    as strict or stricter, and protected (``hmac`` or ``aes-gcm``) when the contract asks for
    hashing or encryption.
    """
    problems: list[str] = []
    for theirs in contract.entities:
        mine = ours.entity(theirs.name)
        if mine is None:
            problems.append(f"contract entity {theirs.name} has no entity of that name in ours")
            continue
        if not retention_at_least_as_strict(mine.retention_days, theirs.retention_days):
            problems.append(
                f"{theirs.name}: retention {mine.retention_days} days is laxer than the "
                f"contract's {theirs.retention_days}"
            )
        for tf in theirs.fields:
            matches = [f for f in mine.fields if (f.contract_field or f.name) == tf.name]
            if not matches:
                problems.append(
                    f"{theirs.name}.{tf.name}: no field of ours maps to it (add one, or set "
                    f"contract_field: {tf.name} on the column that stands for it)"
                )
                continue
            for f in matches:
                where = f"{theirs.name}.{tf.name} -> {mine.table or mine.name}.{f.column_name}"
                if rank(f.classification) < rank(tf.classification):
                    problems.append(
                        f"{where}: classified {f.classification}, below the contract's "
                        f"{tf.classification}"
                    )
                if not retention_at_least_as_strict(f.retention_days, tf.retention_days):
                    problems.append(
                        f"{where}: retention {f.retention_days} days is laxer than the "
                        f"contract's {tf.retention_days}"
                    )
                if (tf.encryption_required or tf.hash_required) and not f.protected:
                    problems.append(f"{where}: the contract requires hashing or encryption")
    return problems
