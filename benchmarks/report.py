"""``tensorfile report`` on a 1.3 GiB file: wall time and peak memory above a baseline, each run a fresh process.

The file: a model-like state of 1.31 GiB (16 layers of float32 ``attn`` (2048, 2048), ``up`` (2048, 4096),
``down`` (4096, 2048) and ``norm`` (2048,), plus a bfloat16 ``embed`` (16384, 2048); a few NaN and inf in one
tensor), saved as a tensorfile file (``--formats torch`` adds the same state as a ``torch.save`` ``.pt``).
Every tensor is below the default sampling limit (256 MiB), so every value is read.

Each measurement runs ``tensorfile report FILE -o OUT`` as the console script does, in a new process timed from
the parent (start-up counted), its peak resident memory read from ``/proc/self/status`` (VmHWM) at exit. The
baseline is the same process importing what the command imports (``tensorfile.cli``, ``tensorfile.report``,
matplotlib) and exiting: "extra" memory is the report's peak minus the baseline's. Medians over ``--repeat``
runs. Targets (issue 16): < 30 s and < 512 MiB extra. Exit status 3 when one is missed.

Usage: python benchmarks/report.py [--repeat 3] [--formats tensorfile,torch] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fresh import PEAK_PREAMBLE as _PEAK  # noqa: E402  # records the peak resident memory (KiB) at exit

MiB = 1 << 20
TARGET_SECONDS, TARGET_EXTRA_MIB = 30.0, 512.0

REPORT = "sys.argv = ['tensorfile', 'report', {path!r}, '-o', {out!r}, '--no-progress']\n" \
         "from tensorfile.cli_fast import main\nsys.exit(main())"  # fmt: skip
BASELINE = "import tensorfile.cli, tensorfile.report.build, tensorfile.report.charts, matplotlib.pyplot"


def make_state() -> dict:
    import ml_dtypes
    import numpy as np

    rng = np.random.default_rng(0)
    state = {"embed": (rng.standard_normal((16384, 2048), dtype=np.float32) * 0.02).astype(ml_dtypes.bfloat16)}
    for i in range(16):
        scale = 0.02 * (1 + i / 16)
        state[f"layers.{i}.attn"] = rng.standard_normal((2048, 2048), dtype=np.float32) * scale
        state[f"layers.{i}.up"] = rng.standard_normal((2048, 4096), dtype=np.float32) * scale
        state[f"layers.{i}.down"] = rng.standard_normal((4096, 2048), dtype=np.float32) * scale
        state[f"layers.{i}.norm"] = np.ones(2048, dtype=np.float32)
    state["layers.7.up"][5, :3] = [np.nan, np.inf, -np.inf]
    return state


def measure(code: str, env: dict) -> tuple[float, float]:
    """Seconds and peak resident MiB of a fresh Python process running ``code``."""
    with tempfile.NamedTemporaryFile("r", suffix=".peak") as peak:
        env = {**env, "TF_BENCH_PEAK": peak.name}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _PEAK + code], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"failed ({done.returncode}): {done.stderr[-2000:]}")
        return seconds, int(open(peak.name).read()) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", default="tensorfile")
    parser.add_argument("--dir", default=None, help="where to write the files (default: a temporary folder)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="tensorfile-bench-report-", dir=args.dir)
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    missed = False
    try:
        import tensorfile

        state = make_state()
        paths = {}
        for fmt in args.formats.split(","):
            path = os.path.join(root, "model.pt" if fmt == "torch" else "model.tensorfile")
            tensorfile.save(state, path, format=fmt)
            paths[fmt] = path
        nbytes, count = sum(a.nbytes for a in state.values()), len(state)
        del state
        print(f"file: {count} tensors, {nbytes / (1 << 30):.2f} GiB of data; "
              f"{args.repeat} runs each, medians")  # fmt: skip
        base = [measure(BASELINE, env)[1] for _ in range(args.repeat)]
        baseline = statistics.median(base)
        print(f"baseline (imports only): peak {baseline:.0f} MiB")
        for fmt, path in paths.items():
            with open(path, "rb") as f:  # into the page cache: every run reads a warm file
                while f.read(64 * MiB):
                    pass
            out = os.path.join(root, f"{fmt}.html")
            runs = [measure(REPORT.format(path=path, out=out), env) for _ in range(args.repeat)]
            seconds = statistics.median(r[0] for r in runs)
            extra = statistics.median(r[1] for r in runs) - baseline
            ok = seconds < TARGET_SECONDS and extra < TARGET_EXTRA_MIB
            missed |= not ok
            print(f"tensorfile report {fmt:>10} ({os.path.getsize(path) / (1 << 30):.2f} GiB): {seconds:5.1f} s, "
                  f"peak {extra:+.0f} MiB above baseline; page {os.path.getsize(out) / 1024:.0f} KiB "
                  f"[target < {TARGET_SECONDS:.0f} s, < {TARGET_EXTRA_MIB:.0f} MiB: {'met' if ok else 'MISSED'}]")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 3 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
