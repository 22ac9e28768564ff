"""tensorfile.distributed on object storage: a world of one (no process group) saving to S3 (moto's server, started
by tests/test_remote.py's fixtures on 127.0.0.1) and memory://, loading in place by byte ranges, tensorfile.load /
open of the checkpoint URL, overwrites and a save killed before its manifest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest
from conftest import ROOT

import tensorfile
import tensorfile.distributed as tfd
from tensorfile.errors import CheckpointNotFoundError, FormatError

pytest.importorskip("moto.server")
fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")

import test_remote  # noqa: E402

from tensorfile.checkpoint import objects  # noqa: E402
from tensorfile.distributed import manifest as mf  # noqa: E402
from tensorfile.distributed.loading import read_manifest  # noqa: E402
from tensorfile.distributed.read import Shards, assemble  # noqa: E402

_ENV = test_remote._ENV
endpoint = test_remote.endpoint  # the moto server on 127.0.0.1 (module scope)
s3 = test_remote.s3  # a fresh bucket on it


def _state(value: int) -> dict:
    rng = np.random.default_rng(value)
    return {
        "model": {"w": rng.standard_normal((64, 32)).astype(np.float32), "b": np.arange(5, dtype=np.int16) * value},
        "half": np.linspace(-1, 1, 6, dtype=np.float16).reshape(2, 3) * value,
        "step": value,
        "names": ["a", "b"],
    }


def _zeros() -> dict:
    return {
        "model": {"w": np.zeros((64, 32), np.float32), "b": np.zeros(5, np.int16)},
        "half": np.zeros((2, 3), np.float16),
        "step": 0,
        "names": [None, None],
    }


def _equal(got: dict, want: dict) -> None:
    for key in ("w", "b"):
        assert got["model"][key].dtype == want["model"][key].dtype
        np.testing.assert_array_equal(got["model"][key], want["model"][key])
    assert got["half"].dtype == np.float16
    np.testing.assert_array_equal(got["half"], want["half"])
    assert got["step"] == want["step"] and got["names"] == want["names"]


def _objects(fs, prefix: str) -> list[str]:
    fs.invalidate_cache(prefix)
    return sorted(p[len(prefix) + 1 :] for p in fs.find(prefix))


def test_world_of_one_on_s3_round_trip_load_and_open(s3):
    fs, bucket, options = s3
    url = f"s3://{bucket}/ckpt"
    state = _state(3)
    tfd.save(state, url, metadata={"run": "a"}, storage_options=options)
    names = _objects(fs, f"{bucket}/ckpt")
    assert len(names) == 2 and names[0] == mf.MANIFEST and mf.SHARD_FILE.fullmatch(names[1])
    manifest = json.loads(fs.cat_file(f"{bucket}/ckpt/{mf.MANIFEST}"))
    assert manifest["files"] == [names[1]] and manifest["world_size"] == 1 and manifest["metadata"] == {"run": "a"}
    assert manifest["tensors"]["model.w"]["chunks"] == [{"file": 0, "offsets": [0, 0], "lengths": [64, 32]}]
    # in place, as every rank does
    dest = _zeros()
    report = tfd.load(dest, url, storage_options=options)
    assert sorted(report.loaded) == ["half", "model.b", "model.w", "names.0", "names.1", "step"]
    _equal(dest, state)
    # one process: the folder's URL or its manifest's
    _equal(tensorfile.load(url, storage_options=options), state)
    _equal(tensorfile.load(f"{url}/{mf.MANIFEST}", storage_options=options), state)
    with tensorfile.open(url, storage_options=options) as f:
        assert sorted(f.keys()) == ["half", "model.b", "model.w"] and f.metadata == {"run": "a", "world_size": "1"}
        np.testing.assert_array_equal(f["model.w"], state["model"]["w"])
        np.testing.assert_array_equal(f.slice("model.w")[10:13], state["model"]["w"][10:13])
        _equal(f.load(), state)
    with pytest.raises(CheckpointNotFoundError, match=f"s3://{bucket}/nothing"):
        tfd.load(_zeros(), f"s3://{bucket}/nothing", storage_options=options)
    fs.pipe_file(f"{bucket}/an-object", b"x")
    with pytest.raises(NotADirectoryError, match=f"s3://{bucket}/an-object"):
        tfd.save(state, f"s3://{bucket}/an-object", storage_options=options)


def test_each_load_reads_only_the_byte_ranges_it_needs(s3):
    fs, bucket, options = s3
    url = f"s3://{bucket}/big"
    tensors = {f"t{i}": np.full((256, 1024), i, np.float32) for i in range(4)}  # 1 MiB each, one shard object
    tfd.save(tensors, url, storage_options=options)
    got: list[int] = []

    def count(parsed, **_):
        got.append(int(parsed.get("ContentLength", 0)))

    fs.s3.meta.events.register("after-call.s3.GetObject", count)
    try:
        dest = {"t2": np.zeros((256, 1024), np.float32)}  # a rank that holds one tensor of the four
        tfd.load(dest, url, storage_options=options)
        assert (dest["t2"] == 2).all()
        assert got[-1] == 1 << 20 and len(got) == 3  # the manifest, the shard's first 64 KiB (its header), that tensor
        assert sum(got) < (1 << 20) + (64 << 10) + 4096  # of 4 MiB
        before = sum(got)
        with tensorfile.open(url, storage_options=options) as f:
            opened = sum(got)
            rows = f.slice("t3")[100:110]
            assert rows.shape == (10, 1024) and (rows == 3).all()
            assert sum(got) - opened == 10 * 1024 * 4  # only the rows' bytes
        assert sum(got) - before < (64 << 10) * 2 + 10 * 1024 * 4
    finally:
        fs.s3.meta.events.unregister("after-call.s3.GetObject", count)


def test_an_overwrite_replaces_the_manifest_then_deletes_the_old_shards(s3):
    fs, bucket, options = s3
    url = f"s3://{bucket}/ckpt"
    tfd.save(_state(1), url, storage_options=options)
    first = _objects(fs, f"{bucket}/ckpt")
    folder, old = read_manifest(url, storage_options=options)  # a reader that read the manifest before the overwrite
    tfd.async_save(_state(2), url, storage_options=options).result()  # uploads and commits in the background
    second = _objects(fs, f"{bucket}/ckpt")
    assert len(second) == 2 and set(first) & set(second) == {mf.MANIFEST}  # a new shard name, the old one deleted
    _equal(tensorfile.load(url, storage_options=options), _state(2))
    # the documented window: the old manifest's shards are gone once the overwrite committed
    with Shards(folder, old, storage_options=options) as shards:
        with pytest.raises(FormatError, match=r"named by the checkpoint's manifest, but missing.*load it again"):
            assemble(shards, old.tensors["model.w"])


_KILLED = textwrap.dedent("""
    import sys, numpy as np
    import tensorfile.distributed as tfd
    tfd.save({"w": np.full((8, 8), 9, np.float32), "step": 9}, sys.argv[1], storage_options={"endpoint_url": sys.argv[2]})
    print("not killed")
""")


def test_a_save_killed_before_its_manifest_leaves_the_previous_checkpoint(s3, endpoint):
    fs, bucket, options = s3
    url = f"s3://{bucket}/ckpt"
    tfd.save({"w": np.full((8, 8), 1, np.float32), "step": 1}, url, storage_options=options)
    before = _objects(fs, f"{bucket}/ckpt")
    committed = fs.cat_file(f"{bucket}/ckpt/{mf.MANIFEST}")
    env = {**os.environ, **_ENV, "PYTHONPATH": str(ROOT / "src"), objects.KILL_BEFORE_COMMIT: "1"}
    out = subprocess.run([sys.executable, "-c", _KILLED, url, endpoint], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stdout + out.stderr
    after = _objects(fs, f"{bucket}/ckpt")
    orphan = set(after) - set(before)
    assert len(orphan) == 1 and mf.SHARD_FILE.fullmatch(orphan.pop())  # its shard was uploaded; no manifest
    assert fs.cat_file(f"{bucket}/ckpt/{mf.MANIFEST}") == committed  # the manifest in force is untouched
    back = tensorfile.load(url, storage_options=options)
    assert back["step"] == 1 and (back["w"] == 1).all()  # the previous checkpoint, whole
    dest = {"w": np.zeros((8, 8), np.float32), "step": 0}
    tfd.load(dest, url, storage_options=options)
    assert dest["step"] == 1 and (dest["w"] == 1).all()
    tfd.save({"w": np.full((8, 8), 2, np.float32), "step": 2}, url, storage_options=options)
    assert len(_objects(fs, f"{bucket}/ckpt")) == 2  # the next save deletes what no manifest names
    assert tensorfile.load(url, storage_options=options)["step"] == 2


def test_memory_url_save_async_save_and_load():
    url = f"memory://tf-{uuid.uuid4().hex[:8]}/ckpt"
    tfd.save(_state(1), url)
    tfd.async_save(_state(2), url).result()
    assert len(fsspec.filesystem("memory").ls(url, detail=False)) == 2
    dest = _zeros()
    tfd.load(dest, url)
    _equal(dest, _state(2))
    with tensorfile.open(url) as f:
        np.testing.assert_array_equal(f["half"], _state(2)["half"])


_RANKS = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    import tensorfile.distributed as tfd
    dist.init_process_group("gloo")
    url, options, flag = sys.argv[1], {"endpoint_url": sys.argv[2]}, sys.argv[3]
    mesh = init_device_mesh("cpu", (2,))
    full = torch.arange(36.0).reshape(9, 4)
    state = {"rows": distribute_tensor(full, mesh, [Shard(0)]), "replicated": torch.arange(7), "step": 5}
    tfd.save(state, url, storage_options=options)
    back = {"rows": distribute_tensor(torch.zeros(9, 4), mesh, [Shard(1)]), "replicated": torch.zeros(7, dtype=torch.int64),
            "step": 0}
    tfd.load(back, url, storage_options=options)  # resharded: columns instead of rows
    assert torch.equal(back["rows"].full_tensor(), full) and torch.equal(back["replicated"], torch.arange(7))
    assert back["step"] == 5
    open(f"{flag}-{dist.get_rank()}", "w").close()
    dist.destroy_process_group()
""")


def test_two_ranks_save_to_s3_and_one_process_reads_it(s3, endpoint, tmp_path):
    torch = pytest.importorskip("torch")
    fs, bucket, options = s3
    url = f"s3://{bucket}/ckpt"
    script = tmp_path / "ranks.py"
    script.write_text(_RANKS)
    env = {**os.environ, **_ENV, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "TORCH_CPP_LOG_LEVEL": "ERROR"}
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    run = subprocess.run([torchrun, "--standalone", "--nproc-per-node=2", str(script), url, endpoint, str(tmp_path / "ok")],
                         capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert (tmp_path / "ok-0").exists() and (tmp_path / "ok-1").exists(), run.stdout[-3000:] + run.stderr[-6000:]
    manifest = json.loads(fs.cat_file(f"{bucket}/ckpt/{mf.MANIFEST}"))
    assert manifest["world_size"] == 2 and len(manifest["files"]) == 2  # a shard object per rank
    assert sorted(_objects(fs, f"{bucket}/ckpt")) == sorted([mf.MANIFEST, *manifest["files"]])
    assert [c["lengths"] for c in manifest["tensors"]["rows"]["chunks"]] == [[5, 4], [4, 4]]
    back = tensorfile.load(url, storage_options=options)
    assert torch.equal(back["rows"], torch.arange(36.0).reshape(9, 4)) and torch.equal(back["replicated"], torch.arange(7))
    assert back["step"] == 5


def _steps_under(fs, prefix: str) -> dict[str, list[str]]:
    """``{step folder: [object names below it]}`` under ``prefix``."""
    out: dict[str, list[str]] = {}
    for name in _objects(fs, prefix):
        top, _, rest = name.partition("/")
        out.setdefault(top, []).append(rest)
    return out


def test_manager_distributed_on_s3_commits_retains_and_restores(s3):
    fs, bucket, options = s3
    url = f"s3://{bucket}/run"
    with tensorfile.CheckpointManager(url, distributed=True, max_to_keep=2, keep_best=1, best_metric="loss",
                                      storage_options=options) as manager:  # fmt: skip
        for step, loss in ((1, 0.1), (2, 0.5), (3, 0.4), (4, 0.3)):
            assert manager.save(step, _state(step), metrics={"loss": loss})
        assert manager.steps == [1, 3, 4] and manager.best_step == 1  # the newest 2 and the best
        layout = _steps_under(fs, f"{bucket}/run")
        assert sorted(layout) == ["step_00000001", "step_00000003", "step_00000004"]  # step 2: commit object and data gone
        for objects_of_step in layout.values():
            assert len(objects_of_step) == 3 and "commit.json" in objects_of_step
            attempt = {o.split("/")[0] for o in objects_of_step if o != "commit.json"}
            assert len(attempt) == 1 and objects._ATTEMPT.fullmatch(attempt.pop())
        record = json.loads(fs.cat_file(f"{bucket}/run/step_00000004/commit.json"))
        assert record["tensorfile_commit"] == 1 and record["step"] == 4 and record["info"]["metrics"] == {"loss": 0.3}
        (kind, entry), = record["files"].items()
        assert kind == mf.MANIFEST and entry["object"] == f"dist-{record['writer']}/{mf.MANIFEST}"
        manifest = json.loads(fs.cat_file(f"{bucket}/run/step_00000004/{entry['object']}"))
        assert entry["size"] == len(fs.cat_file(f"{bucket}/run/step_00000004/{entry['object']}"))
        assert manifest["world_size"] == 1 and json.loads(manifest["metadata"]["tensorfile.checkpoint"])["step"] == 4
        dest = _zeros()
        restored = manager.restore(state=dest)
        assert restored.step == 4 and restored["step"] == 4
        _equal(restored, _state(4))
        np.testing.assert_array_equal(dest["model"]["w"], _state(4)["model"]["w"])  # filled in place, as on every rank
        assert restored["model"]["w"] is dest["model"]["w"]
        restored = manager.restore(3, state=_zeros())
        assert restored.step == 3
        _equal(restored, _state(3))
        with pytest.raises(tensorfile.errors.CheckpointConflictError, match="step 4 is already committed"):
            manager.save(4, _state(4))
        # an uncommitted attempt (a killed save's objects) is invisible, and a corrupt latest step is skipped
        fs.pipe_file(f"{bucket}/run/step_00000009/dist-{'0' * 16}/{mf.MANIFEST}", b"{}")
        fs.pipe_file(f"{bucket}/run/step_00000004/{entry['object']}", b"not json")
        assert manager.steps == [1, 3, 4]
        with pytest.warns(UserWarning, match="step 4 is corrupt or incomplete"):
            assert manager.restore(state=_zeros()).step == 3
    # one process reads a distributed step through its commit object
    with tensorfile.CheckpointManager(url, distributed=False, read_only=True, storage_options=options) as reader:
        assert reader.steps == [1, 3, 4]
        back = reader.restore(3)
        np.testing.assert_array_equal(back["model"]["w"], _state(3)["model"]["w"])


_KILLED_MANAGER = textwrap.dedent("""
    import sys, numpy as np
    import tensorfile
    with tensorfile.CheckpointManager(sys.argv[1], distributed=True, storage_options={"endpoint_url": sys.argv[2]}) as m:
        m.save(2, {"w": np.full((8, 8), 2, np.float32), "step": 2})
    print("not killed")
""")


def test_manager_distributed_save_killed_before_its_commit_is_invisible(s3, endpoint):
    fs, bucket, options = s3
    url = f"s3://{bucket}/run"
    with tensorfile.CheckpointManager(url, distributed=True, storage_options=options) as manager:
        manager.save(1, {"w": np.full((8, 8), 1, np.float32), "step": 1})
    env = {**os.environ, **_ENV, "PYTHONPATH": str(ROOT / "src"), objects.KILL_BEFORE_COMMIT: "1"}
    out = subprocess.run([sys.executable, "-c", _KILLED_MANAGER, url, endpoint], capture_output=True, text=True, env=env,
                         timeout=60)  # fmt: skip
    assert out.returncode == -signal.SIGKILL, out.stdout + out.stderr
    left = _steps_under(fs, f"{bucket}/run")["step_00000002"]
    assert len(left) == 1 and mf.SHARD_FILE.fullmatch(left[0].split("/")[1])  # its shard uploaded; no manifest, no commit
    with tensorfile.CheckpointManager(url, distributed=True, storage_options=options) as manager:
        assert manager.steps == [1] and manager.latest_step == 1
        dest = {"w": np.zeros((8, 8), np.float32), "step": 0}
        restored = manager.restore(state=dest)
        assert restored.step == 1 and restored["step"] == 1 and (dest["w"] == 1).all()
        objects.STALE_AFTER, stale = -1.0, objects.STALE_AFTER  # the killed attempt counts as stale now
        try:
            removed = manager._objects.sweep()
        finally:
            objects.STALE_AFTER = stale
        assert len(removed) == 1 and "step_00000002/dist-" in removed[0]
        manager.save(2, {"w": np.full((8, 8), 3, np.float32), "step": 2})  # the step is free: nothing was committed
        assert manager.steps == [1, 2]


_MANAGER_RANKS = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    import tensorfile
    dist.init_process_group("gloo")
    url, options, flag = sys.argv[1], {"endpoint_url": sys.argv[2]}, sys.argv[3]
    mesh = init_device_mesh("cpu", (2,))
    with tensorfile.CheckpointManager(url, max_to_keep=1, storage_options=options) as manager:  # 2 ranks: distributed
        for step in (1, 2):
            full = torch.arange(36.0).reshape(9, 4) * step
            manager.save(step, {"rows": distribute_tensor(full, mesh, [Shard(0)]), "step": step})
        assert manager.steps == [2], manager.steps
        back = {"rows": distribute_tensor(torch.zeros(9, 4), mesh, [Shard(1)]), "step": 0}
        restored = manager.restore(state=back)  # resharded: columns instead of rows
        assert restored.step == 2 and restored["step"] == 2
        assert torch.equal(back["rows"].full_tensor(), torch.arange(36.0).reshape(9, 4) * 2)
    open(f"{flag}-{dist.get_rank()}", "w").close()
    dist.destroy_process_group()
""")


def test_manager_on_two_ranks_saves_to_s3_and_one_process_reads_it(s3, endpoint, tmp_path):
    torch = pytest.importorskip("torch")
    fs, bucket, options = s3
    url = f"s3://{bucket}/run"
    script = tmp_path / "ranks.py"
    script.write_text(_MANAGER_RANKS)
    env = {**os.environ, **_ENV, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "TORCH_CPP_LOG_LEVEL": "ERROR"}
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    run = subprocess.run([torchrun, "--standalone", "--nproc-per-node=2", str(script), url, endpoint, str(tmp_path / "ok")],
                         capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert (tmp_path / "ok-0").exists() and (tmp_path / "ok-1").exists(), run.stdout[-3000:] + run.stderr[-6000:]
    layout = _steps_under(fs, f"{bucket}/run")
    assert list(layout) == ["step_00000002"] and len(layout["step_00000002"]) == 4  # commit, manifest, a shard per rank
    record = json.loads(fs.cat_file(f"{bucket}/run/step_00000002/commit.json"))
    manifest = json.loads(fs.cat_file(f"{bucket}/run/step_00000002/{record['files'][mf.MANIFEST]['object']}"))
    assert manifest["world_size"] == 2 and [c["lengths"] for c in manifest["tensors"]["rows"]["chunks"]] == [[5, 4], [4, 4]]
    with tensorfile.CheckpointManager(url, read_only=True, storage_options=options) as reader:
        back = reader.restore()
    assert back.step == 2 and back["step"] == 2 and torch.equal(back["rows"], torch.arange(36.0).reshape(9, 4) * 2)


def test_manager_distributed_async_save_on_a_memory_url():
    url = f"memory://tf-{uuid.uuid4().hex[:8]}/run"
    with tensorfile.CheckpointManager(url, distributed=True, async_save=True, max_to_keep=1) as manager:
        for step in (1, 2, 3):
            state = _state(step)
            assert manager.save(step, state)
            state["model"]["w"][:] = -1  # after save returned: must not reach the checkpoint
        manager.wait()
        assert manager.steps == [3]
        restored = manager.restore(state=_zeros())
        assert restored.step == 3
        _equal(restored, _state(3))
    names = fsspec.filesystem("memory").find(url)
    assert len(names) == 3 and sum(n.endswith("/commit.json") for n in names) == 1


def test_manager_distributed_restore_of_a_one_process_step_says_so():
    url = f"memory://tf-{uuid.uuid4().hex[:8]}/run"
    with tensorfile.CheckpointManager(url, distributed=False) as manager:
        manager.save(1, _state(1))
    with tensorfile.CheckpointManager(url, distributed=True) as manager:
        assert manager.steps == [1]
        with pytest.raises(tensorfile.errors.IntegrityError, match="step 1 was saved by one process"):
            manager.restore(1, state=_zeros())
        manager.save(2, _state(2))
        _equal(manager.restore(state=_zeros()), _state(2))
