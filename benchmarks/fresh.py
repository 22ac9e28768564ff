"""Time one operation in a fresh Python process, in shuffled rounds, and print medians, spreads and ratios.

Every benchmark of ``benchmarks/`` that times a load uses this module, because a job
loads its checkpoint once, in a new process: the memory it fills has to be faulted
in, where a long-lived benchmark process reuses memory it freed (glibc keeps freed
blocks under 32 MiB in its heap) and flatters whoever runs second.

How one measurement runs: a new interpreter is started with ``sys.executable``; it
runs the operation's imports (timed, reported apart as ``import_s``), then its setup
(untimed: building a state to save, opening nothing the operation should open), then
the operation itself (``op_s``), and prints one JSON line. A library's first call imports
more of it (tensorfile, torch and safetensors all import parts lazily), so each
contender's imports end with the same call on a tiny file: that cost is an import
cost, reported with them, not part of ``op_s``. Before each measurement
the parent runs ``before()`` (the cold-cache mode drops the page cache there).

Rounds: each runs every operation once, in an order shuffled anew (seeded), so that
no operation always follows the same one; the disk's and memory's state after one
operation weighs on the next.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

__all__ = ["PEAK_PREAMBLE", "Op", "measure", "rounds", "Table", "drop_caches", "cache_mode", "machine_line", "touch_code", "write_touch_code"]

_CHILD = """\
import json, os, sys, time
{block}
_t0 = time.perf_counter()
{imports}
_t1 = time.perf_counter()
{setup}
{probe}
_p0 = _probe()
_t2 = time.perf_counter()
{code}
_t3 = time.perf_counter()
_p1 = _probe()
print("@@RESULT " + json.dumps({{"import_s": _t1 - _t0, "op_s": _t3 - _t2, "probe_s": (_p0 + _p1) / 2,
                                 **globals().get("_extra", {{}})}}))
"""

#: The host probe (see :class:`Table`): a fixed memory-bound job, 4 copies of 64 MiB between two arrays
#: already faulted in, timed just before and just after the operation.
_PROBE = """
import numpy as _pnp
_psrc = _pnp.ones(8 << 20)
_pdst = _pnp.ones(8 << 20)
def _probe():
    t = time.perf_counter()
    for _ in range(4):
        _pnp.copyto(_pdst, _psrc)
    return time.perf_counter() - t
_probe()
"""

#: Python that reads one byte of every page of every array in ``result`` (a dict or list of tensors or arrays).
#: Runs before a measured process' own code: writes its peak resident memory (KiB) at exit to the file
#: named by the environment variable TF_BENCH_PEAK.
PEAK_PREAMBLE = """
import atexit as _atexit, os as _os, sys

def _record():
    with open("/proc/self/status") as f:
        kib = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(_os.environ["TF_BENCH_PEAK"], "w") as out:
        out.write(kib)

_atexit.register(_record)
"""

touch_code = """
import numpy as _np
def _touch(values):
    total = 0
    for v in (values.values() if isinstance(values, dict) else values):
        a = v.numpy() if hasattr(v, "numpy") and not isinstance(v, _np.ndarray) else v
        flat = _np.asarray(a).reshape(-1).view(_np.uint8)
        total += int(flat[::4096].sum()) if flat.size else 0
    return total
"""

#: Python that writes one byte of every page of every tensor in ``result`` (a mapped page is copied on write).
write_touch_code = """
import numpy as _np
def _write_touch(values):
    for v in (values.values() if isinstance(values, dict) else values):
        a = v.numpy() if hasattr(v, "numpy") and not isinstance(v, _np.ndarray) else v
        flat = _np.asarray(a).reshape(-1).view(_np.uint8)
        flat[::4096] = 1
"""


@dataclass(frozen=True)
class Op:
    """One operation to time.

    Attributes:
        name: shown in the tables.
        code: the timed Python statements (run at module level of the child); a dict it leaves in
            ``_extra`` is added to the result (e.g. a peak memory).
        imports: statements run first, timed apart (``import_s``).
        setup: untimed statements between the imports and ``code``.
        without_torch: make ``import torch`` fail in the child (``sys.modules["torch"] = None``).
        nbytes: bytes the operation moves, for GiB/s (0: not shown).
    """

    name: str
    code: str
    imports: str = ""
    setup: str = ""
    without_torch: bool = False
    nbytes: int = 0
    env: Mapping[str, str] = field(default_factory=dict)


def measure(op: Op, timeout: float = 900) -> dict[str, float]:
    """Run ``op`` once in a new process; returns ``{"import_s": s, "op_s": s, "probe_s": s}`` and the op's
    ``_extra`` (``probe_s``: the host probe's time, the mean of its runs just before and just after the op).

    Raises:
        RuntimeError: the child failed (its stderr's tail is in the message).
    """
    block = 'sys.modules["torch"] = None' if op.without_torch else ""
    source = _CHILD.format(block=block, imports=textwrap.dedent(op.imports), setup=textwrap.dedent(op.setup),
                           probe=_PROBE, code=textwrap.dedent(op.code))  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "3", **op.env}
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout, env=env)
    for line in done.stdout.splitlines():
        if line.startswith("@@RESULT "):
            return json.loads(line[len("@@RESULT ") :])
    raise RuntimeError(f"{op.name}: the child process failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def rounds(ops: Sequence[Op], repeat: int, *, seed: int = 0, before: Callable[[Op], None] | None = None,
           echo: bool = True, warmup: int = 0) -> dict[str, list[dict[str, float]]]:  # fmt: skip
    """Run every op ``repeat`` times, in rounds of shuffled order; results by op name, in round order.

    ``warmup`` rounds run first, in shuffled order too, and are not counted (as hyperfine's ``--warmup``):
    their times are printed to stderr, so that a slow first round stays visible."""
    rng = random.Random(seed)
    for r in range(warmup):
        order = list(ops)
        rng.shuffle(order)
        times = []
        for op in order:
            if before is not None:
                before(op)
            times.append(f"{op.name} {measure(op)['op_s']:.3f} s")
        print(f"  warm-up round {r + 1}/{warmup} (not counted): " + "; ".join(times), file=sys.stderr, flush=True)
    out: dict[str, list[dict[str, float]]] = {op.name: [] for op in ops}
    for r in range(repeat):
        order = list(ops)
        rng.shuffle(order)
        for op in order:
            if before is not None:
                before(op)
            out[op.name].append(measure(op))
        if echo:
            print(f"  round {r + 1}/{repeat} done", file=sys.stderr, flush=True)
    return out


def drop_caches(paths: Iterable[str]) -> None:
    """Empty the page cache: all of it when root (``/proc/sys/vm/drop_caches``), else the pages of ``paths``."""
    os.sync()
    if os.geteuid() == 0:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            return
        except OSError:
            pass
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cache_mode(cold: bool) -> str:
    """One line saying how reads meet the page cache in this run."""
    if not cold:
        return "warm page cache (each file read once before the rounds)"
    if os.geteuid() == 0:
        return "cold page cache: /proc/sys/vm/drop_caches emptied before each measurement (run as root)"
    return ("cold page cache, approximately: not root, so only the benchmark's files were dropped "
            "(posix_fadvise DONTNEED) before each measurement")  # fmt: skip


def warm(paths: Iterable[str]) -> None:
    """Write back whatever is dirty, then read every file once, so that the rounds start from a warm page cache
    with no write-back running behind them."""
    os.sync()
    for path in paths:
        for root, _, names in os.walk(path) if os.path.isdir(path) else [("", [], [path])]:
            for name in names:
                with open(os.path.join(root, name), "rb", buffering=0) as f:
                    while f.read(64 << 20):
                        pass


def machine_line() -> str:
    import numpy as np

    parts = [f"{platform.machine()}, {os.cpu_count()} cpus", f"python {platform.python_version()}", f"numpy {np.__version__}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    try:
        with open("/sys/kernel/mm/transparent_hugepage/defrag") as f:
            parts.append(f"THP defrag {f.read().strip()}")
    except OSError:
        pass
    return "; ".join(parts)


class Table:
    """Medians, best, worst/median (the spread) and import times of :func:`rounds`' results.

    The host-adjusted spread: this machine (a virtual machine on a shared host) has
    periods of seconds in which every memory-bound job runs up to 3x slower, the raw
    read of a file included, with no steal time, no context switch and the same page
    faults: the CPU time grows with the wall time. To tell such a period from a
    slowness of the operation itself, each measurement also times a fixed memory-bound
    job in the same process, just before and just after the operation (``probe_s``).
    A measurement's host factor is its ``probe_s`` over the run's median ``probe_s``;
    the adjusted time is ``op_s`` divided by that factor. Both spreads are printed.
    """

    def __init__(self, results: Mapping[str, list[dict[str, float]]], ops: Sequence[Op]) -> None:
        self.results = results
        self.ops = {op.name: op for op in ops}
        probes = [r["probe_s"] for runs in results.values() for r in runs if "probe_s" in r]
        self.probe_median = statistics.median(probes) if probes else 0.0

    def median(self, name: str) -> float:
        return statistics.median(r["op_s"] for r in self.results[name])

    def spread(self, name: str) -> float:
        """The slowest round over the median (1.0: every round at the median or faster)."""
        return max(r["op_s"] for r in self.results[name]) / self.median(name)

    def adjusted(self, name: str) -> list[float]:
        """``op_s`` of each round divided by that measurement's host factor (see the class)."""
        if not self.probe_median:
            return [r["op_s"] for r in self.results[name]]
        return [r["op_s"] * self.probe_median / r["probe_s"] for r in self.results[name]]

    def adjusted_spread(self, name: str) -> float:
        """The slowest round over the median, host-adjusted."""
        times = self.adjusted(name)
        return max(times) / statistics.median(times)

    def probe_spread(self) -> float:
        """The slowest host probe over the median probe: how much the machine itself varied in this run."""
        probes = [r["probe_s"] for runs in self.results.values() for r in runs if "probe_s" in r]
        return max(probes) / self.probe_median if probes else 1.0

    def print(self) -> None:
        print("| operation | median s | GiB/s | best s | worst / median | host-adjusted | import s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, runs in self.results.items():
            times = [r["op_s"] for r in runs]
            med = self.median(name)
            nbytes = self.ops[name].nbytes
            rate = f"{nbytes / 2**30 / med:.2f}" if nbytes and med > 0 else ""
            imports = statistics.median(r["import_s"] for r in runs)
            print(f"| {name} | {med:.3f} | {rate} | {min(times):.3f} | {self.spread(name):.2f} | "
                  f"{self.adjusted_spread(name):.2f} | {imports:.2f} |")  # fmt: skip
        print(f"host probe (4 x 64 MiB copies): median {self.probe_median:.4f} s, slowest / median "
              f"{self.probe_spread():.2f}")  # fmt: skip

    def ratio(self, peer: str, ours: str) -> float:
        """Peer's median time over ours (> 1: ours is faster)."""
        return self.median(peer) / self.median(ours)

    def print_ratios(self, rows: Sequence[tuple[str, str, str, float | None]]) -> list[str]:
        """Rows of ``(label, peer, ours, target)``; returns the labels of the targets missed."""
        missed = []
        print("| ratio (peer median / ours; > 1 = ours faster) | median | target | verdict |")
        print("| --- | ---: | ---: | --- |")
        for label, peer, ours, target in rows:
            value = self.ratio(peer, ours)
            verdict = "" if target is None else ("met" if value >= target else "**missed**")
            if target is not None and value < target:
                missed.append(label)
            shown = "" if target is None else f"≥ {target:.2f}"
            print(f"| {label} | {value:.2f} | {shown} | {verdict} |")
        return missed

    def print_spreads(self, names: Sequence[str], limit: float = 1.5) -> list[str]:
        """The host-adjusted spread of each named op against ``limit`` (the raw spread printed beside it);
        returns the names over the limit."""
        over = [n for n in names if self.adjusted_spread(n) > limit]
        worst = ", ".join(f"{n} {self.adjusted_spread(n):.2f} (raw {self.spread(n):.2f})" for n in names)
        print(f"spread (slowest round / median, host-adjusted), limit {limit}: {worst}; "
              f"{'all within' if not over else 'over: ' + ', '.join(over)}")  # fmt: skip
        return over

    def rounds_line(self, name: str) -> str:
        return f"{name}, in round order: " + ", ".join(f"{r['op_s']:.3f}" for r in self.results[name])
