"""The greeting's name rules and the settings, in-process."""

from __future__ import annotations

import unicodedata
from datetime import timedelta
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiaas_core import ConfigError, ValidationError


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ada", "Ada"),
        ("  mary-jane   smith ", "Mary-Jane Smith"),
        ("McDonald", "McDonald"),
        ("élodie", "Élodie"),
        ("e\u0301lodie", "Élodie"),  # combining accent: normalised to one letter first
        ("ǆemal", "ǅemal"),  # title case, not upper case
        ("ßa", "ßa"),  # no capital in one letter: kept
        ("李", "李"),
        ("-ada-", "-Ada-"),
        ("a" * 64, "A" + "a" * 63),
    ],
)
def test_names_accepted(service: ModuleType, name: str, expected: str) -> None:
    assert service.greeting_name(name) == expected


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (None, "required"),
        ("", "at least one letter"),
        ("  - ", "at least one letter"),
        ("R2D2", "only letters, spaces and hyphens"),
        ("o'brien", "only letters, spaces and hyphens"),
        ("ada_lovelace", "only letters, spaces and hyphens"),
        ("ada\tlovelace", "only letters, spaces and hyphens"),
        ("<script>", "only letters, spaces and hyphens"),
        ("a" * 65, "too long: at most 64 characters, got 65"),
    ],
)
def test_names_refused(service: ModuleType, name: str | None, reason: str) -> None:
    with pytest.raises(ValidationError) as exc:
        service.greeting_name(name)
    assert exc.value.status == 422
    assert exc.value.code == "VALIDATION_FAILED"
    assert reason in exc.value.message


def test_max_name_length_is_the_documented_64(service: ModuleType) -> None:
    assert service.MAX_NAME_LENGTH == 64


@settings(deadline=None)
@given(st.text(max_size=80) | st.text(alphabet="abcXYZé -_1'", max_size=70))
def test_any_text_is_greeted_or_refused_by_the_rules(service: ModuleType, text: str) -> None:
    normal = unicodedata.normalize("NFC", text)
    acceptable = (
        len(normal) <= service.MAX_NAME_LENGTH
        and all(char.isalpha() or char in " -" for char in normal)
        and any(char.isalpha() for char in normal)
    )
    if not acceptable:
        with pytest.raises(ValidationError):
            service.greeting_name(text)
        return
    name = service.greeting_name(text)
    assert 1 <= len(name) <= service.MAX_NAME_LENGTH
    assert "  " not in name
    assert name == name.strip()
    assert service.greeting_name(name) == name  # tidying twice changes nothing


@settings(deadline=None)
@given(
    st.text(
        alphabet=st.characters(categories=["Lu", "Ll"]) | st.sampled_from(" -"),
        min_size=1,
        max_size=64,
    ).filter(lambda s: any(c.isalpha() for c in s))
)
def test_every_name_of_letters_spaces_and_hyphens_is_accepted(
    service: ModuleType, text: str
) -> None:
    name = service.greeting_name(text)
    tidy = " ".join(unicodedata.normalize("NFC", text).split())
    assert len(name) == len(tidy)
    for index, (got, given_char) in enumerate(zip(name, tidy, strict=True)):
        word_start = index == 0 or tidy[index - 1] in " -"
        assert got in ((given_char, given_char.title()) if word_start else (given_char,))


def test_settings_defaults_and_environment(service: ModuleType) -> None:
    assert service.load({}) == service.Settings()
    prefix = service.ENV_PREFIX
    env = {
        f"{prefix}HOST": "0.0.0.0",  # noqa: S104
        f"{prefix}PORT": "9000",
        f"{prefix}GRACEFUL_TIMEOUT": "3s",
        f"{prefix}TRACING": "off",
    }
    loaded = service.load(env, {"port": 9001})
    assert loaded.host == "0.0.0.0"  # noqa: S104
    assert loaded.port == 9001  # overrides (the command's flags) win over the environment
    assert loaded.graceful_timeout == timedelta(seconds=3)
    assert loaded.tracing is False


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PORT", "eighty", "expected an integer"),
        ("PORT", "70000", "between 0 and 65535"),
        ("GRACEFUL_TIMEOUT", "soon", "GRACEFUL_TIMEOUT"),
        ("TRACING", "maybe", "TRACING"),
    ],
)
def test_bad_settings_name_the_variable(
    service: ModuleType, variable: str, value: str, expected: str
) -> None:
    name = f"{service.ENV_PREFIX}{variable}"
    with pytest.raises(ConfigError) as exc:
        service.load({name: value})
    (problem,) = exc.value.problems
    assert name in str(problem)
    assert expected in str(problem)
