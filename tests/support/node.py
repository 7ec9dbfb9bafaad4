"""Node.js from the tests: the FHIR clients and the validator installed in tests/node
(`npm ci --prefix tests/node`, which .ci/run does). Outside CI a machine without node or
without those packages skips these tests, saying which; in CI they must run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

NODE_DIR = Path(__file__).resolve().parent.parent / "node"


def require_node() -> str:
    """The node executable, or a skip (a failure in CI) naming what is missing."""
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not installed"
    elif not (NODE_DIR / "node_modules").is_dir():
        missing = "the Node packages are not installed: npm ci --prefix tests/node"
    if missing is None:
        assert node is not None
        return node
    if os.environ.get("CI"):
        pytest.fail(missing)
    pytest.skip(missing)


def run_node(script: str, payload: Any, timeout: float = 120) -> Any:
    """Run an ES module `script` (its text) in tests/node with `payload` as JSON on stdin;
    it must print one JSON value on stdout, which is returned."""
    node = require_node()
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        input=orjson.dumps(payload),
        capture_output=True,
        cwd=NODE_DIR,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"node failed ({done.returncode}): {done.stderr.decode()[-4000:]}")
    return orjson.loads(done.stdout)
