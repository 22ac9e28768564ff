"""CI's own rule: with CI=true a skipped test fails the run (CI installs every framework)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import ROOT


def test_skip_fails_the_run_under_ci(tmp_path):
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_one.py").write_text("import pytest\n\ndef test_skipped():\n    pytest.skip('no framework')\n")
    env = {**os.environ, "CI": "true"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1 and "CI=true: 1 test(s) skipped" in out.stdout
    env.pop("CI")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0
