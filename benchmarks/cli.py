"""The command line on big files, each command a fresh process: ``ls`` against safetensors' ``safe_open``, ``diff``
against loading both files and comparing in NumPy, and the peak memory of ``ls``, ``info``, ``cat`` and ``diff``.

Files: a float32 state of 16 tensors of (rows, 2048) and a 5-element ``small`` (``--size full``: 1 GiB;
``small``: 128 MiB; ``tiny``: 16 MiB, for tests), written as a tensorfile file (which safetensors reads), a
``torch.save`` ``.pt`` and an ``np.savez`` ``.npz``; file B is A + 0.001 in every tensor (two checkpoints of one
run). Every measurement is a new process, timed from the parent (start-up counted), its peak resident memory read
from ``/proc/self/status`` (VmHWM) as it exits; rounds run in shuffled order; medians are reported.

(a) ``tensorfile ls A`` (the console script's code, :mod:`tensorfile.cli_fast`) against a Python process doing
    ``safe_open`` + ``get_shape`` of every tensor; rows for ``python -c pass``, ``import numpy``, ``import
    tensorfile``, ``import tensorfile.cli`` (the click CLI every other command runs) and ``tensorfile ls`` through
    the click CLI (``TENSORFILE_FULL_CLI=1``) show where the start-up goes. Target (issue 12): ls <= 1.2x the
    peer's time.
(b) ``tensorfile diff A B`` of the tensorfile files and of the ``.pt`` files against a process that loads both
    (safetensors ``load_file``; ``torch.load(weights_only=True)``) and compares every pair with
    ``np.abs(a - b).max()``. Targets: diff <= 1.25x the peer's time; diff's peak memory <= 3 of its largest tensors
    + 16 MiB above the same diff of two tiny files.
(c) ``ls``, ``info`` and ``cat A small`` of the ``.pt`` and the ``.npz``: peak memory above the same command on a
    tiny file of the format, against the file's size. Target: < 30 MiB above.

Exit status 3 when a target is missed (1 is a crash).

Usage: python benchmarks/cli.py [--size full|small|tiny] [--repeat 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fresh import PEAK_PREAMBLE, machine_line, warm  # noqa: E402

SIZES = {"full": 1 << 30, "small": 128 << 20, "tiny": 16 << 20}
COUNT, COLS = 16, 2048
MiB = 1 << 20

_PREAMBLE = PEAK_PREAMBLE  # records the measured process' peak resident memory (KiB) at exit
#: What the console script runs (pyproject.toml's ``[project.scripts]``).
CLI = "sys.argv = ['tensorfile', *{args!r}]\nfrom tensorfile.cli_fast import main\nsys.exit(main())"
SAFE_OPEN = """
from safetensors import safe_open
with safe_open({path!r}, "np") as f:
    shapes = {{k: f.get_slice(k).get_shape() for k in f.keys()}}
"""
LOAD_COMPARE = """
import numpy as np
{load}
a, b = load({a!r}), load({b!r})
worst = {{k: float(np.abs(np.asarray(a[k]) - np.asarray(b[k])).max()) for k in a if hasattr(a[k], "shape")}}
"""
LOADERS = {"safetensors": "from safetensors.numpy import load_file as load",
           "torch": "import torch\nload = lambda p: {k: v.numpy() if isinstance(v, torch.Tensor) else v "
                    "for k, v in torch.load(p, weights_only=True).items()}"}  # fmt: skip


def measure(code: str) -> dict[str, float]:
    """Run ``code`` in a new Python process; its wall time (start-up included) and peak memory (MiB)."""
    with tempfile.TemporaryDirectory() as folder:
        peak = os.path.join(folder, "peak")
        env = {**os.environ, "TF_BENCH_PEAK": peak, "PYTHONWARNINGS": "ignore"}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _PREAMBLE + code], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode not in (0, 1):  # diff exits 1 when the files differ
            raise RuntimeError(f"exit {done.returncode}:\n{code}\n{done.stderr[-2000:]}")
        with open(peak) as f:
            return {"s": wall, "rss": int(f.read()) / 1024}


def cli(*args: str) -> str:
    return CLI.format(args=list(args))


def write_files(folder: str, size: int) -> dict[str, str]:
    import numpy as np
    import torch

    import tensorfile

    rows = size // COUNT // COLS // 4
    rng = np.random.default_rng(0)
    a = {f"layer{i}.weight": rng.standard_normal((rows, COLS), dtype=np.float32) for i in range(COUNT)}
    a["small"] = np.arange(5, dtype=np.float32)
    b = {k: v + np.float32(1e-3) for k, v in a.items()}
    tiny = {"small": a["small"]}
    paths = {}
    for name, state in (("a", a), ("b", b), ("tiny", tiny)):
        paths[f"{name}.tensorfile"] = os.path.join(folder, f"{name}.tensorfile")
        tensorfile.save(state, paths[f"{name}.tensorfile"])
        paths[f"{name}.pt"] = os.path.join(folder, f"{name}.pt")
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, paths[f"{name}.pt"])
        paths[f"{name}.npz"] = os.path.join(folder, f"{name}.npz")
        np.savez(paths[f"{name}.npz"], **state)
    return paths


def ops_for(p: dict[str, str]) -> dict[str, str]:
    ops = {
        "python -c pass": "pass",
        "import numpy": "import numpy",
        "import tensorfile": "import tensorfile",
        "import tensorfile.cli": "import tensorfile.cli",
        "tensorfile ls": cli("ls", p["a.tensorfile"]),
        "tensorfile ls, click CLI": "import os\nos.environ['TENSORFILE_FULL_CLI'] = '1'\n" + cli("ls", p["a.tensorfile"]),
        "safe_open + shapes": SAFE_OPEN.format(path=p["a.tensorfile"]),
        "safe_open + shapes, import numpy": "import numpy\n" + SAFE_OPEN.format(path=p["a.tensorfile"]),
        "tensorfile diff (tensorfile files)": cli("diff", p["a.tensorfile"], p["b.tensorfile"]),
        "load_file x2 + NumPy compare": LOAD_COMPARE.format(load=LOADERS["safetensors"], a=p["a.tensorfile"],
                                                            b=p["b.tensorfile"]),  # fmt: skip
        "tensorfile diff (.pt)": cli("diff", p["a.pt"], p["b.pt"]),
        "torch.load x2 + NumPy compare": LOAD_COMPARE.format(load=LOADERS["torch"], a=p["a.pt"], b=p["b.pt"]),
        "tensorfile diff (tiny .pt)": cli("diff", p["tiny.pt"], p["tiny.pt"]),
    }
    for suffix in (".pt", ".npz"):
        for command in ("ls", "info", "cat"):
            extra = ("small",) if command == "cat" else ()
            ops[f"{command} {suffix}"] = cli(command, p[f"a{suffix}"], *extra)
            ops[f"{command} tiny {suffix}"] = cli(command, p[f"tiny{suffix}"], *extra)
    return ops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="tensorfile-cli-", dir=args.dir)
    try:
        paths = write_files(folder, SIZES[args.size])
        ops = ops_for(paths)
        warm([folder])
        results: dict[str, list[dict[str, float]]] = {name: [] for name in ops}
        rng = random.Random(0)
        for r in range(args.repeat):
            order = list(ops)
            rng.shuffle(order)
            for name in order:
                results[name].append(measure(ops[name]))
            print(f"  round {r + 1}/{args.repeat} done", file=sys.stderr, flush=True)
        return report(results, paths, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(results: dict[str, list[dict[str, float]]], paths: dict[str, str], args: argparse.Namespace) -> int:
    med = {name: statistics.median(r["s"] for r in runs) for name, runs in results.items()}
    rss = {name: statistics.median(r["rss"] for r in runs) for name, runs in results.items()}
    size = os.path.getsize(paths["a.tensorfile"])
    print(f"# The command line: files of {size / MiB:.0f} MiB ({COUNT} float32 tensors); {args.repeat} rounds")
    print(f"machine: {machine_line()}; {dt.date.today()}; warm page cache; each command a fresh process")
    print()
    print("| process | median s | best s | worst / median | peak RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, runs in results.items():
        times = [r["s"] for r in runs]
        print(f"| {name} | {med[name]:.3f} | {min(times):.3f} | {max(times) / med[name]:.2f} | {rss[name]:.0f} |")
    largest = size / COUNT / MiB
    rows = [
        ("(a) ls time / safe_open + shapes (start-up counted)", med["tensorfile ls"] / med["safe_open + shapes"], 1.2, "x"),
        ("(b) diff time / load_file x2 + compare", med["tensorfile diff (tensorfile files)"]
         / med["load_file x2 + NumPy compare"], 1.25, "x"),
        ("(b) diff time / torch.load x2 + compare (.pt)", med["tensorfile diff (.pt)"]
         / med["torch.load x2 + NumPy compare"], 1.25, "x"),
        (f"(b) diff (.pt) peak RSS above tiny files, MiB (largest tensor: {largest:.0f} MiB)",
         rss["tensorfile diff (.pt)"] - rss["tensorfile diff (tiny .pt)"], 3 * largest + 16, ""),
    ]  # fmt: skip
    for suffix in (".pt", ".npz"):
        for command in ("ls", "info", "cat"):
            grow = rss[f"{command} {suffix}"] - rss[f"{command} tiny {suffix}"]
            rows.append((f"(c) {command} {suffix}: peak RSS above a tiny file, MiB (file: "
                         f"{os.path.getsize(paths['a' + suffix]) / MiB:.0f} MiB)", grow, 30.0, ""))  # fmt: skip
    print()
    print("| measure | value | target | verdict |")
    print("| --- | ---: | ---: | --- |")
    missed = []
    for label, value, target, unit in rows:
        ok = value <= target
        missed += [] if ok else [label]
        print(f"| {label} | {value:.2f}{unit} | ≤ {target:g}{unit} | {'met' if ok else '**missed**'} |")
    start = med["python -c pass"]
    print()
    print(f"ls's start-up: interpreter {start:.3f} s; import tensorfile +{med['import tensorfile'] - start:.3f} s "
          f"(import numpy alone +{med['import numpy'] - start:.3f} s); the listing "
          f"+{med['tensorfile ls'] - med['import tensorfile']:.3f} s; through the click CLI "
          f"(import tensorfile.cli +{med['import tensorfile.cli'] - start:.3f} s) ls takes "
          f"{med['tensorfile ls, click CLI']:.3f} s")  # fmt: skip
    return 3 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
