"""Which memory a reader should fill: the measurement behind ``tensorfile/format/memory.py``.

Reads the same tensorfile file (a GPT-2-medium-shaped state, 1.32 GiB with ``--size
full``) into fresh arrays, each in a new process (:mod:`fresh`), with the arrays
allocated four ways: NumPy's ``np.empty`` (transparent huge pages requested from 4 MiB),
a private anonymous map per array (``mmap(-1, n, MAP_PRIVATE)``, the kernel's default
page policy: what tensorfile uses from 4 MiB), the same with ``MAP_POPULATE`` (faulted
in by the kernel at once), and ``torch.empty``. Each array is filled by ``preadv`` in
8 MiB pieces, on one thread and on two. Rounds in shuffled order, warm page cache.

Usage: python benchmarks/allocators.py [--size full|small] [--repeat 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fresh import Op, Table, machine_line, rounds, warm  # noqa: E402

SETUP = """
import mmap
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from tensorfile.format.reader import SafetensorsReader
r = SafetensorsReader({path!r})
entries = list(r.entries.values())

def alloc(n):
    kind = {kind!r}
    if kind == "np.empty" or (kind != "torch.empty" and n < (4 << 20)):
        return np.empty(n, np.uint8)
    if kind == "torch.empty":
        return torch.empty(n, dtype=torch.uint8).numpy()
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | (mmap.MAP_POPULATE if kind == "private map + populate" else 0)
    return np.frombuffer(mmap.mmap(-1, n, flags=flags), np.uint8)

def fill(e):
    a = alloc(e.nbytes)
    start = r.header.data_start + e.begin
    for s in range(0, e.nbytes, 8 << 20):
        os.preadv(r._fd, [a[s : s + (8 << 20)]], start + s)
    return a
"""

KINDS = ("np.empty", "private map", "private map + populate", "torch.empty")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="tensorfile-alloc-")
    try:
        from states import gpt2_state_dict

        import tensorfile

        path = os.path.join(folder, "gpt2.tensorfile")
        state = gpt2_state_dict(args.size)
        tensorfile.save(state, path)
        nbytes = sum(t.numel() * t.element_size() for t in state.values())
        del state
        ops = []
        for kind in KINDS:
            imports = "import torch" if kind == "torch.empty" else ""
            setup = SETUP.format(path=path, kind=kind)
            ops.append(Op(f"{kind}, 1 thread", "out = [fill(e) for e in entries]", imports, setup,
                          without_torch=kind != "torch.empty", nbytes=nbytes))  # fmt: skip
            ops.append(Op(f"{kind}, 2 threads",
                          "with ThreadPoolExecutor(2) as pool:\n    out = list(pool.map(fill, sorted(entries, key=lambda e: -e.nbytes)))",
                          imports, setup, without_torch=kind != "torch.empty", nbytes=nbytes))  # fmt: skip
        warm([folder])
        print(f"# Filling fresh memory from the page cache: {nbytes / 2**30:.3f} GiB, {args.repeat} shuffled rounds, "
              "one new process per measurement")  # fmt: skip
        print(f"machine: {machine_line()}; {dt.date.today()}")
        table = Table(rounds(ops, args.repeat), ops)
        print()
        table.print()
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
