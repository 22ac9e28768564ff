"""Reading a torch.save zip file without torch, against torch.load and the raw read.

Builds a GPT-2-medium-shaped float32 state dict (about 1.3 GiB; ``--size small``
for a quick run), ``torch.save``s it once, and then times in interleaved rounds:

* ``torch.load(path, weights_only=True)``, the peer;
* ``torch.load(path, weights_only=True, mmap=True)`` + touching every page (extra information);
* tensorfile's reader without torch: ``tensorfile.load(path, framework="numpy")`` in a
  fresh Python where ``import torch`` is blocked (``sys.modules["torch"] = None``).
  Only the ``load`` call is timed, inside that process; the process is started and
  tensorfile imported outside the timing;
* the same call in this process (torch imported; extra information);
* a raw ``readinto`` of the whole file into one NumPy buffer (the physical limit here).

Every read comes from a warm page cache (the file is read once before the rounds),
as when a job reloads a checkpoint it just wrote. Each is repeated ``--repeat``
times in interleaved rounds; medians, best times and ratios of both are printed.
The target: tensorfile without torch at least 0.8x as fast as torch.load, that is
its time at most torch.load's time / 0.8.

Usage: python benchmarks/torch_read.py [--size small|full] [--repeat N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np
import torch

import tensorfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from save_load import gpt2_state_dict, timed, touch  # noqa: E402

TARGET = 0.8

#: Runs in a fresh interpreter: torch blocked, tensorfile imported, then one timed load.
CHILD = """
import sys; sys.modules["torch"] = None  # `import torch` now fails
import gc, json, time
import numpy as np, tensorfile
path = sys.argv[1]
gc.collect()
start = time.perf_counter()
value = tensorfile.load(path, framework="numpy")
elapsed = time.perf_counter() - start
arrays = [v for v in value.values() if isinstance(v, np.ndarray)]
print(json.dumps({"seconds": elapsed, "tensors": len(arrays), "bytes": sum(a.nbytes for a in arrays),
                  "torch imported": sys.modules.get("torch") is not None}))
"""


def tensorfile_without_torch(path: str, expect_tensors: int, expect_bytes: int) -> float:
    """Seconds of ``tensorfile.load(path, framework="numpy")`` in a process without torch."""
    out = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"the torch-free reader failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["torch imported"] or result["tensors"] != expect_tensors or result["bytes"] != expect_bytes:
        raise RuntimeError(f"the torch-free reader returned something else: {result}")
    return result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement (default 5)")
    parser.add_argument("--dir", default=None, help="folder for the file (default: a temporary folder)")
    args = parser.parse_args()
    repeat = args.repeat or 5

    sd = gpt2_state_dict(args.size)
    count, nbytes = len(sd), sum(t.numel() * t.element_size() for t in sd.values())
    print(f"state dict: {count} float32 tensors, {nbytes / 2**30:.3f} GiB; {repeat} rounds; warm page cache")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"numpy {np.__version__}, torch {torch.__version__}, tensorfile {tensorfile.__version__}; {dt.date.today()}")  # fmt: skip

    folder = tempfile.mkdtemp(prefix="tensorfile-torch-read-", dir=args.dir)
    try:
        path = os.path.join(folder, "gpt2.pt")
        torch.save(sd, path)
        os.sync()  # no write-back of the new file during the timed reads
        del sd
        gc.collect()
        run(path, count, nbytes, repeat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(path: str, count: int, nbytes: int, repeat: int) -> None:
    """Time every reader of ``path`` and print the tables."""
    size = os.path.getsize(path)

    def raw_read() -> np.ndarray:
        buffer = np.empty(size, np.uint8)
        with open(path, "rb", buffering=0) as f:
            view, done = memoryview(buffer), 0
            while done < size:
                n = f.readinto(view[done:])
                if not n:
                    raise EOFError(path)
                done += n
        return buffer

    def torch_mmap_touch() -> int:
        sd = torch.load(path, weights_only=True, mmap=True)
        return touch(sd.values())

    raw_read()  # warm the page cache
    # name -> a function that returns the seconds one run took
    contenders: dict[str, Callable[[], float]] = {
        "torch.load": lambda: timed(lambda: torch.load(path, weights_only=True)),
        "tensorfile, no torch": lambda: tensorfile_without_torch(path, count, nbytes),
        "raw readinto": lambda: timed(raw_read),
        "torch.load mmap+touch": lambda: timed(torch_mmap_touch),
        "tensorfile, in-process": lambda: timed(lambda: tensorfile.load(path, framework="numpy")),
    }
    # Rounds interleave the contenders, so that drift in the machine hits all of them alike.
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            times[name].append(fn())
    median = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}

    print(f"file: {size / 2**30:.3f} GiB")
    print()
    print(f"{'reader':<26}{'median s':>10}{'GiB/s':>9}{'best s':>10}")
    for name in contenders:
        print(f"{name:<26}{median[name]:>10.3f}{size / 2**30 / median[name]:>9.2f}{best[name]:>10.3f}")

    ours = "tensorfile, no torch"
    checks = [
        ("no torch vs torch.load", "torch.load", ours, TARGET),
        ("no torch vs raw readinto", "raw readinto", ours, None),
        ("no torch vs torch.load mmap+touch", "torch.load mmap+touch", ours, None),
        ("torch.load vs raw readinto", "raw readinto", "torch.load", None),
    ]
    print()
    print(f"{'ratio (peer time / our time)':<36}{'median':>8}{'best':>8}  target")
    for label, peer, mine, target in checks:
        on_median, on_best = median[peer] / median[mine], best[peer] / best[mine]
        verdict = "" if target is None else f">= {target:.2f}: " + ("met" if on_median >= target else "missed")
        print(f"{label:<36}{on_median:>8.2f}{on_best:>8.2f}  {verdict}")


if __name__ == "__main__":
    main()
