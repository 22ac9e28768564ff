"""How long a training step stalls on a checkpoint, and what an async manager holds in memory.

Saves a GPT-2-shaped float32 state dict (``--size full``: ~1.3 GiB, the default;
``small``: ~178 MiB) with ``CheckpointManager`` in three modes, one fresh process per
mode: ``async_save=False``; ``async_save=True`` (two staging buffers, the default);
``async_save=True, async_buffers=1``. Each mode saves ``--repeat`` + 1 times. Between
two saves the "training" waits 1.2x the median synchronous save (at least 0.5 s) (as a real run trains
far longer between checkpoints than a save takes), so an async write ends before the
next save and the stall measured is the snapshot. A write that still runs when the
training interval ends (this disk takes 0.8 to 4 s for the same 1.3 GiB) is waited for
outside the stall and reported apart ("write left after training").

Printed: the stall of the first save (it allocates the staging buffers) and the median
of the others, the ratio async / sync (target, issue 10: at most 0.20 at full size; exit status 3 when missed),
a plain ``np.copyto`` of the same bytes into memory already faulted in (the floor of a
snapshot), and the resident memory the manager adds (RSS after the saves minus before).

Usage: python benchmarks/checkpoint_stall.py [--size small|full|tiny] [--repeat 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MODES = {"sync": {}, "async, 2 buffers": {"async_save": True}, "async, 1 buffer": {"async_save": True, "async_buffers": 1}}


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def child(size: str, mode: str, repeat: int, train: float, folder: str) -> dict:
    """Runs in its own process: the saves of one mode."""
    import numpy as np
    from states import gpt2_state_dict

    import tensorfile

    state = gpt2_state_dict(size)
    arrays = [t.numpy() for t in state.values()]
    floor_buffers = [np.empty_like(a) for a in arrays]
    for b in floor_buffers:
        b.fill(0)
    floors = []
    for _ in range(3):
        start = time.perf_counter()
        for b, a in zip(floor_buffers, arrays):
            np.copyto(b, a)
        floors.append(time.perf_counter() - start)
    del floor_buffers
    before = rss_bytes()
    stalls, left = [], []
    with tensorfile.CheckpointManager(folder, max_to_keep=2, **MODES[mode]) as m:
        for step in range(repeat + 1):
            os.sync()
            start = time.perf_counter()
            m.save(step, {"model": state, "step": step})
            stalls.append(time.perf_counter() - start)
            time.sleep(train)  # "training"
            start = time.perf_counter()
            m.wait()  # a write still running after the training interval (the disk here is noisy)
            left.append(time.perf_counter() - start)
        held = rss_bytes() - before
    return {"stalls": stalls, "left": left, "held": held, "floor": min(floors), "nbytes": sum(a.nbytes for a in arrays)}


def run_child(size: str, mode: str, repeat: int, train: float, folder: str) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import checkpoint_stall as c; print('@@' + json.dumps(c.child({size!r}, {mode!r}, {repeat}, {train}, "
            f"{os.path.join(folder, mode.replace(' ', '_').replace(',', ''))!r})))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    for line in done.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    raise RuntimeError(f"{mode}: child failed:\n{done.stderr[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "small", "full"], default="full")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tensorfile-stall-") as folder:
        sync = run_child(args.size, "sync", args.repeat, 0.0, folder)
        sync_median = statistics.median(sync["stalls"][1:])
        train = max(0.5, 1.2 * sync_median)
        results = {"sync": sync}
        for mode in ("async, 2 buffers", "async, 1 buffer"):
            results[mode] = run_child(args.size, mode, args.repeat, train, folder)
    nbytes = sync["nbytes"]
    print(f"# Checkpoint stall: {nbytes / 2**20:.0f} MiB state, {args.repeat} saves after the first; {dt.date.today()}")
    print(f"training between saves: {train:.2f} s (1.2x the median sync save, at least 0.5 s); "
          f"np.copyto of the same bytes into faulted-in memory: {sync['floor']:.3f} s")
    print()
    print("| mode | first save s | median stall s (later saves) | async / sync | host memory held | write left after training, median s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    missed = []
    for mode, r in results.items():
        median = statistics.median(r["stalls"][1:])
        ratio = median / sync_median
        if mode != "sync" and ratio > 0.2:
            missed.append(mode)
        shown = "" if mode == "sync" else f"{ratio:.2f}"
        left = "" if mode == "sync" else f"{statistics.median(r['left']):.3f}"
        print(f"| {mode} | {r['stalls'][0]:.3f} | {median:.3f} | {shown} | {r['held'] / 2**30:.2f} GiB | {left} |")
    print()
    print(f"target async / sync <= 0.20: {'met' if not missed else 'missed by ' + ', '.join(missed)}")
    return 3 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
