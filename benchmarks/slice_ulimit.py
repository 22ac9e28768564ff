"""Lazy reads under an address-space limit smaller than the file (issue 12, item 3; safetensors#528).

Writes one tensorfile file (``--size full``: 1 GiB, four float32 tensors of 256 MiB and
one of 16 bytes; ``small``: 512 MiB, four of 128 MiB), then in fresh processes
(:mod:`fresh`) reads, with ``RLIMIT_AS`` set to 512 MiB after the imports (what
``ulimit -v 524288`` does to a whole shell):

* the 16-byte tensor: ``tensorfile.open(path)`` + ``f["small"]``, and safetensors'
  ``safe_open(path, framework="numpy")`` + ``get_tensor("small")``;
* a 1 MiB slice (64 rows of 4096 float32) of a big tensor: ``f.slice("big.1")[a:b]``
  and ``get_slice("big.1")[a:b]``;

and the same four without a limit, for the cost of each read. Each process checks the
values it read. Prints the median time of each read (open and close included) and
whether it succeeded, with the error of those that did not. The 512 MiB include the
interpreter, NumPy and the timing harness's two 64 MiB probe arrays (:mod:`fresh`):
about 240 MiB here, so a read may map at most about 270 MiB.

Exit status 3 when a tensorfile read fails under the limit (1 is a crash).

Usage: python benchmarks/slice_ulimit.py [--size full|small] [--repeat 7] [--dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fresh import Op, machine_line, rounds, warm  # noqa: E402

LIMIT = 512 << 20
WIDTH, SLICE_ROWS, START = 4096, 64, 1000  # the slice: rows 1000:1064 of "big.1", 1 MiB
#: The child's BLAS single-threaded: every extra thread's stack counts against the limit.
ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

LIMITED = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, resource.getrlimit(resource.RLIMIT_AS)[1]))
"""

#: The timed read: ``READ`` (statements that set ``out``) inside a check of the values; ``_extra`` says how it went.
CHECKED = """
try:
{read}
    _extra = {{"ok": bool({check})}}
    if not _extra["ok"]:
        _extra["error"] = "wrong values"
except Exception as exc:
    _extra = {{"ok": False, "error": f"{{type(exc).__name__}}: {{exc}}"[:200]}}
"""


def write_file(size: str, folder: str) -> tuple[str, str, int]:
    """The big file and a tiny one of the same layout (for the first calls, in the imports); and the big one's size."""
    import numpy as np

    import tensorfile

    rows = (256 << 20 if size == "full" else 128 << 20) // (WIDTH * 4)
    path, tiny = os.path.join(folder, "big.tensorfile"), os.path.join(folder, "tiny.tensorfile")
    state = {"small": np.array([1.5, -2.0, 3.25, 4.0], np.float32)}
    for i in range(4):  # row r of big.i holds r + i everywhere
        state[f"big.{i}"] = np.empty((rows, WIDTH), np.float32)
        state[f"big.{i}"][:] = np.arange(i, rows + i, dtype=np.float32)[:, None]
    tensorfile.save(state, path)
    tensorfile.save({"small": state["small"], "big.1": np.ones((SLICE_ROWS, WIDTH), np.float32)}, tiny)
    return path, tiny, os.path.getsize(path)


def ops_for(path: str, tiny: str) -> list[Op]:
    tf = f"import numpy as np, tensorfile\nwith tensorfile.open({tiny!r}, framework='numpy') as f:\n" \
         f"    f['small'], f.slice('big.1')[0:{SLICE_ROWS}]\n"  # fmt: skip
    st = f"import numpy as np\nfrom safetensors import safe_open\nwith safe_open({tiny!r}, framework='numpy') as f:\n" \
         f"    f.get_tensor('small'), f.get_slice('big.1')[0:{SLICE_ROWS}]\n"  # fmt: skip
    small_ok = "out.tolist() == [1.5, -2.0, 3.25, 4.0]"
    rows_ok = (f"out.shape == ({SLICE_ROWS}, {WIDTH}) and "
               f"(out == np.arange({START + 1}, {START + 1 + SLICE_ROWS}, dtype=np.float32)[:, None]).all()")  # fmt: skip
    reads = {
        "tensorfile f['small']": (tf, f"with tensorfile.open({path!r}, framework='numpy') as f:\n    out = f['small']",
                                  small_ok),
        "tensorfile f.slice[a:b], 1 MiB": (tf, f"with tensorfile.open({path!r}, framework='numpy') as f:\n"
                                               f"    out = f.slice('big.1')[{START}:{START + SLICE_ROWS}]", rows_ok),
        "safetensors get_tensor('small')": (st, f"with safe_open({path!r}, framework='numpy') as f:\n"
                                                "    out = f.get_tensor('small')", small_ok),
        "safetensors get_slice[a:b], 1 MiB": (st, f"with safe_open({path!r}, framework='numpy') as f:\n"
                                                  f"    out = f.get_slice('big.1')[{START}:{START + SLICE_ROWS}]", rows_ok),
    }  # fmt: skip
    ops = []
    for limited in (True, False):
        for name, (imports, read, check) in reads.items():
            code = CHECKED.format(read="\n".join("    " + line for line in read.splitlines()), check=check)
            ops.append(Op(f"{name}{', 512 MiB limit' if limited else ', no limit'}", code, imports,
                          setup=LIMITED if limited else "", without_torch=True, env=ENV))  # fmt: skip
    return ops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--dir", default=None, help="folder for the files (default: a temporary folder)")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="tensorfile-ulimit-", dir=args.dir)
    try:
        path, tiny, size = write_file(args.size, folder)
        ops = ops_for(path, tiny)
        warm([folder])
        print(f"# Lazy reads of a {size / 2**30:.2f} GiB tensorfile file under RLIMIT_AS = {LIMIT >> 20} MiB "
              f"({args.size}), fresh processes, {args.repeat} shuffled rounds")  # fmt: skip
        print(f"machine: {machine_line()}; {dt.date.today()}")
        results = rounds(ops, args.repeat)
        print()
        print("| read (open and close included) | median ms | succeeded | error |")
        print("| --- | ---: | --- | --- |")
        failed = []
        for op in ops:
            runs = results[op.name]
            ok = sum(bool(r.get("ok")) for r in runs)
            errors = sorted({r["error"] for r in runs if not r.get("ok")})
            median = statistics.median(r["op_s"] for r in runs) * 1e3
            print(f"| {op.name} | {median:.2f} | {ok}/{len(runs)} | {'; '.join(errors)[:200]} |")
            if op.name.startswith("tensorfile") and ok < len(runs):
                failed.append(op.name)
        if failed:
            print(f"\n**tensorfile failed**: {', '.join(failed)}")
        return 3 if failed else 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
