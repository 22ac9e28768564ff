"""`make demo` without TensorFlow's log lines (examples/quiet_logs.py), numerics untouched."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

TF_LOG_SIGNS = ("absl::InitializeLog", "cpu_feature_guard", "oneDNN", "This TensorFlow binary", "I0000 ", "W0000 ")


def test_the_demos_tensorflow_cells_print_no_tensorflow_log_lines():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}  # TensorFlow's most talkative level: the filter must hold
    env.pop("TENSORFILE_QUIET_LOGS_CHILD", None)
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "chapter.py"), "TensorFlow"], capture_output=True,
                         text=True, env=env, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "File I/O in TensorFlow" in out.stdout and "x2 = tf.Tensor([0 1 2 3], shape=(4,), dtype=int32)" in out.stdout
    assert "Y_clone == Y" in out.stdout and "False" not in out.stdout and "File I/O in PyTorch" not in out.stdout
    noisy = [line for line in (out.stdout + out.stderr).splitlines() if any(s in line for s in TF_LOG_SIGNS)]
    assert noisy == []


def test_the_filter_drops_tensorflows_lines_and_keeps_the_rest(tmp_path):
    script = tmp_path / "talk.py"
    script.write_text(
        "import sys\n"
        "sys.stderr.write('WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "sys.stderr.write('I0000 00:00:1796212717.734333   22961 cpu_feature_guard.cc:227] This TensorFlow binary "
        "is optimized to use available CPU instructions in performance-critical operations.\\n')\n"
        "sys.stderr.write('To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
        "with the appropriate compiler flags.\\n')\n"
        "sys.stderr.write('2026-12-02 11:00:00.000000: I tensorflow/core/util/port.cc:153] oneDNN custom operations "
        "are on.\\n')\n"
        "sys.stderr.write('a warning of our own\\n')\n"
        "print('the output')\n"
        "sys.exit(3)\n"
    )  # fmt: skip
    runner = f"import sys; sys.path.insert(0, {str(ROOT / 'examples')!r}); from quiet_logs import run_filtered; "
    runner += f"sys.exit(run_filtered([{str(script)!r}]))"
    out = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and out.stdout == "the output\n"
    assert out.stderr == "a warning of our own\n"
