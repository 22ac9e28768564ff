"""The examples run as `make demo` runs them, and print the chapter's results."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_chapter_demo_prints_the_chapter():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "chapter.py")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "x2 = [0 1 2 3]" in text and "x2 = tensor([0, 1, 2, 3])" in text
    assert "(x2, y2) = (tensor([0, 1, 2, 3]), tensor([0., 0., 0., 0.]))" in text
    assert "mydict2 = {'x': array([0, 1, 2, 3]), 'y': array([0., 0., 0., 0.])}" in text
    assert text.count("Y_clone == Y") == 2 and "False" not in text
    assert "safetensors sees hidden.weight: torch.float32 (256, 20)" in text
    assert "4 tensors, 31784 bytes" in text
