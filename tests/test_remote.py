"""Object storage through fsspec: save / load / open and CheckpointManager on S3 and memory://.

The S3 server is moto's server mode (``moto.server.ThreadedMotoServer``), started here on
127.0.0.1 with dummy credentials, as s3fs's own tests do; nothing else is reached.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid

import numpy as np
import pytest

import tensorfile
from conftest import ROOT, assert_matches, expected, fixture_path
from tensorfile import CheckpointConflictError, CheckpointManager, FormatError, UnsupportedTypeError

moto_server = pytest.importorskip("moto.server")
fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")

from tensorfile.checkpoint import objects  # noqa: E402

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
}  # fmt: skip


@pytest.fixture(scope="module")
def endpoint():
    """A moto S3 server on 127.0.0.1 (a free port), for this module."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _ENV.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1"
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3(endpoint):
    """``(fs, bucket, storage_options)``: a fresh bucket on the local server."""
    options = {"endpoint_url": endpoint}
    fs = fsspec.filesystem("s3", **options)
    bucket = f"tf-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    return fs, bucket, options


def _tree() -> dict:
    rng = np.random.default_rng(0)
    return {
        "w": rng.standard_normal((64, 32)).astype(np.float32),
        "b": np.arange(5, dtype=np.int64),
        "half": np.linspace(-1, 1, 6, dtype=np.float16).reshape(2, 3),
        "nested": {"steps": [1, 2, 3], "name": "run"},
    }


def _equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in ("w", "b", "half"):
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    assert a["nested"] == b["nested"]


# ---------------------------------------------------------------- save / load / open


def test_import_does_not_import_fsspec():
    code = "import sys, tensorfile; assert 'fsspec' not in sys.modules and 's3fs' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 0, out.stderr


def test_s3_save_load_open_round_trip(s3):
    fs, bucket, options = s3
    url = f"s3://{bucket}/models/model.tensorfile"
    tree = _tree()
    tensorfile.save(tree, url, metadata={"run": "a"}, storage_options=options)
    assert fs.exists(f"{bucket}/models/model.tensorfile")
    _equal(tensorfile.load(url, storage_options=options), tree)
    with tensorfile.open(url, storage_options=options) as f:
        assert f.path == url and f.metadata == {"run": "a"} and f.has_record
        assert sorted(f.keys()) == ["b", "half", "w"]
        assert np.array_equal(f["w"], tree["w"]) and np.array_equal(f.read("half"), tree["half"])
        assert np.array_equal(f.slice("w")[10:13, ::2], tree["w"][10:13, ::2])
        _equal(f.load(), tree)
    # a local copy of the object is byte for byte what a local save writes, and loads the same
    local = io.BytesIO(fs.cat_file(f"{bucket}/models/model.tensorfile"))
    assert local.getvalue()[8:9] == b"{"
    # a plain safetensors object, read by the reference library from the object's bytes
    from safetensors.numpy import load as st_load

    plain = {"w": tree["w"], "b": tree["b"]}
    tensorfile.save(plain, f"s3://{bucket}/plain.safetensors", format="safetensors", storage_options=options)
    oracle = st_load(fs.cat_file(f"{bucket}/plain.safetensors"))
    assert set(oracle) == {"w", "b"} and np.array_equal(oracle["w"], tree["w"]) and np.array_equal(oracle["b"], tree["b"])


def test_s3_reads_real_fixture_files(s3):
    fs, bucket, options = s3
    fs.put_file(str(fixture_path("safetensors", "dtypes.safetensors")), f"{bucket}/ref/dtypes.safetensors")
    spec = expected("safetensors")["safetensors/dtypes.safetensors"]
    with tensorfile.open(f"s3://{bucket}/ref/dtypes.safetensors", framework="numpy", storage_options=options) as f:
        assert f.metadata == spec["metadata"]
        for key, tensor in spec["value"]["items"].items():
            assert_matches(f[key], tensor, key)
    # another tool's file (torch.save): downloaded, read by the safe reader, errors name the URL
    fs.put_file(str(fixture_path("real", "facenet-pnet.pt")), f"{bucket}/ref/pnet.pt")
    value = tensorfile.load(f"s3://{bucket}/ref/pnet.pt", framework="numpy", storage_options=options)
    assert_matches(value, expected("real")["facenet-pnet.pt"]["value"])
    with pytest.raises(FormatError, match=rf"s3://{bucket}/ref/pnet.pt: not a safetensors file.*tensorfile.load"):
        tensorfile.open(f"s3://{bucket}/ref/pnet.pt", storage_options=options)
    fs.pipe_file(f"{bucket}/ref/cut.tensorfile", fs.cat_file(f"{bucket}/ref/dtypes.safetensors")[:-5])
    with pytest.raises(FormatError, match=rf"^s3://{bucket}/ref/cut.tensorfile: "):
        tensorfile.load(f"s3://{bucket}/ref/cut.tensorfile", storage_options=options)
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/nothing"):
        tensorfile.load(f"s3://{bucket}/nothing", storage_options=options)


def test_open_fetches_only_the_ranges_it_needs(s3):
    fs, bucket, options = s3
    url = f"s3://{bucket}/big.tensorfile"
    tensors = {f"t{i}": np.full((256, 1024), i, np.float32) for i in range(4)}  # 1 MiB each
    tensorfile.save(tensors, url, storage_options=options)
    size = fs.size(f"{bucket}/big.tensorfile")
    assert tensorfile.storage.locate(url, options).fs is fs  # the same fsspec instance: its client is watched
    got: list[int] = []

    def count(parsed, **_):
        got.append(int(parsed.get("ContentLength", 0)))

    fs.s3.meta.events.register("after-call.s3.GetObject", count)
    try:
        with tensorfile.open(url, storage_options=options) as f:
            header = sum(got)
            assert 0 < header <= 64 << 10 and len(got) == 1  # the header, in one request
            assert np.array_equal(f["t2"], tensors["t2"])
            assert sum(got) - header == 1 << 20  # exactly that tensor's bytes
            before = sum(got)
            rows = f.slice("t3")[100:110]
            assert rows.shape == (10, 1024) and (rows == 3).all()
            assert sum(got) - before == 10 * 1024 * 4  # only the rows' bytes
            assert f._reader.fetched == sum(got)
    finally:
        fs.s3.meta.events.unregister("after-call.s3.GetObject", count)
    assert sum(got) < size / 2
    # a header longer than the first request: its rest in a second one, nothing of the data
    many = {f"tensor_number_{i:05d}": np.full(2, i, np.float32) for i in range(2000)}
    tensorfile.save(many, f"s3://{bucket}/many.tensorfile", storage_options=options)
    with tensorfile.open(f"s3://{bucket}/many.tensorfile", storage_options=options) as f:
        start = f._reader.header.data_start
        assert start > 64 << 10 and f._reader.fetched == start
        assert f["tensor_number_01999"].tolist() == [1999.0, 1999.0] and f._reader.fetched == start + 8


def test_failed_save_leaves_no_object_and_keeps_the_old_one(s3):
    fs, bucket, options = s3
    url = f"s3://{bucket}/m.tensorfile"
    with pytest.raises(UnsupportedTypeError):
        tensorfile.save({"x": object()}, url, storage_options=options)
    assert not fs.exists(f"{bucket}/m.tensorfile")
    tensorfile.save({"x": np.ones(3)}, url, storage_options=options)
    with pytest.raises(UnsupportedTypeError):
        tensorfile.save({"x": np.zeros(3), "bad": object()}, url, storage_options=options)
    assert np.array_equal(tensorfile.load(url, storage_options=options)["x"], np.ones(3))
    with pytest.raises(ValueError, match="max_shard_size"):
        tensorfile.save({"x": np.ones(3)}, url, max_shard_size="1MB", storage_options=options)


def test_memory_round_trip_and_manager():
    url = f"memory://tf-{uuid.uuid4().hex[:8]}"
    tree = _tree()
    tensorfile.save(tree, f"{url}/m.tensorfile")
    _equal(tensorfile.load(f"{url}/m.tensorfile"), tree)
    with tensorfile.open(f"{url}/m.tensorfile") as f:
        assert np.array_equal(f.slice("w")[3], tree["w"][3])
    tensorfile.save({"a": np.arange(3)}, f"{url}/a.npz", format="npz")
    assert np.array_equal(np.load(io.BytesIO(fsspec.filesystem("memory").cat_file(f"{url}/a.npz")))["a"], np.arange(3))
    with CheckpointManager(f"{url}/ckpt", max_to_keep=2) as m:
        for step in range(4):
            m.save(step, {"w": np.full(3, step), "step": step})
        assert m.steps == [2, 3] and m.restore()["w"].tolist() == [3, 3, 3]


# ---------------------------------------------------------------- CheckpointManager on S3


def _state(step: int) -> dict:
    return {"w": np.full((8, 8), step, np.float32), "step": step}


def _objects(fs, prefix: str) -> list[str]:
    fs.invalidate_cache(prefix)
    return sorted(p[len(prefix) + 1 :] for p in fs.find(prefix))


def test_manager_on_s3_retention_and_restore(s3):
    fs, bucket, options = s3
    url = f"s3://{bucket}/run"
    with CheckpointManager(url, max_to_keep=2, keep_best=1, best_metric="loss", storage_options=options) as m:
        losses = [0.5, 0.1, 0.4, 0.3, 0.2]
        for step, loss in enumerate(losses):
            assert m.save(step, _state(step), metrics={"loss": loss})
        assert m.steps == [1, 3, 4] and m.latest_step == 4 and m.best_step == 1
        back = m.restore()
        assert back.step == 4 and back["step"] == 4 and (back["w"] == 4).all()
        assert m.restore(step=1)["w"][0, 0] == 1
    names = _objects(fs, f"{bucket}/run")
    assert [n.split("/")[0] for n in names] == ["step_00000001"] * 2 + ["step_00000003"] * 2 + ["step_00000004"] * 2
    assert all(n.endswith(("/commit.json", ".tensorfile")) for n in names)
    record = json.loads(fs.cat_file(f"{bucket}/run/step_00000004/commit.json"))
    assert record["step"] == 4 and record["info"]["metrics"] == {"loss": 0.2}
    assert f"step_00000004/{record['files']['state.tensorfile']['object']}" in names
    # a fresh reader, after retention: the same steps, and each restores
    reader = CheckpointManager(url, read_only=True, storage_options=options)
    assert reader.steps == [1, 3, 4] and reader.restore()["step"] == 4 and reader.restore(step=3)["step"] == 3
    with pytest.raises(PermissionError):
        reader.save(5, _state(5))
    with pytest.raises(tensorfile.CheckpointNotFoundError):
        CheckpointManager(f"s3://{bucket}/nothing-here", read_only=True, storage_options=options)


_KILLED = textwrap.dedent("""
    import sys, numpy as np
    from tensorfile import CheckpointManager
    m = CheckpointManager(sys.argv[1], storage_options={"endpoint_url": sys.argv[2]})
    m.save(3, {"w": np.full((8, 8), 3, np.float32), "step": 3})
    print("not killed")
""")


def test_save_killed_between_data_and_commit_is_invisible(s3, endpoint, monkeypatch):
    fs, bucket, options = s3
    url = f"s3://{bucket}/run"
    with CheckpointManager(url, storage_options=options) as m:
        m.save(1, _state(1))
        m.save(2, _state(2))
    env = {**os.environ, **_ENV, "PYTHONPATH": str(ROOT / "src"), objects.KILL_BEFORE_COMMIT: "1"}
    out = subprocess.run([sys.executable, "-c", _KILLED, url, endpoint], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stdout + out.stderr
    left = _objects(fs, f"{bucket}/run")
    orphan = [n for n in left if n.startswith("step_00000003/")]
    assert len(orphan) == 1 and orphan[0].endswith(".tensorfile")  # its data is there, no commit object
    m = CheckpointManager(url, storage_options=options)  # its data object is young: left alone
    assert m.steps == [1, 2] and m.latest_step == 2 and m.restore()["step"] == 2
    assert f"step_00000003/{orphan[0].split('/')[1]}" in _objects(fs, f"{bucket}/run")
    m.close()
    monkeypatch.setattr(objects, "STALE_AFTER", 0.0)
    with CheckpointManager(url, storage_options=options) as m:  # now stale: the next writer removes it
        assert not any(n.startswith("step_00000003/") for n in _objects(fs, f"{bucket}/run"))
        assert m.save(3, _state(3)) and m.steps == [1, 2, 3] and m.restore()["step"] == 3


def test_two_writers_commit_one_step_exactly_one_wins(s3, monkeypatch):
    fs, bucket, options = s3
    url = f"s3://{bucket}/run"
    a = CheckpointManager(url, storage_options=options)
    b = CheckpointManager(url, storage_options=options)
    both_uploaded = threading.Barrier(2, timeout=30)
    real_put = objects.put_new

    def put_together(location, data):  # both have checked and uploaded; now both commit at once
        both_uploaded.wait()
        real_put(location, data)

    monkeypatch.setattr(objects, "put_new", put_together)
    results: dict[str, object] = {}

    def run(name, manager, value):
        try:
            results[name] = manager.save(5, {"w": np.full(4, value), "who": name})
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            results[name] = exc

    threads = [threading.Thread(target=run, args=("a", a, 1.0)), threading.Thread(target=run, args=("b", b, 2.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [k for k, v in results.items() if v is True]
    losers = [v for v in results.values() if isinstance(v, CheckpointConflictError)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert "committed by another writer" in str(losers[0]) and url in str(losers[0])
    back = a.restore()
    assert back["who"] == winners[0] and back["w"].tolist() == [1.0 if winners[0] == "a" else 2.0] * 4
    names = _objects(fs, f"{bucket}/run")
    assert len(names) == 2 and "step_00000005/commit.json" in names  # the loser's data object is gone
    monkeypatch.setattr(objects, "put_new", real_put)
    with pytest.raises(CheckpointConflictError, match="step 5 is already committed"):
        b.save(5, {"w": np.zeros(4)})
    a.close()
    b.close()


def test_unfinished_multipart_uploads_are_aborted(s3, monkeypatch):
    fs, bucket, options = s3

    def start_upload(key):
        upload = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
        fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1000)

    def pending():
        return sorted(u["Key"] for u in fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []))

    start_upload("run/step_00000007/state-0123456789abcdef.tensorfile")  # what a writer killed mid-upload leaves
    start_upload("run-other/step_00000007/state-0123456789abcdef.tensorfile")  # another location's: not ours
    assert pending() == ["run-other/step_00000007/state-0123456789abcdef.tensorfile",
                         "run/step_00000007/state-0123456789abcdef.tensorfile"]  # fmt: skip
    monkeypatch.setattr(objects, "STALE_AFTER", 0.0)
    with CheckpointManager(f"s3://{bucket}/run", storage_options=options) as m:
        assert pending() == ["run-other/step_00000007/state-0123456789abcdef.tensorfile"]
        start_upload("run/step_00000008/state-0123456789abcdef.tensorfile")
        m.save(8, _state(8))  # each commit's clean-up aborts them too
        assert pending() == ["run-other/step_00000007/state-0123456789abcdef.tensorfile"]
        assert m.steps == [8]
