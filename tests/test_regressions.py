"""Every file the fuzzers found a bug with (``tests/regressions/``) is held to the readers' contract.

A file is named ``<target>-<short-name>.<ext>`` after the fuzz target that found it (``fuzz/targets.py``;
``docs/FUZZING.md`` lists each with its exception and cause). Each is loaded with ``load``, ``open`` +
every ``f[name]`` and the CLI's ``ls``/``info``/``verify``: success or a ``TensorFileError`` only, no
change to process-wide state, within 10 s and a capped address space. A sharded index is read beside
the three real shards of ``../shared/fixtures/safetensors/sharded``, as when it was found.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_fuzz_readers import check, targets

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
FILES = sorted(p for p in REGRESSIONS.iterdir() if p.is_file() and not p.name.startswith((".", "README")))\
    if REGRESSIONS.is_dir() else []


def target_of(path: Path) -> str:
    """The fuzz target a regression file belongs to: the longest target name its file name starts with."""
    names = [n for n in targets.TARGETS if path.name.startswith(n + "-")]
    assert names, f"{path.name}: the name must start with a fuzz target, one of {sorted(targets.TARGETS)}"
    return max(names, key=len)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_regression_file_raises_only_tensorfile_errors(path):
    fmt = target_of(path)
    # a wrapped target's file is the whole archive as found: read it as a file of the unwrapped format
    fmt = {"torch-pickle": "torch", "npz-member": "npz"}.get(fmt, fmt)
    check(fmt, path.read_bytes())


def test_regression_folder_names_are_targets():
    for path in FILES:
        target_of(path)
