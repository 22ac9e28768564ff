"""What is fuzzed and the contract every input is held to (shared by fuzz/harness.py and the tests).

The contract: for ANY file, ``tensorfile.load(path, framework="numpy")``, ``tensorfile.open(path)`` with
every ``f[name]`` read, and the CLI's ``ls``, ``info`` and ``verify`` either succeed or raise a subclass
of :class:`tensorfile.TensorFileError` (the CLI: ``SystemExit`` 0/1/2, and on 2 a one-line error), and
leave process-wide state as it was (``np.dtype(ml_dtypes.bfloat16).itemsize == 2`` and friends).

A *target* is one reader seen from one angle. Most targets take the fuzzer's bytes as the whole file;
``torch-pickle`` and ``npz-member`` wrap them as one member of a valid archive (first byte: which base
archive), so the pickle and ``.npy`` parsers are reached past the zip's CRC; ``sharded`` writes them as
``model.safetensors.index.json`` beside three real shards.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = (ROOT.parent / "shared" / "fixtures").resolve()


@dataclass
class Target:
    name: str
    #: suffix of the file the input is written to (content sniffing picks the reader; Keras wants its suffix)
    suffix: str
    #: fixture files (relative to FIXTURES) used as seeds; builders add made-up ones
    fixtures: list[str] = field(default_factory=list)
    #: "raw" (input is the file), "zip-member" (input[0] picks a base archive, input[1:] replaces its
    #: member), "sharded" (input is the index json beside real shards)
    mode: str = "raw"
    #: zip-member mode: base archives and, for each, the member the input replaces
    bases: list[tuple[str, str]] = field(default_factory=list)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("tensorfile", ".tensorfile"),  # seeds made by tensorfile.save (see made_seeds)
        Target("safetensors", ".safetensors", ["safetensors/numpy.safetensors", "safetensors/dtypes.safetensors"]),
        Target("sharded", ".json", ["safetensors/sharded/model.safetensors.index.json"], mode="sharded"),
        Target("torch", ".pt", ["torch/x-file", "torch/mydict", "torch/views.pt", "torch/tied.pt"]),
        Target(
            "torch-pickle",
            ".pt",
            mode="zip-member",
            bases=[
                ("torch/x-file", "x-file/data.pkl"),
                ("torch/mydict", "mydict/data.pkl"),
                ("torch/views.pt", "views/data.pkl"),
                ("torch/tied.pt", "tied/data.pkl"),
                ("torch/dtypes.pt", "dtypes/data.pkl"),
            ],
        ),
        Target("torch-legacy", ".pt", ["torch/dtypes_legacy.pt", "real/lpips-v0.1-alex.pth"]),
        Target(
            "npy",
            ".npy",
            ["numpy/plain.npy", "numpy/v2.npy", "numpy/bigendian.npy", "numpy/fortran.npy", "numpy/strings.npy",
             "numpy/nested.npy", "tensorflow/mydict.npy"],
        ),
        Target("npz", ".npz", ["numpy/arrays.npz", "numpy/compressed.npz", "numpy/positional.npz",
                               "real/scipy-csc_py3.npz"]),
        Target(
            "npz-member",
            ".npz",
            mode="zip-member",
            bases=[("numpy/arrays.npz", None), ("numpy/compressed.npz", None)],  # None: the first member
        ),
        Target("mxnet", ".params",
               ["mxnet/x-file", "mxnet/mydict", "mxnet/list.nd", "mxnet/sparse.nd", "mxnet/dtypes.nd",
                "mxnet/np_shapes", "mxnet/bool.nd"]),
        Target("hdf5", ".weights.h5", []),  # a small Keras-layout seed is made (the fixture is 47 KB)
        Target("keras", ".keras", ["tensorflow/seq.keras"]),
        Target("gguf", ".gguf"),  # seeds written with the gguf package (see made_seeds)
    ]
}


# ------------------------------------------------------------------------------------------------ seeds


def _tensorfile_seeds() -> list[tuple[str, bytes]]:
    import numpy as np

    import tensorfile

    out = []
    with tempfile.TemporaryDirectory() as d:
        for name, obj in [
            ("dict", {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "step": 3, "tag": "a"}),
            ("nested", {"w": [np.ones(2, np.int16), (np.zeros((1, 2), np.float64), 1.5)], "b": np.array(True)}),
        ]:
            p = os.path.join(d, name)
            tensorfile.save(obj, p)
            out.append((name, Path(p).read_bytes()))
    return out


def _gguf_seeds() -> list[tuple[str, bytes]]:
    import gguf
    import numpy as np

    out = []
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "a.gguf")
        w = gguf.GGUFWriter(p, "llama")
        w.add_uint32("n", 7)
        w.add_array("tokens", ["<s>", "é", ""])
        w.add_float32("eps", 1e-5)
        w.add_tensor("a", np.arange(6, dtype=np.float32).reshape(2, 3))
        w.add_tensor("b", np.array([-1, 2, -3], dtype=np.int16))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        out.append(("small", Path(p).read_bytes()))
    return out


def _hdf5_seeds() -> list[tuple[str, bytes]]:
    import h5py
    import numpy as np

    out = []
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.weights.h5")
        with h5py.File(p, "w") as f:  # the layout Keras 3 save_weights writes, two tiny layers
            g = f.create_group("layers/dense/vars")
            g.create_dataset("0", data=np.arange(6, dtype=np.float32).reshape(2, 3))
            g.create_dataset("1", data=np.zeros(3, np.float32))
            f.create_group("layers/dense_1/vars").create_dataset("0", data=np.ones((3, 1), np.float16))
            f.create_group("optimizer/vars")
        out.append(("small", Path(p).read_bytes()))
        p = os.path.join(d, "c.h5")
        with h5py.File(p, "w") as f:
            f.create_dataset("x", data=np.arange(64, dtype=np.int32), chunks=(16,), compression="gzip")
        out.append(("chunked", Path(p).read_bytes()))
    return out


def _member_name(z: zipfile.ZipFile, member: str | None) -> str:
    return member if member is not None else z.infolist()[0].filename


def raw_seeds(name: str) -> list[tuple[str, bytes]]:
    """Seeds of a target as (short name, the bytes the *file* holds)."""
    t = TARGETS[name]
    seeds = [(Path(f).name, (FIXTURES / f).read_bytes()) for f in t.fixtures]
    if name == "tensorfile":
        seeds += _tensorfile_seeds()
    elif name == "gguf":
        seeds += _gguf_seeds()
    elif name == "hdf5":
        seeds += _hdf5_seeds()
    return seeds


def fuzzer_seeds(name: str) -> list[tuple[str, bytes]]:
    """Seeds of a target as the fuzzer sees them (zip-member: selector byte + the member's bytes)."""
    t = TARGETS[name]
    if t.mode != "zip-member":
        return raw_seeds(name)
    out = []
    for i, (base, member) in enumerate(t.bases):
        with zipfile.ZipFile(FIXTURES / base) as z:
            m = _member_name(z, member)
            out.append((f"{Path(base).name}-{Path(m).name}", bytes([i]) + z.read(m)))
    return out


# ------------------------------------------------------------------------------------------------ zips


def rezip(archive: bytes, member: str | None, content: bytes) -> bytes:
    """``archive`` with ``member`` (None: the first) replaced by ``content``, CRCs and sizes made right."""
    src = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    member = _member_name(src, member)
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = content if info.filename == member else src.read(info)
            new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            new.compress_type = info.compress_type
            new.external_attr = info.external_attr
            dst.writestr(new, data)
    return out.getvalue()


_BASES: dict[str, bytes] = {}


def materialize(name: str, data: bytes, folder: str) -> str:
    """Write the file the fuzzer's ``data`` stands for into ``folder``; return the path to give tensorfile."""
    t = TARGETS[name]
    if t.mode == "zip-member":
        base, member = t.bases[data[0] % len(t.bases)] if data else t.bases[0]
        if base not in _BASES:
            _BASES[base] = (FIXTURES / base).read_bytes()
        data = rezip(_BASES[base], member, data[1:])
    elif t.mode == "sharded":
        shards = FIXTURES / "safetensors" / "sharded"
        for shard in shards.glob("*.safetensors"):
            dest = os.path.join(folder, shard.name)
            if not os.path.exists(dest):
                shutil.copyfile(shard, dest)
        path = os.path.join(folder, "model.safetensors.index.json")
        Path(path).write_bytes(data)
        return path
    path = os.path.join(folder, "input" + t.suffix)
    Path(path).write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------------ contract


class ContractViolation(AssertionError):
    """The CLI broke its contract or a file changed process-wide state; ``kind`` names which."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _state() -> tuple:
    import ml_dtypes
    import numpy as np

    dtypes = tuple(
        (n, np.dtype(getattr(ml_dtypes, n)).itemsize, np.dtype(getattr(ml_dtypes, n)).char)
        for n in ("bfloat16", "float8_e4m3fn", "float8_e5m2")
    )
    return dtypes, np.dtype(np.float32).itemsize  # (not the working folder: tests move it; nor the recursion limit)


_EXPECTED_STATE: list[tuple] = []


def check_state() -> None:
    """Raise ContractViolation if a file changed process-wide state (first call records the baseline)."""
    import ml_dtypes
    import numpy as np

    state = _state()
    if not _EXPECTED_STATE:
        assert np.dtype(ml_dtypes.bfloat16).itemsize == 2, "bfloat16 already broken before fuzzing"
        _EXPECTED_STATE.append(state)
    elif state != _EXPECTED_STATE[0]:
        raise ContractViolation("state", f"process-wide state changed: {_EXPECTED_STATE[0]} -> {state}")


_BUFFERS = (io.StringIO(), io.StringIO())


def _cli(args: list[str]) -> None:
    from tensorfile.cli import main

    # one pair of buffers, reused: click caches a wrapper per stream object, so fresh StringIOs leak ~0.5 KB/call
    err, out = _BUFFERS
    for buffer in _BUFFERS:
        buffer.seek(0)
        buffer.truncate()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main(args, standalone_mode=False)
        except SystemExit as e:
            code = e.code
    if code not in (0, 1, 2, None):
        raise ContractViolation(f"cli-{args[0]}-exit-{code}", f"CLI {args[0]} exited with {code!r}: {err.getvalue()!r}")
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    if code == 2 and (len(lines) != 1 or not lines[0].startswith("tensorfile: error: ")):
        raise ContractViolation(f"cli-{args[0]}-not-one-line",
                                f"CLI {args[0]} exit 2 without a one-line error: {err.getvalue()[-2000:]!r}")


def run_contract(path: str, cli: bool = True) -> None:
    """As _run_contract, and no SyntaxWarning (text from the file compiled as Python) may escape.

    Warnings are recorded, not printed (pytest would hide them anyway): a file must not make Python print.
    """
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run_contract(path, cli)
    for w in caught:
        if issubclass(w.category, SyntaxWarning):
            raise ContractViolation(f"warning-{w.category.__name__}", f"a file made Python warn: {w.message}")


def _run_contract(path: str, cli: bool = True) -> None:
    """Hold ``path`` to the contract; anything but success or a TensorFileError propagates.

    A foreign exception propagates as itself (its traceback is what a bug report needs); a CLI or
    process-state violation raises ContractViolation.
    """
    import tensorfile

    try:
        tensorfile.load(path, framework="numpy")
    except tensorfile.TensorFileError:
        pass
    check_state()
    try:
        with tensorfile.open(path) as f:
            for key in f.keys():
                f[key]
    except tensorfile.TensorFileError:
        pass
    check_state()
    if cli:
        for command in ("ls", "info", "verify"):
            _cli([command, path])
            check_state()


def signature(exc: BaseException) -> str:
    """A short dedup key for a failure: exception type and the innermost tensorfile frame (else innermost)."""
    import traceback

    if isinstance(exc, ContractViolation):
        return f"ContractViolation-{exc.kind}"
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "tensorfile" in f.filename and "fuzz" not in f.filename]
    where = (ours or frames or [None])[-1]
    loc = f"{Path(where.filename).name}:{where.lineno}" if where is not None else "?"
    return f"{type(exc).__name__}@{loc}"


def mutate_interesting(data: bytes, offset: int, width: int, value: int, big: bool = False) -> bytes:
    """``data`` with the ``width``-byte int at ``offset`` overwritten by ``value`` (wrapped to the width)."""
    if offset >= len(data):
        return data
    raw = (value % (1 << (8 * width))).to_bytes(width, "big" if big else "little")
    return data[:offset] + raw + data[offset + width:]


__all__ = [
    "TARGETS", "Target", "FIXTURES", "raw_seeds", "fuzzer_seeds", "materialize", "rezip", "run_contract",
    "check_state", "ContractViolation", "signature", "mutate_interesting",
]


def vm_size() -> int:
    """This process's address space in bytes (``VmSize``; 0 where /proc is absent): the harnesses cap it above this."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0
