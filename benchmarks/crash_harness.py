"""Crash harness: kill training with SIGKILL at random instants, resume, and compare with an uninterrupted run.

The child is ``examples/train_with_checkpoints.py MODE`` (the chapter's MLP on
scikit-learn's digits, Adam, dropout, a checkpoint every step). Modes: ``torch``
(random batches, StepLR), ``torch-epochs`` (shuffled epochs through
``ResumableLoader``, MultiStepLR: kills land in mid-epoch) and ``nnx-epochs``
(Flax NNX, ``nnx.Optimizer``, dropout RNG streams, shuffled epochs) and
``keras-epochs`` (Keras ``fit``, dropout, a checkpoint every 5 batches).
Once a child says it is training, it is killed after a random delay: in the
middle of a step, a save, an fsync or a rename. It is restarted until it
finishes; then its final weights must equal, bit for bit, those of a run that
was never interrupted.

    python benchmarks/crash_harness.py --kills 200          # the long run (docs/RELIABILITY.md)
    python benchmarks/crash_harness.py --kills 12 --async   # asynchronous saves
    python benchmarks/crash_harness.py --kills 50 --mode torch-epochs --epochs 60
    python benchmarks/crash_harness.py --kills 12 --incremental --async   # incremental checkpoints

``--incremental`` runs the children with ``CheckpointManager(incremental=True)`` (the torch modes freeze the
first layer, so every step shares its blob by hard link and retention deletes the step that wrote it).
``--fork`` (torch modes; the tests and the demo use it) starts the runs to be killed as forks of a process that
imported torch once (``crash_forks.py``), about 6 s of CPU less per run; the run that finishes stays a fresh
process. The long runs of docs/RELIABILITY.md start every run as a fresh process.

Prints one line per kill and a summary; exits 1 if the weights differ.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tensorfile.atomic import TEMP_MARK

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crash_forks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "examples" / "train_with_checkpoints.py"


def _child(directory: Path, steps: int, async_save: bool, mode: str, incremental: bool, digits: Path,
           fork: bool = False) -> Any:  # fmt: skip
    """A run of the example: a fresh process, or with ``fork`` (torch modes) a fork of a process that imported
    torch once (``crash_forks``; the same but for the seconds of imports)."""
    length = ["--steps", str(steps)] if mode == "torch" else ["--epochs", str(steps)]
    data = ["--data", str(digits)]
    args = [mode, str(directory), *length, *data] + (["--async"] if async_save else [])
    args += ["--incremental"] if incremental else []
    if fork and mode in crash_forks.MODES:
        return crash_forks.start(args)
    return subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _save_digits(path: Path) -> None:
    """The example's data set, saved once for all children (each then skips importing scikit-learn)."""
    import importlib.util

    import tensorfile

    spec = importlib.util.spec_from_file_location("train_with_checkpoints", CHILD)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # type: ignore[union-attr]
    X, y = example.digits()
    tensorfile.save({"X": X, "y": y}, path)


def _weights(path: Path) -> dict[str, bytes]:
    import tensorfile

    return {k: np.ascontiguousarray(v).tobytes() for k, v in tensorfile.load(path, framework="numpy").items()}


def run(kills: int, steps: int, async_save: bool, seed: int, folder: Path, log=print, mode: str = "torch",
        max_delay: float = 0.4, incremental: bool = False, reference: Path | None = None,
        fork: bool = False) -> dict:  # fmt: skip
    """Kill ``kills`` children, then let one finish; compare with an uninterrupted run. ``steps``: training
    steps (mode ``torch``) or epochs (the epoch modes). ``reference``: the folder of the uninterrupted run, made
    if it holds no ``final.tensorfile`` yet (runs with the same mode, steps and ``incremental`` but sync or async
    saves end with the same weights, so they can share it). ``fork``: in the torch modes, the uninterrupted run
    and the runs to be killed are forks of one process that imported torch (``crash_forks``: seconds less per
    run); the last run, which must finish, is always a fresh process."""
    rng = random.Random(seed)
    reference, crashed = reference or folder / "reference", folder / "crashed"
    _save_digits(folder / "digits.tensorfile")
    if not (reference / "final.tensorfile").exists():
        ref = _child(reference, steps, async_save, mode, incremental, folder / "digits.tensorfile", fork)
        out, err = ref.communicate(timeout=600)
        if ref.returncode != 0:
            raise RuntimeError(f"the uninterrupted run failed: {err}")
    done = 0
    resumed_from = []
    not_latest = []  # (latest committed step, step the next run resumed after): must never differ
    fresh_starts = 0  # training finished between two kills: the crashed run starts over (more steps avoid it)
    while True:
        committed = sorted(int(p.name[5:]) for p in crashed.glob("step_*")) if crashed.exists() else []
        child = _child(crashed, steps, async_save, mode, incremental, folder / "digits.tensorfile", fork and done < kills)
        line = child.stdout.readline()  # "ready: starting at step N" once restored
        if not line.startswith("ready"):
            child.kill()
            raise RuntimeError(f"the child did not start: {line!r} {child.communicate()[1]}")
        resumed_from.append(int(line.rsplit(" ", 1)[1]))
        after = 0 if mode == "keras-epochs" else 1  # Keras steps count batches trained; the others name the last batch
        if (committed[-1] + after if committed else 0) != resumed_from[-1]:
            not_latest.append((committed[-1] if committed else None, resumed_from[-1] - after))
        if done >= kills:
            rest, err = child.communicate(timeout=600)
            if child.returncode != 0:
                raise RuntimeError(f"the last run failed: {err}")
            break
        if mode == "nnx-epochs":  # jit compiles the first step, seconds on a busy machine: kills come after it
            child.stdout.readline()
        delay = rng.uniform(0.0, max_delay)
        time.sleep(delay)
        if child.poll() is not None:  # it finished before the kill: start over with a fresh folder
            child.communicate()
            fresh_starts += 1
            log(f"run finished before its kill at {delay:.3f}s; starting again from nothing")
            for entry in crashed.iterdir():
                if entry.is_dir():
                    import shutil

                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            continue
        child.send_signal(signal.SIGKILL)
        child.communicate()
        done += 1
        log(f"kill {done}/{kills}: SIGKILL after {delay:.3f}s (this run had resumed at step {resumed_from[-1]})")
    same = _weights(reference / "final.tensorfile") == _weights(crashed / "final.tensorfile")
    # A kill inside the example's last `tensorfile.save(..., "final.tensorfile")` (not a checkpoint) leaves that
    # save's temporary: the next save removes it once it is STALE_AFTER seconds old, so it is not counted here.
    final_temp = ".final.tensorfile" + TEMP_MARK
    left = sorted(p.name for p in crashed.iterdir() if not (p.name.startswith(("step_", final_temp))
                                                            or p.name in (".lock", "final.tensorfile")))  # fmt: skip
    return {"kills": done, "restarts": len(resumed_from), "resumed_from": resumed_from, "identical": same,
            "not_latest": not_latest, "left_behind": left, "fresh_starts": fresh_starts}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: 50 per kill + 300)")
    parser.add_argument("--mode", choices=["torch", "torch-epochs", "nnx-epochs", "keras-epochs"], default="torch")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the epoch modes (default: 1 per kill + 5)")
    parser.add_argument("--max-delay", type=float, default=0.4, help="seconds: kills come 0 to this long after ready")
    parser.add_argument("--async", dest="async_save", action="store_true")
    parser.add_argument("--incremental", action="store_true", help="CheckpointManager(incremental=True)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fork", action="store_true", help="torch modes: fork the runs to be killed from a process "
                        "that imported torch once (seconds less per run; the last run stays a fresh process)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tensorfile-crash-") as tmp:
        start = time.perf_counter()
        if args.mode == "torch":
            steps = args.steps or 50 * args.kills + 300
        else:
            steps = args.epochs or args.kills + 5
        result = run(args.kills, steps, args.async_save, args.seed, Path(tmp), mode=args.mode, max_delay=args.max_delay,
                     incremental=args.incremental, fork=args.fork)
        elapsed = time.perf_counter() - start
    mode = f"{args.mode}, {'async' if args.async_save else 'sync'}{', incremental' if args.incremental else ''}"
    print(f"{mode}: {result['kills']} SIGKILLs, {result['restarts']} runs, resumed at steps "
          f"{sorted(set(result['resumed_from']))[:10]}...; final weights identical to the uninterrupted run: "
          f"{result['identical']}; every run resumed after the latest committed step: {not result['not_latest']}; "
          f"left behind: {result['left_behind'] or 'nothing'} ({elapsed:.0f} s)")  # fmt: skip
    sys.exit(0 if result["identical"] and not result["not_latest"] and not result["left_behind"] else 1)


if __name__ == "__main__":
    main()
