"""Shared test helpers: the fixtures folder and comparison with expected-*.json."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = (ROOT.parent / "shared" / "fixtures").resolve()
#: The MXNet side environment's Python (made by the Makefile).
MXNET_PYTHON = ROOT / ".venv-mxnet" / "bin" / "python"

# tests/mxnet/ runs inside .venv-mxnet (`make test` does both); elsewhere it is not collected.
# (tests/mxnet itself is a namespace package called mxnet: only a real install has an origin.)
if os.environ.get("TENSORFILE_TESTS_BLOCK_TORCH") == "1":  # tests/test_fixtures.py reruns itself this way
    import sys

    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` now fails

_MXNET = importlib.util.find_spec("mxnet")
collect_ignore = [] if _MXNET is not None and _MXNET.origin else ["mxnet"]


#: The slowest test files (minutes of subprocesses each), in the order `make test` starts them: with pytest-xdist's
#: `--dist loadfile --no-loadscope-reorder` a worker takes the next file when it is free, so starting with the longest
#: keeps both workers busy to the end (measured with `pytest --durations`; about 1,000 s of 1,450 in all).
SLOWEST_FILES = ("test_examples.py", "test_crash_harness.py", "test_docs_blocks.py", "test_crash_mid_epoch.py",
                 "test_hostile_corpus.py", "test_distributed.py", "test_distributed_remote.py", "test_cli.py",
                 "test_checkpoint.py", "test_fuzz_readers.py", "test_checkpoint_flax.py")  # fmt: skip


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slowest files first (:data:`SLOWEST_FILES`), every other file after them in its usual order."""
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: tests keep their order in a file


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (CI=true) a skipped test fails the run: CI installs every framework."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") == "true" and reporter is not None and reporter.stats.get("skipped"):
        reporter.write_line(f"CI=true: {len(reporter.stats['skipped'])} test(s) skipped; every framework must be installed")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def fixture_path(*parts: str) -> Path:
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"fixture {path} is missing: the tests need ../shared/fixtures beside the project")
    return path


def expected(group: str) -> dict[str, Any]:
    return json.loads(fixture_path(f"expected-{group}.json").read_text())


def to_numpy(value: Any) -> np.ndarray:
    """A host NumPy array of a tensor of any framework (bfloat16 through ml_dtypes)."""
    if type(value).__module__.startswith("torch"):
        from tensorfile.frameworks import get_adapter

        return get_adapter("torch").to_numpy(value, "value")
    return np.asarray(value)


def _expected_scalar(x: Any) -> Any:
    if isinstance(x, str):
        return float(x)
    return x


def assert_matches(value: Any, spec: dict[str, Any], where: str = "value") -> None:
    """Assert ``value`` is what ``spec`` (an expected-*.json value) describes, exactly."""
    kind = spec["type"]
    if kind == "tensor":
        array = to_numpy(value)
        assert spec["dtype"] in (array.dtype.name, array.dtype.str[1:]), f"{where}: dtype {array.dtype.name} != {spec['dtype']}"
        assert list(array.shape) == spec["shape"], f"{where}: shape {array.shape} != {spec['shape']}"
        if "sha256" in spec:  # real/: a digest of the C-order little-endian bytes instead of the values
            data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
            assert hashlib.sha256(data).hexdigest() == spec["sha256"], f"{where}: sha256 of the data differs"
            return
        flat = array.reshape(-1)
        assert flat.size == len(spec["data"]), f"{where}: {flat.size} values, expected {len(spec['data'])}"
        for i, (got, want) in enumerate(zip(flat.tolist() if array.dtype.kind in "biuc" else flat.astype(np.float64).tolist(), spec["data"])):
            if isinstance(want, list):
                want = complex(_expected_scalar(want[0]), _expected_scalar(want[1]))
                assert got == want, f"{where}[{i}]: {got} != {want}"
                continue
            want = _expected_scalar(want)
            if isinstance(want, float) and math.isnan(want):
                assert math.isnan(got), f"{where}[{i}]: {got} is not nan"
            else:
                assert got == want, f"{where}[{i}]: {got} != {want}"
    elif kind == "dict":
        assert isinstance(value, dict), f"{where}: {type(value)} is not a dict"
        items = spec["items"]
        keys = {int(k) for k in items} if spec.get("int_keys") else set(items)
        assert set(value) == keys, f"{where}: keys {sorted(map(str, value))} != {sorted(map(str, keys))}"
        for k, v in items.items():
            key = int(k) if spec.get("int_keys") else k
            assert_matches(value[key], v, f"{where}[{key!r}]")
    elif kind in ("list", "tuple"):
        assert type(value).__name__ == kind, f"{where}: {type(value).__name__} is not a {kind}"
        assert len(value) == len(spec["items"]), f"{where}: length {len(value)} != {len(spec['items'])}"
        for i, (v, s) in enumerate(zip(value, spec["items"])):
            assert_matches(v, s, f"{where}[{i}]")
    elif kind == "scalar":
        assert value == spec["value"], f"{where}: {value!r} != {spec['value']!r}"
    else:  # pragma: no cover - a new kind in the JSON must be handled here
        raise AssertionError(f"{where}: unknown expected type {kind!r}")


def bits(value: Any) -> tuple[str, tuple[int, ...], bytes]:
    """dtype name, shape and C-order little-endian bytes of a tensor, for bit-exact comparison."""
    array = to_numpy(value)
    return array.dtype.name, array.shape, np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
