"""Many tiny tensors: save and load of 5,000 and 50,000 float32 tensors of 16 elements, each in a fresh process.

Contenders: ``tensorfile.save`` (durable: fsynced and renamed into place) and
``tensorfile.load`` (checksums verified), ``torch.save`` / ``torch.load(weights_only=True)``,
safetensors ``save_file`` / ``load_file``. A state of many small tensors is where
per-tensor costs (headers, records, Python objects) show, not the disk.

Targets (issue 10): tensorfile's save and load at least 1.0x torch's and at least 0.8x
safetensors' (ratio = peer's median time / tensorfile's). Exit status 3 when one is missed (1 is a crash).

Usage: python benchmarks/tiny.py [--counts 5000,50000] [--repeat 7] [--dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fresh import Op, Table, cache_mode, machine_line, rounds, warm  # noqa: E402

STATE = """
import torch
_g = torch.Generator().manual_seed(0)
sd = {{f"layer.{{i}}.weight": torch.randn(16, generator=_g) for i in range({count})}}
"""


def ops_for(count: int, folder: str) -> list[Op]:
    p = lambda name: os.path.join(folder, f"{count}-{name}")  # noqa: E731
    state = STATE.format(count=count)
    return [
        Op(f"{count}: tensorfile save", f"tensorfile.save(sd, {p('saved.tensorfile')!r})", "import tensorfile", state),
        Op(f"{count}: torch.save", f"torch.save(sd, {p('saved.pt')!r})", "import torch", state),
        Op(f"{count}: safetensors save_file", f"save_file(sd, {p('saved.safetensors')!r})",
           "import torch\nfrom safetensors.torch import save_file", state),
        Op(f"{count}: tensorfile load", f"out = tensorfile.load({p('tiny.tensorfile')!r})", "import tensorfile, torch"),
        Op(f"{count}: torch.load", f"out = torch.load({p('tiny.pt')!r}, weights_only=True)", "import torch"),
        Op(f"{count}: safetensors load_file", f"out = load_file({p('tiny.safetensors')!r})",
           "import torch\nfrom safetensors.torch import load_file"),
    ]  # fmt: skip


def write_inputs(count: int, folder: str) -> None:
    import torch
    from safetensors.torch import save_file

    import tensorfile

    g = torch.Generator().manual_seed(0)
    sd = {f"layer.{i}.weight": torch.randn(16, generator=g) for i in range(count)}
    tensorfile.save(sd, os.path.join(folder, f"{count}-tiny.tensorfile"))
    torch.save(sd, os.path.join(folder, f"{count}-tiny.pt"))
    save_file(sd, os.path.join(folder, f"{count}-tiny.safetensors"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="5000,50000")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    folder = tempfile.mkdtemp(prefix="tensorfile-tiny-", dir=args.dir)
    try:
        ops = []
        for count in counts:
            write_inputs(count, folder)
            ops += ops_for(count, folder)
        warm([folder])
        print(f"# Tiny tensors: {', '.join(map(str, counts))} float32 tensors of 16 elements; {args.repeat} rounds")
        print(f"machine: {machine_line()}; {dt.date.today()}; {cache_mode(False)}")
        results = rounds(ops, args.repeat)
        table = Table(results, ops)
        print()
        table.print()
        print()
        rows = []
        for c in counts:
            for what, tf, torch_name, st_name in (("save", "tensorfile save", "torch.save", "safetensors save_file"),
                                                  ("load", "tensorfile load", "torch.load", "safetensors load_file")):
                rows.append((f"{c}: {what} vs {torch_name}", f"{c}: {torch_name}", f"{c}: {tf}", 1.0))
                rows.append((f"{c}: {what} vs {st_name}", f"{c}: {st_name}", f"{c}: {tf}", 0.8))
        missed = table.print_ratios(rows)
        return 3 if missed else 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
