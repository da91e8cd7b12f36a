"""The docs teach only what runs: every marked code block of README.md and docs/*.md is
executed here, the README stays short, and every link lands on a page (and heading) that
exists.

A fenced block is marked by words after its language in the info string:

    ```python runnable               imported as a module of its page's project
    ```python runnable file=a/b.py   written to a/b.py in the project and imported as a.b
    ```toml file=tether.toml         written into the project (any language; toml and
                                     json must parse)
    ```sh runnable                   each command runs through the installed `tether`
                                     CLI from the repository root and must exit 0
    ```sh runnable cwd=project       ... from the page's project folder instead
    ```csv excerpt=PATH              every line is a line of PATH: the page quotes it
    project=PAGE                     the page's project starts from PAGE's files

A page's project is a fresh temporary folder holding its `file=` blocks. With a
`tether.toml` it must load as a worker loads it: settings, the `[app]` declaration, the
policy (linted) and the model script. Python files under `tests/` are kit tests, `async
def test_...(tether_kit)`: they run against the project's app with `tether.testing` on a
real Temporal dev server. Every Python block of the docs is runnable; unmarked blocks of
other languages are shown, not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from tether.activities.tools import REGISTRY

if TYPE_CHECKING:
    from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
SHELLS = {"sh", "shell", "bash", "console"}
PYTHON = {"python", "py"}
FLAGS = {"runnable"}
ATTRIBUTES = {"file", "cwd", "excerpt", "project"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    lang: str
    flags: frozenset[str]
    attrs: dict[str, str] = field(hash=False)
    text: str = field(hash=False)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runnable(self) -> bool:
        return "runnable" in self.flags

    @property
    def is_test_module(self) -> bool:
        return self.lang in PYTHON and self.attrs.get("file", "").startswith("tests/")


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of `page`, in order (indented fences in lists included)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        words = opening["info"].split()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            text = lines[j].strip()
            if text.startswith(fence) and not text.strip(fence[0]):
                break
            body.append(lines[j].removeprefix(indent))
            j += 1
        else:
            raise AssertionError(f"{page.relative_to(ROOT)}:{i + 1}: code block is never closed")
        found.append(
            Block(
                page=page,
                line=i + 1,
                lang=words[0] if words else "",
                flags=frozenset(w for w in words[1:] if "=" not in w),
                attrs=dict(w.split("=", 1) for w in words[1:] if "=" in w),
                text="\n".join(body) + "\n",
            )
        )
        i = j + 1
    return found


def prose(page: Path) -> list[tuple[int, str]]:
    """The page's lines outside code blocks, numbered from 1."""
    inside = {n for b in blocks(page) for n in range(b.line, b.line + b.text.count("\n") + 2)}
    lines = page.read_text(encoding="utf-8").splitlines()
    return [(n, line) for n, line in enumerate(lines, 1) if n not in inside]


def every_block() -> list[Block]:
    return [b for page in PAGES for b in blocks(page)]


def pages_where(test: Callable[[Block], bool]) -> list[Path]:
    return [page for page in PAGES if any(test(b) for b in blocks(page))]


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


# -- projects ---------------------------------------------------------------------------


def project_blocks(page: Path) -> list[Block]:
    """The `file=` blocks making up `page`'s project: those of the pages it builds on
    (`project=PAGE`), then its own."""
    own = blocks(page)
    bases = sorted({b.attrs["project"] for b in own if "project" in b.attrs})
    found = [b for base in bases for b in blocks(ROOT / base) if "file" in b.attrs]
    return found + [b for b in own if "file" in b.attrs]


def write_project(page: Path, folder: Path) -> list[Block]:
    """Write `page`'s project into `folder` (packages get an `__init__.py`); return its
    file blocks. toml and json files must parse."""
    folder.mkdir(parents=True, exist_ok=True)
    written = project_blocks(page)
    for block in written:
        path = (folder / block.attrs["file"]).resolve()
        assert path.is_relative_to(folder.resolve()), f"{block.where}: file= leaves the project"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text, encoding="utf-8")
        if block.lang == "toml":
            tomllib.loads(block.text)
        elif block.lang == "json":
            json.loads(block.text)
        if block.lang in PYTHON and not block.is_test_module:
            for parent in path.relative_to(folder.resolve()).parents:
                if parent != Path("."):
                    (folder / parent / "__init__.py").touch()
    return written


@contextlib.contextmanager
def isolated(project: Path) -> Iterator[None]:
    """Import from `project` first, in it as working directory; afterwards forget every
    module imported from it and the tools it registered, and restore what it shadowed
    (this repository has top-level `workflows` and `activities` folders of its own)."""
    tops = {
        p.stem
        for p in project.iterdir()
        if (p.is_dir() and (p / "__init__.py").is_file()) or p.suffix == ".py"
    }
    shadowed = {n: m for n, m in sys.modules.items() if n.split(".")[0] in tops}
    for name in shadowed:
        del sys.modules[name]
    saved_path, saved_tools, cwd = list(sys.path), dict(REGISTRY), Path.cwd()
    sys.path.insert(0, str(project))
    importlib.invalidate_caches()
    os.chdir(project)
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path[:] = saved_path
        for name, module in list(sys.modules.items()):
            origin = getattr(module, "__file__", None) or ""
            if name.split(".")[0] in tops or origin.startswith(str(project)):
                del sys.modules[name]
        sys.modules.update(shadowed)
        REGISTRY.clear()
        REGISTRY.update(saved_tools)


def import_python(page: Path, project: Path) -> list[ModuleType]:
    """Import the project's Python files (base pages' first) and the page's runnable blocks
    without a file, in order; return the kit test modules."""
    tests: list[ModuleType] = []
    for block in project_blocks(page):
        if block.lang not in PYTHON:
            continue
        if block.is_test_module:
            tests.append(_load(project / block.attrs["file"], f"doctest_{block.line}"))
        else:
            importlib.import_module(".".join(Path(block.attrs["file"]).with_suffix("").parts))
    for block in blocks(page):
        if block.lang in PYTHON and "file" not in block.attrs:
            path = project / f"docblock_{page.stem.replace('-', '_')}_{block.line}.py"
            path.write_text(block.text, encoding="utf-8")
            _load(path, path.stem)
    return tests


def _load(path: Path, name: str) -> ModuleType:
    """Execute `path` as a fresh module `name` (registered, so `@workflow.defn` and
    pydantic resolve its names)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def check_project(project: Path, scratch: Path) -> None:
    """The project loads as a worker loads it: settings, app, policy (no lint finding),
    model script."""
    from tether.activities.gateway import build_provider
    from tether.core.config import Settings
    from tether.governance.lint import check_and_load, lint
    from tether.runtime.app import load_app

    config = project / "tether.toml"
    declared = tomllib.loads(config.read_text(encoding="utf-8"))
    before = os.environ.get("TETHER_CONFIG")
    os.environ["TETHER_CONFIG"] = str(config)
    try:
        settings = Settings(database_url=f"sqlite:///{scratch / 'check.db'}")
    finally:
        if before is None:
            os.environ.pop("TETHER_CONFIG", None)
        else:
            os.environ["TETHER_CONFIG"] = before
    app = load_app(settings)
    assert len(app.workflows) == len(declared.get("app", {}).get("workflows", []))
    if "policy_path" in declared:
        model = settings.policy_model.read_text(encoding="utf-8")
        policy = settings.policy_path.read_text(encoding="utf-8")
        check_and_load(model, policy, str(settings.policy_path))
        assert lint(model, policy) == []
    if settings.model_script is not None:
        build_provider(settings)


# -- the blocks -------------------------------------------------------------------------


def test_every_marked_block_is_understood() -> None:
    problems: list[str] = []
    for b in every_block():
        unknown = (b.flags - FLAGS) | (set(b.attrs) - ATTRIBUTES)
        if unknown:
            problems.append(f"{b.where}: unknown markers {sorted(unknown)}")
        if b.runnable and b.lang not in PYTHON | SHELLS:
            problems.append(f"{b.where}: only python and shell blocks run, not {b.lang!r}")
        if "cwd" in b.attrs and (b.attrs["cwd"] != "project" or b.lang not in SHELLS):
            problems.append(f"{b.where}: cwd=project is for shell blocks only")
        if b.lang in SHELLS and "file" in b.attrs:
            problems.append(f"{b.where}: a shell block is run, not written (drop file=)")
        if "project" in b.attrs and not (ROOT / b.attrs["project"]).is_file():
            problems.append(f"{b.where}: project={b.attrs['project']} is not a page")
        if b.lang in PYTHON and not b.runnable:
            problems.append(f"{b.where}: every Python block is runnable; mark it so")
    assert not problems, "\n".join(problems)


def test_the_docs_have_blocks_to_run() -> None:
    """The parser finds what the pages mark (a broken parser must not pass silently)."""
    readme = blocks(README)
    assert {b.attrs.get("file") for b in readme} >= {
        "activities/refunds.py",
        "workflows/refunds.py",
        "policy.csv",
        "model_script.json",
        "tether.toml",
    }
    assert any(b.lang in SHELLS and b.runnable for b in readme)
    assert sum(b.runnable for b in every_block()) >= 10
    assert pages_where(lambda b: b.is_test_module)


@pytest.mark.parametrize(
    "page", pages_where(lambda b: b.lang in PYTHON or "file" in b.attrs), ids=page_id
)
def test_python_blocks_import_and_projects_load(page: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_project(page, project)
    with isolated(project):
        import_python(page, project)
        if (project / "tether.toml").is_file():
            check_project(project, tmp_path)


RUFF_CONFIG = """
line-length = 100
target-version = "py311"
[lint]
select = ["E", "F", "W", "I", "B", "UP", "SIM", "RUF", "ASYNC"]
[lint.isort]
# As in an author's project: its own packages first-party, Tether a dependency.
known-first-party = ["activities", "workflows"]
known-third-party = ["tether"]
"""


def test_python_blocks_are_in_house_style(tmp_path: Path) -> None:
    """What the docs show is what `ruff check` and `ruff format` leave alone."""
    (tmp_path / "ruff.toml").write_text(RUFF_CONFIG, encoding="utf-8")
    shown: dict[str, Block] = {}
    for b in every_block():
        if b.lang in PYTHON:
            name = f"{b.page.stem.replace('-', '_')}_line_{b.line}.py"
            (tmp_path / name).write_text(b.text, encoding="utf-8")
            shown[name] = b
    for command in (["check", "--no-cache"], ["format", "--check", "--diff", "--no-cache"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "."],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        report = done.stdout + done.stderr
        for name, b in shown.items():
            report = report.replace(name, b.where)
        assert done.returncode == 0, f"ruff {command[0]} on the docs' Python blocks:\n{report}"


SHELL_BLOCKS = [b for b in every_block() if b.lang in SHELLS and b.runnable]


def tether_commands(block: Block) -> list[list[str]]:
    """The `tether` commands of a shell block: one a line (a trailing `\\` continues it),
    comments dropped; anything but `tether` is refused."""
    commands: list[list[str]] = []
    for line in block.text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == "tether", f"{block.where}: runnable lines run tether, not {line!r}"
            commands.append(words[1:])
    assert commands, f"{block.where}: a runnable shell block without a command"
    return commands


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.where)
def test_shell_block_exits_0(block: Block, tmp_path: Path) -> None:
    cwd = ROOT
    if block.attrs.get("cwd") == "project":
        cwd = tmp_path / "project"
        write_project(block.page, cwd)
    # Only the docs' own configuration applies; what a command stores stays in tmp_path.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env |= {
        "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'docs.db'}",
        "TETHER_STATE_DIR": str(tmp_path / "state"),
        "TETHER_APPROVAL_KEY": str(tmp_path / "keys" / "approval.pem"),
        "TETHER_CHECKPOINT_KEY": str(tmp_path / "keys" / "checkpoint.pem"),
    }
    for args in tether_commands(block):
        done = subprocess.run(
            [sys.executable, "-m", "tether.cli", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (
            f"{block.where}: `tether {shlex.join(args)}` exited {done.returncode}\n"
            f"{done.stdout}\n{done.stderr}"
        )


INLINE_CODE = re.compile(r"`(tether [^`]+)`")


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every `tether ...` command the pages show, in shell blocks or inline code, as
    (where, words); `[optional]` brackets and `...` placeholders dropped."""
    found: list[tuple[str, str]] = []
    for b in every_block():
        if b.lang in SHELLS:
            for line in b.text.replace("\\\n", " ").splitlines():
                if line.strip().startswith("tether "):
                    found.append((b.where, line))
    for page in PAGES:
        for number, line in prose(page):
            found += [(f"{page_id(page)}:{number}", m) for m in INLINE_CODE.findall(line)]
    commands: list[tuple[str, list[str]]] = []
    for where, text in found:
        unbracketed = text.replace("[", " ").replace("]", " ")
        try:
            words = shlex.split(unbracketed, comments=True)
        except ValueError:  # an inline span that quotes only part of a command
            words = unbracketed.split()
        commands.append((where, [w for w in words[1:] if w not in ("...", "…")]))
    return commands


def test_documented_commands_and_options_exist() -> None:
    """A command or option the docs name is one the `tether` CLI has."""
    import typer

    from tether.cli.main import app

    def options(command: Any) -> dict[str, bool]:
        """Each option of `command` and whether it takes a value."""
        found = {"--help": False}
        for p in command.params:
            takes = p.param_type_name == "option" and not p.is_flag
            found |= {o: takes for o in [*p.opts, *p.secondary_opts] if o.startswith("-")}
        return found

    root = typer.main.get_command(app)  # typer's own click: walked by its attributes
    problems: list[str] = []
    for where, words in documented_commands():
        command: Any = root
        path = ["tether"]
        value_next = False
        for word in words:
            subcommands: dict[str, Any] = getattr(command, "commands", {})
            if value_next:
                value_next = False
            elif word.startswith("-"):
                name = word.split("=", 1)[0]
                known = options(command)
                if name not in known:
                    problems.append(f"{where}: `{' '.join(path)}` has no option {word}")
                value_next = known.get(name, False) and "=" not in word
            elif word in subcommands:
                command = subcommands[word]
                path.append(word)
            elif subcommands and not command.invoke_without_command:
                problems.append(f"{where}: `{' '.join(path)}` has no command {word!r}")
                break
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "block", [b for b in every_block() if "excerpt" in b.attrs], ids=lambda b: b.where
)
def test_excerpts_quote_their_file(block: Block) -> None:
    source = (ROOT / block.attrs["excerpt"]).read_text(encoding="utf-8").splitlines()
    lines = {line.strip() for line in source}
    missing = [line for line in block.text.splitlines() if line.strip() not in lines]
    assert not missing, f"{block.where}: not in {block.attrs['excerpt']}: {missing}"


@pytest.mark.parametrize("page", pages_where(lambda b: b.is_test_module), ids=page_id)
async def test_kit_examples_run_on_temporal(
    page: Path, tmp_path: Path, tether_env: WorkflowEnvironment
) -> None:
    """The page's kit tests, each in turn, against its project's app (one worker)."""
    from tether.testing import project_settings, running_kit

    project = tmp_path / "project"
    write_project(page, project)
    with isolated(project):
        cases: list[tuple[str, Callable[..., Awaitable[Any]]]] = [
            (f"{module.__name__}.{name}", fn)
            for module in import_python(page, project)
            for name, fn in vars(module).items()
            if name.startswith("test_") and inspect.iscoroutinefunction(fn)
        ]
        assert cases, f"{page_id(page)}: its tests/ blocks define no async test_ functions"
        settings = project_settings(tether_env.client, tmp_path / "run", project / "tether.toml")
        async with running_kit(tether_env.client, settings) as kit:
            for name, test in cases:
                params = list(inspect.signature(test).parameters)
                assert params == ["tether_kit"], f"{name} takes {params}, not tether_kit"
                try:
                    await asyncio.wait_for(test(tether_kit=kit), 60)
                except BaseException as exc:
                    exc.add_note(f"in {name}, a test shown in {page_id(page)}")
                    raise


def test_readme_example_is_what_tether_init_writes(tmp_path: Path) -> None:
    """The README's first example is the scaffold's app, shortened: same policy rows, model
    script and `[app]`, so a reader who runs `tether init` finds the app they read."""
    from tether.cli.init import scaffold

    scaffold(tmp_path / "init")
    readme = {b.attrs["file"]: b.text for b in blocks(README) if "file" in b.attrs}

    def rows(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]

    init = tmp_path / "init"
    assert rows(readme["policy.csv"]) == rows((init / "policy.csv").read_text())
    assert json.loads(readme["model_script.json"]) == json.loads(
        (init / "model_script.json").read_text()
    )
    declared = tomllib.loads((init / "tether.toml").read_text())
    assert tomllib.loads(readme["tether.toml"])["app"].items() <= declared["app"].items()


# -- the pages --------------------------------------------------------------------------


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it to 200"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose(page):
        heading = HEADING.match(line)
        if heading:
            base = slug(heading[2])
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_links_land_on_pages_and_headings_that_exist(page: Path) -> None:
    problems: list[str] = []
    for number, line in prose(page):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path_part, _, anchor = target.partition("#")
            linked = (page.parent / path_part).resolve() if path_part else page
            where = f"{page_id(page)}:{number}: {target}"
            if page == README and not (linked.parent == ROOT / "docs" and linked.suffix == ".md"):
                problems.append(f"{where}: the README links to docs pages only")
            if not linked.exists():
                problems.append(f"{where}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{where}: {linked.name} has no heading #{anchor}")
    assert not problems, "\n".join(problems)


def test_the_readme_leads_to_every_page() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for _, line in prose(README)
        for target in LINK.findall(line)
        if not re.match(r"^[a-z]+:", target)
    }
    unlinked = [page_id(p) for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"README.md does not lead to {unlinked}"
