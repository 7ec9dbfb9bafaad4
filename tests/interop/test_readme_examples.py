"""The README's "Use it from a FHIR client" examples run as written against a real server in
the profile the README names for them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.interop.scenario import Interop, tail
from tests.support.node import NODE_DIR, require_node

README = Path(__file__).resolve().parent.parent.parent / "README.md"
README_BASE = "http://127.0.0.1:8000"
# what each example prints: the id and version the create gave the client, the version the
# update gave it, and how many tasks paging found (at least the one it created)
EXPECTED = re.compile(
    r"created [0-9a-f-]{36} version 1\nupdated version 2\nfound [1-9][0-9]*\n", re.ASCII
)


def example(name: str) -> str:
    text = README.read_text()
    block = text.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0]
    code = block.strip().split("\n", 1)[1].rsplit("```", 1)[0]
    assert README_BASE in code, f"the {name} example no longer names {README_BASE}"
    return code


def run_example(command: list[str], code: str, interop: Interop, cwd: Path) -> str:
    done = subprocess.run(
        [*command, code.replace(README_BASE, interop.url)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={
            **os.environ,
            "CLIENT_ID": interop.client_id,
            "CLIENT_SECRET": interop.client_secret,
        },
        check=False,
    )
    assert done.returncode == 0, f"the example failed ({done.returncode}):\n{tail(done.stderr)}"
    return done.stdout


def test_readme_fhirpy_example_creates_updates_and_pages(fhir_profile: Interop) -> None:
    out = run_example([sys.executable, "-c"], example("fhirpy"), fhir_profile, README.parent)
    assert EXPECTED.fullmatch(out), out


def test_readme_medplum_example_logs_in_creates_updates_and_pages(fhir_profile: Interop) -> None:
    node = require_node()
    code = example("medplum")
    out = run_example([node, "--input-type=module", "-e"], code, fhir_profile, NODE_DIR)
    assert EXPECTED.fullmatch(out), out
