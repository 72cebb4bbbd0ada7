from __future__ import annotations

import copy
import enum
import json
import pickle
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiaas_core import ConfigError, ConfigProblem, Secret, load_settings, setting, settings_summary
from aiaas_core._config import REDACTED, SECRET_MASK

# --------------------------------------------------------------------------------------------
# Settings classes used across the tests (module level, so their annotations resolve).


class Level(enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


def _positive(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive")


@attrs.frozen
class Database:
    url: str = setting(help="PostgreSQL DSN without the password")
    password: Secret = setting(help="database password")
    pool_size: int = setting(default=10, validator=attrs.validators.ge(1))
    timeout: timedelta = timedelta(seconds=5)


@attrs.frozen
class Settings:
    db: Database
    log_level: Literal["debug", "info", "warning"] = "info"
    workers: int = setting(default=2, validator=_positive)
    email_hash_key: Secret | None = setting(default=None, env="EMAIL_HASH_KEY")
    api_token: str = setting(default="", secret=True, help="token as a plain str")
    debug: bool = False


REQUIRED_ENV = {"AIAAS_DB__URL": "postgresql://db/app", "AIAAS_DB__PASSWORD": "hunter2-pw"}


@attrs.frozen
class Flat:
    name: str = "svc"
    count: int = 1
    ratio: float = 0.5
    flag: bool = False
    level: Level = Level.INFO
    priority: Priority = Priority.LOW
    mode: Literal["fast", "slow"] = "fast"
    timeout: timedelta = timedelta(seconds=1)
    tags: tuple[str, ...] = ()
    ports: list[int] = attrs.Factory(list)
    kinds: frozenset[Level] = frozenset()
    path: Path = Path("/srv")
    limit: int | None = None
    token: Secret = Secret("default-token")


def load_flat(**environ: str) -> Flat:
    return load_settings(Flat, environ={f"AIAAS_{k.upper()}": v for k, v in environ.items()})


def problems_of(excinfo: pytest.ExceptionInfo[ConfigError]) -> dict[str, ConfigProblem]:
    return {p.path: p for p in excinfo.value.problems}


# --------------------------------------------------------------------------------------------
# Secret


def test_secret_never_shows_its_value() -> None:
    secret = Secret("s3cr3t-value")
    assert secret.get_secret_value() == "s3cr3t-value"
    for rendered in (repr(secret), str(secret), f"{secret}", f"{secret:>40}", f"{secret!r}"):
        assert "s3cr3t" not in rendered
    assert repr(secret) == "Secret('**********')"
    assert str(secret) == SECRET_MASK
    assert "s3cr3t" not in repr([secret, {"k": secret}])


def test_secret_equality_and_hash() -> None:
    assert Secret("abc") == Secret("abc")
    assert Secret("abc") != Secret("abd")
    assert Secret("abc") != "abc"
    assert Secret("é") == Secret("é")  # non-ASCII compares too
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2


def test_secret_is_immutable_and_copyable() -> None:
    secret = Secret("abc")
    with pytest.raises(AttributeError):
        secret._value = "other"
    with pytest.raises(AttributeError):
        del secret._value
    assert pickle.loads(pickle.dumps(secret)) == secret  # noqa: S301 -- our own bytes
    assert copy.deepcopy(secret) == secret
    assert bool(Secret("")) is False
    assert bool(secret) is True


def test_secret_wraps_only_strings() -> None:
    with pytest.raises(TypeError, match="wraps a str"):
        Secret(b"bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# setting()


def test_setting_rejects_default_and_factory_together() -> None:
    with pytest.raises(TypeError, match="default or a factory"):
        setting(default=1, factory=lambda: 2)  # type: ignore[call-overload]


@pytest.mark.parametrize("env", ["", "1ABC", "A-B", "A B"])
def test_setting_rejects_malformed_env_names(env: str) -> None:
    with pytest.raises(ValueError, match="environment variable name"):
        setting(env=env)


def test_setting_is_keyword_only_so_required_may_follow_defaults() -> None:
    @attrs.frozen
    class Ordered:
        first: int = setting(default=1)
        second: int = setting()

    assert Ordered(second=2) == Ordered(first=1, second=2)
    with pytest.raises(TypeError):
        Ordered(1, 2)


def test_secret_flag_masks_the_attrs_repr() -> None:
    settings = load_settings(
        Settings,
        environ={**REQUIRED_ENV, "AIAAS_API_TOKEN": "tok-very-secret", "EMAIL_HASH_KEY": "k3y-k3y"},
    )
    text = repr(settings)
    assert "tok-very-secret" not in text
    assert "hunter2-pw" not in text
    assert "k3y-k3y" not in text
    assert "api_token='**********'" in text
    assert settings.api_token == "tok-very-secret"
    assert settings.email_hash_key == Secret("k3y-k3y")


# --------------------------------------------------------------------------------------------
# Layering


def test_defaults_apply_when_nothing_else_sets_a_value() -> None:
    settings = load_settings(Settings, environ=REQUIRED_ENV)
    assert settings.db == Database(
        url="postgresql://db/app", password=Secret("hunter2-pw"), pool_size=10
    )
    assert settings.db.timeout == timedelta(seconds=5)
    assert settings.log_level == "info"
    assert settings.workers == 2
    assert settings.email_hash_key is None


def test_layers_override_in_order(tmp_path: Path) -> None:
    file = tmp_path / "settings.toml"
    file.write_text(
        'log_level = "warning"\nworkers = 3\n\n[db]\npool_size = 20\ntimeout = "1m"\n'
        'url = "postgresql://file/app"\npassword = "from-file"\n'
    )
    environ = {"AIAAS_WORKERS": "4", "AIAAS_DB__POOL_SIZE": "30"}
    settings = load_settings(Settings, environ=environ, file=file, overrides={"workers": 5})
    assert settings.log_level == "warning"  # file over default
    assert settings.db.timeout == timedelta(minutes=1)  # file string, converted
    assert settings.db.pool_size == 30  # env over file
    assert settings.workers == 5  # override over env
    assert settings.db.password == Secret("from-file")


def test_env_override_name_and_custom_prefix() -> None:
    environ = {
        "SVC_DB__URL": "u",
        "SVC_DB__PASSWORD": "p",
        "EMAIL_HASH_KEY": "key-material",
        "SVC_EMAIL_HASH_KEY": "ignored",  # env= replaced the whole name
        "AIAAS_WORKERS": "9",  # another prefix: not ours
    }
    settings = load_settings(Settings, prefix="SVC_", environ=environ)
    assert settings.email_hash_key == Secret("key-material")
    assert settings.workers == 2


def test_unknown_prefixed_env_vars_are_ignored() -> None:
    environ = {**REQUIRED_ENV, "AIAAS_NOT_A_SETTING": "x", "AIAAS_DB__NOPE": "y"}
    assert load_settings(Settings, environ=environ).workers == 2


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIAAS_WORKERS", "7")
    assert load_settings(Settings).workers == 7


def test_overrides_accept_dotted_nested_and_instances() -> None:
    dotted = load_settings(Settings, environ=REQUIRED_ENV, overrides={"db.pool_size": 3})
    assert dotted.db.pool_size == 3
    nested = load_settings(Settings, environ=REQUIRED_ENV, overrides={"db": {"pool_size": "4"}})
    assert nested.db.pool_size == 4
    db = Database(url="x", password=Secret("y"), pool_size=5)
    whole = load_settings(Settings, environ={}, overrides={"db": db})
    assert whole.db == db


@attrs.frozen
class Inner:
    size: int = 1
    name: str = "inner"


@attrs.frozen
class Outer:
    inner: Inner = Inner(size=5, name="from-outer-default")
    made: Inner = attrs.Factory(lambda: Inner(size=6))


def test_nested_default_instances_lend_their_values() -> None:
    outer = load_settings(Outer, environ={"AIAAS_INNER__NAME": "env"})
    assert outer.inner == Inner(size=5, name="env")
    assert outer.made == Inner(size=6, name="inner")


@attrs.frozen
class WithSelfFactory:
    base: int = 2
    double: int = attrs.field(default=attrs.Factory(lambda self: self.base * 2, takes_self=True))


def test_takes_self_factories_are_left_to_attrs() -> None:
    assert load_settings(WithSelfFactory, environ={"AIAAS_BASE": "5"}).double == 10
    assert load_settings(WithSelfFactory, environ={"AIAAS_DOUBLE": "1"}).double == 1


@attrs.frozen
class Private:
    _token: str = "t"
    computed: int = attrs.field(init=False, default=3)


def test_private_attributes_use_their_alias_and_init_false_fields_are_skipped() -> None:
    loaded = load_settings(Private, environ={"AIAAS_TOKEN": "abc", "AIAAS_COMPUTED": "x"})
    assert loaded._token == "abc"
    assert loaded.computed == 3


# --------------------------------------------------------------------------------------------
# Conversions


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        ("name", "  spaced  ", "  spaced  "),
        ("count", "42", 42),
        ("count", " -3 ", -3),
        ("count", "1_000", 1000),
        ("ratio", "1e3", 1000.0),
        ("ratio", ".25", 0.25),
        ("level", "warning", Level.WARNING),
        ("level", "WARNING", Level.WARNING),
        ("level", "Info", Level.INFO),
        ("priority", "2", Priority.HIGH),
        ("priority", "high", Priority.HIGH),
        ("mode", "slow", "slow"),
        ("mode", "SLOW", "slow"),
        ("timeout", "30s", timedelta(seconds=30)),
        ("timeout", "5m", timedelta(minutes=5)),
        ("timeout", "1h", timedelta(hours=1)),
        ("timeout", "250ms", timedelta(milliseconds=250)),
        ("timeout", "1h30m", timedelta(hours=1, minutes=30)),
        ("timeout", "1h 30m 15s", timedelta(hours=1, minutes=30, seconds=15)),
        ("timeout", "2d", timedelta(days=2)),
        ("timeout", "1w", timedelta(weeks=1)),
        ("timeout", "1500us", timedelta(microseconds=1500)),
        ("timeout", "1.5h", timedelta(minutes=90)),
        ("timeout", "90", timedelta(seconds=90)),
        ("timeout", "0.5", timedelta(milliseconds=500)),
        ("tags", "a, b ,c", ("a", "b", "c")),
        ("tags", "", ()),
        ("tags", '["a,b", " c "]', ("a,b", " c ")),
        ("ports", "80,443", [80, 443]),
        ("kinds", "debug,info,debug", frozenset({Level.DEBUG, Level.INFO})),
        ("path", "/etc/aiaas", Path("/etc/aiaas")),
        ("limit", "", None),
        ("limit", "  ", None),
        ("limit", "12", 12),
        ("token", "tok", Secret("tok")),
    ],
)
def test_text_converts_to_the_declared_type(field: str, text: str, expected: object) -> None:
    value = getattr(load_flat(**{field: text}), field)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("text", ["true", "TRUE", "yes", "On", "1", " true "])
def test_true_spellings(text: str) -> None:
    assert load_flat(flag=text).flag is True


@pytest.mark.parametrize("text", ["false", "False", "no", "OFF", "0"])
def test_false_spellings(text: str) -> None:
    assert load_flat(flag=text, name="x").flag is False


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        ("count", "abc", "an integer"),
        ("count", "1.5", "an integer"),
        ("count", "", "an integer"),
        ("count", "0x10", "an integer"),
        ("count", "\u0661\u0662", "an integer"),
        ("count", "9" * 5000, "an integer"),
        ("ratio", "nan", "a finite number"),
        ("ratio", "inf", "a finite number"),
        ("ratio", "1,5", "a finite number"),
        ("flag", "maybe", "a boolean"),
        ("flag", "2", "a boolean"),
        ("level", "verbose", "one of: debug, info, warning"),
        ("priority", "3", "one of: 1, 2"),
        ("mode", "medium", "one of: fast, slow"),
        ("timeout", "-1s", "a duration"),
        ("timeout", "5 minutes", "a duration"),
        ("timeout", "1x", "a duration"),
        ("timeout", "", "a duration"),
        ("timeout", "99999999999d", "a duration"),
        ("tags", '["a", 1', "the JSON array is malformed"),
        ("ports", "80,http", "item 2 is not"),
        ("ports", "80,,443", "item 2 is not"),
        ("path", " ", "a path"),
        ("limit", "many", "an integer, or empty for none"),
    ],
)
def test_malformed_text_is_a_problem(field: str, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_flat(**{field: text})
    (problem,) = excinfo.value.problems
    assert problem.path == field
    assert problem.source == f"env AIAAS_{field.upper()}"
    assert problem.value == text
    assert expected in problem.expected
    assert problem.hint == f"fix or unset AIAAS_{field.upper()}"


def test_case_insensitive_choice_must_be_unambiguous() -> None:
    @attrs.frozen
    class Cased:
        pick: Literal["ab", "AB", "c"] = "c"

    assert load_settings(Cased, environ={"AIAAS_PICK": "AB"}).pick == "AB"  # exact match
    assert load_settings(Cased, environ={"AIAAS_PICK": "C"}).pick == "c"  # unique fold
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Cased, environ={"AIAAS_PICK": "Ab"})
    assert excinfo.value.problems[0].expected == "one of: ab, AB, c"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("count", 7, 7),
        ("ratio", 2, 2.0),
        ("ratio", 0.25, 0.25),
        ("flag", True, True),
        ("level", Level.DEBUG, Level.DEBUG),
        ("priority", 2, Priority.HIGH),
        ("mode", "slow", "slow"),
        ("timeout", 1.5, timedelta(seconds=1.5)),
        ("timeout", 3, timedelta(seconds=3)),
        ("timeout", timedelta(minutes=2), timedelta(minutes=2)),
        ("tags", ["a", "b"], ("a", "b")),
        ("ports", (1, "2"), [1, 2]),
        ("kinds", {"info", Level.DEBUG}, frozenset({Level.INFO, Level.DEBUG})),
        ("path", PurePosixPath("/x"), Path("/x")),
        ("limit", None, None),
        ("token", Secret("s"), Secret("s")),
    ],
)
def test_native_override_values_are_accepted(field: str, value: object, expected: object) -> None:
    loaded = getattr(load_settings(Flat, environ={}, overrides={field: value}), field)
    assert loaded == expected
    assert type(loaded) is type(expected)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("count", True),
        ("count", 1.0),
        ("name", 5),
        ("ratio", float("inf")),
        ("ratio", "x"),
        ("flag", 1),
        ("level", 3),
        ("priority", "urgent"),
        ("mode", 1),
        ("timeout", -1),
        ("timeout", timedelta(seconds=-1)),
        ("timeout", float("nan")),
        ("timeout", 1e300),
        ("timeout", True),
        ("tags", 5),
        ("tags", [1]),
        ("path", 5),
        ("limit", "x"),
        ("token", 123),
    ],
)
def test_wrong_native_override_values_are_problems(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Flat, environ={}, overrides={field: value})
    (problem,) = excinfo.value.problems
    assert (problem.path, problem.source) == (field, "override")
    assert problem.hint == f"fix the override for {field!r}"


def test_toml_native_values(tmp_path: Path) -> None:
    file = tmp_path / "flat.toml"
    file.write_text(
        'count = 3\nratio = 1\nflag = true\ntags = ["x", "y"]\nports = [1, 2]\n'
        'timeout = 2.5\nlevel = "debug"\npriority = 2\n'
    )
    flat = load_settings(Flat, environ={}, file=file)
    assert (flat.count, flat.ratio, flat.flag) == (3, 1.0, True)
    assert (flat.tags, flat.ports) == (("x", "y"), [1, 2])
    assert flat.timeout == timedelta(seconds=2.5)
    assert (flat.level, flat.priority) == (Level.DEBUG, Priority.HIGH)


# --------------------------------------------------------------------------------------------
# Collecting problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    file = tmp_path / "settings.toml"
    file.write_text("[db]\npool_sise = 5\nurl = 7\n")
    environ = {
        "AIAAS_DB__POOL_SIZE": "0",  # fails the ge(1) validator
        "AIAAS_LOG_LEVEL": "loud",
        "AIAAS_WORKERS": "-1",  # fails _positive
        "AIAAS_DEBUG": "perhaps",
    }
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Settings, environ=environ, file=file, overrides={"wokers": 1})
    err = excinfo.value
    assert err.code == "CONFIG_INVALID"
    found = problems_of(excinfo)
    assert set(found) == {
        "db.pool_sise",
        "db.url",
        "db.password",
        "db.pool_size",
        "log_level",
        "workers",
        "debug",
        "wokers",
    }
    assert found["db.pool_sise"].expected == "a known setting (did you mean 'db.pool_size'?)"
    assert found["db.pool_sise"].source == f"file {file}"
    assert found["db.url"].value == 7
    assert found["db.url"].hint == f"fix 'db.url' in {file}"
    assert found["db.password"].source == "missing"
    assert found["db.password"].value is None
    assert "AIAAS_DB__PASSWORD" in found["db.password"].hint
    assert "must be >= 1" in found["db.pool_size"].expected
    assert found["workers"].expected == "a value that passes validation (workers must be positive)"
    assert found["log_level"].expected == "one of: debug, info, warning"
    assert found["wokers"].source == "override"
    assert "did you mean 'workers'" in found["wokers"].expected
    message = str(err)
    assert message.startswith("8 configuration problem(s):")
    for problem in err.problems:
        assert str(problem) in message


def test_problem_str_is_one_line_that_says_what_to_do() -> None:
    problem = ConfigProblem(
        "db.pool_size", "env AIAAS_DB__POOL_SIZE", "x" * 100, "an\ninteger", "fix or unset it"
    )
    text = str(problem)
    assert "\n" not in text
    assert text.startswith("db.pool_size (env AIAAS_DB__POOL_SIZE): expected an integer, got 'xxx")
    assert "..." in text
    assert text.endswith("; fix or unset it")
    bare = ConfigProblem("", "missing", None, "a string")
    assert str(bare) == "settings (missing): expected a string"


def test_missing_required_settings_are_problems() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Settings, environ={})
    found = problems_of(excinfo)
    assert set(found) == {"db.url", "db.password"}
    assert str(found["db.url"]) == (
        "db.url (missing): expected a string; set AIAAS_DB__URL, or 'db.url' in the settings file"
    )


def test_malformed_toml_is_one_problem_naming_file_and_line(tmp_path: Path) -> None:
    file = tmp_path / "broken.toml"
    file.write_text('workers = 2\n[db]\nurl = "ok"\npassword = \n')
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Settings, environ={}, file=file)
    (problem,) = excinfo.value.problems  # the missing settings it may hold are not piled on
    assert problem.source == f"file {file}"
    assert problem.path == ""
    assert "valid TOML" in problem.expected
    assert problem.hint == f"fix the syntax at line 4 of {file}"
    assert str(file) in str(excinfo.value)


def test_missing_and_unreadable_files_are_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Flat, environ={}, file=tmp_path / "absent.toml")
    (problem,) = excinfo.value.problems
    assert problem.expected == "an existing TOML file"
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"name = '\xff\xfe'\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Flat, environ={}, file=binary)
    assert excinfo.value.problems[0].expected == "UTF-8 encoded TOML"
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Flat, environ={}, file=tmp_path)  # a directory
    assert excinfo.value.problems[0].expected == "a readable TOML file"


def test_file_problems_for_tables_and_unknown_sections(tmp_path: Path) -> None:
    file = tmp_path / "s.toml"
    file.write_text('db = "postgresql://x"\n[cache]\nsize = 1\n')
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Settings, environ=REQUIRED_ENV, file=file)
    found = problems_of(excinfo)
    assert set(found) == {"db", "cache"}
    assert found["db"].expected == "a table ([db]) of Database settings"
    assert found["cache"].expected.startswith("a known setting (known here: db, log_level")


def test_override_problems() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(
            Settings,
            environ=REQUIRED_ENV,
            overrides={"db": 5, "workers.x": 1, "db.nope.deeper": 1},
        )
    found = problems_of(excinfo)
    assert set(found) == {"db", "workers.x", "db.nope"}
    assert found["db"].expected == "a mapping or a Database instance"
    assert found["workers.x"].expected == "a known setting"


# --------------------------------------------------------------------------------------------
# Validators


@attrs.frozen
class Window:
    low: int = setting(default=0, validator=attrs.validators.instance_of(int))
    high: int = attrs.field(default=10)
    name: str = setting(default="w", validator=attrs.validators.min_len(1))

    @high.validator
    def _above_low(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if value <= self.low:
            raise ValueError(f"high must be above low ({self.low})")


def test_cross_field_validators_see_the_other_settings() -> None:
    assert load_settings(Window, environ={"AIAAS_LOW": "3", "AIAAS_HIGH": "4"}).high == 4
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Window, environ={"AIAAS_LOW": "5", "AIAAS_HIGH": "5", "AIAAS_NAME": ""})
    found = problems_of(excinfo)
    assert set(found) == {"high", "name"}
    assert found["high"].expected == "a value that passes validation (high must be above low (5))"


def test_validators_still_run_when_another_setting_failed_to_convert() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Window, environ={"AIAAS_LOW": "x", "AIAAS_NAME": ""})
    # high's validator reads the failed low: it is skipped, not crashed or blamed.
    assert set(problems_of(excinfo)) == {"low", "name"}


def test_invalid_defaults_are_problems_with_source_default() -> None:
    @attrs.frozen
    class BadDefault:
        size: int = setting(default=0, validator=_positive)

    with pytest.raises(ConfigError) as excinfo:
        load_settings(BadDefault, environ={})
    (problem,) = excinfo.value.problems
    assert problem.source == "default"
    assert problem.value == 0
    assert "BadDefault.size" in problem.hint
    assert "AIAAS_SIZE" in problem.hint


@attrs.frozen
class PostInit:
    a: int = 1
    b: int = 2

    def __attrs_post_init__(self) -> None:
        if self.a + self.b > 10:
            raise ValueError("a + b must not exceed 10")


def test_class_level_failures_are_one_problem() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(PostInit, environ={"AIAAS_A": "9"})
    (problem,) = excinfo.value.problems
    assert problem.source == "validation"
    assert "a + b must not exceed 10" in problem.expected


def _shout(value: str) -> str:
    if value == "boom":
        raise ValueError("cannot shout boom")
    return value.upper()


def _with_self(value: str, _inst: object, field: attrs.Attribute[str]) -> str:
    if value == "bad":
        raise ValueError(f"{field.name} cannot be bad")
    return value


@attrs.frozen
class Converted:
    word: str = attrs.field(default="hi", converter=_shout, validator=attrs.validators.max_len(5))
    other: str = attrs.field(
        default="x",
        converter=attrs.Converter(_with_self, takes_self=True, takes_field=True),  # type: ignore[misc]
    )


def test_attrs_converters_apply_and_their_errors_are_problems() -> None:
    assert load_settings(Converted, environ={"AIAAS_WORD": "hey"}).word == "HEY"
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Converted, environ={"AIAAS_WORD": "boom", "AIAAS_OTHER": "bad"})
    found = problems_of(excinfo)
    assert set(found) == {"word", "other"}
    assert "cannot shout boom" in found["word"].expected
    assert "other cannot be bad" in found["other"].expected
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Converted, environ={"AIAAS_WORD": "toolong"})
    assert set(problems_of(excinfo)) == {"word"}


# --------------------------------------------------------------------------------------------
# Secrets stay secret


def _leak_validator(_inst: object, _attribute: attrs.Attribute[Secret], value: Secret) -> None:
    if len(value.get_secret_value()) < 12:
        raise ValueError(f"key {value.get_secret_value()} is too short")


@attrs.frozen
class Keys:
    key: Secret = setting(validator=_leak_validator)
    count: int = 1
    tokens: tuple[Secret, ...] = ()
    password: str = setting(default="", secret=True, validator=attrs.validators.max_len(4))


def test_secrets_never_reach_problems_or_messages() -> None:
    environ = {
        "AIAAS_KEY": "short-key",
        "AIAAS_TOKENS": "tok-one-x,tok-two-x",
        "AIAAS_PASSWORD": "p4ssw0rd-long",
        "AIAAS_COUNT": "p4ssw0rd-long",  # someone pasted the password into the wrong variable
    }
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Keys, environ=environ)
    found = problems_of(excinfo)
    assert set(found) == {"key", "password", "count"}
    assert found["key"].value == SECRET_MASK
    assert found["key"].expected == "a value that passes validation (key ********** is too short)"
    assert found["password"].value == SECRET_MASK
    assert found["count"].value == SECRET_MASK  # it holds a secret's text: masked too
    rendered = [str(excinfo.value), repr(excinfo.value), repr(excinfo.value.problems)]
    for text in rendered:
        for secret in ("short-key", "p4ssw0rd-long", "tok-one-x"):
            assert secret not in text


@attrs.frozen
class Tokens:
    tokens: tuple[Secret, ...] = ()


def test_secret_typed_values_are_masked_when_malformed() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Tokens, environ={"AIAAS_TOKENS": '["unclosed-secret"'})
    (problem,) = excinfo.value.problems
    assert problem.value == SECRET_MASK
    assert "unclosed-secret" not in str(excinfo.value)


# --------------------------------------------------------------------------------------------
# settings_summary


def test_summary_is_flat_json_ready_and_redacted() -> None:
    environ = {**REQUIRED_ENV, "AIAAS_API_TOKEN": "tok-very-secret", "AIAAS_DB__TIMEOUT": "1m"}
    summary = settings_summary(load_settings(Settings, environ=environ))
    assert summary == {
        "db.url": "postgresql://db/app",
        "db.password": REDACTED,
        "db.pool_size": 10,
        "db.timeout": 60.0,
        "log_level": "info",
        "workers": 2,
        "email_hash_key": None,  # an unset secret shows as unset
        "api_token": REDACTED,
        "debug": False,
    }
    assert "hunter2" not in json.dumps(summary)


def test_summary_converts_every_value_kind() -> None:
    flat = load_settings(
        Flat,
        environ={"AIAAS_TAGS": "a,b", "AIAAS_KINDS": "info,debug", "AIAAS_PORTS": "1"},
        overrides={"ratio": 1.5},
    )
    summary = settings_summary(flat)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["level"] == "info"
    assert summary["priority"] == 1
    assert summary["tags"] == ["a", "b"]
    assert summary["ports"] == [1]
    assert summary["kinds"] == ["debug", "info"]
    assert summary["path"] == "/srv"
    assert summary["timeout"] == 1.0
    assert summary["ratio"] == 1.5
    assert summary["token"] == REDACTED
    assert summary["limit"] is None


@attrs.define
class Odd:
    mapping: dict[str, Any]
    ratio: float
    other: object


def test_summary_of_odd_values() -> None:
    summary = settings_summary(Odd({"k": (Secret("x"), 1)}, float("nan"), complex(1, 2)))
    assert summary == {"mapping": {"k": [REDACTED, 1]}, "ratio": "nan", "other": "(1+2j)"}


def test_summary_needs_an_attrs_instance() -> None:
    with pytest.raises(TypeError, match="attrs instance"):
        settings_summary({"a": 1})


# --------------------------------------------------------------------------------------------
# Programming errors are TypeErrors, not configuration problems


def test_load_settings_needs_an_attrs_class() -> None:
    with pytest.raises(TypeError, match="attrs class"):
        load_settings(dict, environ={})


@pytest.mark.parametrize(
    "annotation",
    [
        "dict[str, int]",
        "int | str",
        "tuple[int]",
        "tuple[int, str]",
        "list[list[int]]",
        "list[int | None]",
        "list[int, str]",
        "bytes",
    ],
)
def test_unsupported_types_are_rejected_up_front(annotation: str) -> None:
    namespace: dict[str, Any] = {}
    source = f"@attrs.frozen\nclass Unsupported:\n    value: {annotation} = None\n"
    exec(source, {"attrs": attrs}, namespace)  # noqa: S102 -- a class with the annotation
    with pytest.raises(TypeError, match="unsupported settings type"):
        load_settings(namespace["Unsupported"], environ={})


def test_unresolvable_annotations_are_a_type_error() -> None:
    @attrs.frozen
    class Dangling:
        value: NotDefinedAnywhere = 1  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(TypeError, match="cannot resolve the type hints of"):
        load_settings(Dangling, environ={})


def test_env_name_collisions_are_a_type_error() -> None:
    @attrs.frozen
    class Clash:
        a: int = setting(default=1, env="SHARED")
        b: int = setting(default=2, env="SHARED")

    with pytest.raises(TypeError, match=r"both read \$SHARED"):
        load_settings(Clash, environ={})


def test_env_on_a_nested_settings_field_is_a_type_error() -> None:
    @attrs.frozen
    class Parent:
        inner: Inner = setting(factory=Inner, env="INNER")

    with pytest.raises(TypeError, match="env= applies to leaf settings"):
        load_settings(Parent, environ={})


# --------------------------------------------------------------------------------------------
# Properties


_BOOL_WORDS = {True: ["true", "yes", "on", "1"], False: ["false", "no", "off", "0"]}
_env_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


@st.composite
def flat_settings_and_env(draw: st.DrawFn) -> tuple[dict[str, object], dict[str, str]]:
    values: dict[str, object] = {}
    env: dict[str, str] = {}

    def put(field: str, value: object, text: str) -> None:
        values[field] = value
        env[f"AIAAS_{field.upper()}"] = text

    name = draw(_env_text)
    put("name", name, name)
    count = draw(st.integers())
    put("count", count, str(count))
    ratio = draw(st.floats(allow_nan=False, allow_infinity=False))
    put("ratio", ratio, repr(ratio))
    flag = draw(st.booleans())
    word = draw(st.sampled_from(_BOOL_WORDS[flag]))
    put("flag", flag, "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in word))
    level = draw(st.sampled_from(list(Level)))
    put("level", level, draw(st.sampled_from([level.value, level.name, level.value.upper()])))
    priority = draw(st.sampled_from(list(Priority)))
    put("priority", priority, draw(st.sampled_from([str(priority.value), priority.name])))
    mode = draw(st.sampled_from(["fast", "slow"]))
    put("mode", mode, mode)
    timeout = draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10_000)))
    put("timeout", timeout, f"{timeout.days}d {timeout.seconds}s {timeout.microseconds}us")
    tags = tuple(draw(st.lists(_env_text, max_size=4)))
    put("tags", tags, json.dumps(list(tags)))
    ports = draw(st.lists(st.integers(0, 65535), max_size=4))
    put("ports", ports, ",".join(str(p) for p in ports))
    kinds = frozenset(draw(st.sets(st.sampled_from(list(Level)))))
    put("kinds", kinds, ", ".join(k.value for k in kinds))
    path = draw(_env_text.filter(lambda t: t.strip()))
    put("path", Path(path), path)
    limit = draw(st.none() | st.integers())
    put("limit", limit, "" if limit is None else str(limit))
    token = draw(_env_text)
    put("token", Secret(token), token)
    return values, env


@given(flat_settings_and_env())
def test_values_round_trip_through_environment_text(
    case: tuple[dict[str, object], dict[str, str]],
) -> None:
    values, env = case
    loaded = load_settings(Flat, environ=env)
    assert attrs.asdict(loaded, recurse=False) == values


@attrs.frozen
class Many:
    i: int = 0
    f: float = 0.0
    b: bool = False
    t: timedelta = timedelta(0)
    e: Level = Level.INFO
    lit: Literal["a", "b"] = "a"
    seq: tuple[int, ...] = ()
    opt: int | None = None


_GOOD = {
    "i": st.integers().map(str),
    "f": st.floats(allow_nan=False, allow_infinity=False).map(repr),
    "b": st.sampled_from(["yes", "off", "1", "FALSE"]),
    "t": st.sampled_from(["1s", "2m", "0.5", "1h30m", "250ms"]),
    "e": st.sampled_from(["debug", "INFO", "Warning"]),
    "lit": st.sampled_from(["a", "B"]),
    "seq": st.lists(st.integers(), max_size=3).map(lambda xs: ",".join(map(str, xs))),
    "opt": st.sampled_from(["", "5", " -2 "]),
}
_BAD = {
    "i": st.sampled_from(["abc", "1.5", "", "0x1F", "1e3", "--1", "\u0661"]),
    "f": st.sampled_from(["abc", "nan", "-inf", "", "1,5"]),
    "b": st.sampled_from(["maybe", "2", "", "tru", "y"]),
    "t": st.sampled_from(["5x", "-1s", "s", "1h-", "", "1.2.3s", "1 h m"]),
    "e": st.sampled_from(["nope", "", "debugging"]),
    "lit": st.sampled_from(["c", "", "ab"]),
    "seq": st.sampled_from(["1,x", "[1,", "1,,2", "[1, 2.5]"]),
    "opt": st.sampled_from(["x", "1.0", "--"]),
}


@given(st.data())
def test_n_bad_fields_give_exactly_n_problems(data: st.DataObject) -> None:
    bad = data.draw(st.sets(st.sampled_from(sorted(_BAD))), label="bad fields")
    env = {
        f"AIAAS_{name.upper()}": data.draw((_BAD if name in bad else _GOOD)[name], label=name)
        for name in sorted(_GOOD)
        if name in bad or data.draw(st.booleans(), label=f"set {name}")
    }
    if not bad:
        assert isinstance(load_settings(Many, environ=env), Many)
        return
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Many, environ=env)
    problems = excinfo.value.problems
    assert len(problems) == len(bad)
    assert {p.path for p in problems} == bad
    assert all(p.source == f"env AIAAS_{p.path.upper()}" for p in problems)


# --------------------------------------------------------------------------------------------
# Less common shapes


@attrs.frozen
class Choices:
    number: Literal[1, 2] = 1
    switch: Literal[True] = True
    level: Literal[Level.DEBUG, Level.INFO] = Level.INFO


def test_literals_of_ints_bools_and_enum_members() -> None:
    loaded = load_settings(Choices, environ={"AIAAS_NUMBER": "2", "AIAAS_LEVEL": "DEBUG"})
    assert (loaded.number, loaded.level) == (2, Level.DEBUG)
    assert load_settings(Choices, environ={"AIAAS_SWITCH": "TRUE"}).switch is True
    assert load_settings(Choices, environ={}, overrides={"number": 2}).number == 2
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Choices, environ={}, overrides={"number": 2.0, "switch": 1})
    assert {p.expected for p in excinfo.value.problems} == {"one of: 1, 2", "one of: true"}


@attrs.frozen
class Leaf3:
    depth: int = 3


@attrs.frozen
class Mid:
    leaf: Leaf3 = Leaf3()
    label: str = "mid"


@attrs.frozen
class Top:
    mid: Mid = Mid(leaf=Leaf3(depth=7), label="top-default")
    db: Database = attrs.Factory(lambda: Database(url="u", password=Secret("p")))
    lazy: Database = attrs.Factory(Database)  # cannot be built without input


def test_deeply_nested_defaults_and_factories_that_need_input() -> None:
    environ = {"AIAAS_LAZY__URL": "lazy-url", "AIAAS_LAZY__PASSWORD": "lazy-pw"}
    top = load_settings(Top, environ={**environ, "AIAAS_MID__LEAF__DEPTH": "9"})
    assert top.mid == Mid(leaf=Leaf3(depth=9), label="top-default")
    assert top.db.url == "u"
    assert top.lazy == Database(url="lazy-url", password=Secret("lazy-pw"))
    top = load_settings(Top, environ=environ)
    assert top.mid.leaf.depth == 7
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Top, environ={})
    assert set(problems_of(excinfo)) == {"lazy.url", "lazy.password"}


def _no_default_inner(_inst: object, _attribute: attrs.Attribute[Inner], value: Inner) -> None:
    if value == Inner():
        raise ValueError("configure inner")


@attrs.frozen
class Guarded:
    inner: Inner = attrs.field(factory=Inner, validator=_no_default_inner)


def test_validators_on_nested_settings_fields_are_reported() -> None:
    assert load_settings(Guarded, environ={"AIAAS_INNER__SIZE": "2"}).inner.size == 2
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Guarded, environ={})
    (problem,) = excinfo.value.problems
    assert (problem.path, problem.source) == ("", "validation")
    assert "configure inner" in problem.expected


def test_secret_collections_from_overrides_are_masked() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Keys, environ={}, overrides={"tokens": ["tok-alpha", 5], "key": "k" * 12})
    (problem,) = excinfo.value.problems
    assert problem.path == "tokens"
    assert problem.value == SECRET_MASK
    assert "tok-alpha" not in str(excinfo.value)
