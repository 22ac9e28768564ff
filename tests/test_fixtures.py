"""Acceptance: every fixture under ../shared/fixtures loads with exactly the values in its expected-*.json.

One parametrized test over the JSON files (mxnet, torch, tensorflow incl. the numpy
files, safetensors, real); the whole module runs once here, with torch importable,
and once more in a subprocess where ``import torch`` fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import tensorfile
from conftest import FIXTURES, ROOT, assert_matches, expected

GROUPS = ("mxnet", "torch", "tensorflow", "safetensors", "real")
CASES = [(group, name) for group in GROUPS for name in sorted(expected(group))]
BLOCKED = os.environ.get("TENSORFILE_TESTS_BLOCK_TORCH") == "1"


@pytest.mark.parametrize("group, name", CASES, ids=[f"{g}:{n}" for g, n in CASES])
def test_fixture_loads_with_expected_values(group, name):
    path = FIXTURES / ("real/" + name if group == "real" else name)
    spec = expected(group)[name]["value"]
    assert_matches(tensorfile.load(path), spec, name)  # each tensor as its own framework, where installed
    assert_matches(tensorfile.load(path, framework="numpy"), spec, name)
    if BLOCKED:
        assert "torch" not in sys.modules or sys.modules["torch"] is None


@pytest.mark.skipif(BLOCKED, reason="this is the run with torch blocked")
def test_every_fixture_again_with_import_torch_blocked():
    env = {**os.environ, "TENSORFILE_TESTS_BLOCK_TORCH": "1", "CI": ""}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "test_fixture_loads_with_expected_values",
         os.path.relpath(__file__, ROOT)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert re.search(rf"\b{len(CASES)} passed\b", out.stdout), out.stdout[-500:]
    assert "skipped" not in out.stdout.splitlines()[-1]
