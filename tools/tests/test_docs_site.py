"""tools/docs_site.py: the docs site's generated pages, and strict builds of small real sites."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import docs_site
from docs_site import DocsBuildError

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "tools" / "docs_site.py"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


CHANGELOG = """
    # Changelog

    All notable changes to `demo-pkg`.

    ## [Unreleased]

    ### Removed

    - `old_name`: deprecated since 0.2.0; use `new_name`.

    ## [0.2.0] - 2026-12-01

    ### Changed

    - `connect` takes `timeout` as a keyword only:
      `connect(url, timeout=5)`.

    ### Deprecated

    - `old_name`: use `new_name`.

    ```text
    ## [9.9.9] a heading inside a code block is no release
    ```

    ## [0.1.0] - 2026-11-01

    ### Added

    - `connect`, `old_name`.

    [Unreleased]: https://example.invalid/compare/0.2.0...HEAD
    """


def make_repo(root: Path, *, readme_link: str = "[the changelog](CHANGELOG.md)") -> Path:
    """A small repository shaped like ours: one package, one example, docs/ and mkdocs.yml."""
    write(root / "README.md", "# demo\n\nSee [demo-pkg](packages/demo-pkg) and [x](missing/).\n")
    write(root / "docs" / "index.md", "# Home\n\nThe [overview](overview.md).\n")
    pkg = root / "packages" / "demo-pkg"
    write(
        pkg / "pyproject.toml",
        """
        [project]
        name = "demo-pkg"
        version = "0.3.0"
        description = "a demo"
        """,
    )
    write(pkg / "README.md", f"# demo-pkg\n\n{readme_link}; the [example](../../examples/ex).\n")
    write(pkg / "CHANGELOG.md", CHANGELOG)
    write(
        pkg / "src" / "demo" / "__init__.py",
        '''
        """Demo."""

        __version__ = "0.3.0"
        __all__ = ["connect", "Client", "__version__"]
        ''',
    )
    write(pkg / "src" / "demo" / "sub" / "__init__.py", '__all__ = ["thing"]\n')
    write(pkg / "src" / "demo" / "_private" / "__init__.py", '__all__ = ["hidden"]\n')
    write(
        pkg / "tests" / "contracts" / "README.md", "# Contracts\n\nFrom [here](../../README.md).\n"
    )
    write(pkg / "tests" / "contracts" / "api.yaml", "openapi: 3.0.3\ninfo:\n  title: demo\n")
    write(pkg / "docs" / "erd.md", "# Diagram\n\nrows\n")
    ex = root / "examples" / "ex"
    write(ex / "pyproject.toml", '[project]\nname = "ex"\nversion = "0.1.0"\n')
    write(
        ex / "README.md", "# ex\n\nUses [demo-pkg](../../packages/demo-pkg/README.md#demo-pkg).\n"
    )
    write(
        root / "mkdocs.yml",
        f"""
        site_name: demo
        site_dir: site
        strict: true
        use_directory_urls: false
        hooks:
          - {HOOK}
        validation:
          nav:
            omitted_files: warn
            not_found: warn
          links:
            not_found: warn
            unrecognized_links: warn
        markdown_extensions:
          - tables
        """,
    )
    return root


def mkdocs_build(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=root,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


# --- strict builds --------------------------------------------------------------------------


def test_strict_build_of_a_repository_renders_every_generated_page(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    write(root / "README.md", "# demo\n\nSee [demo-pkg](packages/demo-pkg).\n")
    proc = mkdocs_build(root)
    assert proc.returncode == 0, proc.stderr
    site = root / "site"
    for page in [
        "index.html",
        "overview.html",
        "packages/demo-pkg/index.html",
        "packages/demo-pkg/api.html",
        "packages/demo-pkg/api-sub.html",
        "packages/demo-pkg/upgrading.html",
        "packages/demo-pkg/changelog.html",
        "packages/demo-pkg/docs/index.html",
        "packages/demo-pkg/docs/erd.html",
        "examples/ex/index.html",
        "contracts/demo-pkg.html",
        "benchmarks.html",
        "skew.html",
    ]:
        assert (site / page).is_file(), page
    assert not (site / "packages/demo-pkg/api-_private.html").exists()
    overview = (site / "overview.html").read_text()
    assert 'href="packages/demo-pkg/index.html"' in overview
    example = (site / "examples/ex/index.html").read_text()
    assert 'href="../../packages/demo-pkg/index.html#demo-pkg"' in example
    assert "Not measured in this build" in (site / "benchmarks.html").read_text()
    assert not (root / "docs" / "overview.md").exists()  # nothing generated is written to docs/


def test_strict_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", readme_link="[gone](docs/nowhere.md)")
    write(root / "README.md", "# demo\n")
    proc = mkdocs_build(root)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "'packages/demo-pkg/docs/nowhere.md' is not found" in output
    assert "in strict mode" in output


def test_strict_build_fails_on_a_broken_link_in_the_overview(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")  # README.md links to missing/
    proc = mkdocs_build(root)
    assert proc.returncode != 0
    assert "missing" in proc.stderr


def test_build_refuses_a_generated_page_committed_in_docs(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    write(root / "README.md", "# demo\n")
    write(root / "docs" / "skew.md", "# a stale copy\n")
    proc = mkdocs_build(root)
    assert proc.returncode != 0
    assert "docs/skew.md is generated at build time" in proc.stderr


def test_build_reports_a_module_without_all(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    write(root / "README.md", "# demo\n")
    write(root / "packages/demo-pkg/src/demo/sub/__init__.py", "thing = 1\n")
    proc = mkdocs_build(root)
    assert proc.returncode != 0
    assert "no __all__" in proc.stderr


# --- the API reference ----------------------------------------------------------------------


def test_api_page_lists_exactly_all_in_order(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    (project,) = [p for p in docs_site.discover(root) if p.section == "packages"]
    assert docs_site.public_modules(project) == ["demo", "demo.sub"]
    page = docs_site.api_page(project, "demo")
    blocks = [line[4:] for line in page.splitlines() if line.startswith("::: ")]
    assert blocks == ["demo.connect", "demo.Client"]
    assert "Also exported: `__version__`." in page
    assert "exactly the 3 names of its `__all__`" in page


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "no __all__"),
        ("__all__ = sorted(['a'])\n", "literal list of strings"),
        ("__all__: list[str] = ['a', 1]\n", "literal list of strings"),
    ],
)
def test_public_names_refuses_what_it_cannot_read(
    tmp_path: Path, source: str, message: str
) -> None:
    init = write(tmp_path / "__init__.py", source)
    with pytest.raises(DocsBuildError, match=message):
        docs_site.public_names(init)


def test_public_names_reads_an_annotated_all(tmp_path: Path) -> None:
    init = write(tmp_path / "__init__.py", "__all__: list[str] = ['b', 'a']\n")
    assert docs_site.public_names(init) == ["b", "a"]


def test_every_package_of_the_repository_has_a_readable_all() -> None:
    packages = [p for p in docs_site.discover(ROOT) if p.section == "packages"]
    assert {p.name for p in packages} >= {"aiaas-core", "aiaas-telemetry", "aiaas-db"}
    for project in packages:
        for module in docs_site.public_modules(project):
            init = project.path / "src" / Path(*module.split(".")) / "__init__.py"
            names = docs_site.public_names(init)
            assert names == sorted(names), module  # sorted, as the conventions demand
            blocks = [
                line[4:]
                for line in docs_site.api_page(project, module).splitlines()
                if line.startswith("::: ")
            ]
            assert blocks == [f"{module}.{n}" for n in names if not n.startswith("__")]


# --- changelogs and upgrade guides ----------------------------------------------------------


def test_parse_changelog() -> None:
    releases = docs_site.parse_changelog(textwrap.dedent(CHANGELOG))
    assert [(r.version, r.date) for r in releases] == [
        ("Unreleased", None),
        ("0.2.0", "2026-12-01"),
        ("0.1.0", "2026-11-01"),
    ]
    assert releases[0].unreleased
    assert releases[1].changes["Changed"] == [
        "`connect` takes `timeout` as a keyword only:\n  `connect(url, timeout=5)`."
    ]
    assert releases[1].changes["Deprecated"][0].startswith("`old_name`: use `new_name`.")
    assert "9.9.9" not in [r.version for r in releases]
    assert releases[2].changes == {"Added": ["`connect`, `old_name`."]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# Changelog\n\n### Added\n\n- x\n", "before any"),
        ("## [1.0.0] - 2026-01-01\n\n### Improved\n\n- x\n", "unknown section '### Improved'"),
    ],
)
def test_parse_changelog_refuses_malformed_sections(text: str, message: str) -> None:
    with pytest.raises(DocsBuildError, match=message):
        docs_site.parse_changelog(text)


def test_upgrade_guide_between_releases(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    (project,) = [p for p in docs_site.discover(root) if p.section == "packages"]
    guide = docs_site.upgrade_guide(project, docs_site.parse_changelog(textwrap.dedent(CHANGELOG)))
    headings = [line for line in guide.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Unreleased (after 0.2.0): in the next release",
        "## 0.1.0 to 0.2.0 (2026-12-01)",
        "## 0.1.0: the first release (2026-11-01)",
    ]
    unreleased = guide.split("## 0.1.0 to 0.2.0")[0]
    assert "1 change(s) to act on" in unreleased
    assert "### Removed: replace these before upgrading" in unreleased
    step = guide.split("## 0.1.0 to 0.2.0")[1].split("## 0.1.0:")[0]
    assert "### Changed: check your use of these" in step
    assert "  `connect(url, timeout=5)`." in step
    assert "### Deprecated" in step
    assert "Nothing to upgrade from" in guide.split("## 0.1.0:")[1]


def test_upgrade_guide_before_any_release_and_without_entries(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    (project,) = [p for p in docs_site.discover(root) if p.section == "packages"]
    first = docs_site.upgrade_guide(
        project, docs_site.parse_changelog("## [Unreleased]\n\n### Added\n\n- all of it\n")
    )
    assert "Not released yet: these entries will make up the first release." in first
    empty = docs_site.upgrade_guide(
        project, docs_site.parse_changelog("## [Unreleased]\n\n## [0.1.0] - 2026-01-01\n")
    )
    assert "Nothing removed or changed" in empty
    assert "No entries." in empty
    assert "records no release yet" in docs_site.upgrade_guide(project, [])


def test_every_changelog_of_the_repository_parses() -> None:
    for project in docs_site.discover(ROOT):
        changelog = project.path / "CHANGELOG.md"
        if changelog.is_file():
            releases = docs_site.parse_changelog(changelog.read_text(encoding="utf-8"))
            assert releases, project.name
            assert releases[0].unreleased, project.name


# --- links ----------------------------------------------------------------------------------


PAGES = {"": "overview.md", "packages/p": "packages/p/index.md", "README.md": "overview.md"}


def rewrite(markdown: str, source: str = "packages/p/README.md") -> str:
    return docs_site.rewrite_links(
        markdown, source=source, page_uri="packages/p/index.md", pages=PAGES, root=ROOT
    )


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("[home](../../README.md#set-up)", "[home](../../overview.md#set-up)"),
        ("[me](.)", "[me](index.md)"),
        ("[web](https://example.org/x)", "[web](https://example.org/x)"),
        ("[top](#top)", "[top](#top)"),
        ("[tools](../../tools/)", "tools (`tools/`)"),
        ("[noxfile](../../../noxfile.py)", "[noxfile](../../../noxfile.py)"),
        ("`[code](../../README.md)` stays", "`[code](../../README.md)` stays"),
        ("[`p`](.) and `x`", "[`p`](index.md) and `x`"),
        ('[t](../../README.md "title")', '[t](../../overview.md "title")'),
    ],
)
def test_rewrite_links(markdown: str, expected: str) -> None:
    assert rewrite(markdown) == expected


def test_rewrite_links_shows_repository_files_without_a_page_as_paths() -> None:
    out = rewrite("[the noxfile](noxfile.py), [`tools/`](tools/)", source="README.md")
    assert out == "the noxfile (`noxfile.py`), `tools/`"


def test_rewrite_links_keeps_missing_targets_and_code_blocks() -> None:
    text = "[gone](docs/nowhere.md)\n```md\n[x](README.md)\n```\n![img](README.md)"
    out = rewrite(text, source="README.md")
    assert out.splitlines()[:4] == ["[gone](docs/nowhere.md)", "```md", "[x](README.md)", "```"]
    assert out.splitlines()[4] == "![img](../../overview.md)"


# --- command lines --------------------------------------------------------------------------


def test_cli_help_runs_a_click_group_and_each_sub_command() -> None:
    helps = {" ".join(argv): text for argv, text in docs_site.cli_help("mkdocs")}
    assert {"mkdocs", "mkdocs build", "mkdocs serve"} <= set(helps)
    assert "Usage: mkdocs build [OPTIONS]" in helps["mkdocs build"]


def test_cli_help_of_an_argparse_command() -> None:
    ((argv, text),) = docs_site.cli_help("nox")
    assert argv == ["nox"]
    assert text.startswith("usage: nox")
    assert "--session" in text


def test_cli_help_reports_a_command_that_is_not_installed() -> None:
    with pytest.raises(DocsBuildError, match="no console script 'no-such-command' is installed"):
        docs_site.cli_help("no-such-command")


def test_cli_page(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    project = docs_site.discover(root)[0]
    page = docs_site.cli_page(
        project, "tool", [(["tool"], "usage: tool\n"), (["tool", "x"], "x\n")]
    )
    assert "## `tool`\n\n```text\nusage: tool\n```" in page
    assert "### `tool x`" in page
    assert "(../packages/demo-pkg/index.md)" in page


# --- benchmarks and version skew ------------------------------------------------------------


def bench_data() -> dict[str, object]:
    """A pytest-benchmark JSON document, as `nox -s benchmarks` records it (fields we read)."""

    def stats(lo: float, median: float, mean: float, stddev: float) -> dict[str, float]:
        return {"min": lo, "median": median, "mean": mean, "stddev": stddev, "ops": 1 / mean}

    return {
        "machine_info": {
            "node": "ci",
            "cpu": {"brand_raw": "cpu", "count": 2},
            "python_version": "3.11.7",
        },
        "datetime": "2026-12-07T00:00:00",
        "commit_info": {"id": "0123456789abcdef"},
        "benchmarks": [
            {
                "group": "core",
                "name": "test_fast",
                "fullname": "benchmarks/core/test_x.py::test_fast",
                "stats": {**stats(1e-6, 1.5e-6, 2e-6, 1e-7), "rounds": 1000},
                "extra_info": {"peer_ratio": 0.5},
            },
            {
                "group": None,
                "name": "test_slow<&>",
                "fullname": "benchmarks/db/test_y.py::test_slow<&>",
                "stats": {**stats(0.02, 0.021, 0.022, 0.001), "rounds": 5},
            },
        ],
    }


def test_benchmarks_page_from_recorded_results(tmp_path: Path) -> None:
    write(tmp_path / ".benchmarks" / "20261207T000000Z.json", json.dumps(bench_data()))
    (tmp_path / ".benchmarks" / "skew.png").write_bytes(b"\x89PNG\r\n")
    files = docs_site.benchmarks_pages(tmp_path)
    page = files["benchmarks.md"]
    assert isinstance(page, str)
    assert "From `.benchmarks/20261207T000000Z.json`" in page
    assert "`0123456789ab`" in page
    assert "| `test_fast` | 1 µs | 1.5 µs | 2 µs | 100 ns |" in page
    assert "- `test_fast`: peer_ratio=0.5" in page
    assert "### benchmarks/db/test_y.py" in page
    assert files["benchmarks/plots/skew.png"] == b"\x89PNG\r\n"
    svg = files["benchmarks/figures/group-00.svg"]  # groups by name: benchmarks/db/... first
    assert isinstance(svg, str)
    assert "test_slow&lt;&amp;&gt;" in svg
    assert "21 ms" in svg
    assert "Not measured" not in page.split("## Fault campaign")[0]
    assert "run `nox -s chaos`" in page


def test_benchmarks_page_prefers_latest_and_shows_the_fault_campaign(tmp_path: Path) -> None:
    write(tmp_path / ".benchmarks" / "latest.json", json.dumps(bench_data()))
    write(tmp_path / ".benchmarks" / "20991231T000000Z.json", "{}")
    write(tmp_path / ".chaos" / "results.md", "# Fault campaign\n\n| a | b |\n| --- | --- |\n")
    page = docs_site.benchmarks_pages(tmp_path)["benchmarks.md"]
    assert isinstance(page, str)
    assert "From `.benchmarks/latest.json`" in page
    assert "### Fault campaign" in page


def test_benchmarks_page_without_results(tmp_path: Path) -> None:
    page = docs_site.benchmarks_pages(tmp_path)["benchmarks.md"]
    assert isinstance(page, str)
    assert "**Not measured in this build**: `.benchmarks/` holds no results" in page


def test_skew_page_renders_releases_toml(tmp_path: Path) -> None:
    assert "`releases.toml` does not exist" in docs_site.skew_page(tmp_path)
    write(
        tmp_path / "releases.toml",
        """
        # Every release.

        [[release]]
        package = "aiaas-core"
        version = "0.1.0"
        commit = "0123456789abcdef0123456789abcdef01234567"
        date = "2026-12-07"
        wheel_sha256 = "aaaa"
        """,
    )
    page = docs_site.skew_page(tmp_path)
    assert "| package | version | commit | date | wheel_sha256 |" in page
    assert "| aiaas-core | 0.1.0 | `0123456789ab` | 2026-12-07 | aaaa |" in page
    assert "nox -s skew -- --quick" in page
    assert "**Not measured in this build**: run `nox -s skew -- --quick`" in page
    write(tmp_path / ".skew" / "matrix.md", "# Version-skew matrix (quick)\n\n| a |\n| --- |\n")
    page = docs_site.skew_page(tmp_path)
    assert "From `.skew/matrix.md` (`tools/skew.py`):\n\n| a |\n| --- |\n" in page
    assert "# Version-skew matrix (quick)" not in page


@pytest.mark.parametrize(
    ("text", "message"),
    [("[[release]\n", "not valid TOML"), ("release = 1\n", "array of tables")],
)
def test_skew_page_refuses_a_malformed_releases_toml(
    tmp_path: Path, text: str, message: str
) -> None:
    write(tmp_path / "releases.toml", text)
    with pytest.raises(DocsBuildError, match=message):
        docs_site.skew_page(tmp_path)


def test_skew_page_without_releases_recorded(tmp_path: Path) -> None:
    write(tmp_path / "releases.toml", "# none yet\n")
    assert "records no release yet" in docs_site.skew_page(tmp_path)


def test_generate_without_command_lines_covers_the_real_repository() -> None:
    site = docs_site.generate(ROOT, run_clis=False)
    assert "packages/aiaas-core/api.md" in site.files
    assert "contracts/aiaas-core.md" in site.files
    assert not any(uri.startswith("cli/") for uri in site.files)
    titles = [next(iter(entry)) for entry in site.nav]
    assert titles == [
        "Home",
        "Overview",
        "Packages",
        "Examples",
        "Contracts",
        "Benchmarks",
        "Version skew",
    ]
    pages = dict(docs_site.iter_markdown(site.files))
    assert set(pages) == {u for u in site.files if u.endswith(".md")}
    assert all(page.lstrip().startswith(("#", "<!--")) for page in pages.values())


@pytest.mark.parametrize(
    ("html_text", "module", "expected"),
    [
        (
            "see :class:<code>~aiaas_core.ConfigError</code>.",
            "aiaas_core",
            'see <autoref optional identifier="aiaas_core.ConfigError">'
            "<code>ConfigError</code></autoref>.",
        ),
        (
            ":meth:<code>Runtime.aenqueue_many</code>",
            "aiaas_serving",
            '<autoref optional identifier="aiaas_serving.Runtime.aenqueue_many">'
            "<code>Runtime.aenqueue_many</code></autoref>",
        ),
        (
            ":class:<code>aiaas_core.Actor</code> :exc:<code>ValueError</code>",
            "aiaas_serving",
            '<autoref optional identifier="aiaas_core.Actor"><code>aiaas_core.Actor</code>'
            '</autoref> <autoref optional identifier="aiaas_serving.ValueError">'
            "<code>ValueError</code></autoref>",
        ),
        (
            ":py:func:<code>load()</code>",
            None,
            '<autoref optional identifier="load"><code>load</code></autoref>',
        ),
        (
            "a :term:<code>word</code> and <code>x</code>",
            "m",
            "a :term:<code>word</code> and <code>x</code>",
        ),
    ],
)
def test_sphinx_roles_become_optional_references(
    html_text: str, module: str | None, expected: str
) -> None:
    roots = frozenset({"aiaas_core", "aiaas_serving"})
    assert docs_site.sphinx_roles_to_refs(html_text, module, roots) == expected
