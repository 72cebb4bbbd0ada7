"""tools/new_service.py: copying examples/service-template under a new name."""

from __future__ import annotations

import ast
import re
import stat
import tomllib
from pathlib import Path

import pytest

import new_service
from new_service import Names, UsageError, check_name, create, main, rename

TEMPLATE = new_service.DEFAULT_TEMPLATE
LEFTOVER = re.compile(r"service[-_ ]?template", re.IGNORECASE)


def test_names() -> None:
    assert Names.of("orders-api") == Names(
        dist="orders-api",
        module="orders_api",
        upper="ORDERS_API",
        title="Orders Api",
        phrase="orders api",
    )
    assert Names.of("greeter") == Names("greeter", "greeter", "GREETER", "Greeter", "greeter")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("service-template", "orders-api"),
        ("service_template", "orders_api"),
        ("SERVICE_TEMPLATE_PORT", "ORDERS_API_PORT"),
        ("SERVICE-TEMPLATE", "ORDERS-API"),
        ("Service Template", "Orders Api"),
        ("Service template", "Orders api"),
        ("service template", "orders api"),
        ("a service-template, a service_template.", "a orders-api, a orders_api."),
        ("template service route template", "template service route template"),
        ("src/service_template/_app.py", "src/orders_api/_app.py"),
    ],
)
def test_rename_keeps_the_shape(text: str, expected: str) -> None:
    assert rename(text, Names.of("orders-api")) == expected


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_copy_is_renamed_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "out"
    assert main(["orders-api", "--dest", str(dest)]) == 0
    target = dest / "orders-api"
    files = _tree(target)
    for path, data in files.items():
        assert not LEFTOVER.search(path), path
        assert not LEFTOVER.search(data.decode("utf-8")), f"template name left in {path}"
    expected = {
        new_service.rename(p, Names.of("orders-api"))
        for p in map(Path.as_posix, new_service.template_files(TEMPLATE))
    }
    assert set(files) == expected
    assert "src/orders_api/__init__.py" in files
    assert "src/orders_api/py.typed" in files
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in files)
    config = files["src/orders_api/_config.py"].decode()
    assert 'SERVICE_NAME: Final = "orders-api"' in config
    assert 'ENV_PREFIX: Final = "ORDERS_API_"' in config
    out = capsys.readouterr().out
    assert f"created {target} ({len(files)} files)" in out
    assert "  src/orders_api/_app.py" in out
    assert not list(dest.glob(".orders-api-*"))  # no staging folder left behind


def test_generated_tests_import_the_renamed_module(tmp_path: Path) -> None:
    """A static check (nothing installed): the copy's tests and packaging point at its module."""
    target = create("billing-svc", dest=tmp_path)
    module = "billing_svc"
    project = tomllib.loads((target / "pyproject.toml").read_text())
    assert project["project"]["name"] == "billing-svc"
    assert project["project"]["scripts"] == {"billing-svc": f"{module}:main"}
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [f"src/{module}"]
    package = target / "src" / module
    assert (package / "__init__.py").is_file()
    assert (package / "__main__.py").is_file()

    imported: set[str] = set()
    for source in sorted((target / "tests").glob("*.py")):
        tree = ast.parse(source.read_text(), filename=str(source))  # still valid Python
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                imported.add(str(node.args[0].value))
    assert module in imported
    assert not {name for name in imported if LEFTOVER.search(name)}

    for source in package.glob("*.py"):  # the package's own imports are relative or renamed
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not LEFTOVER.search(node.module), source


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Orders", "lower-case"),
        ("ab", "3 to 42"),
        ("a" * 43, "3 to 42"),
        ("9lives", "starting with a letter"),
        ("orders-", "not ending with a hyphen"),
        ("orders_api", "lower-case letters, digits and hyphens"),
        ("orders api", "lower-case letters, digits and hyphens"),
        ("../evil", "lower-case letters, digits and hyphens"),
        ("orders--api", "double hyphens"),
        ("async", "Python keyword"),
        ("class", "Python keyword"),
        ("json", "standard library"),
        ("email", "standard library"),
        ("aiaas-widgets", "SDK's own names"),
        ("service-template", "SDK's own names"),
    ],
)
def test_bad_names_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, reason: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(reason)):
        check_name(name)
    assert main([name, "--dest", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"new_service.py: invalid service name {name!r}")
    assert reason in err
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_an_existing_folder_is_refused_then_replaced_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "orders-api"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    assert main(["orders-api", "--dest", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err
    assert "--force" in err
    assert (target / "mine.txt").read_text() == "keep me"

    assert main(["orders-api", "--dest", str(tmp_path), "--force"]) == 0
    assert not (target / "mine.txt").exists()  # replaced, not merged
    assert (target / "src" / "orders_api" / "_app.py").is_file()
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(TEMPLATE.stat().st_mode)


def test_force_never_replaces_the_template(tmp_path: Path) -> None:
    inside = tmp_path / "orders-api" / "template"
    inside.mkdir(parents=True)
    for template in (inside, tmp_path / "orders-api"):
        with pytest.raises(UsageError, match="holds the template"):
            create("orders-api", dest=tmp_path, template=template, force=True)
    assert inside.is_dir()


def test_caches_and_binary_files(tmp_path: Path) -> None:
    template = tmp_path / "tpl"
    (template / "src" / "service_template" / "__pycache__").mkdir(parents=True)
    (template / "src" / "service_template" / "__init__.py").write_text(
        "NAME = 'service-template'\n"
    )
    (template / "src" / "service_template" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    (template / "src" / "service_template" / "stray.pyc").write_bytes(b"\0")
    (template / "build").mkdir()
    (template / "build" / "lib.py").write_text("")
    (template / "x.egg-info").mkdir()
    (template / "x.egg-info" / "PKG-INFO").write_text("")
    (template / ".coverage").write_text("")
    (template / ".coverage.host.1").write_text("")
    (template / "logo.png").write_bytes(b"\x89PNG\xff\xfe service-template")
    (template / "run.sh").write_text("#!/bin/sh\nservice-template\n")
    (template / "run.sh").chmod(0o755)
    target = create("orders-api", dest=tmp_path / "out", template=template)
    assert set(_tree(target)) == {"src/orders_api/__init__.py", "logo.png", "run.sh"}
    assert (target / "src/orders_api/__init__.py").read_text() == "NAME = 'orders-api'\n"
    assert (target / "logo.png").read_bytes() == b"\x89PNG\xff\xfe service-template"  # as is
    assert (target / "run.sh").read_text() == "#!/bin/sh\norders-api\n"
    assert (target / "run.sh").stat().st_mode & 0o111  # still executable


def test_missing_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["orders-api", "--dest", str(tmp_path / "out"), "--template", str(tmp_path / "none")]
    assert main(args) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_failed_copy_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(new_service.shutil, "copymode", broken)
    with pytest.raises(OSError, match="disk full"):
        create("orders-api", dest=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_usage_without_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "NAME" in capsys.readouterr().err
