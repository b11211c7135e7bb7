"""The README is the user's manual: it must name every setting and every route."""

from __future__ import annotations

import re
from pathlib import Path

from vfe.app import create_app
from vfe.models import JobSpec
from vfe.settings import SETTINGS, Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_lists_every_setting_with_its_default():
    for setting in SETTINGS:
        row = re.search(rf"^\| `{setting.name}` \| `([^`]*)` \|", README, re.MULTILINE)
        assert row, f"README does not list {setting.name}"
        assert row.group(1) == setting.default, setting.name


def test_readme_lists_every_route(settings: Settings):
    app = create_app(settings)
    for route in app.routes:
        path = getattr(route, "path", "")
        if path.startswith(("/static", "/docs/")):  # files, not API routes
            continue
        for method in sorted(getattr(route, "methods", None) or []):
            if method == "HEAD":
                continue
            assert f"| {method} | `{path}` |" in README, f"{method} {path} missing"


def test_readme_starts_with_the_two_commands():
    block = README.split("```", 2)[1]
    assert "./scripts/serve" in block and "./scripts/test" in block


def test_readme_lists_every_job_field_with_its_default():
    """The POST /video-job table: a row per JobSpec field, with the model's default
    where the model has one that is not null."""
    section = README.split("### POST /video-job", 1)[1].split("\n\n")
    table = next(block for block in section if block.startswith("| field |"))
    rows = {}
    for line in table.splitlines()[2:]:
        names, _, default = (cell.strip() for cell in line.strip("|").split("|")[:3])
        for name in re.findall(r"`(\w+)`", names):
            rows[name] = default
    fields = {name: f for name, f in JobSpec.model_fields.items() if name != "video_source"}
    assert set(rows) == set(fields), set(rows) ^ set(fields)
    for name, field in fields.items():
        default = field.default
        if default is None or isinstance(default, bool | str) or name in ("start", "end"):
            continue  # text, or described in words
        assert [float(n) for n in re.findall(r"[\d.]+", rows[name])[:1]] == [default], name


def test_readme_layout_names_every_module():
    """The Layout paragraph of "Development" names every module and package of vfe/."""
    layout = README.split("Layout: `vfe/`", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`(\w+)/?`", layout))
    package = Path(__file__).resolve().parent.parent / "vfe"
    modules = {p.stem for p in package.glob("*.py") if not p.stem.startswith("__")}
    packages = {p.parent.name for p in package.glob("*/__init__.py")}
    inner = {p.stem for p in package.glob("*/*.py") if not p.stem.startswith("__")}
    missing = (modules | packages | inner) - named
    assert not missing, f"README's Layout does not name {sorted(missing)}"


def test_readme_lists_every_command():
    """The table of "Command-line client" has a row for every command of ``vfe``."""
    import argparse

    from vfe.cli import _parser

    section = README.split("## Command-line client", 1)[1].split("\n## ", 1)[0]
    table = next(block for block in section.split("\n\n") if block.startswith("| command"))
    listed = re.findall(r"^\| `vfe (\w+)", table, re.MULTILINE)
    commands = next(
        action.choices
        for action in _parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    assert sorted(listed) == sorted(commands)


def test_no_module_over_500_lines():
    """Issue 11: a module that outgrows 500 lines is split by role."""
    package = Path(__file__).resolve().parent.parent / "vfe"
    long = {
        str(path.relative_to(package)): lines
        for path in package.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 500
    }
    assert not long, f"modules over 500 lines: {long}"
