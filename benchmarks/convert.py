"""``tensorfile convert`` to ``.npz`` against safetensors ``load_file`` + ``np.savez``, each in a fresh process.

The source is a tensorfile file (a safetensors file any safetensors tool reads) of ``--mib`` MiB of
float32 tensors (1024 x 1024 each). Contenders, timed in shuffled rounds (see ``fresh.py``):
``tensorfile convert SRC DST.npz`` run through the CLI's own entry point (click, argument parsing,
reading, writing, fsync and rename: everything but the interpreter's start), and the peer
``np.savez(DST, **safetensors.numpy.load_file(SRC))`` (no fsync). Imports are reported apart.

Target (issue 12): the convert at least 1.0x the peer (ratio = peer's median time / ours). Exit 3 when missed.

Usage: python benchmarks/convert.py [--mib 256] [--repeat 5] [--dir DIR]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args(argv)

    import numpy as np

    import tensorfile

    folder = tempfile.mkdtemp(prefix="tensorfile-convert-", dir=args.dir)
    src = os.path.join(folder, "model.safetensors")
    try:
        rng = np.random.default_rng(0)
        count = max(1, args.mib // 4)
        tensorfile.save({f"layer.{i}.weight": rng.standard_normal((1024, 1024), dtype=np.float32) for i in range(count)}, src)
        nbytes = count * 4 << 20
        ops = [
            Op("tensorfile convert -> .npz",
               f"try:\n    main(['convert', {src!r}, {os.path.join(folder, 'ours.npz')!r}], standalone_mode=False)\n"
               "except SystemExit:\n    pass",
               "from tensorfile.cli import main", nbytes=nbytes),
            Op("load_file + np.savez",
               f"np.savez({os.path.join(folder, 'peer.npz')!r}, **load_file({src!r}))",
               "import numpy as np\nfrom safetensors.numpy import load_file", nbytes=nbytes),
        ]  # fmt: skip
        warm([folder])
        print(f"# convert to .npz: {count} float32 tensors of 4 MiB ({nbytes / 2**20:.0f} MiB); {args.repeat} rounds")
        print(f"machine: {machine_line()}; {dt.date.today()}; {cache_mode(False)}")
        table = Table(rounds(ops, args.repeat), ops)
        print()
        table.print()
        print()
        missed = table.print_ratios([("convert vs load_file + np.savez", "load_file + np.savez",
                                      "tensorfile convert -> .npz", 1.0)])  # fmt: skip
        return 3 if missed else 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
