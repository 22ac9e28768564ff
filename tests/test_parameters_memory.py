"""load_parameters peaks at the model's size + its largest tensor (issue 12), measured as benchmarks/ does."""

from __future__ import annotations

import sys

import pytest

import tensorfile
from conftest import ROOT

torch = pytest.importorskip("torch")
sys.path.insert(0, str(ROOT / "benchmarks"))
from parameters_memory import OPS, measure  # noqa: E402

LAYERS = 4  # 4 Linear layers of 4096 x 2048 float32: 128 MiB, the largest tensor 32 MiB


def test_load_parameters_stays_within_the_largest_tensor_above_the_model(tmp_path):
    torch.manual_seed(1)
    model = torch.nn.Sequential(*[torch.nn.Linear(2048, 4096) if i % 2 == 0 else torch.nn.Linear(4096, 2048)
                                  for i in range(LAYERS)])  # fmt: skip
    paths = {"pt": str(tmp_path / "m.pt"), "tf": str(tmp_path / "m.tensorfile")}
    torch.save(model.state_dict(), paths["pt"])
    tensorfile.save_parameters(model, paths["tf"])
    mib = 2**20
    ours = measure(OPS["tensorfile.load_parameters (tensorfile file)"], LAYERS, paths)
    peer = measure(OPS["torch.load + load_state_dict"], LAYERS, paths)
    assert ours <= 32 * mib + 16 * mib, f"{ours / mib:.1f} MiB above the model"
    assert peer > 100 * mib  # the measurement sees a whole copy where there is one
