"""Build the seed corpora for fuzz/harness.py from ../shared/fixtures (plus a few files made here).

    .venv/bin/python fuzz/seed_corpus.py [--out fuzz/corpus] [FORMAT ...]

Writes ``<out>/<format>/seed-<name>`` for every target in fuzz/targets.py (or those named): the real
fixture files, files written by ``tensorfile.save``, by the ``gguf`` package and by h5py in the Keras
layout, and, for the wrapped targets (``torch-pickle``, ``npz-member``), the selector byte followed by
the archive member the fuzzer mutates. Existing files (the grown corpus) are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import targets  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "corpus")
    parser.add_argument("formats", nargs="*", choices=[[], *sorted(targets.TARGETS)], default=[])
    args = parser.parse_args(argv)
    for name in args.formats or targets.TARGETS:
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        seeds = targets.fuzzer_seeds(name)
        for seed_name, data in seeds:
            (folder / f"seed-{seed_name}").write_bytes(data)
        print(f"{name}: {len(seeds)} seeds in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
