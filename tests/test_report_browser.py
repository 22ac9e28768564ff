"""``tensorfile report`` pages opened in a real browser (issue 16): headless Chromium loads each page from
disk, and the test checks there is no console error and that every chart drew (pixels other than the
background inside each ``[data-chart]`` box of the full-page screenshot). Pages: a 3-step CheckpointManager
folder of the chapter's MLP trained with PyTorch, a torch ``.pt`` file, and two files compared.

Skipped only where Chromium is absent (``apt-get install chromium``; ``.ci/run`` installs it).
``TENSORFILE_SCREENSHOTS=DIR`` keeps the screenshots (``docs/report.png`` is the folder's page).
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
from chromium_page import INSTALL_HINT, Chromium, find_chromium

import tensorfile
from tensorfile.report import Options, report

pytestmark = pytest.mark.skipif(find_chromium() is None, reason=INSTALL_HINT)
torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")


def _chapter_run(root):
    """The chapter's MLP (20 -> 256 -> 10) trained 3 steps, a checkpoint per step; also its first and last
    parameters as a torch ``.pt`` and a tensorfile file."""
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    X, y = torch.randn(64, 20), torch.randint(0, 10, (64,))
    torch.save(net.state_dict(), root / "mlp.pt")
    tensorfile.save(net.state_dict(), root / "before.tensorfile")
    with tensorfile.CheckpointManager(root / "run", keep_best=1, best_metric="loss") as manager:
        for step in (1, 2, 3):
            loss = nn.functional.cross_entropy(net(X), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                accuracy = (net(X).argmax(1) == y).float().mean().item()
            manager.save(step, {"model": net, "optimizer": opt}, metrics={"loss": loss.item(), "accuracy": accuracy})
    with torch.no_grad():
        net[2].weight.mul_(3.0)  # the output layer changed most, by far: the chart must say so
    tensorfile.save(net.state_dict(), root / "after.tensorfile")


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-pages")
    _chapter_run(root)
    made = {}
    for label, paths in {"folder": [root / "run"], "pt": [root / "mlp.pt"],
                         "diff": [root / "before.tensorfile", root / "after.tensorfile"]}.items():  # fmt: skip
        made[label] = report([str(p) for p in paths], str(root / f"{label}.html"), Options(), show_progress=False)
    broken = root / "broken.html"  # the checks' own check: a blank chart and a console error are seen
    broken.write_text('<html><body><div data-chart="blank" style="width:300px;height:120px"></div>'
                      '<script>console.error("boom"); undefinedFunction();</script></body></html>')  # fmt: skip
    with Chromium() as browser:
        shots = {label: browser.open(path) for label, path in {**made, "broken": str(broken)}.items()}
    keep = os.environ.get("TENSORFILE_SCREENSHOTS")
    if keep:
        for label, shot in shots.items():
            with open(os.path.join(keep, f"report-{label}.png"), "wb") as out:
                out.write(shot.png)
    return root, made, shots


def _drawn(pixels: np.ndarray, box: dict) -> float:
    """The fraction of pixels in ``box`` (of the page's RGB ``pixels``) that differ from the page's white."""
    x, y = int(box["x"]), int(box["y"])
    crop = pixels[y : y + int(box["height"]), x : x + int(box["width"])].astype(np.int16)
    return float((np.abs(crop - 255).sum(axis=2) > 30).mean()) if crop.size else 0.0


@pytest.mark.parametrize("label, charts", [
    ("folder", {"metrics over steps", "largest move per tensor", "tensors x steps heatmap"}),
    ("pt", set()),
    ("diff", {"relative change per tensor"}),
])  # fmt: skip
def test_page_opens_without_errors_and_every_chart_draws(pages, label, charts):
    _, _, shots = pages
    shot = shots[label]
    assert shot.errors == []
    names = {b["name"] for b in shot.boxes}
    assert charts <= names
    histograms = [b for b in shot.boxes if b["name"].startswith("histogram of ")]
    assert len(histograms) >= 4  # one per tensor of the chapter's MLP at least
    pixels = np.asarray(Image.open(io.BytesIO(shot.png)).convert("RGB"))
    assert pixels.shape[:2] == (shot.size[1], shot.size[0])
    for box in shot.boxes:
        assert box["width"] > 50 and box["height"] > 20, box
        assert box["x"] + box["width"] <= shot.size[0] + 1, box  # inside the page, not cut off
        assert _drawn(pixels, box) > 0.02, f"chart {box['name']!r} looks blank"


def test_the_checks_see_a_blank_chart_and_console_errors(pages):
    shot = pages[2]["broken"]
    assert len(shot.errors) == 2 and "boom" in shot.errors[0] and "undefinedFunction" in shot.errors[1]
    (box,) = shot.boxes
    assert (box["width"], box["height"]) == (300, 120)
    assert _drawn(np.asarray(Image.open(io.BytesIO(shot.png)).convert("RGB")), box) == 0.0


def test_which_layer_changed_most_is_named_and_true(pages):
    root, made, _ = pages
    html = open(made["diff"], encoding="utf-8").read()
    a, b = tensorfile.load(root / "before.tensorfile", framework="numpy"), tensorfile.load(root / "after.tensorfile", framework="numpy")
    moved = {n: np.linalg.norm(b[n] - a[n]) / np.linalg.norm(a[n]) for n in a}
    top = max(moved, key=moved.get)
    assert top == "2.weight"
    assert re.search(rf"changed most: {re.escape(top)} \({100 * moved[top]:.3g}%\)", html)
    folder = open(made["folder"], encoding="utf-8").read()
    assert "changed most: model." in folder and "best (min loss)" in folder
