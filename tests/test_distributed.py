"""tensorfile.distributed: real torch.distributed runs (torchrun, gloo, CPU), and the checkpoint folder read whole.

Three ``torchrun`` launches (tests/distributed_worker.py says what each rank checks): a 2-rank run that saves an
FSDP2 + AdamW + tensor parallel state, trains with a CheckpointManager and loses rank 1 to SIGKILL mid-save; a
2-rank run that resumes and must match an uninterrupted run bit for bit; a 4-rank run that loads the 2-rank
checkpoint on 4, 3 and 1 ranks. The rest runs in this process or in NumPy-only children (no process group).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, to_numpy

import tensorfile
import tensorfile.distributed as tfd
from tensorfile.distributed import manifest as mf
from tensorfile.errors import CheckpointNotFoundError, FormatError, IntegrityError, ParameterMismatchError

torch = pytest.importorskip("torch")

TORCHRUN = Path(sys.executable).with_name("torchrun")
WORKER = ROOT / "tests" / "distributed_worker.py"


def _torchrun(ranks: int, phase: str, folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1",
           "TORCH_CPP_LOG_LEVEL": "ERROR"}  # fmt: skip
    return subprocess.run([str(TORCHRUN), "--standalone", f"--nproc-per-node={ranks}", str(WORKER), phase, str(folder)],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip


def _ok(folder: Path, phase: str, ranks: int, run: subprocess.CompletedProcess) -> None:
    missing = [r for r in range(ranks) if not (folder / f"{phase}-ok-{r}").exists()]
    assert not missing, f"ranks {missing} failed the {phase} checks:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("distributed")
    return folder, _torchrun(2, "train", folder)


def _same(got, want, where: str = "state") -> None:
    """Equal values, containers and tensors (dtype, shape, bits)."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), where
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), where
    elif isinstance(want, dict):
        assert list(got) == list(want), where
        for k in want:
            _same(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            _same(a, b, f"{where}[{i}]")
    else:
        assert type(got) is type(want) and got == want, (where, got, want)


def test_a_rank_killed_mid_save_leaves_no_committed_step(trained):
    folder, run = trained
    _ok(folder, "train", 2, run)  # saves, async save, the lock refused on both ranks: all checked before the kill
    assert run.returncode != 0
    assert "exitcode  : -9" in run.stderr  # rank 1 died of SIGKILL after writing its file of step 5
    with tensorfile.CheckpointManager(folder / "run", read_only=True) as reader:
        assert reader.steps == [3, 4]  # max_to_keep=2; step 5 never committed
    assert not (folder / "run" / "step_00000005").exists()
    manifest = json.loads((folder / "run" / "step_00000004" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and len(manifest["files"]) == 2
    info = json.loads(manifest["metadata"]["tensorfile.checkpoint"])
    assert info["step"] == 4 and info["live"] == {"model": "torch.module", "optim": "torch.stateful"}


def test_one_process_reads_the_whole_checkpoint(trained, tmp_path):
    folder, _ = trained
    reference = tensorfile.load(folder / "reference.tensorfile")  # the state gathered by the ranks
    assert reference["model"]["0.weight"].shape == (33, 16) and reference["tp"]["rows"].dtype == torch.bfloat16
    _same(tensorfile.load(folder / "rich"), reference)
    _same(tensorfile.load(folder / "rich" / "manifest.json"), reference)
    _same(tensorfile.load(folder / "rich_async"), reference)  # the staged copy, not the tensors changed after
    tensors = json.loads((folder / "rich" / "manifest.json").read_text())["tensors"]
    assert [c["offsets"] for c in tensors["tp.columns"]["chunks"]] == [[0, 0], [0, 5]]  # Shard(1) on 2 ranks
    assert [c["lengths"] for c in tensors["tp.rows"]["chunks"]] == [[3, 3], [2, 3]]  # uneven Shard(0)
    assert len(tensors["replicated"]["chunks"]) == 1  # replicated: written once
    assert {c["file"] for c in tensors["model.0.weight"]["chunks"]} == {0, 1}
    with tensorfile.open(folder / "rich") as f:
        assert f.format == "distributed" and f.has_record
        assert f.info("tp.columns").shape == (6, 10) and f.info("model.0.weight").dtype == "float32"
        np.testing.assert_array_equal(to_numpy(f.slice("tp.columns")[2:5]), to_numpy(reference["tp"]["columns"][2:5]))
        np.testing.assert_array_equal(to_numpy(f["optim.state.0.weight.exp_avg"]),
                                      to_numpy(reference["optim"]["state"]["0.weight"]["exp_avg"]))  # fmt: skip
    from click.testing import CliRunner

    from tensorfile.cli import main

    listed = CliRunner().invoke(main, ["ls", str(folder / "rich")])
    assert listed.exit_code == 0 and "model.0.weight" in listed.output and "(33, 16)" in listed.output
    verified = CliRunner().invoke(main, ["verify", str(folder / "rich")])
    assert verified.exit_code == 0 and "19 tensors, checksums verified" in verified.output
    one = tmp_path / "one.safetensors"
    assert CliRunner().invoke(main, ["convert", str(folder / "rich"), str(one)]).exit_code == 0
    _same(tensorfile.load(one, framework="torch"), reference)  # the CLI converts through NumPy
    shards = tmp_path / "hf" / "model.safetensors"
    shards.parent.mkdir()
    done = CliRunner().invoke(main, ["convert", str(folder / "rich"), str(shards), "--max-shard-size", "2KB"])
    assert done.exit_code == 0, done.output
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    flat = tensorfile.load(shards)
    np.testing.assert_array_equal(to_numpy(flat["tp.columns"]), to_numpy(reference["tp"]["columns"]))
    np.testing.assert_array_equal(to_numpy(flat["optim.state.2.bias.exp_avg_sq"]),
                                  to_numpy(reference["optim"]["state"]["2.bias"]["exp_avg_sq"]))  # fmt: skip


def test_resume_after_the_kill_is_bit_identical(trained):
    folder, _ = trained
    run = _torchrun(2, "resume", folder)
    _ok(folder, "resume", 2, run)
    assert run.returncode == 0


def test_load_on_4_3_and_1_ranks(trained):
    folder, _ = trained
    run = _torchrun(4, "load", folder)
    _ok(folder, "load", 4, run)
    assert run.returncode == 0


# ------------------------------------------------------------ without a process group

_OVERWRITE = r"""
import os, signal, sys
import numpy as np
import tensorfile.distributed as tfd
import tensorfile.distributed.saving as saving
where, value, kill = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if kill == "before-commit":  # this rank's file is written; the manifest is not
    original = saving.write_shard
    def write_shard(*args):
        original(*args)
        os.kill(os.getpid(), signal.SIGKILL)
    saving.write_shard = write_shard
elif kill == "after-commit":  # the new manifest is in place; the old files are not removed yet
    saving.remove_unreferenced = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
tfd.save({"w": np.full((64, 3), value, np.float32), "step": value}, where)
"""


def _save_in_child(where: Path, value: int, kill: str = "none") -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", _OVERWRITE, str(where), str(value), kill], env=env, timeout=120).returncode


def test_an_overwrite_killed_at_any_point_leaves_a_valid_checkpoint(tmp_path):
    where = tmp_path / "ckpt"
    assert _save_in_child(where, 1) == 0
    first = sorted(os.listdir(where))
    assert _save_in_child(where, 2, "before-commit") == -9
    assert tensorfile.load(where)["step"] == 1  # the previous checkpoint, whole
    np.testing.assert_array_equal(tensorfile.load(where)["w"], np.full((64, 3), 1, np.float32))
    assert len(os.listdir(where)) == len(first) + 1  # plus the killed save's file, referenced by nothing
    assert _save_in_child(where, 3, "after-commit") == -9
    assert tensorfile.load(where)["step"] == 3  # committed: the new one
    assert _save_in_child(where, 4) == 0  # the next save removes what no manifest names
    assert tensorfile.load(where)["step"] == 4 and len(os.listdir(where)) == 2


def test_world_of_one_round_trip_and_strict_mismatches(tmp_path):
    state = {"w": torch.arange(12.0).reshape(3, 4), "b": np.arange(5, dtype=np.int16), "lr": 0.5, "names": ["a", "b"],
             "tied": None}  # fmt: skip
    state["tied"] = state["w"]  # the same tensor twice: stored once
    tfd.save(state, tmp_path / "c", metadata={"note": "x"})
    manifest = mf.read(str(tmp_path / "c" / "manifest.json"))
    assert sorted(manifest.tensors) == ["b", "w"] and manifest.metadata == {"note": "x"}
    dest = {"w": torch.zeros(3, 4), "b": np.zeros(5, np.int16), "lr": 0.0, "names": None, "tied": torch.zeros(3, 4)}
    report = tfd.load(dest, tmp_path / "c")
    assert torch.equal(dest["w"], state["w"]) and torch.equal(dest["tied"], state["w"])
    np.testing.assert_array_equal(dest["b"], state["b"])
    assert dest["lr"] == 0.5 and dest["names"] == ["a", "b"] and sorted(report.loaded) == ["b", "lr", "names", "tied", "w"]
    wrong = {"w": torch.zeros(4, 3), "b": np.zeros(5, np.int32), "missing": 1}
    with pytest.raises(ParameterMismatchError) as caught:
        tfd.load(wrong, tmp_path / "c")
    problems = caught.value.report
    assert problems.missing_keys == ["missing"] and [m.name for m in problems.mismatched] == ["w", "b"]
    assert torch.equal(wrong["w"], torch.zeros(4, 3))  # nothing filled
    report = tfd.load(wrong, tmp_path / "c", strict=False)
    assert report.missing_keys == ["missing"] and report.loaded == []
    with pytest.raises(CheckpointNotFoundError):
        tfd.load({}, tmp_path / "nothing")


def test_a_damaged_shard_is_named(tmp_path):
    tfd.save({"w": np.arange(1000, dtype=np.float64)}, tmp_path / "c")
    shard = next(p for p in (tmp_path / "c").iterdir() if p.suffix == ".tensorfile")
    data = bytearray(shard.read_bytes())
    data[-8] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"rank00000-.*tensor 'w' is corrupt"):
        tensorfile.load(tmp_path / "c")
    with pytest.raises(IntegrityError):
        tfd.load({"w": np.zeros(1000)}, tmp_path / "c")
    shard.unlink()
    with pytest.raises(FormatError, match="named by the checkpoint's manifest, but missing"):
        tensorfile.load(tmp_path / "c")


def _manifest(tmp_path: Path, tensors: dict, files=("rank00000-00000000.tensorfile",)) -> Path:
    doc = {"format": "tensorfile.distributed", "version": 1, "world_size": 1, "files": list(files),
           "tensors": tensors, "structure": {"type": "dict", "items": []}, "metadata": {}}  # fmt: skip
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("chunks", "files", "message"), [
    ([{"file": 0, "offsets": [0], "lengths": [2]}, {"file": 1, "offsets": [0], "lengths": [2]}], 2, "overlap"),
    ([{"file": 0, "offsets": [0], "lengths": [4]}, {"file": 1, "offsets": [2], "lengths": [2]}], 2, "more than one cell"),
    ([{"file": 0, "offsets": [0], "lengths": [3]}], 1, "uncovered"),
    ([{"file": 0, "offsets": [2], "lengths": [4]}], 1, "outside its shape"),
    ([{"file": 3, "offsets": [0], "lengths": [4]}], 1, "names file 3"),
    ([{"file": 0, "offsets": [0], "lengths": [2]}, {"file": 0, "offsets": [2], "lengths": [2]}], 1, "two chunks in one file"),
    ([{"file": 0, "offsets": [0], "lengths": [0]}], 1, "ints >= 1"),
])  # fmt: skip
def test_hostile_manifests_are_refused(tmp_path, chunks, files, message):
    names = [f"rank0000{i}-00000000.tensorfile" for i in range(files)]
    spec = {"dtype": "float32", "shape": [4], "framework": "numpy", "record": {}, "chunks": chunks}
    with pytest.raises(FormatError, match=message):
        mf.read(str(_manifest(tmp_path, {"w": spec}, names)))


@pytest.mark.parametrize("name", ["../outside.tensorfile", "/etc/passwd", ".hidden", "manifest.json"])
def test_a_manifest_names_only_files_in_its_folder(tmp_path, name):
    with pytest.raises(FormatError, match="files"):
        mf.read(str(_manifest(tmp_path, {}, [name])))


def test_grid_check():
    cut = [mf.Chunk(i, (r, c), (2, 3)) for i, (r, c) in enumerate([(0, 0), (0, 3), (2, 0), (2, 3)])]
    assert mf.check_grid((4, 6), cut) is None  # a 2x2 mesh, Shard(0) and Shard(1)
    assert "uncovered" in mf.check_grid((4, 6), [*cut[:3], mf.Chunk(3, (1, 3), (3, 3))])  # cuts 3 rows: 6 cells
    assert "overlap" in mf.check_grid((4, 6), [*cut[:3], cut[0]])
    assert mf.check_grid((0, 6), []) is None and mf.check_grid((), [mf.Chunk(0, (), ())]) is None


def test_fsdp2_on_one_rank_checkpoints_through_the_manager(tmp_path):
    """A world of one (FSDP2 on a single rank): steps are distributed checkpoints, restored into fresh objects."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))

        def build(seed: int):
            torch.manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 2))
            fully_shard(model, mesh=mesh)
            return model, torch.optim.AdamW(model.parameters(), lr=0.1)

        model, optimizer = build(0)
        with tensorfile.CheckpointManager(tmp_path / "run", max_to_keep=1, async_save=True) as manager:
            for step in (1, 2):
                model(torch.randn(3, 4)).sum().backward()
                optimizer.step()
                manager.save(step, {"model": model, "optim": optimizer, "epoch": step})
            manager.wait()
            assert manager.steps == [2] and (tmp_path / "run" / "step_00000002" / "manifest.json").is_file()
        fresh, fresh_optimizer = build(1)
        with tensorfile.CheckpointManager(tmp_path / "run") as manager:
            restored = manager.restore(state={"model": fresh, "optim": fresh_optimizer})
        assert restored.step == 2 and restored["epoch"] == 2
        for got, want in zip(get_state_dict(fresh, fresh_optimizer), get_state_dict(model, optimizer)):
            _same(_full(got), _full(want))
        expected = model[1].weight.full_tensor().detach().clone()
    finally:
        dist.destroy_process_group()
    whole = tensorfile.load(tmp_path / "run" / "step_00000002")  # no process group any more
    assert torch.equal(whole["model"]["1.weight"], expected)


def _full(value):
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        return value.full_tensor()
    if isinstance(value, dict):
        return {k: _full(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_full(v) for v in value]
    return value
