"""Run the hostile corpus (make_corpus.py) through tensorfile, one file at a time, in sandboxed worker processes.

Each worker process runs under ``RLIMIT_AS`` = 2 GiB and handles many files in sequence; for every file and
operation it reports the exception (if any), the peak RSS growth, the wall time, whether the payload marker
appeared, whether process-wide state changed, and (seen from the parent) whether it died or hung. A worker
that dies, hangs or sees process state change is replaced. At most ``--jobs`` (2) workers run at once.

Operations (``OPS``): ``load`` (default framework), ``load_numpy``, ``open`` (``tensorfile.open`` then
``f[name]`` for every name, touching the first and last element), and the CLI's ``cli_ls``, ``cli_info``,
``cli_verify``, ``cli_cat`` (``tensorfile.cli.main([...], standalone_mode=False)`` in-process; exit 1 or 2 is
a refusal). A manifest entry's ``ops`` adds operations (``load_torch``).

Rules (:func:`evaluate`), for every file and operation:

- no exception other than a ``tensorfile.TensorFileError`` subclass (FileNotFoundError is accepted only
  when the file it names really is missing); no death; no hang; wall time <= 10 s; peak RSS growth <= 256 MiB;
  the marker file never appears; process state unchanged (``np.dtype(ml_dtypes.bfloat16).itemsize == 2``,
  float8 likewise, bf16/float8 casts work, dtypes' pickled state, tensorfile's functions and classes,
  a few builtins);
- ``expect: "error"``: ``load``, ``load_numpy``, ``open`` and ``cli_verify`` are refused (plus the entry's
  ``must_refuse``, e.g. ``cli_cat`` for files that would hand back another file's bytes); ``cli_ls``,
  ``cli_info`` and ``cli_cat`` may succeed or refuse;
- ``expect: "ok"``: every operation succeeds; ``expect: "any"``: either, per operation.

Usage:
    python tests/hostile/worker.py --report out.json [--corpus DIR] [--jobs 2] [-k SUBSTRING]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import queue
import selectors
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

AS_LIMIT = 2 << 30
RSS_LIMIT_MIB = 256
#: seconds an operation may take (the acceptance's limit); the harness's own self-test lowers it through the
#: environment (HOSTILE_TIME_LIMIT_S, read by the worker processes too) so that its slow and hung probes end sooner
TIME_LIMIT_S = float(os.environ.get("HOSTILE_TIME_LIMIT_S", "10"))
HARD_TIMEOUT_S = 12.0  # an op still running then is killed (and reported as a hang)
HARD_TIMEOUT_AFTER_HANG_S = 4.0  # the same file's later ops, once one hung (the file fails anyway)
STARTUP_TIMEOUT_S = 90.0

OPS = ["load", "load_numpy", "open", "cli_ls", "cli_info", "cli_verify", "cli_cat"]
MUST_REFUSE = {"load", "load_numpy", "open", "cli_verify"}
MAX_CAT_NAMES = 4


# ============================================================================================== in the worker
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Meter:
    """Peak RSS growth of the process over a block: VmHWM after resetting it (Linux), else sampled RSS."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.can_reset = self._reset()

    def _reset(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return _status_kib("VmHWM") is not None
        except OSError:
            return False

    @contextlib.contextmanager
    def measure(self, out: dict[str, Any]) -> Any:
        import gc

        before = self.proc.memory_info().rss
        # a full collection costs ~0.1 s with torch imported: only when garbage may have piled up
        gc.collect(2 if before > (768 << 20) else 0)
        before = self.proc.memory_info().rss
        stop = threading.Event()
        peak = [before]
        sampler = None
        if self.can_reset:
            self._reset()
        else:  # fallback: sample every 5 ms (misses allocations made while the GIL is held)
            def sample() -> None:
                while not stop.wait(0.005):
                    peak[0] = max(peak[0], self.proc.memory_info().rss)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            out["secs"] = round(time.perf_counter() - t0, 3)
            if sampler is not None:
                stop.set()
                sampler.join()
                high = max(peak[0], self.proc.memory_info().rss)
            else:
                high = (_status_kib("VmHWM") or 0) * 1024
            out["rss_mib"] = round(max(0, high - before) / 2**20, 1)


def _fingerprint(obj: Any) -> Any:
    import types

    if isinstance(obj, types.FunctionType):
        return ("f", id(obj.__code__), id(obj.__defaults__), id(obj.__kwdefaults__), tuple(sorted(obj.__dict__)))
    if isinstance(obj, type):
        return ("c", tuple(sorted(vars(obj))))
    return None


def process_state() -> dict[str, Any]:
    """What a file must never change: dtype descriptors, tensorfile's own functions and classes, some builtins."""
    import builtins
    import collections
    import copyreg

    import ml_dtypes
    import numpy as np

    state: dict[str, Any] = {}
    for n in ["?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16", "O", "S1", "U1", "V2"]:
        d = np.dtype(n)
        state[f"np.dtype({n})"] = (d.itemsize, d.alignment, repr(d.__reduce__()))
    for n in ["bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e4m3b11fnuz",
              "int4", "uint4"]:
        t = getattr(ml_dtypes, n, None)
        if t is not None:
            d = np.dtype(t)
            state[f"np.dtype(ml_dtypes.{n})"] = (d.itemsize, d.alignment, repr(d.__reduce__()))
    for n in ["eval", "exec", "open", "__import__", "compile", "getattr", "setattr"]:
        state[f"builtins.{n}"] = id(getattr(builtins, n))
    state["os.system"] = id(os.system)
    state["copyreg._extension_registry"] = len(copyreg._extension_registry)
    state["collections.OrderedDict"] = _fingerprint(collections.OrderedDict)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "bfloat16"):
        state["torch.bfloat16"] = (torch.bfloat16.itemsize, torch.bfloat16.is_floating_point)
        rebuild = getattr(getattr(torch, "_utils", None), "_rebuild_tensor_v2", None)
        if rebuild is not None:
            state["torch._utils._rebuild_tensor_v2"] = _fingerprint(rebuild)
    for mod_name, mod in list(sys.modules.items()):
        if not (mod_name == "tensorfile" or mod_name.startswith("tensorfile.")) or mod is None:
            continue
        for attr, value in list(vars(mod).items()):
            if getattr(value, "__module__", None) == mod_name:
                fp = _fingerprint(value)
                if fp is not None:
                    state[f"{mod_name}.{attr}"] = fp
    return state


def state_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [f"{k}: {before[k]!r} -> {after[k]!r}"[:300] for k in before if k in after and before[k] != after[k]]


def casts_work() -> str | None:
    """None when bf16 / float8 casts give the right values (run only once the descriptors are intact)."""
    import ml_dtypes
    import numpy as np

    for n in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        t = getattr(ml_dtypes, n)
        got = np.array([1.5, -2.0], np.float32).astype(t).astype(np.float32)
        if got.tolist() != [1.5, -2.0]:
            return f"np.float32 -> {n} -> float32 gives {got.tolist()}"
    return None


def _touch(value: Any) -> None:
    """Read the first and last element of a tensor-like value (faults in mapped pages: a map past EOF shows)."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return
    shape = tuple(shape)
    if 0 in shape:
        return
    value[tuple(0 for _ in shape)]
    value[tuple(d - 1 for d in shape)]


class _Sink(io.TextIOBase):
    """A text stream that drops what is written (CLI output) but keeps its last characters."""

    def __init__(self, keep: int = 0) -> None:
        self.keep, self.tail = keep, ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if self.keep:
            self.tail = (self.tail + s)[-self.keep:]
        return len(s)


def _cli(args: list[str]) -> tuple[int, str]:
    from tensorfile.cli import main

    err = _Sink(keep=400)
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Sink(), err
    try:
        try:
            main(args, standalone_mode=False)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        sys.stdout, sys.stderr = old_out, old_err
    return code, err.tail.strip()


class CliRefused(Exception):
    """The CLI exited 1 or 2 (its way of refusing a file)."""


class CliBadExit(Exception):
    """The CLI exited with a code other than 0, 1, 2."""


def _cli_op(args: list[str]) -> None:
    code, tail = _cli(args)
    if code in (1, 2):
        raise CliRefused(f"exit {code}: {tail.splitlines()[-1] if tail else ''}")
    if code != 0:
        raise CliBadExit(f"exit {code}: {tail}")


def run_op(op: str, path: str, names: list[str] | None, found_names: dict[str, list[str]]) -> Any:
    import tensorfile

    if op == "load":
        return tensorfile.load(path)
    if op == "load_numpy":
        return tensorfile.load(path, framework="numpy")
    if op == "load_torch":
        return tensorfile.load(path, framework="torch")
    if op == "open":
        with tensorfile.open(path) as f:
            keys = list(f.keys())
            found_names[path] = keys[:MAX_CAT_NAMES]
            for name in keys:
                value = f[name]
                _touch(value)
                del value
        return None
    if op in ("cli_ls", "cli_info", "cli_verify"):
        return _cli_op([op[4:], path])
    if op == "cli_cat":
        refused = None
        known = names if names is not None else found_names.get(path)
        # no names known (open failed): cat a made-up one, still exercising the CLI's reader; open found no tensor: nothing to cat
        for name in (["x"] if known is None else known)[:MAX_CAT_NAMES]:
            try:
                _cli_op(["cat", path, name])
            except CliRefused as exc:
                refused = exc
        if refused is not None:
            raise refused
        return None
    if op.startswith("cmp_"):
        return COMPARE_OPS[op](path)
    if op.startswith("probe_"):
        return PROBES[op](path)
    raise ValueError(f"unknown op {op}")


# --- probes: deliberately bad "readers", so the tests can check that the harness sees each kind of failure
def _probe_payload(path: str) -> Any:
    import pickle
    import zipfile

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            return None

    with zipfile.ZipFile(path) as z:
        return Unpickler(io.BytesIO(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))))).load()


def _probe_bf16(path: str) -> Any:
    import ml_dtypes
    import numpy as np

    np.dtype(ml_dtypes.bfloat16).__setstate__((3, "<", None, None, None, 1, 1, 64))


def _probe_function(path: str) -> Any:
    import tensorfile

    tensorfile.load.__dict__["touched"] = True  # as BUILD with a dict state on a table function would


def _probe_alloc(path: str) -> Any:
    import numpy as np

    return np.ones(400 << 20, np.uint8)


PROBES: dict[str, Callable[[str], Any]] = {
    "probe_payload": _probe_payload,
    "probe_bf16": _probe_bf16,
    "probe_function": _probe_function,
    "probe_alloc": _probe_alloc,
    "probe_slow": lambda path: time.sleep(TIME_LIMIT_S + 0.5),
    "probe_hang": lambda path: time.sleep(3600),
    "probe_abort": lambda path: os.abort(),
    "probe_foreign": lambda path: {}["missing"],
    "probe_file_not_found": lambda path: open(path + ".nope"),  # noqa: SIM115
    "probe_refuse": lambda path: __import__("tensorfile").load(path + ".nope"),
}


# --- other tools, for benchmarks/hostile_compare.py
def _cmp_torch(path: str) -> Any:
    import torch

    return torch.load(path, weights_only=True, map_location="cpu")


def _cmp_safetensors(path: str) -> Any:
    from safetensors import safe_open

    out = {}
    with safe_open(path, framework="numpy") as f:
        for k in f.keys():
            out[k] = f.get_tensor(k)
    return out


def _cmp_numpy(path: str) -> Any:
    import numpy as np

    value = np.load(path, allow_pickle=False)
    if hasattr(value, "files"):
        with value:
            return {k: value[k] for k in value.files}
    return value


def _cmp_picklescan(path: str) -> Any:
    from picklescan.scanner import scan_file_path

    r = scan_file_path(path)
    if r.scan_err:
        raise RuntimeError(f"scan error ({r.issues_count} issues, {r.infected_files} infected)")
    if r.infected_files or r.issues_count:
        bad = sorted({f"{g.module}.{g.name}" for g in r.globals if str(getattr(g.safety, "value", g.safety)) != "innocuous"})
        raise PicklescanFlagged(f"{r.issues_count} dangerous import(s): {', '.join(bad)[:120]}")
    return {"globals": len(r.globals)}


class PicklescanFlagged(Exception):
    """picklescan reported dangerous globals."""


COMPARE_OPS: dict[str, Callable[[str], Any]] = {
    "cmp_torch": _cmp_torch, "cmp_safetensors": _cmp_safetensors, "cmp_numpy": _cmp_numpy,
    "cmp_picklescan": _cmp_picklescan,
}


def _classify(exc: BaseException, path: str) -> tuple[str, str]:
    """("refused" | "foreign", type name)."""
    try:
        from tensorfile import TensorFileError
    except Exception:  # noqa: BLE001
        TensorFileError = ()  # type: ignore[assignment,misc]
    name = type(exc).__name__
    if isinstance(exc, CliRefused):
        return "refused", "exit"
    if isinstance(exc, TensorFileError):
        return "refused", name
    if isinstance(exc, (FileNotFoundError, IsADirectoryError)):
        missing = exc.filename is not None and not os.path.exists(exc.filename) and os.path.exists(path)
        if missing and isinstance(exc, FileNotFoundError):
            return "refused", name + " (missing shard)"
    return "foreign", name


def serve(corpus: str, marker: str) -> None:
    """Worker loop: read tasks (JSON lines) on stdin, write events (JSON lines) on the original stdout."""
    import resource

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115

    def emit(**event: Any) -> None:
        proto.write(json.dumps(event) + "\n")
        proto.flush()

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
    import ml_dtypes  # noqa: F401
    import numpy as np  # noqa: F401

    import tensorfile
    import tensorfile.cli  # noqa: F401

    with contextlib.suppress(ImportError):
        import torch  # noqa: F401  (the default framework of torch files; imported before measuring)
    meter = Meter()
    baseline = process_state()
    found_names: dict[str, list[str]] = {}
    emit(ev="ready", pid=os.getpid(), tensorfile=getattr(tensorfile, "__version__", "?"), hwm_reset=meter.can_reset)
    for line in sys.stdin:
        task = json.loads(line)
        rel = task["file"]
        path = os.path.join(corpus, rel)
        for op in task["ops"]:
            emit(ev="start", file=rel, op=op)
            rec: dict[str, Any] = {"ev": "result", "file": rel, "op": op, "outcome": "ok"}
            value = None
            try:
                with meter.measure(rec):
                    value = run_op(op, path, task.get("names"), found_names)
            except BaseException as exc:  # noqa: BLE001  (SystemExit, RecursionError, MemoryError... are results)
                outcome, typ = _classify(exc, path)
                rec.update(outcome=outcome, exc_type=typ, message=str(exc)[:400])
                if outcome == "foreign":
                    rec["where"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])[-900:]
                    rec["exc_mro"] = [c.__name__ for c in type(exc).__mro__][:6]
                del exc
            if isinstance(value, dict) and op == "cmp_picklescan":
                rec["detail"] = value
            del value
            if op == "open" and path in found_names:
                rec["names"] = found_names[path]
            if os.path.exists(marker):
                rec["marker"] = True
                with contextlib.suppress(OSError):
                    os.unlink(marker)
            emit(ev="phase", file=rel, op=op, phase="state-check")
            changes = state_changes(baseline, process_state())
            if not changes:
                cast = casts_work()  # may crash the process if a descriptor is corrupt: the parent sees it
                if cast:
                    changes = [cast]
            if changes:
                rec["state"] = changes
            emit(**rec)
            if changes:  # the process is no longer trustworthy
                proto.flush()
                os._exit(3)
        emit(ev="done", file=rel)


# ============================================================================================== in the parent
class Worker:
    def __init__(self, corpus: Path, marker: Path, log: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "TF_CPP_MIN_LOG_LEVEL": "3", "HDF5_USE_FILE_LOCKING": "FALSE", "PYTHONFAULTHANDLER": "1",
               "TQDM_DISABLE": "1", "PYTHONHASHSEED": "0"}
        self.log_path = log
        self.log = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(corpus), "--marker", str(marker)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, cwd=str(corpus), env=env)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.buf = b""
        ready = self.next_event(STARTUP_TIMEOUT_S)
        if not isinstance(ready, dict) or ready.get("ev") != "ready":
            self.kill()
            raise RuntimeError(f"hostile worker did not start ({ready!r}); see {log}")
        self.info = ready

    def send(self, task: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(task) + "\n").encode())
        self.proc.stdin.flush()

    def next_event(self, timeout: float) -> dict[str, Any] | str:
        """The next event, "timeout", or "eof" (the process ended)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            if not self.sel.select(left):
                return "timeout"
            chunk = os.read(self.proc.stdout.fileno(), 65536)  # type: ignore[union-attr]
            if not chunk:
                return "eof"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.sel.close()
        self.log.close()

    def exit_reason(self) -> str:
        rc = self.proc.wait()
        if rc < 0:
            import signal

            try:
                return f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return f"exited with code {rc}"


def ops_for(entry: dict[str, Any], ops: list[str]) -> list[str]:
    extra = [op for op in entry.get("ops", {}) if op not in ops]
    return list(ops) + extra


def run_corpus(corpus: str | os.PathLike[str], files: Iterable[str] | None = None, *, ops: list[str] | None = None,
               ops_for_file: Callable[[str, dict[str, Any]], list[str]] | None = None, jobs: int = 2,
               progress: Callable[[str], None] | None = None, hard_timeout: float = HARD_TIMEOUT_S,
               after_hang_timeout: float = HARD_TIMEOUT_AFTER_HANG_S) -> list[dict[str, Any]]:
    """Run every file of the corpus through its operations; one record per (file, op)."""
    sys.path.insert(0, str(HERE))
    from make_corpus import load_manifest

    corpus = Path(corpus).resolve()
    marker, manifest = load_manifest(corpus)
    names = list(files) if files is not None else sorted(manifest)
    base_ops = ops or OPS
    pick = ops_for_file or (lambda rel, entry: ops_for(entry, base_ops))
    tasks: queue.Queue[str] = queue.Queue()
    for rel in names:
        tasks.put(rel)
    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    log_dir = Path(tempfile.mkdtemp(prefix="hostile-logs-"))

    def one_thread(index: int) -> None:
        worker: Worker | None = None
        log = log_dir / f"worker-{index}.log"
        try:
            while True:
                try:
                    rel = tasks.get_nowait()
                except queue.Empty:
                    break
                file_records = _run_file(rel, pick(rel, manifest[rel]), lambda: Worker(corpus, marker, log), worker,
                                         (hard_timeout, after_hang_timeout))
                worker = file_records.pop()  # the (possibly replaced) worker, or None
                with lock:
                    records.extend(file_records)
                if progress is not None:
                    progress(rel)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            if worker is not None:
                worker.kill()

    threads = [threading.Thread(target=one_thread, args=(i,)) for i in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    import shutil

    shutil.rmtree(log_dir, ignore_errors=True)
    order = {rel: i for i, rel in enumerate(names)}
    records.sort(key=lambda r: (order[r["file"]], r["op_index"]))
    return records


def _run_file(rel: str, ops: list[str], new_worker: Callable[[], Worker], worker: Worker | None,
              timeouts: tuple[float, float]) -> list[Any]:
    pending = list(ops)
    found_names: list[str] | None = None
    hung = False
    out: list[dict[str, Any]] = []

    def record(rec: dict[str, Any]) -> None:
        rec["op_index"] = ops.index(rec["op"])
        out.append(rec)
        if rec["op"] in pending:
            pending.remove(rec["op"])

    while pending:
        if worker is None or worker.proc.poll() is not None:
            if worker is not None:
                worker.kill()
            worker = new_worker()
        worker.send({"file": rel, "ops": pending, "names": found_names})
        current: str | None = None
        phase = "op"
        while True:
            limit = timeouts[1] if hung else timeouts[0]
            ev = worker.next_event(limit)
            if ev == "timeout":
                worker.kill()
                op = current or pending[0]
                record({"file": rel, "op": op, "outcome": "timeout",
                        "message": f"still running after {limit:.0f} s "
                                   f"({'state check' if phase == 'state-check' else 'op'}); killed"})
                hung = True
                worker = None
                break
            if ev == "eof":
                reason = worker.exit_reason()
                worker.kill()
                op = current or pending[0]
                try:  # faulthandler's traceback of the dying worker
                    tail = worker.log_path.read_bytes()[-1500:].decode("utf-8", "replace")
                except OSError:
                    tail = ""
                record({"file": rel, "op": op, "outcome": "died", "log_tail": tail,
                        "message": f"worker {reason} during {'the state check after' if phase == 'state-check' else ''} {op}".replace("  ", " ")})
                worker = None
                break
            assert isinstance(ev, dict)
            if ev["ev"] == "start":
                current, phase = ev["op"], "op"
            elif ev["ev"] == "phase":
                phase = ev["phase"]
            elif ev["ev"] == "result":
                ev.pop("ev")
                if ev["op"] == "open" and "names" in ev:
                    found_names = ev["names"]
                record(ev)
                current = None
                if ev.get("state"):  # the worker exits by itself
                    worker.kill()
                    worker = None
                    break
            elif ev["ev"] == "done":
                break
    out.append(worker)  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------------------------------------- judging
def expectation(entry: dict[str, Any], op: str) -> str:
    """"refuse" | "succeed" | "either" for this op of this file."""
    expect = entry.get("ops", {}).get(op, entry["expect"])
    if expect == "ok":
        return "succeed"
    if expect == "error":
        if op in entry.get("ops", {}) or op in MUST_REFUSE or op in entry.get("must_refuse", ()):
            return "refuse"
        return "either"
    return "either"


def problems(rec: dict[str, Any], entry: dict[str, Any] | None) -> list[str]:
    """What is wrong with one (file, op) record; [] when it passes."""
    out = []
    outcome = rec["outcome"]
    if outcome == "foreign":
        out.append(f"foreign {rec.get('exc_type')}: {rec.get('message', '')[:160]}")
    elif outcome in ("died", "timeout"):
        out.append(f"{outcome}: {rec.get('message', '')}")
    if rec.get("marker"):
        out.append("PAYLOAD RAN (marker file created)")
    if rec.get("state"):
        out.append("process state changed: " + "; ".join(rec["state"])[:300])
    if rec.get("secs", 0) > TIME_LIMIT_S:
        out.append(f"slow: {rec['secs']:.1f} s > {TIME_LIMIT_S:.0f} s")
    if rec.get("rss_mib", 0) > RSS_LIMIT_MIB:
        out.append(f"memory: peak RSS +{rec['rss_mib']:.0f} MiB > {RSS_LIMIT_MIB} MiB")
    if entry is not None and outcome in ("ok", "refused"):
        want = expectation(entry, rec["op"])
        if want == "refuse" and outcome == "ok":
            out.append("accepted: expected a TensorFileError (or CLI exit 1/2)")
        if want == "succeed" and outcome == "refused":
            out.append(f"refused a valid file: {rec.get('exc_type')}: {rec.get('message', '')[:160]}")
    return out


def evaluate(records: list[dict[str, Any]], manifest: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    failures = []
    for rec in records:
        p = problems(rec, manifest.get(rec["file"]))
        if p:
            failures.append({"file": rec["file"], "op": rec["op"], "reader": manifest[rec["file"]]["reader"],
                             "expect": manifest[rec["file"]]["expect"], "problems": p})
    return failures


def failure_table(failures: list[dict[str, Any]], width: int = 160) -> str:
    """A plain-text table of failures grouped by reader, one line per (file, op)."""
    if not failures:
        return "hostile corpus: no failures"
    lines = [f"hostile corpus: {len(failures)} failing (file, op) pairs in {len({f['file'] for f in failures})} files"]
    by_reader: dict[str, list[dict[str, Any]]] = {}
    for f in failures:
        by_reader.setdefault(f["reader"], []).append(f)
    for reader in sorted(by_reader):
        lines.append(f"--- {reader}")
        for f in by_reader[reader]:
            lines.append(f"{f['file']:<44} {f['op']:<11} {'; '.join(f['problems'])}"[:width])
    return "\n".join(lines)


def report(records: list[dict[str, Any]], manifest: dict[str, dict[str, Any]], corpus: str) -> dict[str, Any]:
    failures = evaluate(records, manifest)
    failing_files = sorted({f["file"] for f in failures})
    return {"corpus": corpus, "files": len(manifest), "records": len(records), "failing_files": len(failing_files),
            "failing_pairs": len(failures), "limits": {"rlimit_as": AS_LIMIT, "rss_mib": RSS_LIMIT_MIB, "secs": TIME_LIMIT_S},
            "failures": failures, "results": records, "manifest": manifest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", metavar="CORPUS", help=argparse.SUPPRESS)
    parser.add_argument("--marker", help=argparse.SUPPRESS)
    parser.add_argument("--report", metavar="OUT.json", help="write the full report as JSON")
    parser.add_argument("--corpus", metavar="DIR", help="build the corpus here (default: a temporary folder)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-k", dest="only", action="append", help="only files whose name contains this (repeatable)")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.marker)
        return 0
    sys.path.insert(0, str(HERE))
    from make_corpus import build, load_manifest

    folder = Path(args.corpus) if args.corpus else Path(tempfile.mkdtemp(prefix="hostile-corpus-"))
    t0 = time.perf_counter()
    build(folder)
    _, manifest = load_manifest(folder)
    files = [f for f in sorted(manifest) if not args.only or any(k in f for k in args.only)]
    done = [0]

    def progress(rel: str) -> None:
        done[0] += 1
        print(f"\r{done[0]}/{len(files)} {rel:<60}", end="", file=sys.stderr, flush=True)

    records = run_corpus(folder, files, jobs=args.jobs, progress=progress)
    print(file=sys.stderr)
    doc = report(records, {f: manifest[f] for f in files}, str(folder))
    doc["wall_s"] = round(time.perf_counter() - t0, 1)
    print(failure_table(doc["failures"]))
    print(f"{len(files)} files, {doc['failing_files']} failing, {doc['wall_s']} s")
    if args.report:
        Path(args.report).write_text(json.dumps(doc, indent=1, default=str))
    return 1 if doc["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
