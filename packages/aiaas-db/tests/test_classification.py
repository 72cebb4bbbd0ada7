"""The platform's data classification: complete, and a superset of the shared contract."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiaas_db.platform._classification import (
    RETENTION_POLICY,
    Classification,
    ClassificationError,
    ClassifiedEntity,
    ClassifiedField,
    contract_coverage_problems,
    load_classification,
    platform_classification,
    retention_at_least_as_strict,
)


@pytest.fixture(scope="module")
def contract(contracts_dir: Path) -> Classification:
    return load_classification(contracts_dir / "data-classification.yml")


def test_ours_is_a_superset_of_the_contract(contract: Classification) -> None:
    ours = platform_classification()
    assert contract_coverage_problems(ours, contract) == []
    # Spelled out for the renamed fields: each maps to columns of ours, same or stricter.
    users = ours.for_table("users")
    assert users is not None
    email = [f for f in users.fields if f.contract_field == "email"]
    assert {f.column_name for f in email} == {"email_digest", "email_ciphertext"}
    assert {f.protection for f in email} == {"hmac", "aes-gcm"}
    events = ours.for_table("usage_events")
    assert events is not None
    event_id = events.field("usage_event_id")
    assert event_id is not None
    assert event_id.contract_field == "event_id"


def test_every_contract_field_is_matched_by_name_or_contract_field(
    contract: Classification,
) -> None:
    ours = platform_classification()
    for entity in contract.entities:
        mine = ours.entity(entity.name)
        assert mine is not None, entity.name
        assert mine.table, entity.name
        for field in entity.fields:
            assert any((f.contract_field or f.name) == field.name for f in mine.fields), (
                entity.name,
                field.name,
            )


def test_retention_policy_matches_the_contract_and_the_lifecycle_jobs(
    contract: Classification,
) -> None:
    from aiaas_db.platform._purge import PURGE_POLICY_WINDOW

    ours = platform_classification()
    assert RETENTION_POLICY["usage_events"] == (730, "occurred_at")
    assert RETENTION_POLICY["users"] == (30, "deletion_requested_at")
    assert timedelta(days=RETENTION_POLICY["users"][0]) == PURGE_POLICY_WINDOW
    for table, name in (("usage_events", "UsageEvent"), ("users", "User")):
        theirs = contract.entity(name)
        mine = ours.for_table(table)
        assert theirs is not None
        assert mine is not None
        assert mine.retention_days == theirs.retention_days == RETENTION_POLICY[table][0]
        assert mine.retention_anchor == RETENTION_POLICY[table][1]


def test_restricted_columns_are_all_protected() -> None:
    ours = platform_classification()
    restricted = [
        (e.table, f.column_name, f.protection)
        for e in ours.entities
        for f in e.fields
        if f.classification == "restricted"
    ]
    assert restricted
    assert all(p in ("hmac", "aes-gcm") for _t, _c, p in restricted), restricted


def _contract(**field: Any) -> Classification:
    return Classification(
        [
            ClassifiedEntity(
                name="User",
                retention_days=30,
                fields=[
                    ClassifiedField(**{"name": "email", "classification": "restricted", **field})
                ],
            )
        ]
    )


def _ours(retention: int = 30, **field: Any) -> Classification:
    return Classification(
        [
            ClassifiedEntity(
                name="User",
                table="users",
                retention_days=retention,
                fields=[
                    ClassifiedField(
                        **{
                            "name": "email_digest",
                            "contract_field": "email",
                            "classification": "restricted",
                            "protection": "hmac",
                            **field,
                        }
                    )
                ],
            )
        ]
    )


@pytest.mark.parametrize(
    ("ours", "contract", "fragment"),
    [
        (_ours(classification="confidential"), _contract(), "below the contract"),
        (_ours(retention_days=0), _contract(retention_days=30), "laxer"),
        (_ours(retention_days=60), _contract(retention_days=30), "laxer"),
        (_ours(retention=0), _contract(), "retention 0 days is laxer"),
        (_ours(protection="none"), _contract(hash_required=True), "requires hashing"),
        (_ours(contract_field=None), _contract(), "no field of ours maps"),
        (Classification([]), _contract(), "no entity of that name"),
    ],
)
def test_coverage_problems_are_found(
    ours: Classification, contract: Classification, fragment: str
) -> None:
    problems = contract_coverage_problems(ours, contract)
    assert any(fragment in p for p in problems), problems


def test_stricter_retention() -> None:
    assert retention_at_least_as_strict(30, 0)
    assert retention_at_least_as_strict(30, 30)
    assert retention_at_least_as_strict(7, 30)
    assert not retention_at_least_as_strict(0, 30)
    assert not retention_at_least_as_strict(31, 30)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- just a list\n", "'entities' list"),
        ("entities: [1]\n", "expected a mapping"),
        ("entities:\n  - name: X\n    fields: 3\n", "'fields' must be a list"),
        ("entities:\n  - name: X\n    colour: red\n    fields: []\n", "unknown key(s) ['colour']"),
        ("entities:\n  - name: X\n    fields: [7]\n", "fields[0]: expected a mapping"),
        (
            "entities:\n  - name: X\n    fields:\n      - {name: a, classification: secret}\n",
            "classification must be one of",
        ),
        (
            "entities:\n  - name: X\n    fields:\n"
            "      - {name: a, classification: internal, hue: 1}\n",
            "unknown key(s) ['hue']",
        ),
        (
            "entities:\n  - name: X\n    fields:\n      - {name: a, classification: internal,"
            " protection: rot13}\n",
            "protection",
        ),
        (
            "entities:\n  - name: X\n    retention_days: -1\n    fields: []\n",
            "retention_days must be a whole number",
        ),
        (
            "entities:\n  - name: X\n    fields:\n      - {name: a, classification: internal}\n"
            "      - {name: b, column: a, classification: internal}\n",
            "classified twice",
        ),
        (
            "entities:\n  - {name: X, table: t, fields: []}\n  - {name: Y, table: t, fields: []}\n",
            "more than one entity",
        ),
        ("entities: [\n", "not valid YAML"),
    ],
)
def test_malformed_files_are_refused_with_every_problem(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "c.yml"
    path.write_text(text)
    with pytest.raises(ClassificationError) as info:
        load_classification(path)
    assert info.value.code == "CLASSIFICATION_INVALID"
    assert any(fragment in p for p in info.value.problems), info.value.problems
    assert str(path) in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ClassificationError, match="cannot read"):
        load_classification(tmp_path / "absent.yml")


def test_classification_is_package_data() -> None:
    """Read through importlib.resources: under `nox -s tests` the package is installed from its
    wheel (not editable), so this proves the YAML ships in the wheel."""
    from importlib import resources

    resource = resources.files("aiaas_db").joinpath("schemas", "classification.yml")
    assert resource.is_file()
    data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    assert {e["table"] for e in data["entities"]} == set(platform_classification().tables)
