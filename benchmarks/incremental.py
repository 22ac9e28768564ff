"""Incremental checkpoints on a fine-tuning run: bytes and time of a step, and the async stall against a memcpy.

The run: a frozen float32 backbone of 64 ``Linear(1024, 1024)`` layers (256 MiB), a trained head
``Linear(1024, 256)`` (1 MiB) and Adam over the head; the state saved each step is ``{"model", "optimizer"}``
(259 MiB; 3 MiB of it changes per step: the head and Adam's two moments). One process, one run:

1. full steps: ``CheckpointManager(d)`` (sync), ``--repeat`` steps;
2. incremental steps: ``CheckpointManager(d, incremental=True)`` (sync): the first step, then ``--repeat`` steps;
3. async incremental steps: the stall (``save()`` until it returns), ``--repeat`` steps after the first two,
   against a plain copy of the changed tensors into buffers already faulted in (``np.copyto`` and torch
   ``copy_``, best of 20: the floor of any snapshot), and the stall of a full async save;
4. the same stall for a larger trained part: a head ``Linear(1024, 8192)`` (32 MiB) with Adam, so 96 MiB
   change per step.

Printed: medians; bytes written per step (the files new in the step's folder: blob and manifest; links
are not writes), their ratio to the bytes that changed; ratios incremental / full (acceptance, issue 15:
bytes <= 1.1 x changed + 1 MiB, time <= 0.1 x a full step) and stall / memcpy (goal <= 1.2) per trained
part. Exit status 3 when an acceptance line is missed. Between two saves the run trains one step; before each timed save
the page cache is flushed (``os.sync``) so one step's writeback does not land in the next one's time.

Usage: python benchmarks/incremental.py [--repeat 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

import tensorfile

MIB = 1 << 20
#: the larger trained part: a head of 32 MiB (a LoRA-sized adapter), so 96 MiB change per step with Adam
LARGE_OUTPUTS = 8192


def fine_tuning(outputs: int = 256) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
    """The frozen backbone (256 MiB) and a trained head ``Linear(1024, outputs)`` with Adam."""
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(64)]).requires_grad_(False)
    head = torch.nn.Linear(1024, outputs)
    return torch.nn.Sequential(backbone, head), head, torch.optim.Adam(head.parameters(), lr=1e-3)


def train(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    loss = model(torch.randn(4, 1024)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def written(folder: str, previous: str | None) -> int:
    """Bytes of the files of a step folder that are not links to the previous step's files (links are not writes)."""
    old = {os.stat(os.path.join(previous, n)).st_ino for n in os.listdir(previous)} if previous else set()
    total = 0
    for name in os.listdir(folder):
        st = os.stat(os.path.join(folder, name))
        total += 0 if st.st_ino in old else st.st_size
    return total


def run_sync(folder: str, repeat: int, incremental: bool, model, opt) -> tuple[list[float], list[int], float]:
    times, sizes = [], []
    first = 0.0
    with tensorfile.CheckpointManager(folder, max_to_keep=2, incremental=incremental) as m:
        for step in range(repeat + 1):
            train(model, opt)
            os.sync()
            start = time.perf_counter()
            m.save(step, {"model": model, "optimizer": opt})
            took = time.perf_counter() - start
            size = written(os.path.join(folder, f"step_{step:08d}"), os.path.join(folder, f"step_{step - 1:08d}") if step else None)
            if step == 0:
                first = took
                if incremental:
                    continue
            times.append(took)
            sizes.append(size)
    return times, sizes, first


def run_async(folder: str, repeat: int, incremental: bool, model, opt) -> list[float]:
    stalls = []
    with tensorfile.CheckpointManager(folder, max_to_keep=2, incremental=incremental, async_save=True) as m:
        for step in range(repeat + 2):
            train(model, opt)
            m.wait()
            os.sync()
            start = time.perf_counter()
            m.save(step, {"model": model, "optimizer": opt})
            stalls.append(time.perf_counter() - start)
        m.wait()
    return stalls[2:]  # the first allocates staging and copies all; the second allocates the second staging


def memcpy(head: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[float, float, int]:
    """Best of 20: np.copyto and torch copy_ of the changed tensors into buffers already faulted in."""
    changed = [p for p in head.parameters()] + [t for s in opt.state.values() for t in s.values() if t.numel() > 1]
    arrays = [t.detach().numpy() for t in changed]
    out = [np.ones_like(a) for a in arrays]
    touts = [torch.ones_like(t) for t in changed]
    best_np = best_torch = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        for b, a in zip(out, arrays):
            np.copyto(b, a)
        best_np = min(best_np, time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            for b, t in zip(touts, changed):
                b.copy_(t)
        best_torch = min(best_torch, time.perf_counter() - start)
    return best_np, best_torch, sum(a.nbytes for a in arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, head, opt = fine_tuning()
    state_bytes = sum(t.nbytes for t in model.state_dict().values())
    with tempfile.TemporaryDirectory(prefix="tensorfile-incr-", dir=args.dir) as tmp:
        full_t, full_b, _ = run_sync(os.path.join(tmp, "full"), args.repeat, False, model, opt)
        inc_t, inc_b, inc_first = run_sync(os.path.join(tmp, "inc"), args.repeat, True, model, opt)
        stall_inc = run_async(os.path.join(tmp, "async-inc"), args.repeat, True, model, opt)
        stall_full = run_async(os.path.join(tmp, "async-full"), min(args.repeat, 3), False, model, opt)
    np_copy, torch_copy, changed = memcpy(head, opt)
    del model, head, opt
    big_model, big_head, big_opt = fine_tuning(LARGE_OUTPUTS)
    with tempfile.TemporaryDirectory(prefix="tensorfile-incr-", dir=args.dir) as tmp:
        stall_big = run_async(os.path.join(tmp, "async-inc-large"), args.repeat, True, big_model, big_opt)
    big_np, big_torch, big_changed = memcpy(big_head, big_opt)
    med = statistics.median
    print(f"state: {state_bytes / MIB:.1f} MiB of model (frozen backbone + head) and Adam over the head; changed per "
          f"step: {changed / MIB:.2f} MiB (head, exp_avg, exp_avg_sq) + step counters; {args.repeat} steps each, medians")  # fmt: skip
    print(f"{'':34} {'bytes written':>16} {'time':>10}")
    print(f"{'full step (sync)':34} {med(full_b) / MIB:13.2f} MiB {med(full_t) * 1e3:7.1f} ms")
    print(f"{'incremental: first step (sync)':34} {'':>16} {inc_first * 1e3:7.1f} ms")
    print(f"{'incremental step (sync)':34} {med(inc_b) / MIB:13.2f} MiB {med(inc_t) * 1e3:7.1f} ms")
    bytes_ok = max(inc_b) <= 1.1 * changed + MIB
    ratio_t = med(inc_t) / med(full_t)
    print(f"incremental / full: bytes {med(inc_b) / med(full_b):.4f} (largest step {max(inc_b) / MIB:.2f} MiB, limit 1.1 x "
          f"changed + 1 MiB = {(1.1 * changed + MIB) / MIB:.2f} MiB: {'met' if bytes_ok else 'MISSED'}); time {ratio_t:.3f} "
          f"(target <= 0.1: {'met' if ratio_t <= 0.1 else 'MISSED'})")  # fmt: skip
    print(f"async stall of a full save: {med(stall_full) * 1e3:.1f} ms")
    print("async incremental stall (median) vs a memcpy of the changed bytes (best of 20 of np.copyto / torch copy_):")
    print(f"{'trained part':34} {'changed':>10} {'stall':>10} {'np.copyto':>10} {'copy_':>10} {'ratio':>6}")
    for what, stall, changed_bytes, np_t, torch_t in (
            ("head Linear(1024, 256) + Adam", stall_inc, changed, np_copy, torch_copy),
            (f"head Linear(1024, {LARGE_OUTPUTS}) + Adam", stall_big, big_changed, big_np, big_torch)):  # fmt: skip
        floor = min(np_t, torch_t)
        ratio = med(stall) / floor
        print(f"{what:34} {changed_bytes / MIB:6.1f} MiB {med(stall) * 1e3:7.2f} ms {np_t * 1e3:7.2f} ms "
              f"{torch_t * 1e3:7.2f} ms {ratio:6.2f} (goal <= 1.2: {'met' if ratio <= 1.2 else 'missed'})")  # fmt: skip
    sys.exit(0 if bytes_ok and ratio_t <= 0.1 else 3)


if __name__ == "__main__":
    main()
