"""Save/load throughput of tensorfile against the disk's raw limit and its peers.

Builds a GPT-2-medium-shaped float32 state dict (about 1.3 GiB; ``--size small``
for a quick run) and, in one run, times:

* raw ``write`` + ``fsync`` and raw ``readinto`` of the same bytes (the physical limit here),
  and the raw write into a new file renamed over the old one (the limit for any atomic save),
* tensorfile ``save`` / ``load`` / ``open`` + touching every page of every tensor,
* ``torch.save`` / ``torch.load(weights_only=True)``,
* safetensors ``save_file`` / ``load_file`` (lazy: memory-mapped) / ``safe_open`` + touch,
* ``np.savez`` / ``np.load`` (materialized).

Each is repeated ``--repeat`` times in interleaved rounds; medians, best times
and ratios of both are printed (disk timings here vary by 3x between identical
runs, so the best time is the steadier estimate of what the code costs). tensorfile and the raw write fsync the file (a durable save); the
peers do not, so tensorfile is also timed without fsync for comparison. Reads run
from a warm page cache, as a training job reloading a checkpoint usually does.
Peak extra memory (RSS above the state dict) while saving is read from
``/proc/self/status`` (VmHWM after a reset through ``/proc/self/clear_refs``).

Usage: python benchmarks/save_load.py [--size small|full] [--repeat N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import shutil
import statistics
import tempfile
import time
from typing import Callable

import numpy as np
import torch

import tensorfile

PAGE = 4096


def gpt2_state_dict(size: str) -> dict[str, torch.Tensor]:
    """GPT-2 medium (24 layers, d=1024, vocab 50257) or a small cousin (2 layers, vocab 20000)."""
    layers, d, vocab, ctx = (24, 1024, 50257, 1024) if size == "full" else (2, 1024, 20000, 1024)
    g = torch.Generator().manual_seed(0)
    sd = {"wte.weight": torch.randn(vocab, d, generator=g), "wpe.weight": torch.randn(ctx, d, generator=g)}
    for i in range(layers):
        p = f"h.{i}."
        shapes = {
            "ln_1.weight": (d,), "ln_1.bias": (d,),
            "attn.c_attn.weight": (d, 3 * d), "attn.c_attn.bias": (3 * d,),
            "attn.c_proj.weight": (d, d), "attn.c_proj.bias": (d,),
            "ln_2.weight": (d,), "ln_2.bias": (d,),
            "mlp.c_fc.weight": (d, 4 * d), "mlp.c_fc.bias": (4 * d,),
            "mlp.c_proj.weight": (4 * d, d), "mlp.c_proj.bias": (d,),
        }  # fmt: skip
        for k, shape in shapes.items():
            sd[p + k] = torch.randn(*shape, generator=g)
    sd["ln_f.weight"], sd["ln_f.bias"] = torch.ones(d), torch.zeros(d)
    return sd


def rss_peak_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def timed(fn: Callable[[], object], before: Callable[[], None] | None = None) -> float:
    """Seconds one call of ``fn`` takes (its result is dropped outside the timing)."""
    if before is not None:
        before()
    gc.collect()
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def touch(tensors) -> int:
    """Read one byte of every page of every tensor (forces the pages in)."""
    total = 0
    for t in tensors:
        a = t.numpy() if isinstance(t, torch.Tensor) else t
        flat = a.reshape(-1).view(np.uint8)
        total += int(flat[::PAGE].sum()) if flat.size else 0
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement (default 5)")
    parser.add_argument("--dir", default=None, help="folder for the files (default: a temporary folder)")
    args = parser.parse_args()
    repeat = args.repeat or 5

    sd = gpt2_state_dict(args.size)
    arrays = {k: v.numpy() for k, v in sd.items()}
    nbytes = sum(a.nbytes for a in arrays.values())
    print(f"state dict: {len(sd)} float32 tensors, {nbytes / 2**30:.3f} GiB; {repeat} runs each; medians")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"numpy {np.__version__}, torch {torch.__version__}; {dt.date.today()}")  # fmt: skip

    folder = tempfile.mkdtemp(prefix="tensorfile-bench-", dir=args.dir)
    try:
        run(sd, arrays, nbytes, repeat, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(sd: dict[str, torch.Tensor], arrays: dict[str, np.ndarray], nbytes: int, repeat: int, folder: str) -> None:
    """Time every contender in ``folder`` and print the tables."""
    path = lambda name: os.path.join(folder, name)  # noqa: E731

    def write_all(target: str, flags: int) -> None:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | flags, 0o644)
        try:
            for a in arrays.values():
                view = memoryview(a.reshape(-1).view(np.uint8))
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def raw_write() -> None:
        write_all(path("raw"), os.O_TRUNC)

    def raw_write_new() -> None:
        # The same bytes into a new file renamed over the old one: what any atomic save must do.
        write_all(path("raw-new.tmp"), os.O_EXCL)
        os.replace(path("raw-new.tmp"), path("raw-new"))
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def raw_read() -> list[np.ndarray]:
        out = []
        with open(path("raw"), "rb", buffering=0) as f:
            for a in arrays.values():
                b = np.empty(a.shape, a.dtype)
                f.readinto(memoryview(b.reshape(-1).view(np.uint8)))
                out.append(b)
        return out

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from tensorfile.files import _save

    writes: dict[str, Callable[[], object]] = {
        "raw write+fsync": raw_write,
        "raw new file+fsync+rename": raw_write_new,
        "tensorfile save": lambda: tensorfile.save(sd, path("tf")),
        "tensorfile save, no fsync": lambda: _save(sd, path("tf-nofsync"), None, durable=False),
        "torch.save": lambda: torch.save(sd, path("torch.pt")),
        "safetensors save_file": lambda: save_file(sd, path("st")),
        "np.savez": lambda: np.savez(path("np.npz"), **arrays),
    }

    def tf_open_touch() -> int:
        with tensorfile.open(path("tf")) as f:
            return touch(f[k] for k in f.keys())

    def st_open_touch() -> int:
        with safe_open(path("st"), "pt") as f:
            return touch(f.get_tensor(k) for k in f.keys())

    def np_load() -> dict[str, np.ndarray]:
        with np.load(path("np.npz")) as z:
            return {k: z[k] for k in z.files}

    reads: dict[str, Callable[[], object]] = {
        "raw readinto": raw_read,
        "tensorfile load": lambda: tensorfile.load(path("tf")),
        "tensorfile open+touch": tf_open_touch,
        "torch.load": lambda: torch.load(path("torch.pt"), weights_only=True),
        "safetensors load_file (lazy)": lambda: load_file(path("st")),
        "safetensors open+touch": st_open_touch,
        "np.load": np_load,
    }

    # Rounds interleave the contenders, so that drift in the machine (page-cache
    # write-back, noisy neighbours) hits all of them alike. Each write starts with
    # nothing dirty in the page cache (os.sync), so that one run's write-back does
    # not land in the next measurement. Reads run from a warm page cache.
    times: dict[str, list[float]] = {name: [] for name in [*writes, *reads]}
    for _ in range(repeat):
        for name, fn in writes.items():
            times[name].append(timed(fn, os.sync))
        for name, fn in reads.items():
            times[name].append(timed(fn))
    results = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}

    # Peak extra memory while saving (RSS above the state dict already in memory).
    peak_extra = None
    if rss_peak_reset():
        gc.collect()
        base = status_kib("VmRSS")
        rss_peak_reset()
        tensorfile.save(sd, path("tf"))
        peak_extra = (status_kib("VmHWM") - base) * 1024

    print()
    print(f"{'operation':<30}{'median s':>10}{'GiB/s':>9}{'best s':>10}")
    for name, seconds in results.items():
        print(f"{name:<30}{seconds:>10.3f}{nbytes / 2**30 / seconds:>9.2f}{best[name]:>10.3f}")

    budget = 64 * 2**20 + 0.05 * nbytes
    checks = [
        ("save vs raw write", "raw write+fsync", "tensorfile save", 0.90),
        ("save vs raw new file+rename", "raw new file+fsync+rename", "tensorfile save", None),
        ("save vs safetensors", "safetensors save_file", "tensorfile save", 2.0),
        ("save, no fsync, vs safetensors", "safetensors save_file", "tensorfile save, no fsync", None),
        ("save vs torch.save", "torch.save", "tensorfile save", None),
        ("load vs raw readinto", "raw readinto", "tensorfile load", 0.90),
        ("load vs torch.load", "torch.load", "tensorfile load", None),
        ("open+touch vs safetensors", "safetensors open+touch", "tensorfile open+touch", 1.0),
    ]
    print()
    print(f"{'ratio (higher = tensorfile faster)':<36}{'median':>8}{'best':>8}  target")
    for label, peer, ours, target in checks:
        on_median = results[peer] / results[ours]
        on_best = best[peer] / best[ours]
        verdict = "" if target is None else f">= {target:.2f}: " + ("met" if on_median >= target else "missed")
        print(f"{label:<36}{on_median:>8.2f}{on_best:>8.2f}  {verdict}")
    if peak_extra is not None:
        verdict = "met" if peak_extra <= budget else "missed"
        print(f"{'peak extra memory while saving':<36}{peak_extra / 2**20:>7.1f}M  {verdict} (budget {budget / 2**20:.0f} MiB)")



if __name__ == "__main__":
    main()
