"""ls, info and cat of a big torch.save or np.savez file read its headers only; diff streams tensor by tensor
(issue 12): peak memory of the command, in a fresh process, stays far below the files' sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import tensorfile
from tensorfile.tree import flat_arrays

MiB = 1 << 20
#: 8 tensors of 24 MiB: a file of about 192 MiB.
COUNT, ROWS, COLS = 8, 1024, 6144


#: Runs the CLI as its console script does, then writes the process' peak resident memory (VmHWM, KiB: this
#: process' own, where ru_maxrss of a child counts the parent's memory at fork) to the file named first.
_MEASURED = """
import atexit, sys
peak, sys.argv = sys.argv[1], ["tensorfile", *sys.argv[2:]]

def _record():
    with open("/proc/self/status") as f:
        kib = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(peak, "w") as out:
        out.write(kib)

atexit.register(_record)
from tensorfile.cli import main
main()
"""


def run_measured(*args: object) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the CLI in a fresh process; its result and its peak resident memory in MiB."""
    src = os.path.dirname(os.path.dirname(tensorfile.__file__))  # the tensorfile these tests import
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as folder:
        peak = os.path.join(folder, "peak")
        out = subprocess.run([sys.executable, "-c", _MEASURED, peak, *map(str, args)], capture_output=True, text=True,
                             timeout=120, env=env)  # fmt: skip
        with open(peak) as f:
            return out, int(f.read()) / 1024


def _state(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {f"layer{i}.weight": np.full((ROWS, COLS), i, np.float32) for i in range(COUNT)}
    state["layer3.weight"][0, :5] = rng.standard_normal(5).astype(np.float32)
    state["small"] = np.arange(5, dtype=np.float32)
    return state


@pytest.fixture(scope="module")
def big_files(tmp_path_factory):
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("big")
    a, b = _state(0), _state(0)
    b["layer3.weight"][0, 1] += 0.5
    b["layer5.weight"][7, 7] = 5.5
    b["small"][4] = 4.25
    for name, state in (("a", a), ("b", b)):
        torch.save({**{k: torch.from_numpy(v) for k, v in state.items()}, "epoch": 3 if name == "a" else 4},
                   folder / f"{name}.pt")  # fmt: skip
        np.savez(folder / f"{name}.npz", **state)
    torch.save({"small": torch.arange(5.0), "epoch": 1}, folder / "tiny.pt")
    np.savez(folder / "tiny.npz", small=np.arange(5, dtype=np.float32))
    return folder, a, b


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_ls_info_cat_read_headers_only(big_files, suffix):
    folder, a, _ = big_files
    path, tiny = folder / f"a{suffix}", folder / f"tiny{suffix}"
    assert path.stat().st_size > 190 * MiB
    _, baseline = run_measured("ls", tiny)
    loaded = flat_arrays(tensorfile.load(path, framework="numpy"))
    out, peak = run_measured("ls", "--json", path)
    assert out.returncode == 0, out.stderr
    listed = {t["name"]: (t["dtype"], tuple(t["shape"]), t["nbytes"]) for t in json.loads(out.stdout)["tensors"]}
    assert listed == {k: (v.dtype.name, v.shape, v.nbytes) for k, v in loaded.items()}
    assert peak - baseline < 30, f"ls: {peak:.0f} MiB, {baseline:.0f} MiB for a tiny file"
    out, peak = run_measured("info", path)
    assert out.returncode == 0 and f"tensors:   {COUNT + 1}, " in out.stdout and peak - baseline < 30, (out.stderr, peak)
    out, peak = run_measured("cat", "--json", path, "small")
    assert json.loads(out.stdout)["values"] == a["small"].tolist() and peak - baseline < 30, (out.stderr, peak)
    if suffix == ".pt":
        out, peak = run_measured("cat", path, "epoch")
        assert out.stdout.strip() == "epoch: int 3" and peak - baseline < 30, (out.stderr, peak)


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_diff_streams_with_memory_of_two_tensors(big_files, suffix):
    folder, a, b = big_files
    _, baseline = run_measured("diff", folder / f"tiny{suffix}", folder / f"tiny{suffix}")
    out, peak = run_measured("diff", "--json", folder / f"a{suffix}", folder / f"b{suffix}")
    assert out.returncode == 1, out.stderr
    tensor = ROWS * COLS * 4 / MiB
    assert peak - baseline < 2 * tensor + 30, f"diff: {peak:.0f} MiB, {baseline:.0f} MiB for tiny files"
    doc = json.loads(out.stdout)
    assert doc["changed"] == ([{"name": "epoch", "a": "3", "b": "4"}] if suffix == ".pt" else [])
    got = {c["name"]: (c["max_abs"], c["max_rel"], c["same"]) for c in doc["compared"]}
    assert set(got) == set(a)
    for name in a:
        x, y = a[name].astype(np.float64), b[name].astype(np.float64)
        d = np.abs(x - y)
        rel = np.where(d == 0, 0.0, d / np.where(y == 0, 1, np.abs(y)))
        rel = np.where((y == 0) & (d > 0), np.inf, rel)
        want = (float(d.max()), float(rel.max()), bool(d.max() == 0))
        assert got[name] == (want[0], want[1] if np.isfinite(want[1]) else "inf", want[2]), name
    assert [c["name"] for c in doc["compared"] if not c["same"]] == ["layer3.weight", "layer5.weight", "small"]
    if suffix == ".npz":  # within the tolerance; not a terminal: no progress bar
        out, _ = run_measured("diff", "--atol", "0.6", folder / f"a{suffix}", folder / f"b{suffix}")
        assert out.returncode == 0 and out.stderr == "" and out.stdout.startswith(f"same: {COUNT + 1} tensors")


def test_diff_shows_a_progress_bar_when_asked(big_files):
    folder, _, _ = big_files
    out, _ = run_measured("diff", "--progress", folder / "tiny.npz", folder / "tiny.npz")
    assert out.returncode == 0 and "diff: " in out.stderr and "/40.0 " in out.stderr, out.stderr  # 2 x 20 bytes


def test_compare_in_pieces_matches_the_whole(monkeypatch):
    from tensorfile import cli_values

    rng = np.random.default_rng(1)
    x = rng.standard_normal(1000).astype(np.float32)
    y = x.copy()
    y[[3, 500, 999]] = [np.nan, np.inf, 0.0]
    x[[3, 998]] = [np.nan, -0.0]
    y[998] = 0.0  # -0.0 == 0.0: bytes differ, values do not
    y[10] += 1e-3
    whole = cli_values.compare(x, y, 1e-2, 0.0)
    monkeypatch.setattr(cli_values, "COMPARE_CHUNK", 7)
    assert cli_values.compare(x, y, 1e-2, 0.0) == whole
    assert whole[0] == np.inf and whole[1] == np.inf and not whole[2]  # 500: inf against a number; 999: x / 0
    y[[500, 999]] = x[[500, 999]]
    near = cli_values.compare(x, y, 1e-2, 0.0)
    assert near[2] and near[0] == pytest.approx(1e-3, rel=1e-3) and cli_values.compare(x, y, 0.0, 0.0)[2] is False
