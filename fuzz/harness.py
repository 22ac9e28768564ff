"""Coverage-guided fuzzing of tensorfile's readers with atheris (libFuzzer for Python).

    .venv/bin/python fuzz/harness.py --format torch-pickle fuzz/corpus/torch-pickle -max_total_time=300

Every input is written to a file (``fuzz/targets.py``: as the whole file, as one member of a valid
archive, or as a sharded index beside real shards) and held to the contract there: ``load``, ``open``
with every tensor read, and the CLI's ``ls``/``info``/``verify`` succeed or raise a ``TensorFileError``,
and process-wide state is unchanged.

Unlike a plain libFuzzer target, a foreign exception does not stop the run: the *file* (not the
fuzzer's bytes) is saved once per distinct failure (exception type + innermost tensorfile frame) as
``<crashes>/<signature>-<sha>.<suffix>`` with its traceback in ``.txt``, and listed in
``<crashes>/index.tsv``. What does stop it (a hang past ``-timeout``, RSS past ``-rss_limit_mb``, a
fatal signal, a changed process-wide state) leaves the last file in ``<crashes>/.work/``, where
``fuzz/run_all.py`` picks it up. Peak RSS growing more than 256 MiB over the warmed-up baseline is
recorded as a failure too (``RSS+<n>MiB``), and the address space is capped so a bomb raises
``MemoryError`` instead of taking the machine.

Any argument the harness does not know is passed to libFuzzer (corpus folders, ``-max_total_time``, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import resource
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import atheris  # noqa: E402

import targets  # noqa: E402

RSS_GROWTH_LIMIT = 256 << 20
ADDRESS_SPACE_HEADROOM = 3 << 30


def _import_tensorfile() -> None:
    """Import (and so instrument) every module a reader can reach: not checkpoint/, nor frameworks but NumPy."""
    import importlib
    import pkgutil

    import tensorfile

    for info in pkgutil.walk_packages(tensorfile.__path__, "tensorfile."):
        name = info.name
        if name.startswith("tensorfile.checkpoint"):  # no reader uses it (and its Keras part imports TensorFlow)
            continue
        if name.startswith("tensorfile.frameworks.") and name not in (
            "tensorfile.frameworks.numpy", "tensorfile.frameworks.base",
        ):
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            pass


class Harness:
    def __init__(self, fmt: str, crashes: Path, cli: bool) -> None:
        self.fmt = fmt
        self.target = targets.TARGETS[fmt]
        self.crashes = crashes
        self.work = crashes / ".work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.cli = cli
        self.seen: set[str] = set()
        index = crashes / "index.tsv"
        if index.exists():  # a restarted run does not save the same failure again
            self.seen = {line.split("\t")[0] for line in index.read_text().splitlines() if line}
        self.rss_baseline: int | None = None
        self.runs = 0

    def _save(self, sig: str, path: str, detail: str) -> None:
        data = Path(path).read_bytes()
        sha = hashlib.sha1(data).hexdigest()[:10]
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", sig)[:80] + "-" + sha
        suffix = "".join(Path(path).suffixes) or self.target.suffix
        if self.target.mode == "sharded":
            suffix = ".index.json"
        (self.crashes / (stem + suffix)).write_bytes(data)
        (self.crashes / (stem + ".txt")).write_text(detail)
        last = detail.strip().splitlines()[-1] if detail.strip() else sig
        with open(self.crashes / "index.tsv", "a") as f:
            f.write(f"{sig}\t{stem + suffix}\t{last[:300]}\n")
        print(f"\n=== NEW FAILURE [{self.fmt}] {sig}: {last[:300]}\n    saved {self.crashes / (stem + suffix)}",
              file=sys.stderr, flush=True)

    def __call__(self, data: bytes) -> None:
        for old in self.work.iterdir():
            if old.is_file():
                old.unlink()
        path = targets.materialize(self.fmt, data, str(self.work))
        try:
            targets.run_contract(path, cli=self.cli)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - every escape is a finding
            sig = targets.signature(e)
            if sig not in self.seen:
                self.seen.add(sig)
                self._save(sig, path, "".join(traceback.format_exception(e)))
            if isinstance(e, targets.ContractViolation) and e.kind == "state":
                raise  # the process is poisoned: let libFuzzer stop (run_all.py restarts it)
        self.runs += 1
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if self.runs == 20 or self.rss_baseline is None:
            self.rss_baseline = peak  # warmed up: lazy imports and caches are in
        elif peak > self.rss_baseline + RSS_GROWTH_LIMIT:
            sig = f"RSS+{(peak - self.rss_baseline) >> 20}MiB"
            self.rss_baseline = peak  # report each new peak level once
            self._save(sig, path, f"peak RSS grew by {sig[4:]} while reading this file\n")
            self.seen.add(sig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=sorted(targets.TARGETS))
    parser.add_argument("--crashes", type=Path, default=None, help="default: fuzz/crashes/<format>/")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI part of the contract (faster)")
    args, libfuzzer = parser.parse_known_args()
    crashes = args.crashes or HERE / "crashes" / args.format
    crashes.mkdir(parents=True, exist_ok=True)

    with atheris.instrument_imports(include=["tensorfile"]):
        _import_tensorfile()
    import tensorfile.cli  # noqa: F401

    # Warm up on the seeds (lazy imports, baseline state), then cap the address space.
    harness = Harness(args.format, crashes, cli=not args.no_cli)
    for _, seed in targets.fuzzer_seeds(args.format):
        harness(seed)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = targets.vm_size() + ADDRESS_SPACE_HEADROOM
    if hard == resource.RLIM_INFINITY or cap < hard:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))

    atheris.Setup([sys.argv[0], *libfuzzer], harness)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
