"""SIGKILLs at random instants of training with CheckpointManager (benchmarks/crash_harness.py): exact resume.

In a file of its own so that pytest-xdist (`--dist loadfile`) runs it beside the other crash runs."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import crash_harness  # noqa: E402


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """One uninterrupted run per kind of training (frozen first layer or not), shared by its sync and async runs:
    the saves do not change the training, so both must end with its weights."""
    return {incremental: tmp_path_factory.mktemp("reference") for incremental in (False, True)}


@pytest.mark.parametrize("async_save, incremental", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["sync", "async", "sync-incremental", "async-incremental"])  # fmt: skip
def test_crash_harness_sigkill_resume_is_bit_identical(tmp_path, references, async_save, incremental):
    """3 random SIGKILLs each, sync and async, full and incremental steps (17 in all with the mid-epoch runs of
    test_crash_mid_epoch.py, 3 more in the chapter demo; `make crash-long` runs hundreds): every run resumes after
    the latest committed step, the final weights are bit-identical to an uninterrupted run's, and no temporary or
    trash folder is left. Incremental: the first layer is frozen, so its blob is shared by hard links and the step
    that wrote it is deleted by retention (max_to_keep=3). The runs that get killed are forks of a process that
    imported torch once (benchmarks/crash_forks.py); the last run is a fresh process."""
    result = crash_harness.run(kills=3, steps=150, async_save=async_save, seed=int(async_save) + 2 * incremental,
                               folder=tmp_path, log=lambda *_: None, max_delay=0.5, incremental=incremental,
                               reference=references[incremental], fork=True)  # fmt: skip
    assert result["kills"] == 3 and result["identical"]
    assert result["not_latest"] == [] and result["left_behind"] == []
    assert max(result["resumed_from"]) > 0  # it did resume from checkpoints
