"""The README's first instructions and its walkthrough work as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from caretask.config import SETTINGS, readme_table
from tests.support.server import Server

README = Path(__file__).parent.parent / "README.md"


def _walkthrough() -> str:
    text = README.read_text()
    block = text.split("<!-- walkthrough:start -->", 1)[1].split("<!-- walkthrough:end -->")[0]
    return block.strip().removeprefix("```sh").removesuffix("```")


def _section(text: str, heading: str) -> str:
    """A section's text up to the next heading of any level."""
    body = text.split(f"\n{heading}\n", 1)[1]
    return re.split(r"\n#{2,} ", body, maxsplit=1)[0]


def test_the_readme_settings_table_is_the_declared_settings() -> None:
    text = README.read_text()
    table = text.split("<!-- settings:start -->\n", 1)[1].split("<!-- settings:end -->")[0]
    assert table == readme_table(), "regenerate it: python -m caretask.config"


def test_every_setting_the_operating_sections_name_is_declared() -> None:
    text = README.read_text()
    named: set[str] = set()
    for heading in ("## Operating it", "## Running in production"):
        named |= set(re.findall(r"CARETASK_[A-Z0-9_]+", _section(text, heading)))
    assert named
    assert named <= {setting.env for setting in SETTINGS}


def test_the_defaults_the_readme_names_in_its_text_are_the_declared_ones() -> None:
    text = README.read_text()
    declared = {setting.env: setting.default for setting in SETTINGS}
    declared |= {s.declared.flag: s.default for s in SETTINGS if s.declared.flag}
    named = re.findall(r"`(CARETASK_\w+)`(?:\s+seconds)?\s+\((?:default\s+)?([0-9][0-9.]*)", text)
    named += re.findall(r"\[(--[a-z-]+) ([0-9]+)\]", text)
    given = [(name, float(value)) for name, value in named if name in declared]
    assert len(given) >= 10
    assert [(name, float(declared[name])) for name, _ in given] == given


def test_readme_starts_with_the_serve_and_test_commands() -> None:
    commands = [
        line.strip() for line in README.read_text().splitlines()[:12] if line.startswith("    ")
    ]
    assert commands[0].endswith("pip install . && caretask serve")
    assert commands[1].endswith("pip install '.[test]' && pytest")


def test_readme_walkthrough_works_against_a_fresh_server(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(database=f"sqlite:///{tmp_path / 'caretask.db'}")
    script = _walkthrough()
    assert "BASE=http://127.0.0.1:8000" in script
    script = script.replace("BASE=http://127.0.0.1:8000", f"BASE={srv.url}")
    script = script.replace(". .venv/bin/activate\n", "")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("CARETASK_DATABASE_URL", None)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"created http://127\.0\.0\.1:\d+/Task/[0-9a-f-]{36}", out)
    assert '"total":1' in out
    assert "update: 200" in out
    assert out.rstrip().endswith("}")
    assert out.count('"status":"completed"') == 1
