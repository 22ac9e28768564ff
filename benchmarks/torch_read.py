"""Reading a torch.save zip file without torch, against torch.load and the raw read.

Builds a GPT-2-medium-shaped float32 state dict (about 1.3 GiB; ``--size small``
for a quick run), ``torch.save``s it once, and then times in interleaved rounds:

* tensorfile's reader without torch: ``tensorfile.load(path, framework="numpy")`` in a
  new Python process where ``import torch`` is blocked (``sys.modules["torch"] = None``);
* its peer, ``torch.load(path, weights_only=True)``, in a new process too.

Each runs in two conditions: the first load in a new process, and a load after one
untimed load of the same file ("warm"). Only the ``load`` call is timed, inside the
new process (starting it and importing are not). For information, in this process:

* ``tensorfile.load(path, framework="numpy")`` (torch imported) and ``torch.load``
  (this process built the state dict: see below);
* ``torch.load(path, weights_only=True, mmap=True)`` + touching every page;
* a raw ``readinto`` of the whole file, on one thread, into one buffer allocated and
  faulted in before the rounds (the copy from the page cache alone: the physical limit).

Every read comes from a warm page cache (the file is read once before the rounds),
as when a job reloads a checkpoint it just wrote. Each is repeated ``--repeat``
times in interleaved rounds; medians, best times and ratios of both are printed.
The target: tensorfile without torch at least 0.8x as fast as torch.load, that is
its time at most torch.load's time / 0.8.

Why new processes: where the memory a reader fills comes from weighs as much as the
reading. A new process has to fault in every page (here, in a virtual machine, from
0.2 s to over 1 s for 1.3 GiB); memory a process freed shortly before is reused warm
(glibc keeps freed blocks under 32 MiB in its heap). This process built a 1.3 GiB state
dict and freed it, so its own torch.load runs on a warm heap that neither reader would
have in a real job. The readers are compared with each other in the same condition,
and each round runs the contenders in another order.

Usage: python benchmarks/torch_read.py [--size small|full] [--repeat N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Callable

import numpy as np
import torch

import tensorfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from save_load import gpt2_state_dict, timed, touch  # noqa: E402

TARGET = 0.8

#: Runs in a new interpreter: imports the reader (tensorfile with torch blocked, or torch), loads the file
#: once untimed when asked ("warm"), then times one load.
CHILD = """
import sys
reader, path, warm = sys.argv[1], sys.argv[2], sys.argv[3] == "warm"
if reader == "tensorfile":
    sys.modules["torch"] = None  # `import torch` now fails
import gc, json, time
import numpy as np
if reader == "tensorfile":
    import tensorfile
    load = lambda: tensorfile.load(path, framework="numpy")
else:
    import torch
    load = lambda: torch.load(path, weights_only=True)
if warm:
    load()
gc.collect()
start = time.perf_counter()
value = load()
elapsed = time.perf_counter() - start
arrays = [v.numpy() if reader == "torch" else v for v in value.values()]
print(json.dumps({"seconds": elapsed, "tensors": len(arrays), "bytes": sum(a.nbytes for a in arrays),
                  "torch imported": sys.modules.get("torch") is not None}))
"""


def new_process(reader: str, path: str, warm: bool, expect_tensors: int, expect_bytes: int) -> float:
    """Seconds of one load of ``path`` by ``reader`` ("tensorfile", torch blocked, or "torch") in a new process.

    With ``warm``, the process loads the file once before the timed load.
    """
    command = [sys.executable, "-c", CHILD, reader, path, "warm" if warm else "first"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"the {reader} reader failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if (
        result["torch imported"] != (reader == "torch")
        or result["tensors"] != expect_tensors
        or result["bytes"] != expect_bytes
    ):
        raise RuntimeError(f"the {reader} reader returned something else: {result}")
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
          f"numpy {np.__version__}, torch {torch.__version__}, tensorfile {tensorfile.__version__}; "
          f"{dt.date.today()}")  # fmt: skip

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
    buffer = np.ones(size, np.uint8)  # faulted in once, reused by every round

    def raw_read() -> None:
        with open(path, "rb", buffering=0) as f:
            view, done = memoryview(buffer), 0
            while done < size:
                n = f.readinto(view[done:])
                if not n:
                    raise EOFError(path)
                done += n

    def torch_mmap_touch() -> int:
        sd = torch.load(path, weights_only=True, mmap=True)
        return touch(sd.values())

    raw_read()  # warm the page cache
    # name -> a function that returns the seconds one run took
    contenders: dict[str, Callable[[], float]] = {
        "tensorfile, no torch, first load": lambda: new_process("tensorfile", path, False, count, nbytes),
        "torch.load, first load": lambda: new_process("torch", path, False, count, nbytes),
        "tensorfile, no torch, warm": lambda: new_process("tensorfile", path, True, count, nbytes),
        "torch.load, warm": lambda: new_process("torch", path, True, count, nbytes),
        "tensorfile in this process": lambda: timed(lambda: tensorfile.load(path, framework="numpy")),
        "torch.load in this process": lambda: timed(lambda: torch.load(path, weights_only=True)),
        "torch.load mmap+touch": lambda: timed(torch_mmap_touch),
        "raw readinto, warm buffer": lambda: timed(raw_read),
    }
    # Rounds interleave the contenders, so that drift in the machine hits all of them alike, each round in
    # another order: how warm the memory a reader gets is depends on what ran just before (see above).
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(repeat):
        order = list(contenders)
        random.Random(round_).shuffle(order)
        for name in order:
            times[name].append(contenders[name]())
    median = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}

    print(f"file: {size / 2**30:.3f} GiB")
    print()
    print(f"{'reader':<34}{'median s':>10}{'GiB/s':>9}{'best s':>10}")
    for name in contenders:
        print(f"{name:<34}{median[name]:>10.3f}{size / 2**30 / median[name]:>9.2f}{best[name]:>10.3f}")

    first, warm = "tensorfile, no torch, first load", "tensorfile, no torch, warm"
    checks = [
        ("first load: no torch vs torch.load", "torch.load, first load", first, TARGET),
        ("warm: no torch vs torch.load", "torch.load, warm", warm, TARGET),
        ("this process: tensorfile vs torch.load", "torch.load in this process", "tensorfile in this process", None),
        ("warm no torch vs torch.load here", "torch.load in this process", warm, None),
        ("this process: tensorfile vs raw readinto", "raw readinto, warm buffer", "tensorfile in this process", None),
    ]
    print()
    print(f"{'ratio (peer time / tensorfile time)':<42}{'median':>8}{'best':>8}  target")
    for label, peer, mine, target in checks:
        on_median, on_best = median[peer] / median[mine], best[peer] / best[mine]
        verdict = "" if target is None else f">= {target:.2f}: " + ("met" if on_median >= target else "missed")
        print(f"{label:<42}{on_median:>8.2f}{on_best:>8.2f}  {verdict}")
    print()
    print("every run (s), round by round:")
    for name, ts in times.items():
        print(f"  {name:<34}" + " ".join(f"{t:.3f}" for t in ts))


if __name__ == "__main__":
    main()
