"""CheckpointManager(incremental=True) against a hostile world: blobs swapped, truncated or replaced by symbolic
links, step folders deleted by hand, hostile manifests, faults at every point of a commit, modes switched across
runs, mixed steps on object storage, live torch objects restored with keep_best retention."""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings

import numpy as np
import pytest

import tensorfile
from tensorfile import CheckpointManager, IntegrityError
from tensorfile.checkpoint import blobs as blobs_mod
from tensorfile.checkpoint import commit as commit_mod

torch = pytest.importorskip("torch")


def _state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return {"bb": torch.randn(32, 32), "head": torch.randn(4, 32), "n": np.arange(5)}


def _copy(state: dict) -> dict:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v.copy() for k, v in state.items()}


def _equal(loaded: dict, state: dict) -> bool:
    return loaded.keys() >= state.keys() and all(
        torch.equal(loaded[k], v) if isinstance(v, torch.Tensor) else np.array_equal(loaded[k], v)
        for k, v in state.items())  # fmt: skip


def _folder(root, step: int) -> str:
    return os.path.join(root, f"step_{step:08d}")


def _blob(root, step: int, writer: int) -> str:
    """The path, in step ``step``'s folder, of the blob step ``writer`` wrote."""
    (name,) = [n for n in os.listdir(_folder(root, step)) if n.startswith(f"blob-{writer:08d}-")]
    return os.path.join(_folder(root, step), name)


def _two_steps(root, **options) -> tuple[CheckpointManager, dict, dict]:
    """Steps 0 (everything) and 1 (the head only); returns the manager and each step's state."""
    state = _state()
    m = CheckpointManager(root, incremental=True, **options)
    m.save(0, state)
    first = _copy(state)
    state["head"] += 1
    m.save(1, state)
    return m, first, _copy(state)


def test_a_swapped_blob_is_caught_naming_step_and_tensor(tmp_path):
    """Another file holding tensors of the same names and shapes in a shared blob's place (each of its own
    checksums right): the step's manifest records the checksums, so restore, load and verify refuse it."""
    m, _, _ = _two_steps(tmp_path)
    path = _blob(tmp_path, 1, 0)
    os.unlink(path)  # the other link (step 0's) keeps the true blob
    tensorfile.save({"bb": torch.zeros(32, 32), "head": torch.zeros(4, 32), "n": np.zeros(5, np.int64)}, path)
    with pytest.raises(IntegrityError, match=r"checkpoint step 1: .*tensor 'bb'.*the step's manifest") as info:
        m.restore(1)
    assert "another file is in the place of the blob" in str(info.value)
    with pytest.raises(IntegrityError, match="'bb'"):
        tensorfile.load(_folder(tmp_path, 1))
    from click.testing import CliRunner

    from tensorfile.cli import main

    result = CliRunner().invoke(main, ["verify", _folder(tmp_path, 1)])
    assert result.exit_code == 1 and "tensor 'bb': the file records checksum" in result.output
    assert CliRunner().invoke(main, ["verify", _folder(tmp_path, 0)]).exit_code == 0
    with pytest.warns(UserWarning, match="step 1 is corrupt"):
        assert m.restore().step == 0  # falls back to the older step, whose blob is intact
    m.close()


def test_a_truncated_shared_blob_fails_every_step_holding_it(tmp_path):
    m, _, _ = _two_steps(tmp_path)
    path = _blob(tmp_path, 1, 0)
    size = os.path.getsize(path)
    os.truncate(path, size - 100)  # a link: step 0 sees the same inode
    for step in (0, 1):
        with pytest.raises(IntegrityError, match=f"checkpoint step {step}"):
            m.restore(step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(tensorfile.CheckpointNotFoundError):
            m.restore()
    m.close()


@pytest.mark.parametrize("target", ["passwd", "blob"])
def test_a_symlinked_blob_is_refused_and_never_linked_again(tmp_path, target):
    """A blob replaced by a symbolic link (to /etc/passwd, or to a true copy of the blob elsewhere) is refused
    on restore; the next save links the blob from a step folder holding the real file."""
    m, _, second = _two_steps(tmp_path)
    path = _blob(tmp_path, 1, 0)
    elsewhere = "/etc/passwd"
    if target == "blob":
        elsewhere = str(tmp_path / "elsewhere.tensorfile")
        shutil.copy(path, elsewhere)
    os.unlink(path)
    os.symlink(elsewhere, path)
    with pytest.raises(IntegrityError, match="symbolic link; refused"):
        m.restore(1)
    second["n"] = second["n"] + 1
    m.save(2, second)  # step 1 is its base; the backbone's blob is linked from step 0's folder
    assert not os.path.islink(_blob(tmp_path, 2, 0))
    assert os.path.samefile(_blob(tmp_path, 2, 0), _blob(tmp_path, 0, 0))
    assert _equal(m.restore(2), second)
    m.close()


def test_the_base_deleted_by_retention_after_an_older_step_is_saved(tmp_path):
    """Saving an older step than the newest makes it the base, and retention deletes it at once: the next save
    links the shared blobs from the step folders that hold them."""
    state = _state()
    with CheckpointManager(tmp_path, incremental=True, max_to_keep=2) as m:
        m.save(10, state)
        state["head"] += 1
        m.save(11, state)
        with pytest.warns(UserWarning, match="retention removed it at once"):
            m.save(5, state)
        state["head"] += 1
        m.save(12, state)
        assert m.steps == [11, 12] and m._incremental.written_bytes == 4 * 32 * 4
        assert _equal(m.restore(12), state)


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("point", ["blob", "link", "manifest fsync", "rename", "folder fsync"])
def test_a_fault_at_any_point_of_a_commit_leaves_the_committed_steps(tmp_path, monkeypatch, point, async_save):
    """A fault raised inside the blob write, the links, the manifest's fsync, the rename or the final fsync of the
    folder: no step 2 is visible, steps 0 and 1 restore bit-identically, nothing temporary stays, and the next
    save of step 2 (with a fresh manager too) commits it whole."""
    m, first, second = _two_steps(tmp_path, async_save=async_save)
    m.wait()
    modules = {"blob": (blobs_mod, "write_blob"), "link": (blobs_mod, "_link"), "manifest fsync": (blobs_mod, "_fsync"),
               "rename": (commit_mod.os, "rename"), "folder fsync": (commit_mod, "fsync_dir")}  # fmt: skip
    module, name = modules[point]
    real = getattr(module, name)

    def fault(*args, **kwargs):
        if point != "manifest fsync" or str(args[0]).endswith("manifest.json"):
            if point != "folder fsync" or os.path.basename(str(args[0])) == os.path.basename(str(tmp_path)):
                raise OSError(28, f"injected at {point}")
        return real(*args, **kwargs)

    state = _copy(second)
    state["head"] += 1  # the backbone is shared: a link is made
    monkeypatch.setattr(module, name, fault)
    with pytest.raises(OSError, match=f"injected at {point}"):
        m.save(2, state)
        m.wait()
    monkeypatch.undo()
    if point != "folder fsync":  # a failed fsync of the parent comes after the rename: step 2 is there
        assert m.steps == [0, 1]
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".tmp")]
    assert _equal(m.restore(0), first) and _equal(m.restore(1), second)
    m.save(2, state)
    m.close()
    with CheckpointManager(tmp_path, incremental=True) as again:
        assert again.steps == [0, 1, 2]
        assert _equal(again.restore(2), state) and _equal(again.restore(1), second)


def test_a_committed_blob_is_never_opened_for_writing(tmp_path, monkeypatch):
    """Later steps, retention and a step saved again only add and remove links to a committed blob's inode:
    no open() for writing ever reaches it, and its bytes never change."""
    state = _state()
    with CheckpointManager(tmp_path, incremental=True, max_to_keep=2) as m:
        m.save(0, state)
        path = _blob(tmp_path, 0, 0)
        inode, before = os.stat(path).st_ino, open(path, "rb").read()
        writes = []
        real_open = os.open

        def spy(where, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR) and os.path.exists(where) and os.stat(where).st_ino == inode:
                writes.append(where)
            return real_open(where, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", spy)
        for step in range(1, 5):
            state["head"] += 1
            m.save(step, state)
        m.save(4, state)  # the same step again: moved aside, then replaced
        monkeypatch.undo()
        assert writes == [] and m.steps == [3, 4]
        kept = _blob(tmp_path, 4, 0)
        assert os.stat(kept).st_ino == inode and open(kept, "rb").read() == before


def _rewrite(path: str, change) -> None:
    doc = json.loads(open(path, encoding="utf-8").read())
    change(doc)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc))


def _incremental(doc: dict, value) -> None:
    doc["metadata"][blobs_mod.INCREMENTAL_KEY] = value if isinstance(value, str) else json.dumps(value)


HOSTILE = {
    "a parent path": (lambda d: d["files"].__setitem__(0, "../../x"), "plain file names"),
    "an absolute path": (lambda d: d["files"].__setitem__(0, "/etc/passwd"), "plain file names"),
    "a missing key": (lambda d: d.pop("files"), "manifest keys"),
    "a huge shape": (lambda d: d["tensors"]["bb"].update(shape=[10**30, 32]), "uncovered"),
    "a bool file index": (lambda d: d["tensors"]["bb"]["chunks"][0].update(file=True), "chunk names file True"),
    "checksums a list": (lambda d: _incremental(d, {"checksums": [1]}), "tensorfile.incremental"),
    "a huge checksum": (lambda d: _incremental(d, {"checksums": {"bb": 10**40}}), "16 hex"),
    "not JSON": (lambda d: _incremental(d, "{{{"), "tensorfile.incremental"),
    "a checksum missing": (lambda d: _incremental(d, {"checksums": {}}), "records no checksum for tensor"),
    "a list at the top": (lambda d: d.update(structure={"type": "list", "items": []}), "holds a list, not the dict"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_manifest_gives_a_clear_error(tmp_path, case):
    m, first, _ = _two_steps(tmp_path)
    m.close()
    change, message = HOSTILE[case]
    _rewrite(os.path.join(_folder(tmp_path, 1), "manifest.json"), change)
    with CheckpointManager(tmp_path, incremental=True, read_only=True) as reader:
        with pytest.raises(IntegrityError, match="step 1") as info:
            reader.restore(1)
        assert message in str(info.value)
        with pytest.warns(UserWarning, match="step 1 is corrupt"):
            assert _equal(reader.restore(), first)
    with CheckpointManager(tmp_path, incremental=True) as writer:  # its base unreadable: it writes every tensor
        writer.save(2, first)
        if case != "a list at the top":  # the tensors and checksums of that one are still a base
            assert writer._incremental.written_bytes == sum(v.nbytes for v in first.values())
        assert _equal(writer.restore(2), first)


def test_switching_incremental_on_and_off_across_runs(tmp_path):
    state, saved = _state(), {}

    def save(m, step):
        state["head"] += 1
        m.save(step, state)
        saved[step] = _copy(state)

    with CheckpointManager(tmp_path, incremental=True) as m:
        save(m, 0)
        save(m, 1)
    with CheckpointManager(tmp_path) as m:
        save(m, 2)
        assert os.listdir(_folder(tmp_path, 2)) == ["state.tensorfile"]
    with CheckpointManager(tmp_path, incremental=True, max_to_keep=2) as m:
        save(m, 3)  # a full step is no base: everything written
        assert m._incremental.written_bytes == sum(v.nbytes for v in state.values())
        save(m, 4)
        assert m.steps == [3, 4] and all(_equal(m.restore(s), saved[s]) for s in m.steps)
    with CheckpointManager(tmp_path, max_to_keep=1) as m:
        save(m, 5)
        assert m.steps == [5] and _equal(m.restore(5), saved[5])


def test_object_storage_collects_with_full_steps_among_incremental_ones():
    """memory://: a full step (incremental=False) between incremental ones names no blob; it must not stop
    retention from collecting the blobs no committed step names, nor may a blob a kept step names go."""
    fsspec = pytest.importorskip("fsspec")
    url = f"memory://hostile-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    state, saved = _state(), {}

    def save(m, step, backbone=False):
        state["head"] += 1
        if backbone:
            state["bb"] += 1
        m.save(step, state)
        m.wait()
        saved[step] = _copy(state)

    def blobs() -> list[int]:
        names = fs.ls(url[len("memory:/") :] + "/blobs", detail=False)
        return sorted(int(p.rsplit("/", 1)[-1].split("-")[1]) for p in names)

    with CheckpointManager(url, incremental=True, max_to_keep=3) as m:
        save(m, 0)
        save(m, 1)
    with CheckpointManager(url, max_to_keep=3) as m:
        save(m, 2)
    with CheckpointManager(url, incremental=True, max_to_keep=3, async_save=True) as m:
        save(m, 3, backbone=True)
        save(m, 4)  # step 1 deleted; step 2 (full) still kept
        assert m.steps == [2, 3, 4] and blobs() == [3, 4]
        assert all(_equal(m.restore(s), saved[s]) for s in m.steps)


def test_live_model_and_optimizer_with_keep_best(tmp_path):
    """A frozen backbone, a trained head and Adam, keep_best=1 beside max_to_keep=2: every kept step restores
    the model and the optimizer bit-identically into fresh objects, though the step that wrote the backbone
    is gone."""
    def build(seed):
        torch.manual_seed(seed)
        backbone, head = torch.nn.Linear(16, 16), torch.nn.Linear(16, 2)
        backbone.requires_grad_(False)
        model = torch.nn.Sequential(backbone, head)
        return model, torch.optim.Adam(head.parameters(), lr=1e-2)

    model, opt = build(0)
    snaps = {}
    losses = [5.0, 1.0, 4.0, 3.0, 2.0, 6.0]
    with CheckpointManager(tmp_path, incremental=True, max_to_keep=2, keep_best=1, best_metric="loss") as m:
        for step, loss in enumerate(losses):
            out = model(torch.randn(4, 16)).square().mean()
            opt.zero_grad()
            out.backward()
            opt.step()
            m.save(step, {"model": model, "opt": opt}, metrics={"loss": loss})
            snaps[step] = (_copy(model.state_dict()), _copy(opt.state_dict()["state"][0]))
        assert m.steps == [1, 4, 5]
        for step in m.steps:
            fresh, fresh_opt = build(9)
            m.restore(step, {"model": fresh, "opt": fresh_opt})
            assert _equal(fresh.state_dict(), snaps[step][0])
            assert _equal(fresh_opt.state_dict()["state"][0], snaps[step][1])


@pytest.mark.parametrize("where", ["base", "every folder"])
@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_a_swapped_blob_is_never_linked_into_a_new_step(tmp_path, where, async_save):
    """A save links a shared blob only from a folder where its header records the base's checksums: swapped in
    the base's folder alone, it is linked from step 0's; swapped everywhere, a synchronous save writes every
    tensor, and an async one (its unchanged tensors not copied) fails once, naming the blob, the next one
    writing everything."""
    state = _state()
    m = CheckpointManager(tmp_path, incremental=True, async_save=async_save)
    m.save(0, state)
    state["head"] += 1
    m.save(1, state)
    m.wait()
    for step in (1,) if where == "base" else (0, 1):
        path = _blob(tmp_path, step, 0)
        os.unlink(path)
        tensorfile.save({"bb": torch.zeros(32, 32), "head": torch.zeros(4, 32), "n": np.zeros(5, np.int64)}, path)
    state["head"] += 1  # the same tensors: the backbone's counter has not moved
    if where == "every folder" and async_save:
        m.save(2, state)
        with pytest.raises(blobs_mod.BlobLostError, match=r"step 2: blob blob-00000000-.* damaged or replaced"):
            m.wait()
        assert m.steps == [0, 1]
    m.save(2, state)
    m.wait()
    if where == "base":
        assert os.path.samefile(_blob(tmp_path, 2, 0), _blob(tmp_path, 0, 0))
    else:
        names = os.listdir(_folder(tmp_path, 2))
        assert len(names) == 2 and not [n for n in names if n.startswith("blob-00000000-")]
    assert _equal(m.restore(2), state)
    m.close()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize("what", ["manifest", "blob"])
def test_a_fifo_in_a_step_folder_never_blocks(tmp_path, what):
    """A FIFO in the place of the newest step's manifest or of a blob: restore falls back to the older step and
    the next save (whose base that step was) commits without blocking on the FIFO."""
    state = {"a": np.arange(10.0), "b": np.zeros(3)}
    with CheckpointManager(tmp_path, incremental=True) as m:
        m.save(0, state)
        state["b"] = state["b"] + 1
        m.save(1, state)
    path = os.path.join(_folder(tmp_path, 1), "manifest.json") if what == "manifest" else _blob(tmp_path, 1, 0)
    os.unlink(path)
    os.mkfifo(path)
    with CheckpointManager(tmp_path, incremental=True) as m:
        with pytest.warns(UserWarning, match="step 1 is corrupt"):
            assert m.restore().step == 0
        m.save(2, state)
        assert m.restore(2)["b"].tolist() == [1.0] * 3 and m.restore(2)["a"].tolist() == list(range(10))


def test_object_storage_reader_during_a_writers_retention_and_collection(monkeypatch):
    """memory://: a reader's restore() reads step 1's commit object; before it reads the manifest, the writer commits
    step 2, and retention (max_to_keep=1) deletes steps 0 and 1 and collects their blobs. The reader neither
    fails nor reads a wrong byte: it lists the steps again and restores step 2."""
    pytest.importorskip("fsspec")
    from tensorfile.checkpoint import incremental_saves as saves_mod

    url = f"memory://hostile-{uuid.uuid4().hex}"
    state = _state()
    writer = CheckpointManager(url, incremental=True, max_to_keep=2)
    writer.save(0, state)
    state["head"] += 1
    writer.save(1, state)
    reader = CheckpointManager(url, read_only=True)
    real = saves_mod.load_object
    fired = []

    def midway(*args, **kwargs):
        if not fired:
            fired.append(True)
            writer.retention = type(writer.retention)(max_to_keep=1)
            state["bb"] += 1
            writer.save(2, state)
        return real(*args, **kwargs)

    monkeypatch.setattr(saves_mod, "load_object", midway)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a step deleted under the reader is no corrupt step
        restored = reader.restore()
    assert fired and writer.steps == [2] and restored.step == 2 and _equal(restored, state)
    writer.close()
