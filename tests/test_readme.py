"""The README is the user's manual: it must name every setting and every route."""

from __future__ import annotations

import re
from pathlib import Path

from vfe.app import create_app
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
