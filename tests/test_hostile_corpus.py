"""Issue 9's acceptance: a hostile corpus of ~250 hand-made files (tests/hostile/make_corpus.py), each run
through ``load``, ``load(framework="numpy")``, ``open`` + every ``f[name]`` and the CLI's ``ls``, ``info``,
``verify`` and ``cat``, in worker processes under a 2 GiB address-space limit (tests/hostile/worker.py):
no payload runs, no process-wide state changes, no exception but ``TensorFileError`` subclasses,
<= 256 MiB peak RSS growth and <= 10 s per operation, no crash; hostile files refused, valid controls read.

``python tests/hostile/worker.py --report out.json`` runs the same outside pytest and writes every result.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HOSTILE = Path(__file__).resolve().parent / "hostile"


def _module(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HOSTILE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # worker.py imports make_corpus by this name
    spec.loader.exec_module(module)
    return module


make_corpus = _module("make_corpus")
worker = _module("worker")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-corpus")
    paths = make_corpus.build(folder)
    _, manifest = make_corpus.load_manifest(folder)
    return folder, manifest, paths


def test_corpus_is_small_deterministic_and_complete(corpus, tmp_path):
    folder, manifest, paths = corpus
    assert len(paths) == len(manifest) >= 100
    assert all(p.exists() for p in paths)
    assert {e["expect"] for e in manifest.values()} <= {"error", "ok", "any"}
    readers = {e["reader"] for e in manifest.values()}
    assert readers >= {"torch-zip", "torch-legacy", "npy", "npz", "mxnet", "hdf5", "keras", "gguf", "safetensors",
                       "tensorfile", "sharded"}
    # every file small, but the two the brief needs big: a header length that starts 80 02 8a, 10**6 index entries
    big = {name for name in manifest if (folder / name).stat().st_size > 1_200_000}
    assert big <= {"st_len_80028a.safetensors", "idx_million/model.safetensors.index.json"}
    # built again in the same place (files name the folder: the marker, the virtual dataset's source): same bytes
    before = {n: (folder / n).read_bytes() for n in manifest}
    import time

    time.sleep(1.1)  # a timestamp would show
    make_corpus.build(folder)
    # (h5py writes virtual datasets with a modification time it offers no way to turn off)
    vds = {"h5_virtual_dataset.h5", "keras_virtual_dataset.keras"}
    differ = [n for n in manifest if n not in vds and (folder / n).read_bytes() != before[n]]
    assert not differ, f"not deterministic: {differ}"


def test_harness_sees_every_kind_of_failure(corpus, monkeypatch):
    """The harness itself: a probe op per kind of failure (payload, state, memory, time, crash, foreign exception).
    The time limit is lowered to 2 s here (the corpus run keeps 10 s), so that the slow and hung probes end sooner."""
    folder, manifest, _ = corpus
    monkeypatch.setenv("HOSTILE_TIME_LIMIT_S", "2")
    monkeypatch.setattr(worker, "TIME_LIMIT_S", 2.0)
    probes = ["probe_payload", "probe_foreign", "probe_alloc", "probe_slow", "probe_hang", "probe_abort", "probe_bf16",
              "probe_function", "probe_file_not_found", "probe_refuse"]
    records = worker.run_corpus(folder, ["tz_global_os_system.pt"], ops=probes, jobs=1, hard_timeout=4.0,
                                after_hang_timeout=4.0)
    got = {r["op"]: r for r in records}
    assert list(got) == probes
    found = {op: " | ".join(worker.problems(rec, None)) for op, rec in got.items()}
    assert "PAYLOAD RAN" in found["probe_payload"]
    assert "foreign KeyError" in found["probe_foreign"]
    assert "peak RSS" in found["probe_alloc"]
    assert "slow" in found["probe_slow"]
    assert found["probe_hang"].startswith("timeout")
    assert found["probe_abort"].startswith("died") and "SIGABRT" in found["probe_abort"]
    assert "ml_dtypes.bfloat16" in found["probe_bf16"]
    assert "tensorfile" in found["probe_function"] and "state changed" in found["probe_function"]
    assert found["probe_file_not_found"] == ""  # a FileNotFoundError naming a file that is really missing is fine
    assert found["probe_refuse"] == ""
    # the expectations: a hostile file accepted, a valid one refused
    ok = {"file": "x", "op": "load", "outcome": "ok"}
    refused = {"file": "x", "op": "load", "outcome": "refused", "exc_type": "FormatError"}
    assert worker.problems(ok, {"expect": "error"}) and not worker.problems(refused, {"expect": "error"})
    assert worker.problems(refused, {"expect": "ok"}) and not worker.problems(ok, {"expect": "ok"})
    assert not worker.problems({**ok, "op": "cli_ls"}, {"expect": "error"})
    assert worker.problems({**ok, "op": "cli_cat"}, {"expect": "error", "must_refuse": ["cli_cat"]})
    assert worker.problems({**ok, "op": "load_torch"}, {"expect": "ok", "ops": {"load_torch": "error"}})


def test_hostile_corpus(corpus):
    folder, manifest, _ = corpus
    records = worker.run_corpus(folder, jobs=2)
    assert {(r["file"], r["op"]) for r in records} == {(f, op) for f, e in manifest.items() for op in worker.ops_for(e, worker.OPS)}
    failures = worker.evaluate(records, manifest)
    if failures:
        pytest.fail(worker.failure_table(failures, width=220), pytrace=False)


def test_compare_benchmark_runs(tmp_path):
    """benchmarks/hostile_compare.py (the side-by-side table of docs/SECURITY.md) runs, on a few files."""
    import subprocess

    root = HOSTILE.parent.parent
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "hostile_compare.py"), "--corpus", str(tmp_path / "c"),
                          "-k", "tz_global_os_system", "-k", "st_valid", "-k", "npy_valid"],
                         capture_output=True, text=True, timeout=300, cwd=root)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "| `tz_global_os_system.pt` | error | refused (" in out.stdout
    assert "| file | expect | tensorfile |" in out.stdout
