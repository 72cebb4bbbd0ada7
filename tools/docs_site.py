"""The docs site's generated pages, as an MkDocs hook (``hooks:`` in ``mkdocs.yml``).

    nox -s docs                          build the site strictly into site/
    mkdocs serve                         the same pages, live (in an environment with every project)

Nothing generated is committed: at build time this hook adds, beside the hand-written pages of
``docs/``, a page per package and example (its README, links rewritten), the API reference of
each package (mkdocstrings, exactly the names of its ``__all__``), an upgrade guide and the
changelog per package, the ``--help`` of every command line (run at build time), the contracts
(package data and ``tests/contracts/``), the benchmark figures (``.benchmarks/`` when present) and
the version-skew page (``releases.toml`` when present). It also sets the navigation, so a new
project under ``packages/`` or ``examples/`` appears without an edit here.

A link in a README to another file of the repository becomes a link to that file's page when it
has one, or the file's repository path in code otherwise; a link to a path that does not exist
is left as it is, so ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import ast
import html
import json
import os
import posixpath
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (("packages", "Packages"), ("examples", "Examples"))
CHANGE_KINDS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")
HELP_COLUMNS = "100"
HELP_TIMEOUT_S = 120.0


class DocsBuildError(RuntimeError):
    """A page cannot be generated: the message says what is wrong and what to do."""


# --- projects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    """One folder with a ``pyproject.toml`` under ``packages/`` or ``examples/``."""

    name: str
    section: str  # "packages" or "examples"
    path: Path
    version: str
    description: str
    scripts: tuple[str, ...]
    modules: tuple[str, ...]  # importable top-level modules under src/

    @property
    def uri(self) -> str:
        """The folder of the project's pages in the site."""
        return f"{self.section}/{self.name}"


def discover(root: Path = ROOT) -> list[Project]:
    """Every project of the repository, by section then name."""
    found: list[Project] = []
    for section, _title in SECTIONS:
        for pyproject in sorted((root / section).glob("*/pyproject.toml")):
            meta = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
            src = pyproject.parent / "src"
            modules = tuple(
                sorted(
                    p.parent.name
                    for p in src.glob("*/__init__.py")
                    if not p.parent.name.startswith(("_", "."))
                )
            )
            found.append(
                Project(
                    name=str(meta.get("name", pyproject.parent.name)),
                    section=section,
                    path=pyproject.parent,
                    version=str(meta.get("version", "?")),
                    description=str(meta.get("description", "")),
                    scripts=tuple(sorted(meta.get("scripts", {}))),
                    modules=modules,
                )
            )
    return found


# --- public API -----------------------------------------------------------------------------


def public_names(init: Path) -> list[str]:
    """The names a module's ``__all__`` lists, read without importing it."""
    tree = ast.parse(init.read_text(encoding="utf-8"), filename=str(init))
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = list(node.targets), node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            try:
                names = ast.literal_eval(value) if value is not None else None
            except ValueError:
                names = None
            if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
                raise DocsBuildError(
                    f"{init}: __all__ must be a literal list of strings for the API reference;"
                    " write the names out"
                )
            return list(names)
    raise DocsBuildError(f"{init}: no __all__; declare the public names of the module there")


def public_modules(project: Project) -> list[str]:
    """The project's public modules: each top-level module and its public sub-packages."""
    out: list[str] = []
    for module in project.modules:
        base = project.path / "src" / module
        out.append(module)
        for init in sorted(base.rglob("__init__.py")):
            parts = init.parent.relative_to(base).parts
            if parts and not any(p.startswith(("_", ".")) for p in parts):
                out.append(".".join((module, *parts)))
    return out


def api_page(project: Project, module: str) -> str:
    """The reference of one public module: an mkdocstrings block per name of its ``__all__``."""
    init = project.path / "src" / Path(*module.split(".")) / "__init__.py"
    names = public_names(init)
    documented = [n for n in names if not (n.startswith("__") and n.endswith("__"))]
    lines = [
        f"# `{module}` API reference",
        "",
        f"Every public name of `{module}` ({project.name} {project.version}): exactly the"
        f" {len(names)} names of its `__all__`, in that order, with their docstrings and type"
        " hints. Anything not listed here is private and may change without notice.",
        "",
    ]
    dunders = [n for n in names if n not in documented]
    if dunders:
        lines += [
            "Also exported: " + ", ".join(f"`{n}`" for n in dunders) + ".",
            "",
        ]
    for name in documented:
        lines += [
            f"::: {module}.{name}",
            "    options:",
            "      show_root_heading: true",
            "      show_root_full_path: false",
            "      heading_level: 2",
            "",
        ]
    return "\n".join(lines)


# --- changelogs -----------------------------------------------------------------------------

_RELEASE = re.compile(r"^## \[?(?P<version>[^\]\s]+)\]?(?:\s*-\s*(?P<date>\S+))?\s*$")
_KIND = re.compile(r"^### (?P<kind>\w+)\s*$")
_LINK_DEF = re.compile(r"^\[[^\]]+\]:\s*\S+")


@dataclass
class Release:
    """One ``## [version] - date`` section of a Keep a Changelog file."""

    version: str
    date: str | None
    changes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def unreleased(self) -> bool:
        """Whether this is the ``Unreleased`` section."""
        return self.version.lower() == "unreleased"


def parse_changelog(text: str) -> list[Release]:
    """The releases of a changelog, newest first, each with its entries by kind."""
    releases: list[Release] = []
    kind: str | None = None
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if not in_fence and (m := _RELEASE.match(line)):
            releases.append(Release(m["version"], m["date"]))
            kind = None
            continue
        if not in_fence and (m := _KIND.match(line)):
            if not releases:
                raise DocsBuildError(f"changelog: '{line}' comes before any '## [version]' heading")
            kind = m["kind"].capitalize()
            if kind not in CHANGE_KINDS:
                raise DocsBuildError(
                    f"changelog: unknown section '{line}' under {releases[-1].version};"
                    f" Keep a Changelog allows {', '.join(CHANGE_KINDS)}"
                )
            releases[-1].changes.setdefault(kind, [])
            continue
        if not releases or kind is None or _LINK_DEF.match(line):
            continue
        entries = releases[-1].changes[kind]
        if line.startswith("- "):
            entries.append(line[2:])
        elif entries and (line.startswith(" ") or not line.strip()):
            entries[-1] += "\n" + line
        elif line.strip():
            entries.append(line)
    for release in releases:
        for kind_, entries in release.changes.items():
            release.changes[kind_] = [e.rstrip() for e in entries]
    return releases


_GUIDE_PARTS = (
    ("Removed", "Removed: replace these before upgrading"),
    ("Changed", "Changed: check your use of these"),
    (
        "Deprecated",
        "Deprecated: still working, with warnings; move off them before the next release",
    ),
    ("Security", "Security"),
    ("Fixed", "Fixed"),
    ("Added", "Added"),
)


def _entry_lines(entry: str) -> list[str]:
    first, *rest = entry.split("\n")
    return [f"- {first}", *rest]


def upgrade_guide(project: Project, releases: Sequence[Release]) -> str:
    """What a user must do between consecutive releases, from the changelog, newest first."""
    lines = [
        f"# Upgrading {project.name}",
        "",
        f"What changed between the releases of {project.name} (installed here: "
        f"{project.version}), from its [changelog](changelog.md), newest first. Versions follow"
        " semver, and in 0.x a minor release may break: read the Removed and Changed entries of"
        " every release you skip. A public name is deprecated for at least one release"
        " (`aiaas_core.deprecated`: an `AiaasDeprecationWarning` names the replacement) before"
        " it is removed; run your tests with warnings as errors to find them.",
        "",
    ]
    if not releases:
        lines.append("The changelog records no release yet.")
        return "\n".join(lines) + "\n"
    for index, release in enumerate(releases):
        older = next((r for r in releases[index + 1 :] if not r.unreleased), None)
        if release.unreleased:
            title = f"Unreleased (after {older.version})" if older else "Unreleased"
            title += ": in the next release"
        elif older is None:
            title = f"{release.version}: the first release"
        else:
            title = f"{older.version} to {release.version}"
        if release.date:
            title += f" ({release.date})"
        lines += [f"## {title}", ""]
        if older is None:
            lines += [
                "Not released yet: these entries will make up the first release."
                if release.unreleased
                else "Nothing to upgrade from: this release starts the changelog.",
                "",
            ]
        breaking = sum(len(release.changes.get(k, [])) for k in ("Removed", "Changed"))
        if older is not None:
            lines += [
                f"{breaking} change(s) to act on (Removed, Changed)."
                if breaking
                else "Nothing removed or changed: upgrading needs no change on your side.",
                "",
            ]
        if not any(release.changes.values()):
            lines += ["No entries.", ""]
        for kind, heading in _GUIDE_PARTS:
            entries = release.changes.get(kind, [])
            if not entries:
                continue
            lines += [f"### {heading}", ""]
            for entry in entries:
                lines += _entry_lines(entry)
            lines.append("")
    return "\n".join(lines)


# --- links ----------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")
_MD_LINK = re.compile(
    r"(?P<bang>!?)\[(?P<text>[^\]\n]*)\]\((?P<target>[^()\s]+)(?P<title>\s+\"[^\"]*\")?\)"
)
_EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|#|/)")


def _relative(target_uri: str, page_uri: str) -> str:
    return posixpath.relpath(target_uri, posixpath.dirname(page_uri) or ".")


def rewrite_links(
    markdown: str,
    *,
    source: str,
    page_uri: str,
    pages: Mapping[str, str],
    root: Path = ROOT,
) -> str:
    """Point the repository-relative links of ``source`` (a repository path) at site pages.

    ``pages`` maps repository paths (files and folders, POSIX, no trailing slash; ``""`` for the
    root) to the site page that renders them. A link to an existing repository path without a
    page becomes that path in code; a link to a missing path is kept, so strict builds fail.
    """
    out: list[str] = []
    in_fence = False
    base = posixpath.dirname(source)

    def fix(match: re.Match[str]) -> str:
        target = match["target"]
        if _EXTERNAL.match(target):
            return match[0]
        path, _, fragment = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(base, path)).rstrip("/")
        if repo_path == ".":
            repo_path = ""
        if repo_path.startswith(".."):
            return match[0]  # outside the repository: left for the strict build to report
        if repo_path in pages:
            new = _relative(pages[repo_path], page_uri) + (f"#{fragment}" if fragment else "")
            return f"{match['bang']}[{match['text']}]({new}{match['title'] or ''})"
        if (root / repo_path).exists() and not match["bang"]:
            shown = repo_path + ("/" if (root / repo_path).is_dir() else "")
            text = match["text"]
            if text.strip("`") == path.strip("/") or text.strip("`") == path:
                return f"`{shown}`"
            return f"{text} (`{shown}`)"
        return match[0]

    for line in markdown.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        if in_fence or "](" not in line:
            out.append(line)
            continue
        spans = [m.span() for m in _CODE_SPAN.finditer(line)]
        pieces: list[str] = []
        pos = 0
        for link in _MD_LINK.finditer(line):
            if any(start <= link.start() < end for start, end in spans):
                continue  # inside a code span: not a link
            pieces += [line[pos : link.start()], fix(link)]
            pos = link.end()
        pieces.append(line[pos:])
        out.append("".join(pieces))
    return "\n".join(out)


# --- command lines --------------------------------------------------------------------------

# Run in a child process with the site's Python: loads a console script's entry point and runs it
# with --help, then each sub-command a "Commands:" section lists (click groups), the same way,
# printing [[argv, help], ...] as JSON. The help goes to stdout as it does in a terminal.
_HELP_WALKER = r"""
import contextlib, io, json, re, sys
from importlib.metadata import entry_points

name = sys.argv[1]
found = [ep for ep in entry_points(group="console_scripts") if ep.name == name]
if not found:
    sys.exit(f"no console script {name!r} is installed in this environment")
main = found[0].load()

def run(args):
    buf = io.StringIO()
    sys.argv = [name, *args, "--help"]
    with contextlib.redirect_stdout(buf):
        try:
            code = main()
        except SystemExit as exc:
            code = exc.code
    if code not in (0, None):
        sys.exit(f"`{' '.join(sys.argv)}` exited with {code!r}")
    return buf.getvalue()

def subcommands(text):
    block = re.search(r"^Commands:\n((?:  .*\n?)+)", text, re.MULTILINE)
    if block is None:
        return []
    return re.findall(r"^  ([A-Za-z0-9][\w-]*)(?:\s|$)", block[1], re.MULTILINE)

out = []

def walk(args):
    text = run(args)
    out.append([[name, *args], text])
    if len(args) < 4:
        for sub in subcommands(text):
            walk([*args, sub])

walk([])
print(json.dumps(out))
"""


def cli_help(script: str, *, python: str = sys.executable) -> list[tuple[list[str], str]]:
    """Each command of a console script with its ``--help``, run now in a child process."""
    env = {**os.environ, "COLUMNS": HELP_COLUMNS, "NO_COLOR": "1", "TERM": "dumb"}
    try:
        proc = subprocess.run(
            [python, "-c", _HELP_WALKER, script],
            capture_output=True,
            text=True,
            env=env,
            timeout=HELP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DocsBuildError(
            f"`{script} --help` did not finish within {HELP_TIMEOUT_S:.0f} s; a help text must"
            " not wait for anything"
        ) from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise DocsBuildError(
            f"`{script} --help` failed (exit {proc.returncode}): {tail}\nThe site runs every"
            " command line: build it with `nox -s docs`, which installs every project."
        )
    return [(list(argv), str(text)) for argv, text in json.loads(proc.stdout)]


def cli_page(project: Project, script: str, helps: Sequence[tuple[list[str], str]]) -> str:
    """One command line's page: the help of the command and of each sub-command."""
    lines = [
        f"# `{script}`",
        "",
        f"The command line of [{project.name}](../{project.uri}/index.md)"
        f" ({project.version}). Each help text below is the command's own `--help`, run when"
        " this site was built.",
        "",
    ]
    for argv, text in helps:
        level = "#" * min(2 + len(argv) - 1, 6)
        lines += [f"{level} `{' '.join(argv)}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(lines)


# --- contracts ------------------------------------------------------------------------------

_CONTRACT_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


def contract_files(project: Project) -> list[Path]:
    """The project's published contracts: ``src/<module>/contracts/`` and ``tests/contracts/``."""
    folders = [project.path / "src" / m / "contracts" for m in project.modules]
    folders.append(project.path / "tests" / "contracts")
    return [
        f
        for folder in folders
        if folder.is_dir()
        for f in sorted(folder.iterdir())
        if f.is_file() and (f.suffix in _CONTRACT_SUFFIXES or f.name == "README.md")
    ]


def contracts_page(
    project: Project, files: Sequence[Path], pages: Mapping[str, str], root: Path = ROOT
) -> str:
    """One project's contracts: each folder's notes, then each file in full."""
    uri = f"contracts/{project.name}.md"
    lines = [
        f"# {project.name} contracts",
        "",
        f"The published interface contracts [{project.name}](../{project.uri}/index.md) ships"
        " or is tested against, in full, as they are in the repository at this build.",
        "",
    ]
    for f in files:
        rel = f.relative_to(root).as_posix()
        if f.name == "README.md":
            text = f.read_text(encoding="utf-8")
            text = re.sub(r"^# ", "## ", text, flags=re.MULTILINE, count=1)
            lines += [rewrite_links(text, source=rel, page_uri=uri, pages=pages, root=root), ""]
            continue
        lang = _CONTRACT_SUFFIXES[f.suffix]
        body = f.read_text(encoding="utf-8").rstrip()
        lines += [
            f"### `{f.name}`",
            "",
            f"`{rel}`, {len(body.splitlines())} lines.",
            "",
            f'??? note "{f.name}"',
            "",
            f"    ```{lang}",
            *[f"    {line}" if line else "" for line in body.splitlines()],
            "    ```",
            "",
        ]
    return "\n".join(lines)


# --- benchmarks -----------------------------------------------------------------------------


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def latest_benchmarks(results: Path) -> Path | None:
    """The newest pytest-benchmark JSON under ``results`` (``latest.json`` when present)."""
    if (results / "latest.json").is_file():
        return results / "latest.json"
    runs = sorted(results.glob("*.json")) if results.is_dir() else []
    return runs[-1] if runs else None


def bar_chart_svg(title: str, bars: Sequence[tuple[str, float]]) -> str:
    """A horizontal bar chart (median times, log-free, scaled to the slowest) as SVG text."""
    height = 24
    label_w, bar_w, pad = 360, 380, 8
    top = 28
    total_h = top + height * len(bars) + pad
    longest = max((v for _, v in bars), default=0.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 120}"'
        f' height="{total_h}" font-family="sans-serif" font-size="12">',
        f'<text x="{pad}" y="18" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(bars):
        y = top + i * height
        w = max(1.0, bar_w * value / longest)
        parts += [
            f'<text x="{label_w - pad}" y="{y + 15}" text-anchor="end">'
            f"{html.escape(label[:56])}</text>",
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{height - 8}"'
            ' fill="#3f51b5"/>',
            f'<text x="{label_w + w + 4:.1f}" y="{y + 15}">{html.escape(_fmt_time(value))}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def benchmarks_pages(root: Path = ROOT) -> dict[str, str | bytes]:
    """``benchmarks.md`` and its figures: tables and plots of the latest recorded run."""
    readme = root / "benchmarks" / "README.md"
    intro = readme.read_text(encoding="utf-8") if readme.is_file() else "# Benchmarks\n"
    intro = intro.replace("# Benchmarks", "# Benchmark figures", 1)
    files: dict[str, str | bytes] = {}
    lines = [intro.rstrip(), "", "## Figures of this build", ""]
    latest = latest_benchmarks(root / ".benchmarks")
    if latest is None:
        lines += [
            "**Not measured in this build**: `.benchmarks/` holds no results. Run"
            " `nox -s benchmarks` (all suites, about half an hour on 2 cores; `-- -k NAME`"
            " selects), then `nox -s docs`: this page then shows every figure of the latest run"
            " as tables and plots.",
            "",
        ]
    else:
        data = json.loads(latest.read_text(encoding="utf-8"))
        machine = data.get("machine_info", {})
        cpu = machine.get("cpu", {}).get("brand_raw", "unknown CPU")
        lines += [
            f"From `{latest.relative_to(root).as_posix()}`: recorded {data.get('datetime', '?')}"
            f" on {machine.get('node', '?')} ({cpu}, {machine.get('cpu', {}).get('count', '?')}"
            f" CPUs), Python {machine.get('python_version', '?')}, commit"
            f" `{str(data.get('commit_info', {}).get('id', '?'))[:12]}`. Times per call; ratios"
            " and throughput that a benchmark records are under each table.",
            "",
        ]
        groups: dict[str, list[dict[str, Any]]] = {}
        for bench in data.get("benchmarks", []):
            key = bench.get("group") or str(bench.get("fullname", "")).split("::")[0]
            groups.setdefault(key, []).append(bench)
        for n, (group, benches) in enumerate(sorted(groups.items())):
            benches.sort(key=lambda b: b["stats"]["median"])
            lines += [
                f"### {group}",
                "",
                "| benchmark | min | median | mean | stddev | ops/s | rounds |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for b in benches:
                s = b["stats"]
                lines.append(
                    f"| `{b['name']}` | {_fmt_time(s['min'])} | {_fmt_time(s['median'])} |"
                    f" {_fmt_time(s['mean'])} | {_fmt_time(s['stddev'])} | {s['ops']:.4g} |"
                    f" {s['rounds']} |"
                )
            lines.append("")
            for b in benches:
                if b.get("extra_info"):
                    info = ", ".join(f"{k}={v}" for k, v in sorted(b["extra_info"].items()))
                    lines.append(f"- `{b['name']}`: {info}")
            svg = f"benchmarks/figures/group-{n:02d}.svg"
            files[svg] = bar_chart_svg(
                f"{group}: median time per call",
                [(b["name"], b["stats"]["median"]) for b in benches],
            )
            lines += ["", f"![{group}: median time per call]({svg})", ""]
    plots = (
        sorted(p for p in (root / ".benchmarks").rglob("*") if p.suffix in {".png", ".svg"})
        if (root / ".benchmarks").is_dir()
        else []
    )
    if plots:
        lines += ["## Plots recorded with the benchmarks", ""]
        for p in plots:
            uri = f"benchmarks/plots/{p.relative_to(root / '.benchmarks').as_posix()}"
            files[uri] = p.read_bytes()
            lines += [f"![{p.name}]({uri})", ""]
    chaos = root / ".chaos" / "results.md"
    lines += ["## Fault campaign figures", ""]
    if chaos.is_file():
        text = chaos.read_text(encoding="utf-8")
        text = re.sub(r"^(#+) ", r"##\1 ", text, flags=re.MULTILINE)
        lines += [
            f"From `.chaos/results.md` (`nox -s chaos`, recorded"
            f" {datetime.fromtimestamp(chaos.stat().st_mtime, UTC):%Y-%m-%d %H:%M} UTC):",
            "",
            text.rstrip(),
            "",
        ]
    else:
        lines += [
            "**Not measured in this build**: run `nox -s chaos` (the fault campaign) before"
            " `nox -s docs` to show its table of figures here.",
            "",
        ]
    files["benchmarks.md"] = "\n".join(lines)
    return files


# --- version skew ---------------------------------------------------------------------------


def _release_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``[[release]]`` tables of ``releases.toml`` (``tools/release.py`` writes them)."""
    rows = data.get("release", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DocsBuildError("releases.toml: 'release' must be an array of tables ([[release]])")
    return [dict(r) for r in rows]


def releases_table(path: Path) -> list[str]:
    """``releases.toml`` as a Markdown table (one row per recorded release)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DocsBuildError(f"{path.name} is not valid TOML ({exc}); fix the file") from exc
    rows = _release_rows(data)
    if not rows:
        return [f"`{path.name}` records no release yet (`nox -s release -- PACKAGE`).", ""]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and not isinstance(row[k], dict | list)]
    lines = [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for row in rows:
        cells = []
        for c in columns:
            v = str(row.get(c, ""))
            if re.fullmatch(r"[0-9a-f]{40,64}", v):
                v = f"`{v[:12]}`"
            cells.append(v.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def skew_page(root: Path = ROOT) -> str:
    """The version-skew page: what the matrix is, how to produce it, the releases it uses."""
    lines = [
        "# Version skew",
        "",
        "The packages are versioned separately: a service may run aiaas-core at one release and"
        " aiaas-telemetry at another, within the ranges each package declares. The version-skew"
        " matrix proves those ranges: for every package P and every aiaas package S it depends"
        " on, it runs P at HEAD with S at the oldest release P's range allows, P and S both at"
        " HEAD, and P at its last release with S at HEAD, each installed only from a local"
        " wheelhouse and `constraints/ci.txt`, with P's own tests, the cross-package contract"
        " tests and latency figures.",
        "",
        "## How to produce it",
        "",
        "```sh",
        "python -m nox -s skew            # the full matrix: a table (terminal, Markdown, JSON)",
        "python -m nox -s skew -- --quick # contract tests and one latency figure per combination",
        "```",
        "",
        "A failing combination names its failing tests; a declared range that admits one is a"
        " defect (fix the code or narrow the range). At run time `aiaas_core.check_compatibility`"
        " tells whether the installed siblings are inside the declared ranges. Where P's last"
        " release declares a range that excludes S at HEAD, the cell is *outside the declared"
        " range*: not tested as if supported; the combination is installed as it is and the"
        " start-up check every aiaas command runs must refuse it (exit status 78).",
        "",
        "## The last matrix",
        "",
    ]
    matrix = root / ".skew" / "matrix.md"
    if matrix.is_file():
        body = matrix.read_text(encoding="utf-8").split("\n", 1)[1].strip()  # without its title
        lines += ["From `.skew/matrix.md` (`tools/skew.py`):", "", body, ""]
    else:
        lines += [
            "**Not measured in this build**: run `nox -s skew -- --quick` (or the full"
            " `nox -s skew`) before `nox -s docs` to show the matrix here.",
            "",
        ]
    lines += ["## Recorded releases", ""]
    releases = root / "releases.toml"
    if releases.is_file():
        lines += [
            "The matrix tests against these releases (`releases.toml`, written by"
            " `nox -s release -- PACKAGE`):",
            "",
            *releases_table(releases),
        ]
    else:
        lines += [
            "No release is recorded yet: `releases.toml` does not exist. `nox -s release --"
            " PACKAGE` records each release there, and the matrix needs at least one per package.",
            "",
        ]
    return "\n".join(lines)


# --- the site -------------------------------------------------------------------------------


@dataclass
class Site:
    """Every generated page (site path -> content), the navigation and the API pages."""

    files: dict[str, str | bytes]
    nav: list[Any]
    api_modules: dict[str, str] = field(default_factory=dict)  # API page -> its module


def page_map(projects: Sequence[Project], root: Path = ROOT) -> dict[str, str]:
    """Repository paths (files and folders) -> the site page that renders them."""
    pages = {"": "overview.md", "README.md": "overview.md"}
    pages["benchmarks"] = pages["benchmarks/README.md"] = "benchmarks.md"
    for p in projects:
        rel = p.path.relative_to(root).as_posix()
        pages[rel] = pages[f"{rel}/README.md"] = f"{p.uri}/index.md"
        if (p.path / "CHANGELOG.md").is_file():
            pages[f"{rel}/CHANGELOG.md"] = f"{p.uri}/changelog.md"
        docs = p.path / "docs"
        if docs.is_dir():
            pages[f"{rel}/docs"] = f"{p.uri}/docs/index.md"
            for f in sorted(docs.glob("*.md")):
                pages[f"{rel}/docs/{f.name}"] = f"{p.uri}/docs/{f.name}"
    return pages


def _readme(path: Path, *, uri: str, pages: Mapping[str, str], root: Path) -> str:
    source = path.relative_to(root).as_posix()
    text = path.read_text(encoding="utf-8")
    return rewrite_links(text, source=source, page_uri=uri, pages=pages, root=root)


def generate(root: Path = ROOT, *, run_clis: bool = True) -> Site:
    """Build every generated page; ``run_clis=False`` leaves out the command-line pages."""
    projects = discover(root)
    pages = page_map(projects, root)
    files: dict[str, str | bytes] = {}
    api_modules: dict[str, str] = {}
    nav: list[Any] = [{"Home": "index.md"}, {"Overview": "overview.md"}]
    files["overview.md"] = _readme(root / "README.md", uri="overview.md", pages=pages, root=root)
    cli_nav: list[Any] = []
    contract_nav: list[Any] = []
    for section, title in SECTIONS:
        section_nav: list[Any] = []
        for p in (q for q in projects if q.section == section):
            rel = p.path.relative_to(root).as_posix()
            entries: list[Any] = []
            uri = f"{p.uri}/index.md"
            files[uri] = _readme(p.path / "README.md", uri=uri, pages=pages, root=root)
            entries.append({"README": uri})
            if section == "packages":
                for module in public_modules(p):
                    name = "api.md" if module in p.modules else f"api-{module.split('.', 1)[1]}.md"
                    files[f"{p.uri}/{name}"] = api_page(p, module)
                    api_modules[f"{p.uri}/{name}"] = module
                    entries.append({f"API: {module}": f"{p.uri}/{name}"})
            changelog = p.path / "CHANGELOG.md"
            if changelog.is_file():
                text = changelog.read_text(encoding="utf-8")
                files[f"{p.uri}/upgrading.md"] = upgrade_guide(p, parse_changelog(text))
                files[f"{p.uri}/changelog.md"] = rewrite_links(
                    text,
                    source=f"{rel}/CHANGELOG.md",
                    page_uri=f"{p.uri}/changelog.md",
                    pages=pages,
                )
                entries += [
                    {"Upgrade guide": f"{p.uri}/upgrading.md"},
                    {"Changelog": f"{p.uri}/changelog.md"},
                ]
            docs = sorted((p.path / "docs").glob("*.md"))
            if docs:
                index = [f"# {p.name} reference documents", ""]
                for d in docs:
                    doc_uri = f"{p.uri}/docs/{d.name}"
                    files[doc_uri] = _readme(d, uri=doc_uri, pages=pages, root=root)
                    heading = next(
                        (
                            ln[2:]
                            for ln in d.read_text(encoding="utf-8").splitlines()
                            if ln.startswith("# ")
                        ),
                        d.stem,
                    )
                    index.append(f"- [{heading}]({d.name})")
                    entries.append({heading: doc_uri})
                files[f"{p.uri}/docs/index.md"] = "\n".join(index) + "\n"
                entries.insert(1, {"Reference documents": f"{p.uri}/docs/index.md"})
            if run_clis:
                for script in p.scripts:
                    cli_uri = f"cli/{script}.md"
                    files[cli_uri] = cli_page(p, script, cli_help(script))
                    cli_nav.append({script: cli_uri})
            contracts = contract_files(p)
            if contracts:
                c_uri = f"contracts/{p.name}.md"
                files[c_uri] = contracts_page(p, contracts, pages, root)
                contract_nav.append({p.name: c_uri})
            section_nav.append({p.name: entries})
        nav.append({title: section_nav})
    if cli_nav:
        nav.append({"Command lines": cli_nav})
    if contract_nav:
        nav.append({"Contracts": contract_nav})
    files.update(benchmarks_pages(root))
    nav.append({"Benchmarks": "benchmarks.md"})
    files["skew.md"] = skew_page(root)
    nav.append({"Version skew": "skew.md"})
    return Site(files=files, nav=nav, api_modules=api_modules)


# --- MkDocs hooks ---------------------------------------------------------------------------

_SITES: dict[str, Site] = {}


def _plugin_error(exc: DocsBuildError) -> Exception:
    from mkdocs.exceptions import PluginError

    return PluginError(f"docs_site: {exc}")


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Generate the pages of the repository that holds ``mkdocs.yml``, and set the navigation.

    Runs on every build (``mkdocs serve`` reloads the configuration for each rebuild)."""
    root = Path(config.config_file_path).resolve().parent
    try:
        site = generate(root)
    except DocsBuildError as exc:
        raise _plugin_error(exc) from exc
    _SITES[config.config_file_path] = site
    config.nav = site.nav
    return config


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Add the generated pages (in memory; nothing is written into ``docs/``)."""
    from mkdocs.structure.files import File

    for uri, content in sorted(_SITES[config.config_file_path].files.items()):
        if files.get_file_from_path(uri) is not None:
            raise _plugin_error(
                DocsBuildError(f"docs/{uri} is generated at build time: delete the file in docs/")
            )
        files.append(File.generated(config, uri, content=content))
    return files


_SPHINX_ROLE = re.compile(
    r":(?:py:)?(?:attr|class|const|data|exc|func|meth|mod|obj):<code>(?P<tilde>~?)(?P<target>[^<]+)</code>"
)


def sphinx_roles_to_refs(
    html_text: str, module: str | None = None, roots: frozenset[str] = frozenset()
) -> str:
    """Turn the Sphinx roles of docstrings (``:class:`~pkg.Name```) into cross-references.

    Each becomes an optional autorefs reference: a link where the target is documented on the
    site, plain code otherwise. ``~`` shows the last component only, as in Sphinx; on a module's
    API page, a name that does not start with a documented top-level module (``roots``) is
    looked up in that module."""

    def ref(match: re.Match[str]) -> str:
        target = match["target"].strip().removesuffix("()")
        shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
        qualified = module is None or target.split(".", 1)[0] in roots
        identifier = target if qualified else f"{module}.{target}"
        return (
            f'<autoref optional identifier="{html.escape(identifier)}">'
            f"<code>{shown}</code></autoref>"
        )

    return _SPHINX_ROLE.sub(ref, html_text)


def on_page_content(html_text: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Sphinx roles in rendered docstrings become cross-references (see `sphinx_roles_to_refs`)."""
    site = _SITES.get(config.config_file_path)
    if site is None:
        return html_text
    roots = frozenset(m.split(".", 1)[0] for m in site.api_modules.values())
    return sphinx_roles_to_refs(html_text, site.api_modules.get(page.file.src_uri), roots)


def iter_markdown(files: Mapping[str, str | bytes]) -> Iterator[tuple[str, str]]:
    """The generated Markdown pages, for checks."""
    for uri, content in sorted(files.items()):
        if uri.endswith(".md") and isinstance(content, str):
            yield uri, content
