"""SIGKILLs in mid-epoch (benchmarks/crash_harness.py epoch modes): exact resume over shuffled data.

In a file of its own so that pytest-xdist (`--dist loadfile`) runs it beside the other crash runs."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import crash_harness  # noqa: E402


@pytest.mark.parametrize("mode, epochs, delay, kills", [("torch-epochs", 8, 1.0, 3), ("nnx-epochs", 8, 2.0, 2)])
def test_crash_harness_mid_epoch_resume_is_bit_identical(tmp_path, mode, epochs, delay, kills):
    """Kills in mid-epoch over shuffled data (torch: ResumableLoader, MultiStepLR; Flax NNX: nnx.Optimizer and
    dropout RNG streams): the resumed runs end with the uninterrupted run's weights, bit for bit."""
    if mode == "nnx-epochs":
        pytest.importorskip("flax")
    result = crash_harness.run(kills=kills, steps=epochs, async_save=mode == "nnx-epochs", seed=5, folder=tmp_path,
                               log=lambda *_: None, mode=mode, max_delay=delay, fork=True)  # fmt: skip
    assert result["kills"] == kills and result["identical"], result
    assert result["not_latest"] == [] and result["left_behind"] == []
    assert any(r % 29 for r in result["resumed_from"] if r)  # some run resumed inside an epoch (29 batches each)
