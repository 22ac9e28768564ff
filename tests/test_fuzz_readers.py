"""Mutation fuzzing of every reader with Hypothesis, seeded from real files (issue 9, item 6).

For each format, small real seeds (``../shared/fixtures``, plus files made by ``tensorfile.save``, the
``gguf`` package and h5py) are mutated: byte flips, inserts and deletes, splices of two seeds,
truncation, "interesting" integers (0, -1, 2**31, 2**63, 2**64-1, ...) written over the format's length
and count fields, structural edits of JSON / ``.npy`` headers, members of zip archives mutated and
re-zipped (so the pickle or ``.npy`` inside is reached past the CRC) and pickle opcodes replaced,
deleted, duplicated or given hostile arguments. Every mutant is held to the contract of
``fuzz/targets.py``: ``load``, ``open`` + every ``f[name]`` and the CLI's ``ls``/``info``/``verify``
succeed or raise a ``TensorFileError`` (the CLI: exit 0/1/2 with a one-line error), process-wide state
(``np.dtype(ml_dtypes.bfloat16).itemsize``...) is unchanged, no mutant takes more than 10 s, and the
address space is capped so an allocation bomb shows up as ``MemoryError`` rather than swapping.

Derandomized and bounded (a few seconds per format). The coverage-guided fuzzer is ``make fuzz``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import pickletools
import resource
import signal
import struct
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent


def _load_targets() -> Any:
    spec = importlib.util.spec_from_file_location("tensorfile_fuzz_targets", ROOT / "fuzz" / "targets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


targets = _load_targets()

INTERESTING = [0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1,
               2**63, 2**64 - 1]
HANG_SECONDS = 10
ADDRESS_SPACE_HEADROOM = 2 << 30


# ------------------------------------------------------------------------------------------ guards


class Hang(Exception):
    """A mutant took more than HANG_SECONDS (raised from the alarm; never a TensorFileError)."""


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Cap the address space (a bomb raises MemoryError) and time (a hang raises Hang) for one mutant."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = targets.vm_size() + ADDRESS_SPACE_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)

    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"a mutant took more than {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


_WORK = tempfile.TemporaryDirectory(prefix="tensorfile-fuzz-")


def check(fmt: str, data: bytes) -> None:
    """Write ``data`` as a file of ``fmt`` and hold it to the contract (raises on a violation)."""
    folder = os.path.join(_WORK.name, fmt)
    os.makedirs(folder, exist_ok=True)
    for entry in os.listdir(folder):
        if not entry.endswith(".safetensors"):  # the sharded target's real shards stay
            os.unlink(os.path.join(folder, entry))
    path = targets.materialize(fmt, data, folder)
    try:
        with guarded():
            targets.run_contract(path)
    except Exception as e:
        save = os.environ.get("TENSORFILE_FUZZ_SAVE")  # a folder: keep the failing file (for tests/regressions)
        if save:
            _save_failure(Path(save), fmt, path, e)
        else:
            e.add_note(f"(a {fmt} file of {len(data)} bytes; run with TENSORFILE_FUZZ_SAVE=<folder> to keep it)")
        raise


def _save_failure(folder: Path, fmt: str, path: str, exc: BaseException) -> None:
    import hashlib
    import re

    data = Path(path).read_bytes()
    short = re.sub(r"[^a-z0-9]+", "-", targets.signature(exc).lower()).strip("-")[:50]
    suffix = ".index.json" if fmt == "sharded" else targets.TARGETS[fmt].suffix
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{fmt}-hyp-{short}-{hashlib.sha1(data).hexdigest()[:6]}{suffix}").write_bytes(data)


# ------------------------------------------------------------------------------------------ structure


def zip_length_offsets(data: bytes) -> list[int]:
    """Offsets of the size, count, length and offset fields of every zip header in ``data``."""
    out = []
    for sig, fields in ((b"PK\x03\x04", (14, 18, 22, 26, 28)), (b"PK\x01\x02", (16, 20, 24, 28, 30, 32, 42)),
                        (b"PK\x05\x06", (8, 10, 12, 16, 20)), (b"PK\x06\x06", (24, 32, 40, 48)),
                        (b"PK\x06\x07", (8,))):
        start = data.find(sig)
        while start != -1:
            out += [start + f for f in fields]
            start = data.find(sig, start + 1)
    return out


def length_offsets(fmt: str, data: bytes) -> list[int]:
    """Where ``fmt`` keeps lengths and counts (a mutated int there reaches the allocation checks)."""
    if fmt in ("torch", "npz", "keras"):
        return zip_length_offsets(data) or [0]
    if fmt in ("safetensors", "tensorfile"):
        return [0, 4]
    if fmt == "npy":
        return [6, 7, 8, 10]
    if fmt == "gguf":
        out = [4, 8, 16, 24]  # version, tensor count, kv count, first key's length
        return out + [i for i in range(24, min(len(data), 400), 8)]
    if fmt == "mxnet":
        return list(range(0, min(len(data), 96), 4))
    if fmt == "hdf5":
        return list(range(0, min(len(data), 256), 4))
    if fmt == "torch-legacy":
        return [op_pos + 1 for _, _, op_pos in _ops(data)][:200] or [0]
    return [0]


def _ops(data: bytes) -> list[tuple[Any, Any, int]]:
    """The pickle opcodes of ``data`` as far as they parse (pickletools.genops is lazy)."""
    ops = []
    try:
        for op, arg, pos in pickletools.genops(data):
            ops.append((op, arg, pos))
    except Exception:  # noqa: BLE001 - a mutant stops parsing somewhere
        pass
    return ops


OPCODES = sorted({op.code.encode("latin-1") for op in pickletools.opcodes})
# opcodes a safe unpickler must refuse or bound; drawn more often than their share
HOSTILE_OPCODES = [b"c", b"\x93", b"R", b"b", b"i", b"o", b"\x81", b"\x92", b"h", b"j", b"g", b"\x95", b"\x8e",
                   b"\x8d", b"B", b"T", b"\x97", b"\x98", b"s", b"u", b"e", b"a", b"(", b"1", b"2", b"0", b"."]


# ------------------------------------------------------------------------------------------ mutations

Draw = Callable[[st.SearchStrategy], Any]


def _pos(draw: Draw, data: bytes, end: bool = False) -> int:
    return draw(st.integers(0, max(0, len(data) - (0 if end else 1))))


def flip(draw: Draw, data: bytes, fmt: str, seeds: list[bytes]) -> bytes:
    if not data:
        return data
    i = _pos(draw, data)
    mask = draw(st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 0xFF]) | st.integers(1, 255))
    return data[:i] + bytes([data[i] ^ mask]) + data[i + 1:]


def insert(draw: Draw, data: bytes, fmt: str, seeds: list[bytes]) -> bytes:
    i = _pos(draw, data, end=True)
    chunk = draw(st.binary(min_size=1, max_size=16) | st.sampled_from([b"\x00" * 64, b"\xff" * 8, b"{", b"[" * 200]))
    return data[:i] + chunk + data[i:]


def delete(draw: Draw, data: bytes, fmt: str, seeds: list[bytes]) -> bytes:
    if not data:
        return data
    i = _pos(draw, data)
    n = draw(st.integers(1, 32))
    return data[:i] + data[i + n:]


def splice(draw: Draw, data: bytes, fmt: str, seeds: list[bytes]) -> bytes:
    other = draw(st.sampled_from(seeds))
    return data[:_pos(draw, data, end=True)] + other[_pos(draw, other, end=True):]


def truncate(draw: Draw, data: bytes, fmt: str, seeds: list[bytes]) -> bytes:
    return data[:_pos(draw, data, end=True)]


def interesting(draw: Draw, data: bytes, fmt: str, seeds: list[bytes]) -> bytes:
    offsets = length_offsets(fmt, data) or [0]
    offset = draw(st.sampled_from(offsets) | st.integers(0, max(0, len(data) - 1)))
    width = draw(st.sampled_from([8, 4, 2, 1]))
    return targets.mutate_interesting(data, offset, width, draw(st.sampled_from(INTERESTING)),
                                      big=draw(st.booleans()))


def pickle_op(draw: Draw, data: bytes, fmt: str, seeds: list[bytes]) -> bytes:
    """Replace, delete or duplicate one opcode, or give a length-prefixed one a hostile length."""
    ops = _ops(data)
    if not ops:
        return flip(draw, data, fmt, seeds)
    k = draw(st.integers(0, len(ops) - 1))
    op, arg, pos = ops[k]
    end = ops[k + 1][2] if k + 1 < len(ops) else len(data)
    how = draw(st.sampled_from(["replace", "delete", "duplicate", "length", "insert"]))
    if how == "replace":
        code = draw(st.sampled_from(HOSTILE_OPCODES) | st.sampled_from(OPCODES))
        return data[:pos] + code + data[pos + 1:]
    if how == "delete":
        return data[:pos] + data[end:]
    if how == "duplicate":
        times = draw(st.sampled_from([1, 2, 64]))
        return data[:end] + data[pos:end] * times + data[end:]
    if how == "insert":
        code = draw(st.sampled_from(HOSTILE_OPCODES))
        return data[:pos] + code + data[pos:]
    width = {1: 1, 4: 4, 8: 8}.get(end - pos - 1, draw(st.sampled_from([1, 4, 8])))
    return targets.mutate_interesting(data, pos + 1, width, draw(st.sampled_from(INTERESTING)))


JSON_VALUES = st.sampled_from([
    None, True, 0, -1, 2**31, 2**63, 2**64 - 1, 2**64, 1.5, float("inf"), "", "..", "/etc/passwd", "F32", "BF16",
    "U8", "F8_E4M3", "object", "<f4", "|O", "x" * 300, [], [0], [-1], [2**62, 2**62], [1, 0], [[1]], {}, {"a": 1},
    "model.safetensors.index.json", "model-00001-of-00003.safetensors", "../model-00001-of-00003.safetensors",
]) | st.lists(st.integers(-2, 2**64), max_size=70)


def _json_paths(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _json_paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _json_paths(v, path + (i,))
    return out


def _json_edit(draw: Draw, doc: Any) -> Any:
    paths = [p for p in _json_paths(doc) if p]
    if not paths:
        return draw(JSON_VALUES)
    path = draw(st.sampled_from(paths))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    how = draw(st.sampled_from(["value", "value", "delete", "rename"]))
    if how == "value" or not isinstance(parent, dict):
        parent[path[-1]] = draw(JSON_VALUES)
    elif how == "delete":
        del parent[path[-1]]
    else:
        parent[draw(st.sampled_from(["", "__metadata__", "a" * 200, "\x00", "weight_map", "x.y"]))] = parent.pop(
            path[-1])
    return doc


def header_edit(draw: Draw, data: bytes, fmt: str, seeds: list[bytes]) -> bytes:
    """Edit the parsed header (safetensors JSON, sharded index, .npy dict) and write it back consistently."""
    if fmt in ("safetensors", "tensorfile") and len(data) >= 8:
        n = int.from_bytes(data[:8], "little")
        try:
            doc = json.loads(data[8:8 + n])
        except ValueError:
            return flip(draw, data, fmt, seeds)
        head = json.dumps(_json_edit(draw, doc)).encode()
        head += b" " * (-len(head) % 8)
        return len(head).to_bytes(8, "little") + head + data[8 + n:]
    if fmt == "sharded":
        try:
            doc = json.loads(data)
        except ValueError:
            return flip(draw, data, fmt, seeds)
        return json.dumps(_json_edit(draw, doc)).encode()
    if fmt == "npy" and data[:6] == b"\x93NUMPY" and len(data) > 10:
        v2 = data[6] >= 2
        n = int.from_bytes(data[8:12] if v2 else data[8:10], "little")
        start = 12 if v2 else 10
        head = draw(st.sampled_from([
            "{'descr': %s, 'fortran_order': False, 'shape': (2,), }",
            "{'descr': '<f4', 'fortran_order': %s, 'shape': (2,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': %s}",
            "%s",
        ])) % draw(st.sampled_from([
            "'<f4'", "'|O'", "'<U3'", "[('a', '<i4'), ('b', '|O')]", "[('a', '<i4', (2**40,))]", "'<V0'",
            "'>c16'", "'bfloat16'", "'<f4' * 10**6", "(1,) * 65", "(2**62, 4)", "(-1,)", "(0, 2**63)", "None",
            "{'descr': '<f4'}", "[" * 100 + "]" * 100, "__import__('os')", "'<M8[Y]'", "'|S0'", "True", "1e999",
        ]))
        raw = head.encode("latin-1") + b"\n"
        fmt_len = "<I" if v2 else "<H"
        if not v2 and len(raw) > 0xFFFF:
            return data
        return data[:6] + (b"\x02\x00" if v2 else b"\x01\x00") + struct.pack(fmt_len, len(raw)) + raw + data[start + n:]
    return flip(draw, data, fmt, seeds)


INNER = [flip, insert, delete, truncate, interesting]


def zip_member(draw: Draw, data: bytes, fmt: str, seeds: list[bytes]) -> bytes:
    """Mutate one member of the archive (a pickle by opcode, else by bytes) and re-zip it with good CRCs."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            if not infos:
                return data
            info = draw(st.sampled_from(infos))
            content = z.read(info)
    except Exception:  # noqa: BLE001 - an earlier mutation broke the zip: mutate it as bytes
        return flip(draw, data, fmt, seeds)
    inner = fmt
    if info.filename.endswith(".pkl"):
        ops = [pickle_op, pickle_op, pickle_op, flip, truncate]
        inner = "pickle"
    elif info.filename.endswith(".npy"):
        ops = [header_edit, header_edit, *INNER]
        inner = "npy"
    elif info.filename.endswith(".h5"):
        ops = INNER
        inner = "hdf5"
    else:
        ops = INNER
    for _ in range(draw(st.integers(1, 2))):
        content = draw(st.sampled_from(ops))(draw, content, inner, [content])
    try:
        return targets.rezip(data, info.filename, content)
    except Exception:  # noqa: BLE001 - another member is already broken (bad CRC, bad header)
        return flip(draw, data, fmt, seeds)


def legacy_pickle(draw: Draw, data: bytes, fmt: str, seeds: list[bytes]) -> bytes:
    """Opcode mutation inside one of the legacy stream's pickles (magic, protocol, sys info, the object)."""
    return pickle_op(draw, data, fmt, seeds)


OPS: dict[str, list] = {
    "tensorfile": [flip, insert, delete, splice, truncate, interesting, header_edit, header_edit],
    "safetensors": [flip, insert, delete, splice, truncate, interesting, header_edit, header_edit],
    "sharded": [flip, insert, delete, truncate, header_edit, header_edit, header_edit],
    "torch": [flip, delete, splice, truncate, interesting, zip_member, zip_member, zip_member, zip_member],
    "torch-legacy": [flip, insert, delete, splice, truncate, interesting, legacy_pickle, legacy_pickle,
                     legacy_pickle],
    "npy": [flip, insert, delete, splice, truncate, interesting, header_edit, header_edit, header_edit],
    "npz": [flip, delete, splice, truncate, interesting, zip_member, zip_member, zip_member],
    "mxnet": [flip, insert, delete, splice, truncate, interesting, interesting, interesting],
    "hdf5": [flip, flip, delete, truncate, interesting, interesting],
    "keras": [flip, truncate, interesting, zip_member, zip_member, zip_member],
    "gguf": [flip, insert, delete, splice, truncate, interesting, interesting, interesting],
}

#: examples per format: a few seconds each on a 2-core machine (HDF5 and Keras are slower per file)
EXAMPLES = {"hdf5": 200, "keras": 150, "torch": 150, "npz": 300, "sharded": 300, "torch-legacy": 300}

#: no shrinking: a failure is reported as generated (shrinking a slow reader's input can take minutes)
PHASES = (Phase.explicit, Phase.generate)

_SEEDS: dict[str, list[bytes]] = {}


def seeds_of(fmt: str) -> list[bytes]:
    if fmt not in _SEEDS:
        _SEEDS[fmt] = [data for _, data in targets.raw_seeds(fmt)]
    return _SEEDS[fmt]


@st.composite
def mutants(draw: Draw, fmt: str) -> bytes:
    seeds = seeds_of(fmt)
    data = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 3))):
        data = draw(st.sampled_from(OPS[fmt]))(draw, data, fmt, seeds)
    return data


def test_every_seed_is_read_and_every_target_fuzzed():
    """The seeds are valid files (mutants start from something that reads), and no format is left out."""
    import tensorfile

    assert set(OPS) | {"torch-pickle", "npz-member"} == set(targets.TARGETS)
    for fmt in OPS:
        assert seeds_of(fmt), fmt
        for data in seeds_of(fmt):
            folder = os.path.join(_WORK.name, "seed-" + fmt)
            os.makedirs(folder, exist_ok=True)
            tensorfile.load(targets.materialize(fmt, data, folder), framework="numpy")


def _fuzz_test(fmt: str) -> Callable[[], None]:
    @settings(max_examples=EXAMPLES.get(fmt, 400), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=PHASES)
    @given(data=mutants(fmt))
    def test(data: bytes) -> None:
        check(fmt, data)

    test.__name__ = f"test_fuzz_{fmt.replace('-', '_')}"
    test.__doc__ = f"Mutants of {fmt} seeds: only TensorFileError escapes, process-wide state unchanged."
    return test


for _fmt in OPS:
    globals()[f"test_fuzz_{_fmt.replace('-', '_')}"] = _fuzz_test(_fmt)
del _fmt


@pytest.mark.parametrize("fmt", ["torch-pickle", "npz-member"])
@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck),
          phases=PHASES)
@given(data=st.data())
def test_fuzz_wrapped_members(fmt, data):
    """Arbitrary bytes as the pickle of a valid torch zip / the .npy member of a valid .npz."""
    seeds = [d for _, d in targets.fuzzer_seeds(fmt)]
    base = data.draw(st.sampled_from(seeds))
    body = data.draw(st.binary(max_size=64) | st.just(base[1:]).map(lambda b: b[: len(b) // 2]))
    check(fmt, base[:1] + body)
