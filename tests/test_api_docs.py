"""`make docs` (tools/api_docs.py): the API reference is built, and any pdoc warning fails the build."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

RUN = "import sys; sys.path[:0] = [{tools!r}, {pkg!r}]; import api_docs; api_docs.MODULES = ['demo_pkg']; "
RUN += "sys.exit(api_docs.main([{out!r}]))"


def _build(tmp_path, source):
    pkg = tmp_path / "src"
    (pkg / "demo_pkg").mkdir(parents=True)
    (pkg / "demo_pkg" / "__init__.py").write_text(source)
    code = RUN.format(tools=str(ROOT / "tools"), pkg=str(pkg), out=str(tmp_path / "api"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_clean_module_builds(tmp_path):
    out = _build(tmp_path, '"""A package."""\n__all__ = ["f"]\n\ndef f(x: int) -> int:\n    """Twice ``x``."""\n    return 2 * x\n')
    assert out.returncode == 0, out.stderr
    assert "Twice" in (tmp_path / "api" / "demo_pkg.html").read_text()


def test_a_warning_fails_the_build(tmp_path):
    out = _build(tmp_path, '"""A package."""\n__all__ = ["f", "missing"]\n\ndef f():\n    """F."""\n')
    assert out.returncode == 1
    assert "'missing' in demo_pkg.__all__, but it does not resolve" in out.stderr and "1 warning(s)" in out.stderr
