"""Loads in fresh processes: every reader of tensorfile against torch.load, safetensors and the raw read.

Writes a GPT-2-medium-shaped float32 state dict (``--size full``: 292 tensors, 1.32 GiB;
``small``: 178 MiB) once in each format, then times each load in a new Python process
(:mod:`fresh`: imports timed apart, rounds in shuffled order), from a warm page cache
(every file read once before the rounds) or, with ``--cold``, from a cold one.

Loads timed: ``tensorfile.load`` of its own file (checksums verified; torch tensors out,
as the state was torch's), ``torch.load(weights_only=True)``, safetensors ``load_file``
three ways, ``tensorfile.open`` + a read of one byte per page, ``tensorfile.load`` of
the ``.pt`` in a process where ``import torch`` fails, ``CheckpointManager.restore`` of
the same state, ``tensorfile verify`` (the CLI's check of every checksum), ``.npz``
through tensorfile and through ``np.load``, a sharded save (300 MB shards), an MXNet
``.params`` file (without MXNet), and the raw ``preadv`` of the tensorfile file into
fresh private memory on one thread (the copy from the page cache alone).

safetensors ``load_file`` maps the file: its tensors' pages stay in the page cache until
touched. Touched by a read of one byte per page, they are mapped, not copied (the lazy
load; ``tensorfile.open`` is its equal). Touched by a write of one byte per page, as the
first in-place update of training does, each page is copied into the process: the end
state of ``tensorfile.load`` and ``torch.load``, which copy every byte (and tensorfile
hashes every byte). ``backend="pread"`` reads like them.

Targets (issue 10), as the peer's median time over ours: ``tensorfile.load`` >= 1.0x
``torch.load`` and >= 0.8x safetensors + write touch; ``.pt`` without torch >= 1.1x
``torch.load``; ``restore`` >= 0.9x ``torch.load``; and no round of any load slower
than 1.5x its own median. Exit status 3 when one is missed (1 is a crash).

Before the counted rounds, ``--warmup`` rounds (default 1) run every load once, uncounted, as hyperfine's
``--warmup`` does; their times are printed to stderr. On the development machine the first round after the
files are written is often the slowest of all, for the raw read as much as for any library.

Usage: python benchmarks/loads.py [--size full|small|tiny] [--repeat 7] [--warmup 1] [--cold] [--dir DIR] [--only 'A;B']
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fresh import (  # noqa: E402
    Op,
    Table,
    cache_mode,
    drop_caches,
    machine_line,
    rounds,
    touch_code,
    warm,
    write_touch_code,
)

RAW_READ = """
fd = os.open({path!r}, os.O_RDONLY)
size = os.fstat(fd).st_size
out = empty_bytes(size)
for start in range(0, size, 8 << 20):
    os.preadv(fd, [out[start : start + (8 << 20)]], start)
os.close(fd)
"""

VERIFY = """
try:
    main.main(["verify", {path!r}], standalone_mode=False)
except SystemExit as exc:
    assert not exc.code, exc.code
"""


def write_files(size: str, folder: str) -> tuple[dict[str, str], int]:
    """Every file to load, and beside each a tiny one of the same format (``NAME.tiny``) for the first calls."""
    import torch
    from safetensors.torch import save_file
    from states import gpt2_state_dict

    import tensorfile

    names = {"tf": "gpt2.tensorfile", "pt": "gpt2.pt", "st": "gpt2.safetensors", "npz": "gpt2.npz",
             "shards": "shards/model.safetensors", "params": "gpt2.params", "ckpt": "ckpt"}  # fmt: skip
    tiny = {"a": torch.arange(16.0), "b": torch.ones(16)}
    for sd, suffix in ((gpt2_state_dict(size), ""), (tiny, ".tiny")):
        p = {k: os.path.join(folder, v + suffix) for k, v in names.items()}
        tensorfile.save(sd, p["tf"])
        torch.save(sd, p["pt"])
        save_file(sd, p["st"])
        tensorfile.save(sd, p["npz"], format="npz")
        os.makedirs(os.path.dirname(p["shards"]), exist_ok=True)
        tensorfile.save(sd, p["shards"], max_shard_size="300MB" if not suffix else 64)
        tensorfile.save(sd, p["params"], format="mxnet")
        with tensorfile.CheckpointManager(p["ckpt"]) as m:
            m.save(0, {"model": sd})
        if not suffix:
            nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    return {k: os.path.join(folder, v) for k, v in names.items()}, nbytes


def ops_for(p: dict[str, str], nbytes: int) -> list[Op]:
    t = {k: v + ".tiny" for k, v in p.items()}  # the same formats, two small tensors: first calls, in the imports
    st = "import torch\nfrom safetensors.torch import load_file\n" + f"load_file({t['st']!r})\n"
    tf = f"import tensorfile, torch\ntensorfile.load({t['tf']!r})\n"
    tf_numpy = "import tensorfile\ntensorfile.load({!r}, framework='numpy')\n"
    return [
        Op("tensorfile.load", f"out = tensorfile.load({p['tf']!r})", tf, nbytes=nbytes),
        Op("torch.load(weights_only=True)", f"out = torch.load({p['pt']!r}, weights_only=True)",
           f"import torch\ntorch.load({t['pt']!r}, weights_only=True)", nbytes=nbytes),
        Op("safetensors load_file + write touch", f"out = load_file({p['st']!r}); _write_touch(out)",
           st + write_touch_code, nbytes=nbytes),
        Op("safetensors load_file + read touch", f"out = load_file({p['st']!r}); _touch(out)", st + touch_code,
           nbytes=nbytes),
        Op("safetensors load_file(backend='pread')", f"out = load_file({p['st']!r}, backend='pread')",
           st + f"load_file({t['st']!r}, backend='pread')", nbytes=nbytes),
        Op("tensorfile.open + read touch",
           f"f = tensorfile.open({p['tf']!r})\nout = {{k: f[k] for k in f.keys()}}\n_touch(out)",
           tf + f"tensorfile.open({t['tf']!r})['a']\n" + touch_code, nbytes=nbytes),
        Op(".pt by tensorfile, no torch", f"out = tensorfile.load({p['pt']!r}, framework='numpy')",
           tf_numpy.format(t["pt"]), without_torch=True, nbytes=nbytes),
        Op("CheckpointManager.restore", f"with tensorfile.CheckpointManager({p['ckpt']!r}) as m:\n    out = m.restore()",
           tf + f"tensorfile.CheckpointManager({t['ckpt']!r}).restore()", nbytes=nbytes),
        Op("tensorfile verify", VERIFY.format(path=p["tf"]), "from tensorfile.cli import main\n" + VERIFY.format(path=t["tf"]),
           without_torch=True, nbytes=nbytes),
        Op(".npz by tensorfile", f"out = tensorfile.load({p['npz']!r}, framework='numpy')", tf_numpy.format(t["npz"]),
           without_torch=True, nbytes=nbytes),
        Op(".npz by np.load", f"with np.load({p['npz']!r}) as z:\n    out = {{k: z[k] for k in z.files}}",
           f"import numpy as np\nnp.load({t['npz']!r})['a']", without_torch=True, nbytes=nbytes),
        Op("shards by tensorfile", f"out = tensorfile.load({p['shards']!r})",
           tf + f"tensorfile.load({t['shards']!r})", nbytes=nbytes),
        Op(".params by tensorfile, no MXNet", f"out = tensorfile.load({p['params']!r}, framework='numpy')",
           tf_numpy.format(t["params"]), without_torch=True, nbytes=nbytes),
        Op("raw preadv, one thread", RAW_READ.format(path=p["tf"]),
           "import os\nfrom tensorfile.format.memory import empty_bytes", without_torch=True, nbytes=nbytes),
    ]  # fmt: skip


#: tensorfile's loads: the spread limit applies to these.
OURS = ("tensorfile.load", "tensorfile.open + read touch", ".pt by tensorfile, no torch", "CheckpointManager.restore",
        "tensorfile verify", ".npz by tensorfile", "shards by tensorfile", ".params by tensorfile, no MXNet")  # fmt: skip

TARGETS = [
    ("tensorfile.load vs torch.load", "torch.load(weights_only=True)", "tensorfile.load", 1.0),
    ("tensorfile.load vs safetensors + write touch (both: every page the process's own)",
     "safetensors load_file + write touch", "tensorfile.load", 0.8),
    ("tensorfile.open + read touch vs safetensors + read touch (both: pages mapped from the page cache)",
     "safetensors load_file + read touch", "tensorfile.open + read touch", None),
    ("tensorfile.load (copied, verified) vs safetensors + read touch (mapped)", "safetensors load_file + read touch",
     "tensorfile.load", None),
    ("tensorfile.load vs safetensors pread", "safetensors load_file(backend='pread')", "tensorfile.load", None),
    (".pt without torch vs torch.load", "torch.load(weights_only=True)", ".pt by tensorfile, no torch", 1.1),
    ("restore vs torch.load", "torch.load(weights_only=True)", "CheckpointManager.restore", 0.9),
    ("tensorfile.load vs raw preadv", "raw preadv, one thread", "tensorfile.load", None),
    ("verify vs raw preadv", "raw preadv, one thread", "tensorfile verify", None),
    (".npz: tensorfile vs np.load", ".npz by np.load", ".npz by tensorfile", None),
    ("shards vs one file", "tensorfile.load", "shards by tensorfile", None),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "small", "full"], default="full")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first (their times go to stderr)")
    parser.add_argument("--cold", action="store_true", help="empty the page cache before each load")
    parser.add_argument("--dir", default=None, help="folder for the files (default: a temporary folder)")
    parser.add_argument("--only", default=None, help="time only these loads (names separated by ';')")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="tensorfile-loads-", dir=args.dir)
    try:
        paths, nbytes = write_files(args.size, folder)
        ops = ops_for(paths, nbytes)
        if args.only:
            ops = [op for op in ops if op.name in args.only.split(";")]
        if not args.cold:
            warm([folder])
        before = (lambda op: drop_caches([folder])) if args.cold else None
        print(f"# Loads in fresh processes: {nbytes / 2**30:.3f} GiB GPT-2-shaped state ({args.size}), "
              f"{args.repeat} shuffled rounds after {args.warmup} uncounted")  # fmt: skip
        print(f"machine: {machine_line()}; {dt.date.today()}")
        print(f"cache: {cache_mode(args.cold)}")
        results = rounds(ops, args.repeat, before=before, warmup=args.warmup)
        table = Table(results, ops)
        print()
        table.print()
        print()
        missed = table.print_ratios([t for t in TARGETS if t[1] in results and t[2] in results])
        print()
        over = table.print_spreads([op.name for op in ops if op.name in OURS])
        others = [op.name for op in ops if op.name not in OURS]
        print("peers (information), host-adjusted: "
              + ", ".join(f"{n} {table.adjusted_spread(n):.2f} (raw {table.spread(n):.2f})" for n in others))
        print()
        for name in results:
            print(table.rounds_line(name))
        return 3 if missed or over else 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
