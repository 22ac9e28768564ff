"""CheckpointManager(incremental=True): bytes written per step, blobs shared by hard links, retention, detection
behind the version counter, changing layouts, damaged shared blobs, object storage (memory://), restart."""

from __future__ import annotations

import json
import os
import uuid
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import tensorfile
from tensorfile import CheckpointManager, IntegrityError
from tensorfile.checkpoint.blobs import INCREMENTAL_KEY

torch = pytest.importorskip("torch")


def _fine_tuning(seed: int = 0):
    """A frozen backbone (2 x 64x64 linear) and a trained head (64 -> 4) with Adam."""
    torch.manual_seed(seed)
    backbone = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
    backbone.requires_grad_(False)
    head = torch.nn.Linear(64, 4)
    model = torch.nn.Sequential(backbone, head)
    return model, torch.optim.Adam(head.parameters(), lr=1e-2)


def _train(model, opt) -> None:
    loss = model(torch.randn(8, 64)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _arrays(tree, prefix="") -> dict[str, np.ndarray]:
    """Every tensor of a (restored or live) state dict, by path, as host arrays."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_arrays(v, f"{prefix}{k}."))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(_arrays(v, f"{prefix}{i}."))
    elif isinstance(tree, torch.Tensor):
        out[prefix] = tree.detach().numpy().copy()
    elif isinstance(tree, np.ndarray):
        out[prefix] = tree.copy()
    else:
        out[prefix] = tree
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(x, y) and getattr(x, "dtype", None) == getattr(y, "dtype", None) if isinstance(x, np.ndarray)
        else x == y for x, y in ((a[k], b[k]) for k in a))  # fmt: skip


def _folder(tmp_path, step: int):
    return tmp_path / f"step_{step:08d}"


def _blobs(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("blob-"))


HEAD_BYTES = (64 * 4 + 4) * 4  # the head's weight and bias, float32


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_bytes_written_links_and_retention(tmp_path, async_save):
    """After the first step a step writes the head and Adam's moments and steps (3 x the head + 2 steps), its blob
    is that plus a header; the backbone blob is one inode shared by every step folder; after retention deleted
    the step that wrote it, every kept step restores bit-identically, and tensorfile.load / verify read a step."""
    model, opt = _fine_tuning()
    saved = {}
    with CheckpointManager(tmp_path, incremental=True, async_save=async_save, max_to_keep=3) as m:
        for step in range(6):
            _train(model, opt)
            m.save(step, {"model": model, "opt": opt, "step": step})
            saved[step] = _arrays({"model": model.state_dict(), "opt": opt.state_dict(), "step": step})
            m.wait()
            changed = 3 * HEAD_BYTES + 2 * 4  # head, exp_avg, exp_avg_sq (float32) and two float32 step counters
            if step:
                assert m._incremental.written_bytes == changed
                (blob,) = [b for b in _blobs(_folder(tmp_path, step)) if b.startswith(f"blob-{step:08d}-")]
                assert os.path.getsize(_folder(tmp_path, step) / blob) <= 1.1 * changed + 16384
        assert m.steps == [3, 4, 5]
        first = [b for b in _blobs(_folder(tmp_path, 5)) if b.startswith("blob-00000000-")]
        assert len(first) == 1  # step 0 (deleted) wrote the backbone: still named and held by every kept step
        inodes = {os.stat(_folder(tmp_path, s) / first[0]).st_ino for s in (3, 4, 5)}
        assert len(inodes) == 1 and os.stat(_folder(tmp_path, 5) / first[0]).st_nlink == 3
        assert not _folder(tmp_path, 0).exists()
        for step in (3, 4, 5):
            fresh, fresh_opt = _fine_tuning(seed=9)
            back = m.restore(step, {"model": fresh, "opt": fresh_opt})
            assert _same(_arrays({"model": fresh.state_dict(), "opt": fresh_opt.state_dict(), "step": back["step"]}),
                         saved[step])  # fmt: skip
    loaded = tensorfile.load(_folder(tmp_path, 4))
    assert np.array_equal(loaded["model"]["0.0.weight"].numpy(), saved[4]["model.0.0.weight."])
    out = CliRunner().invoke(tensorfile.cli.main, ["verify", str(_folder(tmp_path, 4))])
    assert out.exit_code == 0 and out.output.startswith("OK"), out.output


def test_restart_reads_the_base_and_a_full_step_before_is_kept(tmp_path):
    """A new manager takes the newest committed step as its base (a step before it, written in full, stays as
    it was); a step with nothing changed writes no blob at all."""
    state = {"a": np.arange(1000, dtype=np.float32), "b": np.ones(10)}
    with CheckpointManager(tmp_path) as m:
        m.save(0, state)
    with CheckpointManager(tmp_path, incremental=True) as m:
        m.save(1, state)
        assert m._incremental.written_bytes == 4000 + 80  # the full step is not a base: all written
    with CheckpointManager(tmp_path, incremental=True) as m:
        state["b"] = state["b"] * 2
        m.save(2, state)
        assert m._incremental.written_bytes == 80
        m.save(3, state)
        assert m._incremental.written_bytes == 0 and len(_blobs(_folder(tmp_path, 3))) == 2
        assert [m.restore(s)["b"][0] for s in (0, 1, 2, 3)] == [1, 1, 2, 2]
    assert (_folder(tmp_path, 0) / "state.tensorfile").exists()


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_a_change_behind_the_version_counter_is_found(tmp_path, async_save):
    """p.data.add_() does not move p's version counter: the checksum finds it. Sync: written at once. Async: the
    step is not committed (a warning names the tensor), the next one copies and writes it."""
    model, opt = _fine_tuning()
    frozen = model[0][0].weight
    with CheckpointManager(tmp_path, incremental=True, async_save=async_save) as m:
        m.save(0, {"model": model})
        m.wait()
        version = frozen._version
        frozen.data.add_(1.0)
        assert frozen._version == version  # the counter did not see it
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m.save(1, {"model": model})
            m.wait()
        if async_save:
            assert m.steps == [0] and any("'model.0.0.weight'" in str(w.message) for w in caught)
            m.save(2, {"model": model})
            m.wait()
        last = m.latest_step
        assert m._incremental.written_bytes == 64 * 64 * 4
        fresh, _ = _fine_tuning(seed=3)
        m.restore(last, {"model": fresh})
        assert torch.equal(fresh[0][0].weight, frozen) and torch.equal(fresh[1].weight, model[1].weight)


def test_dtype_shape_added_and_removed_tensors(tmp_path):
    """Between steps a tensor changes dtype, another shape, one is added and one removed; each step restores as saved."""
    states = [
        {"a": np.arange(6, dtype=np.float32), "b": np.zeros((2, 3)), "gone": np.ones(4, np.int8), "same": np.arange(50)},
        {"a": np.arange(6, dtype=np.float64), "b": np.zeros((3, 2)), "new": np.ones(2, np.uint16), "same": np.arange(50),
         "empty": np.zeros((0, 3), np.float32)},
        {"a": np.arange(6, dtype=np.float64), "b": np.zeros((3, 2)), "new": np.ones(2, np.uint16), "same": np.arange(50),
         "empty": np.zeros((0, 3), np.float32), "scalar": np.float32(2.5)},
    ]  # fmt: skip
    with CheckpointManager(tmp_path, incremental=True) as m:
        written = []
        for step, state in enumerate(states):
            m.save(step, state)
            written.append(json.loads(json.loads(open(_folder(tmp_path, step) / "manifest.json").read())["metadata"][INCREMENTAL_KEY])["written"])  # fmt: skip
        assert written == [["a", "b", "gone", "same"], ["a", "b", "new"], ["scalar"]]
        for step, state in enumerate(states):
            back = m.restore(step)
            assert back.keys() == state.keys()
            for k, v in state.items():
                assert np.array_equal(back[k], v) and np.asarray(back[k]).dtype == np.asarray(v).dtype, (step, k)


def test_a_damaged_shared_blob_fails_restore_naming_tensor_and_step(tmp_path):
    model, opt = _fine_tuning()
    with CheckpointManager(tmp_path, incremental=True) as m:
        for step in range(3):
            _train(model, opt)
            m.save(step, {"model": model, "opt": opt})
        (blob,) = [b for b in _blobs(_folder(tmp_path, 2)) if b.startswith("blob-00000000-")]
        path = _folder(tmp_path, 2) / blob
        data = bytearray(path.read_bytes())
        size = int.from_bytes(data[:8], "little")
        start = json.loads(data[8 : 8 + size])["model.0.0.weight"]["data_offsets"][0]
        data[8 + size + start + 10] ^= 0xFF  # a backbone tensor's bytes (a link: every step holding it sees it)
        with open(path, "r+b") as f:
            f.write(bytes(data))
        with pytest.raises(IntegrityError, match=r"checkpoint step 1: .*'model\.0\.0\.weight'") as info:
            m.restore(1, {"model": _fine_tuning(seed=1)[0]})
        assert "checksum" in str(info.value)
        with pytest.warns(UserWarning, match="step 2 is corrupt"), pytest.raises(tensorfile.CheckpointNotFoundError):
            m.restore()


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_object_storage_references_and_collection(async_save):
    """memory://: blobs under <root>/blobs/, one per step that wrote something; retention deletes the steps and
    then the blobs no kept step names, never the backbone's; every kept step restores bit-identically."""
    pytest.importorskip("fsspec")
    import fsspec

    url = f"memory://tf-{uuid.uuid4().hex[:8]}/run"
    model, opt = _fine_tuning()
    saved = {}
    with CheckpointManager(url, incremental=True, async_save=async_save, max_to_keep=2) as m:
        for step in range(5):
            _train(model, opt)
            m.save(step, {"model": model, "opt": opt})
            saved[step] = _arrays({"model": model.state_dict(), "opt": opt.state_dict()})
            m.wait()
        assert m.steps == [3, 4]
        fs = fsspec.filesystem("memory")
        blobs = sorted(p.rsplit("/", 1)[-1][:13] for p in fs.ls(url[len("memory://"):] + "/blobs", detail=False))
        assert blobs == ["blob-00000000", "blob-00000003", "blob-00000004"]
        for step in (3, 4):
            fresh, fresh_opt = _fine_tuning(seed=5)
            m.restore(step, {"model": fresh, "opt": fresh_opt})
            assert _same(_arrays({"model": fresh.state_dict(), "opt": fresh_opt.state_dict()}), saved[step])
    with CheckpointManager(url, incremental=True) as m:  # a new writer: its base is the newest step
        m.save(5, {"model": model, "opt": opt})
        assert m._incremental.written_bytes == 0 and m.steps == [3, 4, 5]
    reader = CheckpointManager(url, read_only=True)  # a plain reader restores incremental steps too
    fresh, _ = _fine_tuning(seed=6)
    assert reader.restore(state={"model": fresh}).step == 5 and torch.equal(fresh[1].weight, model[1].weight)


def test_async_without_counters_and_without_trust(tmp_path):
    """NumPy arrays have no version counter: an async save copies them all and writes only the changed ones.
    trust_version_counter=False: a change behind a torch counter is written at once, no step is skipped."""
    state = {"big": np.arange(10_000, dtype=np.float32), "small": np.zeros(3)}
    with CheckpointManager(tmp_path / "np", incremental=True, async_save=True) as m:
        m.save(0, state)
        state["small"] += 1  # in place: the staged copy of step 0 must not see it
        m.save(1, state)
        m.wait()
        assert m._incremental.written_bytes == 24
        assert m.restore(0)["small"].tolist() == [0, 0, 0] and m.restore(1)["small"].tolist() == [1, 1, 1]
    model, _ = _fine_tuning()
    with CheckpointManager(tmp_path / "torch", incremental=True, async_save=True, trust_version_counter=False) as m:
        m.save(0, {"model": model})
        model[0][0].weight.data.add_(1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m.save(1, {"model": model})
            m.wait()
        assert m.steps == [0, 1] and m._incremental.written_bytes == 64 * 64 * 4


def test_tied_weights_stay_tied_across_async_steps(tmp_path):
    """A weight shared by two modules is stored once and named twice in every step, including the steps whose
    stall reused the previous stall's host views."""
    torch.manual_seed(0)
    emb, out = torch.nn.Embedding(10, 8), torch.nn.Linear(8, 10, bias=False)
    out.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "out": out})
    with CheckpointManager(tmp_path, incremental=True, async_save=True) as m:
        for step in range(3):
            m.save(step, {"model": model})
            m.wait()
        manifest = json.loads(open(_folder(tmp_path, 2) / "manifest.json").read())
        assert sorted(manifest["tensors"]) == ["model.emb.weight"]
        loaded = m.restore(2)["model"]
        assert loaded["emb.weight"] is loaded["out.weight"] and torch.equal(loaded["emb.weight"], emb.weight)


def test_a_failed_step_resets_the_base(tmp_path):
    """The newest step deleted by hand: the next save finds the blob of "b" in no step folder, starts again
    against the newest step on disk (step 0: its blob of "a" linked) and writes "b"; the one after writes nothing."""
    import shutil

    state = {"a": np.arange(100.0), "b": np.zeros(5)}
    with CheckpointManager(tmp_path, incremental=True) as m:
        m.save(0, state)
        state["b"] = state["b"] + 1
        m.save(1, state)
        shutil.rmtree(_folder(tmp_path, 1))
        m.save(2, state)
        assert m.steps == [0, 2] and m._incremental.written_bytes == 40
        m.save(3, state)
        assert m._incremental.written_bytes == 0 and m.restore(3)["b"].tolist() == [1.0] * 5


def test_object_storage_writer_dies_before_its_commit(monkeypatch):
    """memory://: a writer stops after uploading its blob and manifest, before the commit object (as a kill
    there would): the step is not visible, older steps restore, and once a later step is committed and retention
    runs, the dead attempt's blob is collected while the blobs the kept step names stay."""
    pytest.importorskip("fsspec")
    import fsspec

    from tensorfile.checkpoint import objects

    url = f"memory://tf-{uuid.uuid4().hex[:8]}/run"
    root = url[len("memory://"):]
    fs = fsspec.filesystem("memory")
    state = {"frozen": np.arange(1000.0), "head": np.zeros(10)}
    with CheckpointManager(url, incremental=True, max_to_keep=1) as m:
        m.save(0, state)
    state["head"] = state["head"] + 1
    with monkeypatch.context() as patch:
        patch.setattr(objects.ObjectSteps, "publish", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
        with CheckpointManager(url, incremental=True, max_to_keep=1) as m, pytest.raises(OSError, match="killed"):
            m.save(1, state)
    assert len(fs.ls(root + "/blobs")) == 2  # the dead attempt's blob is there, named by no step
    monkeypatch.setattr(objects, "STALE_AFTER", 0.0)
    with CheckpointManager(url, incremental=True, max_to_keep=1) as m:
        assert m.steps == [0] and m.restore()["head"].tolist() == [0.0] * 10
        assert not [p for p in fs.find(root) if "step_00000001/manifest-" in p]  # swept: stale, uncommitted
        m.save(1, state)
        assert m.steps == [1] and m.restore()["head"].tolist() == [1.0] * 10
        blobs = sorted(p.rsplit("/", 1)[-1][:13] for p in fs.ls(root + "/blobs", detail=False))
        assert blobs == ["blob-00000000", "blob-00000001"]  # step 0's (named by step 1) and step 1's own
