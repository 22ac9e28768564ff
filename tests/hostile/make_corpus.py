"""Build the hostile corpus of issue 9: about 120 small hand-made files that try to make a reader run code,
read other files on the machine, change process-wide state, allocate or loop without bound, or raise
something other than a ``TensorFileError``; plus a few valid controls (``expect: "ok"``).

    from make_corpus import build
    paths = build(folder)          # also writes folder/manifest.json

``manifest.json`` maps each file (relative to ``folder``) to::

    {"expect": "error" | "ok" | "any", "why": "...", "reader": "torch-zip" | ...,
     "must_refuse": [...ops...],      # optional: ops that must not succeed besides the defaults (see worker.py)
     "ops": {"load_torch": "error"}}  # optional: per-op expectation overriding "expect" (and extra ops to run)

``expect: "any"`` marks the few files a correct reader may either refuse or read (the format's own spec
allows both, e.g. a shared group it MAY load as separate tensors); they still must stay within the
time/memory bounds and raise nothing but ``TensorFileError``.

Every payload pickle, if ever executed, creates ``folder/PAYLOAD_RAN`` (:func:`marker_path`).
Needs only Python, NumPy, h5py and xxhash (no torch); deterministic; a few seconds.
Run directly: ``python tests/hostile/make_corpus.py OUT_DIR``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import shlex
import struct
import sys
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["build", "marker_path", "MARKER_NAME", "MANIFEST_NAME"]

MARKER_NAME = "PAYLOAD_RAN"
MANIFEST_NAME = "manifest.json"


def marker_path(folder: str | os.PathLike[str]) -> Path:
    """The file every payload in ``folder``'s corpus creates if it ever runs."""
    return Path(folder).resolve() / MARKER_NAME


# ---------------------------------------------------------------------------------------------- pickle opcodes
def p_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE, as torch.save writes (its weights_only reader has no SHORT_BINUNICODE)


def p_int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    enc = pickle.encode_long(n)
    return b"\x8a" + bytes([len(enc)]) + enc


def p_glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def p_val(x: Any) -> bytes:
    """Opcodes that push the plain value ``x`` (no memo, no PROTO/STOP)."""
    if x is None:
        return b"N"
    if x is True:
        return b"\x88"
    if x is False:
        return b"\x89"
    if isinstance(x, int):
        return p_int(x)
    if isinstance(x, float):
        return b"G" + struct.pack(">d", x)
    if isinstance(x, str):
        return p_str(x)
    if isinstance(x, bytes):
        return b"C" + bytes([len(x)]) + x if len(x) < 256 else b"B" + struct.pack("<I", len(x)) + x
    if isinstance(x, tuple):
        return b"(" + b"".join(p_val(i) for i in x) + b"t"
    if isinstance(x, list):
        return b"](" + b"".join(p_val(i) for i in x) + b"e"
    if isinstance(x, dict):
        return b"}(" + b"".join(p_val(k) + p_val(v) for k, v in x.items()) + b"u"
    if isinstance(x, Raw):
        return x.code
    raise TypeError(type(x))


class Raw:
    """Opcodes spliced into a value built with :func:`p_val`."""

    def __init__(self, code: bytes) -> None:
        self.code = code


def p_dict(items: list[tuple[Any, Any]], proto: int = 2) -> bytes:
    """A whole pickle of a dict whose values may be :class:`Raw` opcodes."""
    return b"\x80" + bytes([proto]) + b"}(" + b"".join(p_val(k) + p_val(v) for k, v in items) + b"u."


def payload_cmd(marker: Path) -> str:
    return "touch " + shlex.quote(str(marker))


def torch_tensor(key: str, storage: str = "FloatStorage", numel: int = 4, offset: int = 0,
                 size: tuple = (4,), stride: tuple = (1,), persid: bytes | None = None, legacy: bool = False) -> Raw:
    """``torch._utils._rebuild_tensor_v2(persistent_load(('storage', torch.<storage>, key, 'cpu', numel)), ...)``."""
    if persid is None:
        fields = p_str("storage") + p_glob("torch", storage) + p_str(key) + p_str("cpu") + p_int(numel)
        persid = b"(" + fields + (b"N" if legacy else b"") + b"t"
    args = persid + b"Q" + p_int(offset) + p_val(tuple(size)) + p_val(tuple(stride)) + b"\x89"
    args += p_glob("collections", "OrderedDict") + b")R"
    return Raw(p_glob("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR")


F4 = np.arange(4, dtype="<f4").tobytes()  # 0, 1, 2, 3


def bf16_bytes(values: list[float]) -> bytes:
    return (np.array(values, "<f4").view("<u4") >> 16).astype("<u2").tobytes()


# ---------------------------------------------------------------------------------------------- zip by hand
DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
DOS_TIME = 0


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def zip_bytes(entries: list[dict[str, Any]], *, cd_extra: list[dict[str, Any]] = (), comment: bytes = b"") -> bytes:
    """A zip archive written field by field so that any field can lie.

    Each entry: name, data (uncompressed), optional method (0 stored / 8 deflated), raw (the stored bytes, if
    given instead of compressing data), local / cd (dicts overriding fields of the local header / central
    directory: name, method, csize, usize, crc, flags, offset), align (pad the local header's extra field so
    the data starts at a multiple of it, as torch does). ``cd_extra``: central directory entries pointing at
    an absolute offset (``{"name", "offset", "csize", "usize", "crc", "method"}``).
    """
    out = bytearray()
    central = []
    for e in entries:
        data = e.get("data", b"")
        method = e.get("method", 0)
        raw = e.get("raw", deflate(data) if method == 8 else data)
        crc = e.get("crc", zlib.crc32(data))
        usize = e.get("usize", len(data))
        loc = {"name": e["name"], "method": method, "csize": len(raw), "usize": usize, "crc": crc, "flags": 0,
               **e.get("local", {})}
        name_b = loc["name"].encode("utf-8")
        offset = len(out)
        extra = b""
        align = e.get("align", 0)
        if align:
            start = offset + 30 + len(name_b)
            pad = (-(start + 4)) % align
            extra = struct.pack("<HH", 0x1234, pad) + b"Z" * pad
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, loc["flags"], loc["method"], DOS_TIME, DOS_DATE,
                           loc["crc"] & 0xFFFFFFFF, loc["csize"] & 0xFFFFFFFF, loc["usize"] & 0xFFFFFFFF,
                           len(name_b), len(extra)) + name_b + extra
        out += raw
        cd = {"name": e["name"], "method": method, "csize": len(raw), "usize": usize, "crc": crc, "flags": 0,
              "offset": offset, **e.get("cd", {})}
        if not e.get("hidden"):
            central.append(cd)
    central.extend(cd_extra)
    cd_start = len(out)
    for cd in central:
        name_b = cd["name"].encode("utf-8")
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, cd.get("flags", 0), cd.get("method", 0),
                           DOS_TIME, DOS_DATE, cd.get("crc", 0) & 0xFFFFFFFF, cd.get("csize", 0) & 0xFFFFFFFF,
                           cd.get("usize", 0) & 0xFFFFFFFF, len(name_b), 0, 0, 0, 0, 0o100644 << 16,
                           cd["offset"] & 0xFFFFFFFF) + name_b
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(out) - cd_start, cd_start,
                       len(comment)) + comment
    return bytes(out)


def torch_zip(data_pkl: bytes, storages: dict[str, bytes] | None = None, *, prefix: str = "archive",
              extra: list[dict[str, Any]] = (), **kw: Any) -> bytes:
    entries = [{"name": f"{prefix}/data.pkl", "data": data_pkl},
               {"name": f"{prefix}/byteorder", "data": b"little"}]
    for key, data in (storages or {}).items():
        entries.append({"name": f"{prefix}/data/{key}", "data": data, "align": 64})
    entries.append({"name": f"{prefix}/version", "data": b"3\n"})
    entries.extend(extra)
    return zip_bytes(entries, **kw)


def torch_legacy(obj_pkl: bytes, storages: dict[str, bytes], *, magic_pkl: bytes | None = None,
                 sys_info_pkl: bytes | None = None, numel_override: dict[str, int] | None = None) -> bytes:
    magic = magic_pkl if magic_pkl is not None else pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    sys_info = sys_info_pkl if sys_info_pkl is not None else pickle.dumps(
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    out = magic + pickle.dumps(1001, protocol=2) + sys_info + obj_pkl + pickle.dumps(list(storages), protocol=2)
    for key, data in storages.items():
        numel = (numel_override or {}).get(key, len(data) // 4)
        out += struct.pack("<q", numel) + data
    return out


# ---------------------------------------------------------------------------------------------- npy / npz
def npy_header(header_text: str, version: int = 1, pad_to: int = 64) -> bytes:
    h = header_text.encode("latin1" if version < 3 else "utf-8")
    pre_len = 10 if version == 1 else 12
    h += b" " * (-(len(h) + pre_len + 1) % pad_to) + b"\n"
    length = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes([version, 0]) + length + h


def npy_raw(descr: str, shape: str = "(4,)", fortran: str = "False", body: bytes = F4, version: int = 1) -> bytes:
    return npy_header(f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}", version) + body


def npy_array(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=False)
    return buf.getvalue()


def object_array_pickle(element: bytes) -> bytes:
    """The pickle np.save writes for ``np.array([X], dtype=object)``, with X's opcodes replaced by ``element``."""
    sentinel = "@@HOSTILE-ELEMENT@@"
    real = pickle.dumps(np.array([sentinel], dtype=object), protocol=3)
    code = b"X" + struct.pack("<I", len(sentinel)) + sentinel.encode()
    assert real.count(code) == 1
    return real.replace(code, element)


def npy_object(pickle_bytes: bytes, shape: str = "(1,)") -> bytes:
    return npy_header(f"{{'descr': '|O', 'fortran_order': False, 'shape': {shape}, }}") + pickle_bytes


def npz(members: list[tuple[str, bytes]], method: int = 0) -> bytes:
    return zip_bytes([{"name": n, "data": d, "method": method} for n, d in members])


def deflate_repeated(chunk: bytes, times: int, *, head: bytes = b"", zlib_wrapper: bool = False) -> tuple[bytes, int]:
    """Raw deflate (or zlib format) of ``head + chunk * times`` without compressing it all: a full-flushed
    segment repeated. Returns (stream, crc32 of the whole); costs one compression of ``chunk``.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH) if head else b""
    segment = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    stream = first + segment * times + b"\x03\x00"  # an empty final fixed-Huffman block
    crc, adler = zlib.crc32(head), zlib.adler32(head)
    for _ in range(times):
        crc = zlib.crc32(chunk, crc)
        if zlib_wrapper:
            adler = zlib.adler32(chunk, adler)
    if zlib_wrapper:
        stream = b"\x78\xda" + stream + struct.pack(">I", adler)
    return stream, crc


# ---------------------------------------------------------------------------------------------- safetensors / tensorfile
def st_bytes(tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict[str, str] | None = None,
             header_pad_to: int | None = None) -> bytes:
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    if header_pad_to is not None:
        h += b" " * (header_pad_to - len(h))
    return struct.pack("<Q", len(h)) + h + data


def tensorfile_bytes(tensors: dict[str, tuple[str, list[int], bytes]], root_json: str,
                     entries_json: str | None = None, shared_json: str | None = None) -> bytes:
    """A tensorfile (docs/FORMAT.md): safetensors with the record in ``__metadata__``, header checksum right."""
    import xxhash

    if entries_json is None:
        entries_json = json.dumps({n: {"checksum": xxhash.xxh3_64(raw).hexdigest(), "framework": "numpy"}
                                   for n, (_, _, raw) in tensors.items()}, separators=(",", ":"))
    record = '{"version":1,"header_checksum":"' + "0" * 16 + '","root":' + root_json + ',"tensors":' + entries_json
    if shared_json is not None:
        record += ',"shared":' + shared_json
    record += "}"
    header = {"__metadata__": {"tensorfile": record}}
    data = b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    digest = xxhash.xxh3_64(h).hexdigest().encode()
    prefix = b'{"__metadata__":{"tensorfile":"{\\"version\\":1,\\"header_checksum\\":\\"'
    assert h.startswith(prefix + b"0" * 16)
    h = prefix + digest + h[len(prefix) + 16:]
    return struct.pack("<Q", len(h)) + h + data


# ---------------------------------------------------------------------------------------------- MXNet
MX_V2, MX_V3 = 0xF993FAC9, 0xF993FACA


def mx_shape(shape: tuple[int, ...]) -> bytes:
    return struct.pack("<i", len(shape)) + b"".join(struct.pack("<q", d) for d in shape)


def mx_dense(shape: tuple[int, ...], flag: int, data: bytes, magic: int = MX_V2) -> bytes:
    return struct.pack("<Ii", magic, 0) + mx_shape(shape) + struct.pack("<ii", 1, 0) + struct.pack("<i", flag) + data


def mx_sparse(stype: int, storage_shape: tuple[int, ...], shape: tuple[int, ...], flag: int,
              aux: list[tuple[int, tuple[int, ...]]], values: bytes, aux_data: list[bytes], magic: int = MX_V2) -> bytes:
    b = struct.pack("<Ii", magic, stype) + mx_shape(storage_shape) + mx_shape(shape) + struct.pack("<ii", 1, 0)
    b += struct.pack("<i", flag) + b"".join(struct.pack("<i", t) + mx_shape(s) for t, s in aux)
    return b + values + b"".join(aux_data)


def mx_file(records: list[bytes], names: list[bytes], count: int | None = None, names_count: int | None = None,
            name_lengths: list[int] | None = None) -> bytes:
    b = struct.pack("<QQQ", 0x112, 0, len(records) if count is None else count) + b"".join(records)
    b += struct.pack("<Q", len(names) if names_count is None else names_count)
    for i, n in enumerate(names):
        b += struct.pack("<Q", len(n) if name_lengths is None else name_lengths[i]) + n
    return b


def i64(*values: int) -> bytes:
    return b"".join(struct.pack("<q", v) for v in values)


# ---------------------------------------------------------------------------------------------- GGUF
G_U32, G_STRING, G_ARRAY, G_U64 = 4, 8, 9, 10


def g_str(s: str | bytes, length: int | None = None) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b) if length is None else length) + b


def g_kv(key: str | bytes, vtype: int, value: bytes) -> bytes:
    return g_str(key) + struct.pack("<I", vtype) + value


def g_tensor(name: str, dims: tuple[int, ...], ggml_type: int, offset: int, n_dims: int | None = None) -> bytes:
    return (g_str(name) + struct.pack("<I", len(dims) if n_dims is None else n_dims)
            + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ggml_type, offset))


def gguf(kvs: list[bytes], tensors: list[bytes], data: bytes, *, n_tensors: int | None = None,
         n_kv: int | None = None, alignment: int = 32, version: int = 3) -> bytes:
    b = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(tensors)
    if alignment:
        b += b"\x00" * (-len(b) % alignment)
    return b + data


# ---------------------------------------------------------------------------------------------- the corpus
class Corpus:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.marker = marker_path(folder)
        self.manifest: dict[str, dict[str, Any]] = {}
        self.paths: list[Path] = []

    def add(self, name: str, data: bytes | None, reader: str, expect: str, why: str, **extra: Any) -> Path:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        assert name not in self.manifest, name
        self.manifest[name] = {"expect": expect, "why": why, "reader": reader, **extra}
        self.paths.append(path)
        return path

    # payloads, as opcodes, each creating the marker when run
    def cmd(self) -> str:
        return payload_cmd(self.marker)

    def reduce_system(self, module: str = "os", name: str = "system") -> bytes:
        return p_glob(module, name) + b"(" + p_str(self.cmd()) + b"tR"

    def eval_payload(self) -> bytes:
        return p_glob("builtins", "eval") + b"(" + p_str(f"__import__('os').system({self.cmd()!r})") + b"tR"


LEAK = ["cli_cat"]  # for files that would hand back other files' bytes: `cat` must not print them either


def _torch_files(c: Corpus) -> None:
    R = "torch-zip"
    ok_pkl = p_dict([("w", torch_tensor("0"))])
    c.add("tz_valid.pt", torch_zip(ok_pkl, {"0": F4}), R, "ok", "control: a plain float32 tensor written as torch.save does")
    c.add("tz_valid_bf16.pt", torch_zip(p_dict([("w", torch_tensor("0", "BFloat16Storage", 4))]),
                                        {"0": bf16_bytes([1.5, 2, 3, 4])}), R, "ok", "control: a bfloat16 tensor")

    def evil(name: str, value: bytes, why: str, storages: dict[str, bytes] | None = None, expect: str = "error", **kw: Any) -> None:
        pkl = p_dict([("x", Raw(value)), ("w", torch_tensor("0"))])  # the hostile value first: a naive reader reaches it
        c.add(name, torch_zip(pkl, {"0": F4} if storages is None else storages), R, expect, why, **kw)

    evil("tz_global_os_system.pt", c.reduce_system(), "GLOBAL os.system + REDUCE (payload)")
    evil("tz_global_posix_system.pt", c.reduce_system("posix", "system"), "GLOBAL posix.system + REDUCE (payload)")
    evil("tz_global_builtins_eval.pt", c.eval_payload(), "GLOBAL builtins.eval + REDUCE (payload)")
    evil("tz_global_builtin_proto2_eval.pt", p_glob("__builtin__", "eval") + b"(" + p_str(f"__import__('os').system({c.cmd()!r})") + b"tR",
         "protocol-2 name __builtin__.eval + REDUCE (payload)")
    evil("tz_stack_global_os_system.pt", b"\x8c\x02os\x8c\x06system\x93(" + p_str(c.cmd()) + b"tR",
         "STACK_GLOBAL os.system + REDUCE (payload)")
    evil("tz_inst_os_system.pt", b"(" + p_str(c.cmd()) + b"ios\nsystem\n", "INST os.system (payload)")
    evil("tz_obj_os_system.pt", b"(" + p_glob("os", "system") + p_str(c.cmd()) + b"o", "OBJ os.system (payload)")
    evil("tz_newobj_popen.pt", p_glob("subprocess", "Popen") + p_val((["touch", str(c.marker)],)) + b"\x81",
         "NEWOBJ subprocess.Popen")
    evil("tz_newobj_ex_popen.pt", p_glob("subprocess", "Popen") + p_val((["touch", str(c.marker)],)) + b"}\x92",
         "NEWOBJ_EX subprocess.Popen")
    evil("tz_newobj_table_function.pt", p_glob("torch._utils", "_rebuild_tensor_v2") + b")\x81",
         "NEWOBJ on a table function (not a class)")
    evil("tz_reduce_getattr_chain.pt",
         p_glob("builtins", "getattr") + b"(" + p_glob("os", "path") + p_str("join") + b"tR",
         "builtins.getattr on a module (a gadget for reaching anything)")
    evil("tz_global_table_module_attr.pt", p_glob("torch", "load") + b"(" + p_str("/etc/passwd") + b"tR",
         "GLOBAL torch.load (a torch name outside the table) + REDUCE")
    evil("tz_ext1.pt", b"\x82\x01", "EXT1 code 1 (copyreg extension registry)")
    evil("tz_ext2.pt", b"\x83\xff\xff", "EXT2 code 65535")
    evil("tz_ext4.pt", b"\x84\xff\xff\xff\x7f", "EXT4 code 2**31-1")
    bf16_state = (3, "<", None, None, None, 1, 1, 64)
    pkl = p_dict([("x", Raw(p_glob("torch", "bfloat16") + p_val(bf16_state) + b"b")),
                  ("w", torch_tensor("0", "BFloat16Storage", 4))])
    c.add("tz_build_bfloat16.pt", torch_zip(pkl, {"0": bf16_bytes([1.5, 2, 3, 4])}), R, "error",
          "BUILD on torch.bfloat16 with a dtype state of itemsize 1: if the table hands out NumPy's process-wide "
          "ml_dtypes descriptor, bf16 is 1 byte for the whole process (then heap corruption)")
    evil("tz_build_float32.pt", p_glob("torch", "float32") + p_val((3, "<", None, None, None, 2, 2, 0)) + b"b",
         "BUILD on torch.float32 (np.dtype('f4') descriptor) with elsize 2")
    evil("tz_build_float8.pt", p_glob("torch", "float8_e4m3fn") + p_val((3, "<", None, None, None, 4, 4, 64)) + b"b",
         "BUILD on torch.float8_e4m3fn with elsize 4")
    evil("tz_build_dtype_dict_state.pt", p_glob("torch", "bfloat16") + p_val({"itemsize": 1}) + b"b",
         "BUILD with a dict state on a dtype object")
    evil("tz_build_ordereddict_class.pt",
         p_glob("collections", "OrderedDict") + p_val((None, {"__repr__": 1, "keys": 2})) + b"b",
         "BUILD (slot state) on the class collections.OrderedDict itself")
    evil("tz_build_rebuild_function.pt",
         p_glob("torch._utils", "_rebuild_tensor_v2") + p_val((None, {"__defaults__": (1, 2, 3)})) + b"b",
         "BUILD (slot state) on the table function torch._utils._rebuild_tensor_v2: would set its __defaults__ process-wide")
    evil("tz_build_rebuild_function_dict.pt",
         p_glob("torch._utils", "_rebuild_tensor_v2") + p_val({"__code__": 1, "x": 2}) + b"b",
         "BUILD (dict state) on a table function: would update its __dict__ process-wide")
    evil("tz_build_storage_class.pt", p_glob("torch", "FloatStorage") + p_val((None, {"dtype": 1})) + b"b",
         "BUILD on the storage class torch.FloatStorage")
    evil("tz_build_on_tensor_junk.pt", torch_tensor("0").code + p_val(("x", 5)) + b"b",
         "BUILD on a tensor record with a state of the wrong shape (torch: TypeError; ignoring it is harmless)", expect="any")
    evil("tz_setstate_via_reduce.pt",
         p_glob("torch._utils", "_rebuild_tensor_v2") + b"(" + torch_tensor("0").code + p_str("x") + b"tR",
         "a table function called with arguments of the wrong kinds")
    # memo / length bombs
    evil("tz_memo_long_binput_2_26.pt", b"N" + b"r" + struct.pack("<I", 2**26) + b"0" + b"j" + struct.pack("<I", 2**26),
         "LONG_BINPUT/LONG_BINGET index 2**26 (legal; a list-backed memo grows to 1 GiB)", expect="any")
    evil("tz_memo_many_puts.pt", b"N" + b"".join(b"r" + struct.pack("<I", i * 4099) + b"0" for i in range(60_000)) + b"N",
         "60,000 LONG_BINPUTs at spread indices (a memo of 60,000 entries from 540 kB)", expect="any")
    evil("tz_memo_get_missing.pt", b"j" + struct.pack("<I", 12345), "LONG_BINGET of an index never put")
    evil("tz_binbytes8_2_40.pt", b"\x8e" + struct.pack("<Q", 2**40) + b"0123456789", "BINBYTES8 length 2**40, 10 bytes follow")
    evil("tz_binunicode8_2_40.pt", b"\x8d" + struct.pack("<Q", 2**40) + b"0123456789", "BINUNICODE8 length 2**40")
    evil("tz_binunicode_4g.pt", b"X" + struct.pack("<I", 2**32 - 1) + b"abc", "BINUNICODE length 2**32-1")
    evil("tz_bytearray8_2_40.pt", b"\x96" + struct.pack("<Q", 2**40) + b"0123456789", "BYTEARRAY8 length 2**40")
    evil("tz_long4_2_31.pt", b"\x8b" + struct.pack("<i", 2**31 - 1) + b"\x01" * 10, "LONG4 length 2**31-1")
    evil("tz_long4_negative.pt", b"\x8b" + struct.pack("<i", -5) + b"\x01" * 10, "LONG4 negative length")
    frame = b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"}" + b"."
    c.add("tz_frame_2_40.pt", torch_zip(frame, {"0": F4}), R, "error", "protocol 4 FRAME of length 2**40 before any byte")
    big_digits = "9" * 400_000
    evil("tz_long_text_400k_digits.pt", b"L" + big_digits.encode() + b"L\n", "LONG opcode with a 400,000-digit text int "
         "(pickle itself refuses > 4300 digits; converting it is quadratic)", expect="any")
    evil("tz_int_text_400k_digits.pt", b"I" + big_digits.encode() + b"\n", "INT opcode with a 400,000-digit text int", expect="any")
    evil("tz_long_text_5000_digits.pt", b"L" + b"9" * 5000 + b"L\n", "LONG opcode with 5000 digits (int() raises ValueError past 4300)",
         expect="any")
    evil("tz_long1_255_bytes.pt", b"\x8a\xff" + b"\xff" * 255, "LONG1 of 255 bytes (a 2040-bit int: legal)", expect="any")
    evil("tz_float_text_bad.pt", b"F" + b"1e99999x\n", "FLOAT opcode with text that is no float")
    evil("tz_unhashable_dict_key.pt", b"}" + b"]" + b"N" + b"s", "a dict with a list as key")
    evil("tz_set_of_lists.pt", b"\x8f(" + b"]]" + b"\x90", "a set of lists (ADDITEMS)")
    evil("tz_frozenset_of_dicts.pt", b"(}}\x91", "a frozenset of dicts")
    evil("tz_stack_underflow.pt", b"aaaa", "APPEND on an empty stack")
    evil("tz_pop_mark_without_mark.pt", b"1", "POP_MARK with no mark")
    # cycles, DAGs, depth
    dag = b"]q\x00" + b"0](h\x00h\x00eq\x00" * 40
    evil("tz_dag_shared_list_40.pt", dag, "a list holding the previous list twice, 40 levels: 2**40 paths through 41 lists "
         "(fine if sharing is kept; must not be walked path by path)", expect="any")
    evil("tz_self_cycle_dup.pt", b"]2a", "a list appended to itself through DUP (a cycle)", expect="any")
    evil("tz_self_cycle_dict.pt", b"}q\x00" + p_str("me") + b"h\x00s", "a dict holding itself (a cycle)", expect="any")
    deep = b"]" * 100_000 + b"a" * 99_999
    evil("tz_nested_lists_1e5.pt", deep, "lists nested 100,000 deep (EMPTY_LIST/APPEND)")
    evil("tz_nested_tuples_1e5.pt", b"(" * 50_000 + b")" + b"t" * 50_000, "MARK 50,000 deep, tuples nested")
    # tensors that lie
    def tensor_file(name: str, tensor: Raw, why: str, storages: dict[str, bytes] | None = None, expect: str = "error", **kw: Any) -> None:
        c.add(name, torch_zip(p_dict([("w", tensor)]), {"0": F4} if storages is None else storages), R, expect, why, **kw)

    tensor_file("tz_tensor_65_dims.pt", torch_tensor("0", size=(1,) * 65, stride=(1,) * 65), "a tensor of 65 dims")
    tensor_file("tz_tensor_stride_2_63.pt", torch_tensor("0", size=(2,), stride=(2**63,)), "stride 2**63")
    tensor_file("tz_tensor_negative_stride.pt", torch_tensor("0", offset=3, size=(4,), stride=(-1,)),
                "negative stride (torch has none)")
    tensor_file("tz_tensor_negative_size.pt", torch_tensor("0", size=(-4,), stride=(1,)), "negative size")
    tensor_file("tz_tensor_offset_beyond.pt", torch_tensor("0", offset=100, size=(4,), stride=(1,)),
                "storage offset 100 in a 4-element storage")
    tensor_file("tz_tensor_size_stride_overflow.pt", torch_tensor("0", size=(2**40, 2**40), stride=(2**40, 1)),
                "size*stride overflows 64 bits")
    tensor_file("tz_tensor_numel_exceeds_storage.pt", torch_tensor("0", numel=2**40, size=(4,), stride=(1,)),
                "storage claims 2**40 elements, 16 bytes stored")
    pkl = p_dict([(f"v{i}", torch_tensor("0", numel=1, size=(2**16, 2**14), stride=(0, 0))) for i in range(4)])
    c.add("tz_stride0_views_4gib.pt", torch_zip(pkl, {"0": F4[:4]}), R, "error",
          "four stride-0 views of one 4-byte storage, each claiming 4 GiB (charged as views wider than their storage)")
    tensor_file("tz_dtype_storage_missing.pt", torch_tensor("0", "Float99Storage"), "storage type torch.Float99Storage does not exist")
    evil("tz_dtype_name_missing.pt", p_glob("torch", "float1024"), "torch.float1024 does not exist")
    tensor_file("tz_persid_1_tuple.pt", torch_tensor("0", persid=b"(" + p_str("storage") + b"t"), "persistent id ('storage',)")
    tensor_file("tz_persid_not_tuple.pt", torch_tensor("0", persid=p_str("0")), "persistent id is a string")
    tensor_file("tz_persid_wrong_types.pt", torch_tensor("0", persid=p_val(("storage", 5, 7, None, "x"))),
                "persistent id with wrong field types")
    tensor_file("tz_persid_key_missing.pt", torch_tensor("7"), "storage key '7' has no member")
    tensor_file("tz_persid_key_traversal.pt", torch_tensor("../../../../etc/passwd"), "storage key that walks out of data/")
    # zip polyglots
    c.add("tz_datapkl_twice.pt", zip_bytes([
        {"name": "archive/data.pkl", "data": ok_pkl}, {"name": "archive/data/0", "data": F4, "align": 64},
        {"name": "archive/version", "data": b"3\n"},
        {"name": "archive/data.pkl", "data": p_dict([("w", torch_tensor("0")), ("evil", 1)])}]), R, "error",
        "archive/data.pkl twice (torch reads the first, a dict the second)", must_refuse=LEAK)
    c.add("tz_storage_twice.pt", zip_bytes([
        {"name": "archive/data.pkl", "data": ok_pkl}, {"name": "archive/data/0", "data": F4, "align": 64},
        {"name": "archive/data/0", "data": F4[::-1], "align": 64}, {"name": "archive/version", "data": b"3\n"}]),
        R, "error", "storage member archive/data/0 twice with different bytes", must_refuse=LEAK)
    c.add("tz_local_name_mismatch.pt", torch_zip(ok_pkl, None, extra=[
        {"name": "archive/data/0", "data": F4, "local": {"name": "archive/data/9"}}]), R, "error",
        "local header names archive/data/9, central directory archive/data/0", must_refuse=LEAK)
    c.add("tz_local_size_mismatch.pt", torch_zip(ok_pkl, None, extra=[
        {"name": "archive/data/0", "data": F4 + F4, "cd": {"csize": 16, "usize": 16}}]), R, "error",
        "local header says 32 bytes, central directory 16", must_refuse=LEAK)
    c.add("tz_local_method_mismatch.pt", torch_zip(ok_pkl, None, extra=[
        {"name": "archive/data/0", "data": F4, "local": {"method": 8}}]), R, "error",
        "local header says deflated, central directory stored", must_refuse=LEAK)
    c.add("tz_stored_size_past_eof.pt", torch_zip(p_dict([("w", torch_tensor("0", numel=2**28, size=(2**28,)))]), None, extra=[
        {"name": "archive/data/0", "data": F4, "local": {"csize": 2**30, "usize": 2**30}, "cd": {"csize": 2**30, "usize": 2**30}}]),
        R, "error", "a stored member of 1 GiB in a file of 400 bytes")
    evil_pkl = p_dict([("w", torch_tensor("0")), ("v", torch_tensor("1"))])
    inner_name = b"archive/data/1"
    fake_local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, DOS_TIME, DOS_DATE, zlib.crc32(F4[::-1]), 16, 16,
                             len(inner_name), 0) + inner_name + F4[::-1]
    outer = [{"name": "archive/data.pkl", "data": evil_pkl}, {"name": "archive/data/0", "data": F4 + fake_local},
             {"name": "archive/version", "data": b"3\n"}]
    pre = zip_bytes(outer[:1])
    pre_len = pre.index(b"PK\x01\x02")  # bytes before the central directory = where data/0's local header starts
    inner_offset = pre_len + 30 + len("archive/data/0") + 16
    c.add("tz_cd_points_into_member.pt", zip_bytes(outer, cd_extra=[
        {"name": "archive/data/1", "offset": inner_offset, "csize": 16, "usize": 16, "crc": zlib.crc32(F4[::-1])}]),
        R, "error", "a central-directory entry whose local header lies inside another member's data", must_refuse=LEAK)
    c.add("tz_two_prefixes.pt", zip_bytes([
        {"name": "a/data.pkl", "data": ok_pkl}, {"name": "a/data/0", "data": F4}, {"name": "a/version", "data": b"3\n"},
        {"name": "b/data.pkl", "data": p_dict([("w", torch_tensor("0")), ("b", 1)])}, {"name": "b/data/0", "data": F4[::-1]},
        {"name": "b/version", "data": b"3\n"}]), R, "error", "two torch archives (a/ and b/) in one zip", must_refuse=LEAK)
    c.add("tz_encrypted_member.pt", torch_zip(ok_pkl, None, extra=[
        {"name": "archive/data/0", "data": F4, "local": {"flags": 1}, "cd": {"flags": 1}}]), R, "error",
        "storage member flagged encrypted")
    c.add("tz_unknown_compression.pt", torch_zip(ok_pkl, None, extra=[
        {"name": "archive/data/0", "data": F4, "local": {"method": 99}, "cd": {"method": 99}}]), R, "error",
        "storage member with compression method 99")
    bomb, crc = deflate_repeated(b"\x00" * (1 << 20), 512)
    c.add("tz_deflated_storage_bomb.pt", torch_zip(p_dict([("w", torch_tensor("0", numel=2**28, size=(2**28,)))]), None, extra=[
        {"name": "archive/data/0", "method": 8, "raw": bomb, "crc": crc, "usize": 2**29}]), R, "error",
        "a deflated storage member of 512 MiB zeros in 0.5 MB")
    # TorchScript archive
    ts_pkl = b"\x80\x02" + p_glob("__torch__.Model", "Model") + b")\x81}(" + p_str("training") + b"\x88" + p_str("weight") + torch_tensor("0").code + b"ub."
    c.add("tz_torchscript.pt", zip_bytes([
        {"name": "archive/data.pkl", "data": ts_pkl},
        {"name": "archive/code/__torch__/Model.py", "data": f"class Model(Module):\n  def forward(self):\n    ops.aten.system('{c.cmd()}')\n".encode()},
        {"name": "archive/constants.pkl", "data": b"\x80\x02).", "method": 0},
        {"name": "archive/data/0", "data": F4}, {"name": "archive/version", "data": b"3\n"}]), R, "error",
        "a TorchScript archive (code/, constants.pkl, __torch__ classes)")
    c.add("tz_datapkl_not_pickle.pt", torch_zip(b"\x00\x01\x02 garbage", {"0": F4}), R, "error", "data.pkl is not a pickle")
    c.add("tz_datapkl_trailing_stop_missing.pt", torch_zip(ok_pkl[:-1], {"0": F4}), R, "error", "data.pkl without STOP")

    # legacy stream
    RL = "torch-legacy"
    leg_pkl = p_dict([("w", torch_tensor("0", legacy=True))])
    c.add("tl_valid.pt", torch_legacy(leg_pkl, {"0": F4}), RL, "ok", "control: a legacy (pre-1.6) torch.save stream")
    # the first pickle starts exactly as the magic number's (PROTO 2, LONG1 <magic>): sniffed as a legacy stream,
    # then POPs it, does its work, and pushes the magic number again before STOP
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    assert magic.endswith(b".") and magic.startswith(b"\x80\x02\x8a\x0a")

    def before_magic(code: bytes) -> bytes:
        return magic[:-1] + b"0" + code + b"0" + magic[2:]

    c.add("tl_payload_in_magic.pt", torch_legacy(leg_pkl, {"0": F4}, magic_pkl=before_magic(c.reduce_system())),
          RL, "error", "the magic-number pickle (its first 13 bytes genuine) calls os.system before pushing the magic (payload)")
    c.add("tl_build_bfloat16_before_magic.pt", torch_legacy(p_dict([("w", torch_tensor("0", "BFloat16Storage", legacy=True))]),
          {"0": bf16_bytes([1.5, 2, 3, 4]) * 2},
          magic_pkl=before_magic(p_glob("torch", "bfloat16") + p_val(bf16_state) + b"b")), RL, "error",
          "BUILD on torch.bfloat16 inside the magic-number pickle, before the magic number is checked")
    c.add("tl_memo_bomb_in_magic.pt", torch_legacy(leg_pkl, {"0": F4},
          magic_pkl=before_magic(b"Nr" + struct.pack("<I", 2**26))), RL, "any", "LONG_BINPUT 2**26 inside the magic pickle")
    c.add("tl_dag_in_magic.pt", torch_legacy(leg_pkl, {"0": F4},
          magic_pkl=before_magic(b"]q\x00" + b"0](h\x00h\x00eq\x00" * 40)), RL, "any",
          "a 40-level shared-list DAG built (then popped) inside the magic pickle")
    c.add("tl_payload_in_sys_info.pt", torch_legacy(leg_pkl, {"0": F4}, sys_info_pkl=b"\x80\x02" + c.eval_payload() + b"."),
          RL, "error", "the sys_info pickle calls builtins.eval (payload)")
    c.add("tl_storage_numel_huge.pt", torch_legacy(leg_pkl, {"0": F4}, numel_override={"0": 2**60}), RL, "error",
          "storage record claims 2**60 elements")
    c.add("tl_storage_keys_not_list.pt", torch_legacy(leg_pkl, {}) + pickle.dumps(5, 2), RL, "error",
          "storage '0' is named but never stored; junk where the storage keys belong")
    c.add("tl_payload_object.pt", torch_legacy(p_dict([("x", Raw(c.reduce_system())), ("w", torch_tensor("0", legacy=True))]),
          {"0": F4}), RL, "error", "legacy object pickle calls os.system (payload)")


def _npy_files(c: Corpus) -> None:
    R = "npy"
    c.add("npy_valid.npy", npy_array(np.arange(6, dtype="<f4").reshape(2, 3)), R, "ok", "control: a float32 .npy")
    descrs = {
        "npy_descr_U_huge.npy": ("'<U99999999999'", "string dtype of 4e11 bytes per item"),
        "npy_descr_subarray_2_40.npy": ("'(1099511627776,)f4'", "subarray dtype of 2**40 floats"),
        "npy_descr_struct_subarray.npy": ("[('a', '<f4', (1099511627776,))]", "structured field with a 2**40 subarray"),
        "npy_descr_V0.npy": ("'V0'", "void of size 0"),
        "npy_descr_S_negative.npy": ("'S-1'", "string dtype of size -1"),

        "npy_descr_timedelta_bad_unit.npy": ("'<m8[fortnight]'", "timedelta with an unknown unit"),
        "npy_descr_garbage.npy": ("'f4f4f4'", "dtype text NumPy cannot parse"),
        "npy_descr_int.npy": ("5", "descr is an int"),
        "npy_descr_none.npy": ("None", "descr is None (NumPy makes float64 of it)"),
        "npy_descr_dict_offset_2_40.npy": ("{'names': ['a'], 'formats': ['<f4'], 'offsets': [1099511627776], 'itemsize': 8}",
                                           "field at offset 2**40 in an 8-byte item"),
        "npy_descr_struct_dup_names.npy": ("[('a', '<f4'), ('a', '<f4')]", "a structured dtype naming field 'a' twice"),
        "npy_descr_struct_deep.npy": ("[('a', " * 1000 + "'<f4'" + ")]" * 1000, "structured dtype nested 1000 deep (header < 10 kB)"),
        "npy_descr_comma_string.npy": ("'<f4,<f4,' * 10000", "an expression, not a literal"),
        "npy_descr_object_in_struct.npy": ("[('a', '|O')]", "an object field inside a structured dtype (pickle-free claim)"),
    }
    for name, (descr, why) in descrs.items():
        c.add(name, npy_raw(descr, "(1,)", body=F4), R, "error", f"descr {why}")
    c.add("npy_descr_datetime_Y.npy", npy_raw("'<M8[Y]'", "(1,)", body=F4[:8]), R, "any",
          "datetime64[Y]: a valid .npy, not a tensor dtype; as torch it must be refused cleanly", ops={"load_torch": "error"})
    c.add("npy_descr_bfloat16_name.npy", npy_raw("'bfloat16'", "(2,)", body=F4[:4]), R, "any",
          "descr 'bfloat16' (an ml_dtypes name NumPy resolves once ml_dtypes is imported; np.save writes '<V2')")
    c.add("npy_shape_65_dims.npy", npy_raw("'<f4'", "(" + "1, " * 65 + ")"), R, "error", "shape of 65 dims")
    c.add("npy_shape_overflow.npy", npy_raw("'<f4'", "(4294967296, 4294967296, 4294967296)"), R, "error",
          "shape product overflows int64")
    c.add("npy_shape_overflow_zero.npy", npy_raw("'<f4'", "(0, 9223372036854775807, 9223372036854775807)", body=b""), R, "any",
          "zero-size array whose other dims overflow when multiplied")
    c.add("npy_shape_negative.npy", npy_raw("'<f4'", "(-4,)"), R, "error", "negative dim")
    c.add("npy_shape_not_tuple.npy", npy_raw("'<f4'", "'abc'"), R, "error", "shape is a string")
    c.add("npy_shape_float.npy", npy_raw("'<f4'", "(4.0,)"), R, "error", "shape holds a float")
    c.add("npy_shape_bool.npy", npy_raw("'<f4'", "(True, True, True, True)"), R, "error", "shape holds bools")
    c.add("npy_fortran_not_bool.npy", npy_raw("'<f4'", "(2, 2)", fortran="'yes'"), R, "error", "fortran_order is a string")
    c.add("npy_header_not_dict.npy", npy_header("[1, 2, 3]") + F4, R, "error", "header is a list")
    c.add("npy_header_missing_key.npy", npy_header("{'descr': '<f4', 'shape': (4,)}") + F4, R, "error", "no fortran_order")
    c.add("npy_header_extra_key.npy", npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}") + F4, R,
          "error", "an unknown header key")
    c.add("npy_header_deep_parens.npy", npy_header("(" * 2000 + ")" * 2000, version=2) + F4, R, "error",
          "header of 2000 nested parentheses, under NumPy's 10 kB header limit (literal_eval recursion)")
    c.add("npy_header_bad_utf8_v3.npy", npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", 3)
          .replace(b"descr", b"d\xffscr") + F4, R, "error", "version 3 header that is not UTF-8")
    c.add("npy_header_syntax_error.npy", npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (4,") + F4, R, "error",
          "header is not valid Python")
    c.add("npy_header_nul.npy", npy_header("{'descr': '<f4',\x00 'fortran_order': False, 'shape': (4,), }") + F4, R, "error",
          "a NUL inside the header")
    c.add("npy_version_99.npy", npy_raw("'<f4'").replace(b"\x93NUMPY\x01", b"\x93NUMPY\x63", 1), R, "error", "format version 99")
    c.add("npy_header_len_past_eof.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) + b"{'descr'", R, "error",
          "v2 header length 4 GiB in a 20-byte file")
    c.add("npy_huge_array_empty_body.npy", npy_raw("'<f8'", "(134217728,)", body=b""), R, "error",
          "1 GiB of float64 promised, no data")
    # object arrays
    c.add("npy_object_os_system.npy", npy_object(object_array_pickle(c.reduce_system())), R, "error",
          "object array whose pickle calls os.system (payload)")
    c.add("npy_object_eval.npy", npy_object(b"\x80\x02" + c.eval_payload() + b"."), R, "error",
          "object .npy whose pickle is builtins.eval (payload)")
    c.add("npy_object_dag_40.npy", npy_object(object_array_pickle(b"]q\x00" + b"0](h\x00h\x00eq\x00" * 40)), R, "any",
          "object array holding a list DAG 40 levels deep (2**40 paths; fine if sharing is kept)")
    c.add("npy_object_self_cycle.npy", npy_object(object_array_pickle(b"]2a")), R, "any",
          "object array holding a list that holds itself")
    c.add("npy_object_deep_1e5.npy", npy_object(object_array_pickle(b"]" * 100_000 + b"a" * 99_999)), R, "error",
          "object array holding lists nested 100,000 deep")
    c.add("npy_object_memo_2_26.npy", npy_object(object_array_pickle(b"Nr" + struct.pack("<I", 2**26))), R, "any",
          "object array pickle with LONG_BINPUT 2**26 (legal; a list-backed memo grows to 1 GiB)")
    c.add("npy_object_binbytes8.npy", npy_object(object_array_pickle(b"\x8e" + struct.pack("<Q", 2**40) + b"xx")), R, "error",
          "object array pickle with BINBYTES8 2**40")
    c.add("npy_object_build_dtype.npy",
          npy_object(object_array_pickle(p_glob("numpy", "dtype") + p_val(("f4", False, True)) + b"R"
                                          + p_val((3, "<", None, None, None, 2, 2, 0)) + b"b")), R, "error",
          "an element that is a dtype object (not plain data): np.dtype('f4'), the canonical descriptor, BUILT with elsize 2")
    c.add("npy_object_build_bf16_reduce.npy",
          npy_object(object_array_pickle(p_glob("numpy", "dtype") + p_val(("V2", False, True)) + b"R"
                                          + p_val((3, "<", None, None, None, 1, 1, 64)) + b"b")), R, "any",
          "np.dtype('V2') rebuilt and BUILT with elsize 1 (a fresh descriptor is harmless)")
    c.add("npy_object_unhashable.npy", npy_object(object_array_pickle(b"}]Ns")), R, "error", "object array: dict with list key")
    c.add("npy_object_shape_lies.npy", npy_object(pickle.dumps(np.array([1, 2], dtype=object), 3), shape="(1000000,)"), R, "any",
          "header says 10**6 objects, the pickle holds 2")
    c.add("npy_object_plain_ok.npy", npy_object(pickle.dumps(np.array([1, "a", None, 2.5], dtype=object), 3), shape="(4,)"),
          R, "ok", "control: an object array of plain Python values (NumPy's own pickle)")


def _npz_files(c: Corpus) -> None:
    R = "npz"
    good = npy_array(np.arange(4, dtype="<f4"))
    c.add("npz_valid.npz", npz([("a.npy", good), ("b.npy", npy_array(np.ones((2, 2), "<i8")))], 8), R, "ok", "control: two members")
    # 150 MB deflated under the 200x ratio
    rng = np.random.default_rng(9)
    chunk = np.zeros(1 << 20, np.uint8)
    idx = np.arange(0, 1 << 20, 4096)
    for k in range(16):
        chunk[(idx + k) % (1 << 20)] = rng.integers(0, 256, len(idx))

    def big_member(n_chunks: int) -> dict[str, Any]:
        header = npy_header(f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({n_chunks << 20},), }}")
        stream, crc = deflate_repeated(chunk.tobytes(), n_chunks, head=header)
        return {"name": "big.npy", "method": 8, "raw": stream, "crc": crc, "usize": len(header) + (n_chunks << 20)}

    c.add("npz_deflate_150mb.npz", zip_bytes([big_member(143)]), R, "error",
          "a deflated member expanding to 150 MB at ratio ~165 (under 200): over the default byte budget "
          "(4x file + 64 MiB); must not be read with several copies")
    c.add("npz_deflate_57mib.npz", zip_bytes([big_member(57)]), R, "ok",
          "a deflated member of 57 MiB at ratio ~165, within the default budget: loads with one copy (RSS < 256 MiB)")
    hdr = npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (134217728,), }")
    bomb, crc = deflate_repeated(b"\x00" * (1 << 20), 512, head=hdr)
    c.add("npz_size_lies.npz", zip_bytes([{"name": "x.npy", "method": 8, "raw": bomb, "crc": crc, "usize": 100}]), R, "error",
          "member declares 100 bytes, inflates to 512 MiB")
    c.add("npz_member_twice.npz", npz([("a.npy", good), ("a.npy", npy_array(np.zeros((3, 3), "<f8")))]), R, "error",
          "member a.npy twice (readers disagree on which wins)", must_refuse=LEAK)
    c.add("npz_non_npy_member.npz", npz([("a.npy", good), ("notes.txt", b"hello"), ("evil.pkl", b"\x80\x02" + c.reduce_system() + b".")]),
          R, "error", "members that are not .npy (a text file, a pickle)")
    c.add("npz_member_not_npy_content.npz", npz([("a.npy", b"\x80\x02" + c.reduce_system() + b".")]), R, "error",
          "a .npy member that is a pickle (payload)")
    c.add("npz_object_member.npz", npz([("a.npy", good), ("o.npy", npy_object(object_array_pickle(c.reduce_system())))]),
          R, "error", "object member whose pickle calls os.system (payload)")
    csr = [("indices.npy", npy_array(np.array([0, 2], "<i4"))), ("indptr.npy", npy_array(np.array([0, 1, 2], "<i4"))),
           ("format.npy", npy_array(np.array("csr"))), ("shape.npy", npy_array(np.array([2, 3], "<i8"))),
           ("data.npy", npy_array(np.array([1.0, 2.0], "<f8")))]
    c.add("npz_scipy_U3.npz", npz(csr, 8), R, "ok", "a scipy.sparse.save_npz file: a <U3 member 'format'; "
          "loads as NumPy, must be refused cleanly as torch", ops={"load_torch": "error"})
    c.add("npz_encrypted.npz", zip_bytes([{"name": "a.npy", "data": good, "local": {"flags": 1}, "cd": {"flags": 1}}]), R, "error",
          "member flagged encrypted (zipfile: RuntimeError)")
    c.add("npz_compression_99.npz", zip_bytes([{"name": "a.npy", "data": good, "local": {"method": 99}, "cd": {"method": 99}}]), R,
          "error", "compression method 99 (zipfile: NotImplementedError)")
    c.add("npz_bad_crc.npz", zip_bytes([{"name": "a.npy", "data": good, "crc": 1234}]), R, "error", "CRC-32 mismatch")
    c.add("npz_truncated_member.npz", zip_bytes([{"name": "a.npy", "data": good, "raw": good[:-8], "usize": len(good)}]), R, "error",
          "stored member shorter than the npy header promises")
    c.add("npz_local_mismatch.npz", zip_bytes([{"name": "a.npy", "data": good, "local": {"name": "b.npy"}}]), R, "error",
          "local header names b.npy, central directory a.npy")
    c.add("npz_cd_count_huge.npz", npz([("a.npy", good)])[:-22] + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 65535, 65535,
          0xFFFFFFFF, 0xFFFFFFFF, 0), R, "error", "end record with 65535 entries and a central directory past EOF")
    c.add("npz_descr_bad_member.npz", npz([("a.npy", good), ("b.npy", npy_raw("'<U99999999999'", "(1,)"))]), R, "error",
          "a member whose descr NumPy's parser chokes on")


def _mxnet_files(c: Corpus) -> None:
    R = "mxnet"
    c.add("mx_valid.params", mx_file([mx_dense((2, 2), 0, F4)], [b"arg:w"]), R, "ok", "control: one dense float32 array")
    c.add("mx_valid_row_sparse.params", mx_file([mx_sparse(1, (1, 4), (3, 4), 0, [(6, (1,))], F4, [i64(1)])], [b"w"]), R, "ok",
          "control: a row_sparse array whose dense shape fits")
    c.add("mx_row_sparse_dense_2_28.params", mx_file([mx_sparse(1, (1, 4), (2**28, 4), 0, [(6, (1,))], F4, [i64(0)])], [b"w"]),
          R, "error", "row_sparse with dense shape 2**28 x 4 (4 GiB) from ~130 bytes")
    c.add("mx_csr_dense_2_28.params", mx_file([mx_sparse(2, (1,), (2**28, 4), 0, [(6, (2**28 + 1,)), (6, (1,))], F4[:4],
                                                         [i64(0, 1) + b"", i64(0)])], [b"w"]), R, "error",
          "csr whose indptr claims 2**28+1 entries (not backed by data)")
    c.add("mx_csr_indptr_2_30.params", mx_file([mx_sparse(2, (1,), (1, 4), 0, [(6, (2,)), (6, (1,))], F4[:4],
                                                          [i64(0, 2**30), i64(0)])], [b"w"]), R, "error",
          "csr indptr [0, 2**30] for one stored value: np.repeat of 2**30 rows")
    c.add("mx_csr_dense_bomb_nnz0.params", mx_file([mx_sparse(2, (0,), (2**28, 4), 0, [(6, (2**28 + 1,)), (6, (0,))], b"",
                                                              [b"", b""])], [b"w"]), R, "error",
          "csr of no values whose dense shape is 4 GiB")
    c.add("mx_aux_shape_mismatch.params", mx_file([mx_sparse(1, (2, 4), (4, 4), 0, [(6, (5,))], F4 * 2, [i64(0, 1, 2, 3, 0)])], [b"w"]),
          R, "error", "row_sparse: 2 stored rows, 5 indices")
    c.add("mx_aux_type_bad.params", mx_file([mx_sparse(1, (1, 4), (4, 4), 0, [(99, (1,))], F4, [i64(0)])], [b"w"]), R, "error",
          "aux type flag 99")
    c.add("mx_aux_type_float.params", mx_file([mx_sparse(1, (1, 4), (4, 4), 0, [(0, (2,))], F4, [F4[:8]])], [b"w"]), R, "error",
          "row_sparse indices stored as float32")
    c.add("mx_row_index_out_of_range.params", mx_file([mx_sparse(1, (1, 4), (4, 4), 0, [(6, (1,))], F4, [i64(2**40)])], [b"w"]),
          R, "error", "row index 2**40 in a 4-row array")
    c.add("mx_row_index_negative.params", mx_file([mx_sparse(1, (1, 4), (4, 4), 0, [(6, (1,))], F4, [i64(-1)])], [b"w"]),
          R, "error", "row index -1 (NumPy would wrap it to the last row)")
    c.add("mx_storage_type_7.params", mx_file([mx_sparse(7, (1, 4), (4, 4), 0, [], F4, [])], [b"w"]), R, "error", "storage type 7")
    c.add("mx_type_flag_99.params", mx_file([mx_dense((4,), 99, F4)], [b"w"]), R, "error", "type flag 99")
    c.add("mx_type_flag_negative.params", mx_file([mx_dense((4,), -2, F4)], [b"w"]), R, "error", "type flag -2")
    c.add("mx_names_more.params", mx_file([mx_dense((4,), 0, F4)], [b"a", b"b"]), R, "error", "1 array, 2 names")
    c.add("mx_names_count_2_60.params", mx_file([mx_dense((4,), 0, F4)], [b"a"], names_count=2**60), R, "error", "name count 2**60")
    c.add("mx_name_length_2_63.params", mx_file([mx_dense((4,), 0, F4)], [b"a"], name_lengths=[2**63 - 1]), R, "error",
          "name length 2**63-1")
    c.add("mx_name_not_utf8.params", mx_file([mx_dense((4,), 0, F4)], [b"\xff\xfe\x00w"]), R, "any", "a name that is not UTF-8")
    c.add("mx_ndim_65.params", mx_file([mx_dense((1,) * 65, 0, F4[:4])], [b"w"]), R, "error", "65 dims")
    c.add("mx_dims_overflow.params", mx_file([mx_dense((2**62, 2**62), 0, F4)], [b"w"]), R, "error", "dims product overflows")
    c.add("mx_duplicate_names.params", mx_file([mx_dense((4,), 0, F4), mx_dense((4,), 0, F4)], [b"w", b"w"]), R, "error",
          "two arrays named w")


def _h5(path: Path, fill: Callable[[Any], None]) -> bytes:
    import h5py

    with h5py.File(path, "w", track_order=False) as f:  # earliest format: no timestamps in group headers
        fill(f)
    return path.read_bytes()


def _keras_zip(weights_h5: bytes) -> bytes:
    config = json.dumps({"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": []}}).encode()
    meta = json.dumps({"keras_version": "3.15.1", "date_saved": "1980-01-01@00:00:00"}).encode()
    return zip_bytes([{"name": "metadata.json", "data": meta}, {"name": "config.json", "data": config},
                      {"name": "model.weights.h5", "data": weights_h5}])


def _hdf5_files(c: Corpus) -> None:
    import h5py

    R = "hdf5"
    KR = "keras"
    tmp = c.folder / ".h5tmp"
    tmp.mkdir(exist_ok=True)
    counter = [0]

    def h5(fill: Callable[[Any], None]) -> bytes:
        counter[0] += 1
        return _h5(tmp / f"{counter[0]}.h5", fill)

    def ds(f: Any, name: str, data: Any, **kw: Any) -> Any:
        return f.create_dataset(name, data=data, track_times=False, **kw)

    def valid(f: Any) -> None:
        ds(f, "layers/dense/vars/0", np.arange(6, dtype="<f4").reshape(2, 3))
        ds(f, "layers/dense/vars/1", np.zeros(3, "<f4"))

    c.add("h5_valid.weights.h5", h5(valid), R, "ok", "control: Keras 3 weights layout")
    src = c.add("h5_vds_source.h5", h5(lambda f: ds(f, "data", np.arange(4, dtype="<f4"))), R, "ok",
                "control: an ordinary HDF5 file (the source the virtual dataset and the external link point at)")
    src_abs = str(src.resolve())

    def external(target: str, name: str = "layers/dense/vars/0") -> Callable[[Any], None]:
        def fill(f: Any) -> None:
            ds(f, "layers/dense/vars/1", np.zeros(3, "<f4"))
            f.create_dataset(name, shape=(64,), dtype="u1", external=[(target, 0, 64)], track_times=False)
        return fill

    ext_abs = h5(external("/etc/passwd"))
    ext_rel = h5(external("../../../../../../../../etc/passwd"))
    c.add("h5_external_abs.h5", ext_abs, R, "error", "dataset with external storage in /etc/passwd (absolute)", must_refuse=LEAK)
    c.add("h5_external_rel.weights.h5", ext_rel, R, "error", "external storage ../../(...)/etc/passwd (relative)", must_refuse=LEAK)
    c.add("h5_external_self.h5", h5(external("h5_vds_source.h5")), R, "error",
          "external storage naming a file beside it (read as raw bytes)", must_refuse=LEAK)

    def vds(f: Any) -> None:
        layout = h5py.VirtualLayout(shape=(4,), dtype="<f4")
        layout[:] = h5py.VirtualSource(src_abs, "data", shape=(4,))
        f.create_virtual_dataset("layers/dense/vars/0", layout, fillvalue=0)

    vds_bytes = h5(vds)
    c.add("h5_virtual_dataset.h5", vds_bytes, R, "error", f"virtual dataset mapping another HDF5 file ({src_abs})", must_refuse=LEAK)

    def ext_link(f: Any) -> None:
        ds(f, "own", np.zeros(2, "<f4"))
        f["linked"] = h5py.ExternalLink(src_abs, "/data")

    c.add("h5_external_link.h5", h5(ext_link), R, "error", "an external link to another HDF5 file", must_refuse=LEAK)

    def soft_cycle(f: Any) -> None:
        ds(f, "w", np.zeros(2, "<f4"))
        f["a"] = h5py.SoftLink("/b")
        f["b"] = h5py.SoftLink("/a")

    c.add("h5_softlink_cycle.h5", h5(soft_cycle), R, "error", "soft links a -> b -> a")

    def soft_to_group_cycle(f: Any) -> None:
        g = f.create_group("g")
        ds(g, "w", np.zeros(2, "<f4"))
        g["up"] = h5py.SoftLink("/g")

    c.add("h5_softlink_group_cycle.h5", h5(soft_to_group_cycle), R, "error", "a soft link from a group to itself")

    def hard_cycle(f: Any) -> None:
        g = f.create_group("g")
        ds(g, "w", np.zeros(2, "<f4"))
        g["loop"] = g

    c.add("h5_hardlink_cycle.h5", h5(hard_cycle), R, "error", "a group holding a hard link to itself (issue 9: refuse link cycles)")

    def big_chunk(f: Any) -> None:
        d = f.create_dataset("x", shape=(1,), maxshape=(None,), chunks=(2**28,), dtype="<i2", compression="gzip",
                             track_times=False)
        stream, _ = deflate_repeated(b"\x00" * (1 << 24), 32, zlib_wrapper=True)
        d.id.write_direct_chunk((0,), stream)

    c.add("h5_chunk_2_28.h5", h5(big_chunk), R, "error", "a dataset of one int16 whose (gzip) chunk is 2**28 elements (512 MiB)")

    def big_chunk_plain(f: Any) -> None:
        f.create_dataset("x", shape=(1,), maxshape=(None,), chunks=(2**28,), dtype="<i4", track_times=False)

    c.add("h5_chunk_2_28_unwritten.h5", h5(big_chunk_plain), R, "any",
          "a dataset of one int32, chunk 2**28 elements, never written (one element to fill)")

    def fill_value(f: Any) -> None:
        f.create_dataset("x", shape=(2**28,), dtype="<f4", fillvalue=1.5, chunks=(2**20,), track_times=False)

    c.add("h5_fill_value_1gib.h5", h5(fill_value), R, "error", "a never-written 1 GiB dataset with a fill value")

    def fill_contig(f: Any) -> None:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_fill_value(np.array(2.5, "<f8"))
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_LATE)
        dcpl.set_obj_track_times(False)
        h5py.h5d.create(f.id, b"x", h5py.h5t.IEEE_F64LE, h5py.h5s.create_simple((2**27,)), dcpl=dcpl)

    c.add("h5_fill_contiguous_1gib.h5", h5(fill_contig), R, "error", "a contiguous, never-allocated 1 GiB dataset")

    def gzip_bomb(f: Any) -> None:
        d = f.create_dataset("x", shape=(2**26,), dtype="<f4", chunks=(2**18,), compression="gzip", track_times=False)
        chunk = zlib.compress(b"\x00" * (1 << 20), 9)
        for i in range(256):
            d.id.write_direct_chunk((i * 2**18,), chunk)

    c.add("h5_gzip_bomb.h5", h5(gzip_bomb), R, "error", "256 gzip chunks of 1 MiB zeros (256 MiB from ~300 KB)")

    def unknown_filter(f: Any) -> None:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((4,))
        dcpl.set_filter(32999, h5py.h5z.FLAG_OPTIONAL, ())
        dcpl.set_obj_track_times(False)
        d = h5py.h5d.create(f.id, b"x", h5py.h5t.IEEE_F32LE, h5py.h5s.create_simple((4,)), dcpl=dcpl)
        d.write_direct_chunk((0,), F4)

    c.add("h5_unknown_filter.h5", h5(unknown_filter), R, "error", "a chunk compressed with filter 32999 (not registered)")

    def vlen_str(f: Any) -> None:
        ds(f, "w", np.zeros(2, "<f4"))
        f.create_dataset("s", data=np.array(["a", "bc"], dtype=h5py.string_dtype()), track_times=False)

    c.add("h5_vlen_strings.h5", h5(vlen_str), R, "any", "a dataset of variable-length strings next to a tensor")

    def refs(f: Any) -> None:
        d = ds(f, "w", np.zeros(2, "<f4"))
        f.create_dataset("r", data=np.array([d.ref], dtype=h5py.ref_dtype), track_times=False)

    c.add("h5_object_refs.h5", h5(refs), R, "any", "a dataset of object references")

    def compound(f: Any) -> None:
        ds(f, "c", np.zeros(2, dtype=[("a", "<f4"), ("b", "<i8")]))

    c.add("h5_compound.h5", h5(compound), R, "any", "a compound-dtype dataset")

    def many_dims(f: Any) -> None:
        f.create_dataset("x", shape=(1,) * 32, dtype="<f4", track_times=False)

    c.add("h5_32_dims.h5", h5(many_dims), R, "any", "a dataset of 32 dims (HDF5's maximum)")

    # .keras archives
    c.add("keras_valid.keras", _keras_zip(h5(valid)), KR, "ok", "control: a .keras archive")
    c.add("keras_external_abs.keras", _keras_zip(ext_abs), KR, "error", "model.weights.h5 with external storage in /etc/passwd",
          must_refuse=LEAK)
    c.add("keras_external_rel.keras", _keras_zip(ext_rel), KR, "error", "model.weights.h5 with relative external storage",
          must_refuse=LEAK)
    c.add("keras_virtual_dataset.keras", _keras_zip(vds_bytes), KR, "error", "model.weights.h5 with a virtual dataset",
          must_refuse=LEAK)
    c.add("keras_fill_value_1gib.keras", _keras_zip(h5(fill_value)), KR, "error", "model.weights.h5 with a 1 GiB fill value")
    weights = h5(valid)
    c.add("keras_weights_twice.keras", zip_bytes([
        {"name": "config.json", "data": b"{}"}, {"name": "model.weights.h5", "data": weights},
        {"name": "model.weights.h5", "data": ext_abs}]), KR, "error", "model.weights.h5 twice (the second has external storage)",
        must_refuse=LEAK)
    c.add("keras_weights_not_h5.keras", zip_bytes([{"name": "config.json", "data": b"{}"},
                                                    {"name": "model.weights.h5", "data": b"\x89HDF\r\n\x1a\n" + b"\x00" * 100}]),
          KR, "error", "model.weights.h5 is a truncated HDF5 file")
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()


def _gguf_files(c: Corpus) -> None:
    R = "gguf"
    arch = g_kv("general.architecture", G_STRING, g_str("llama"))
    t = g_tensor("w", (4,), 0, 0)
    c.add("gguf_valid.gguf", gguf([arch], [t], F4 + b"\x00" * 16), R, "ok", "control: one float32 tensor")
    c.add("gguf_tensor_count_2_60.gguf", gguf([arch], [t], F4, n_tensors=2**60), R, "error", "tensor count 2**60")
    c.add("gguf_kv_count_2_60.gguf", gguf([arch], [t], F4, n_kv=2**60), R, "error", "key/value count 2**60")
    c.add("gguf_key_length_2_60.gguf", gguf([g_str("general.architecture", 2**60)], [t], F4), R, "error", "key string length 2**60")
    c.add("gguf_string_value_2_60.gguf", gguf([g_kv("general.architecture", G_STRING, g_str("llama", 2**60))], [t], F4), R, "error",
          "string value length 2**60")
    c.add("gguf_array_length_2_60.gguf", gguf([arch, g_kv("tokenizer.ggml.scores", G_ARRAY, struct.pack("<IQ", 6, 2**60) + F4)],
                                              [t], F4), R, "error", "array of 2**60 float32")
    nested = struct.pack("<IQ", G_ARRAY, 1) * 20000 + struct.pack("<IQ", G_U32, 1) + struct.pack("<I", 1)
    c.add("gguf_nested_arrays.gguf", gguf([arch, g_kv("x", G_ARRAY, nested)], [t], F4), R, "error", "arrays nested 20,000 deep")
    c.add("gguf_offset_past_eof.gguf", gguf([arch], [g_tensor("w", (4,), 0, 2**40)], F4), R, "error", "tensor offset 2**40")
    c.add("gguf_size_past_eof.gguf", gguf([arch], [g_tensor("w", (2**30,), 0, 0)], F4), R, "error", "tensor of 4 GiB in a small file")
    c.add("gguf_alignment_0.gguf", gguf([arch, g_kv("general.alignment", G_U32, struct.pack("<I", 0))], [t], F4, alignment=0), R,
          "error", "general.alignment 0")
    c.add("gguf_alignment_3.gguf", gguf([arch, g_kv("general.alignment", G_U32, struct.pack("<I", 3))], [t], F4, alignment=3), R,
          "error", "general.alignment 3 (not a power of two)")
    c.add("gguf_alignment_string.gguf", gguf([arch, g_kv("general.alignment", G_STRING, g_str("32"))], [t], F4), R, "error",
          "general.alignment is a string")
    c.add("gguf_ndims_2_31.gguf", gguf([arch], [g_tensor("w", (4,), 0, 0, n_dims=2**31)], F4), R, "error", "n_dims 2**31")
    c.add("gguf_dims_overflow.gguf", gguf([arch], [g_tensor("w", (2**62, 2**62), 0, 0)], F4), R, "error", "dims product overflows")
    c.add("gguf_dim_zero_huge.gguf", gguf([arch], [g_tensor("w", (0, 2**63), 0, 0)], F4), R, "any", "zero-size tensor, other dim 2**63")
    c.add("gguf_type_999.gguf", gguf([arch], [g_tensor("w", (4,), 999, 0)], F4), R, "error", "ggml type 999")
    c.add("gguf_value_type_99.gguf", gguf([arch, g_kv("x", 99, b"\x00" * 8)], [t], F4), R, "error", "value type 99")
    c.add("gguf_duplicate_tensor.gguf", gguf([arch], [t, g_tensor("w", (4,), 0, 32)], F4 + b"\x00" * 16 + F4[::-1]), R, "error",
          "tensor w twice")
    c.add("gguf_overlapping_tensors.gguf", gguf([arch], [t, g_tensor("v", (8,), 0, 0)], F4 + F4), R, "error",
          "two tensors over the same bytes")
    c.add("gguf_key_not_utf8.gguf", gguf([arch, g_kv(b"\xff\xfekey", G_U32, struct.pack("<I", 1))], [t], F4), R, "any", "a key that is not UTF-8")
    c.add("gguf_version_99.gguf", gguf([arch], [t], F4, version=99), R, "error", "GGUF version 99")
    c.add("gguf_truncated_header.gguf", b"GGUF" + struct.pack("<I", 3) + b"\x01", R, "error", "header cut inside the counts")


def _safetensors_files(c: Corpus) -> None:
    R = "safetensors"
    c.add("st_valid.safetensors", st_bytes({"a": ("F32", [4], F4)}, {"format": "pt"}), R, "ok", "control: a plain safetensors file")
    n = 0x8A0280  # little-endian 80 02 8a 00 ...: the first bytes of a legacy torch pickle (PROTO 2, LONG1)
    body = st_bytes({"a": ("F32", [2, 2], F4)}, None, header_pad_to=n)
    assert body[:3] == b"\x80\x02\x8a", body[:8]
    c.add("st_len_80028a.safetensors", body, R, "ok",
          "a VALID safetensors file whose 8-byte header length starts with 80 02 8a (a legacy torch pickle's first bytes); "
          "must load as safetensors (sniffing must prefer a header that parses)")
    c.add("st_header_len_2_40.safetensors", struct.pack("<Q", 2**40) + b'{"a":1}', R, "error", "header length 2**40")
    c.add("st_header_len_1e8.safetensors", struct.pack("<Q", 100_000_000) + b"{}      ", R, "error",
          "header length 10**8 (the limit), file of 16 bytes")
    c.add("st_shape_65_dims.safetensors", st_bytes({"a": ("F32", [1] * 65, F4[:4])}), R, "error", "a tensor of 65 dims")
    c.add("st_shape_zero_huge.safetensors", st_bytes({"a": ("F32", [0, 2**62], b"")}), R, "any",
          "zero-size tensor whose other dim is 2**62")
    c.add("st_dtype_object.safetensors", st_bytes({"a": ("O", [4], F4)}), R, "error", "dtype 'O'")
    c.add("st_name_nul.safetensors", st_bytes({"a\x00b": ("F32", [4], F4)}), R, "any", "a tensor name holding NUL")
    c.add("st_deep_metadata.safetensors", struct.pack("<Q", 80_000) + (b'{"__metadata__":' + b"[" * 39_980 + b"]" * 39_980 + b"}")[:80_000]
          .ljust(80_000, b" "), R, "error", "__metadata__ nested 40,000 deep")
    h = b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,' + b"0" * 4990 + b'16]}}'
    h += b" " * (-len(h) % 8)
    c.add("st_huge_int_offset.safetensors", struct.pack("<Q", len(h)) + h + F4, R, "any",
          "an offset written with 5000 digits (Python's str->int limit is 4300; the JSON is valid)")
    h = b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,' + b"9" * 5000 + b']}}'
    h += b" " * (-len(h) % 8)
    c.add("st_huge_int_offset_value.safetensors", struct.pack("<Q", len(h)) + h + F4, R, "error",
          "an offset of 5000 nines (past the end; Python's str->int limit is 4300 digits)")
    tensors = {"a": ("F32", [4], F4)}
    root = '{"type":"tensor","name":"a"}'
    c.add("tf_valid.tensorfile", tensorfile_bytes(tensors, root), "tensorfile", "ok", "control: a tensorfile with its record")
    deep_root = '{"type":"list","items":[' * 20_000 + root + "]}" * 20_000
    c.add("tf_record_deep.tensorfile", tensorfile_bytes(tensors, deep_root), "tensorfile", "error",
          "record whose structure nests 20,000 lists (header checksum correct)")
    deep_key = '{"type":"dict","items":[[' + '{"type":"tuple","items":[' * 5000 + '{"type":"int","value":1}' + "]}" * 5000 + "," + root + "]]}"
    c.add("tf_record_deep_key.tensorfile", tensorfile_bytes(tensors, deep_key), "tensorfile", "error",
          "a dict key of tuples nested 5000 deep")
    two = {"a": ("F32", [4], F4), "b": ("F32", [4], F4)}
    root2 = '{"type":"list","items":[{"type":"tensor","name":"a"},{"type":"tensor","name":"b"}]}'
    shared = '[{"nbytes":1099511627776,"members":[{"name":"a","offset":0,"strides":[1]},{"name":"b","offset":1099511627760,"strides":[1]}]}]'
    c.add("tf_shared_2_40.tensorfile", tensorfile_bytes(two, root2, shared_json=shared), "tensorfile", "any",
          "a shared group claiming a storage of 2**40 bytes (spec: a reader MAY load members separately; must not allocate it)")
    shared_bad = '[{"nbytes":1099511627776,"members":[{"name":"a","offset":0,"strides":[274877906944]},{"name":"b","offset":0,"strides":[1]}]}]'
    c.add("tf_shared_2_40_strides.tensorfile", tensorfile_bytes(two, root2, shared_json=shared_bad), "tensorfile", "error",
          "a shared group over 2**40 bytes whose member has stride 2**38 (bytes disagree where they overlap)")
    shared_neg = '[{"nbytes":16,"members":[{"name":"a","offset":0,"strides":[-1]},{"name":"b","offset":0,"strides":[1]}]}]'
    c.add("tf_shared_negative_out.tensorfile", tensorfile_bytes(two, root2, shared_json=shared_neg), "tensorfile", "error",
          "a member with a negative stride from offset 0 (extent below the storage)")
    big_int = '{"type":"list","items":[' + root + ',{"type":"int","value":' + "7" * 100_000 + "}]}"
    c.add("tf_int_100k_digits.tensorfile", tensorfile_bytes(tensors, big_int), "tensorfile", "any",
          "an int node of 100,000 digits (spec: exact ints; Python's str->int limit is 4300 digits)")
    many_items = '{"type":"list","items":[' + ",".join([root] * 25_000) + "]}"
    c.add("tf_root_25k_refs.tensorfile", tensorfile_bytes(tensors, many_items), "tensorfile", "any",
          "a list naming the same tensor 25,000 times (one object, shared)")


def _index_files(c: Corpus) -> None:
    R = "sharded"
    shard = st_bytes({"a": ("F32", [4], F4)})

    def index(folder: str, weight_map: dict[str, str], extra_files: dict[str, bytes] | None = None, name: str = "model.safetensors.index.json") -> str:
        (c.folder / folder).mkdir(exist_ok=True)
        for fn, data in (extra_files or {}).items():
            (c.folder / folder / fn).write_bytes(data)
        doc = {"metadata": {"total_size": 16}, "weight_map": weight_map}
        (c.folder / folder / name).write_text(json.dumps(doc))
        return f"{folder}/{name}"

    c.add(index("idx_valid", {"a": "model-00001.safetensors"}, {"model-00001.safetensors": shard}), None, R, "ok",
          "control: an index and its one shard")
    c.add(index("idx_self", {"a": "model.safetensors.index.json"}), None, R, "error", "weight_map names the index itself")
    c.add(index("idx_mutual", {"a": "other.safetensors.index.json"}), None, R, "error", "index names another index, which names it")
    (c.folder / "idx_mutual" / "other.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"a": "model.safetensors.index.json"}}))
    (c.folder / "outside.safetensors").write_bytes(shard)
    c.add(index("idx_outside", {"a": "../outside.safetensors"}), None, R, "error",
          "weight_map names a real safetensors file outside the folder", must_refuse=LEAK)
    c.add(index("idx_absolute", {"a": str((c.folder / "outside.safetensors").resolve())}), None, R, "error",
          "weight_map names a shard by absolute path", must_refuse=LEAK)
    c.add(index("idx_etc_passwd", {"a": "/etc/passwd"}), None, R, "error", "weight_map names /etc/passwd", must_refuse=LEAK)
    c.add(index("idx_missing_shard", {"a": "model-00001.safetensors"}), None, R, "error", "the shard does not exist")
    c.add(index("idx_tensor_missing", {"a": "s.safetensors", "zz": "s.safetensors"}, {"s.safetensors": shard}), None, R, "error",
          "weight_map names a tensor the shard lacks")
    c.add(index("idx_shard_extra_tensor", {}, {"s.safetensors": shard}), None, R, "any", "an empty weight_map")
    (c.folder / "idx_million").mkdir(exist_ok=True)
    (c.folder / "idx_million" / "s").write_bytes(shard)
    body = '{"metadata":{},"weight_map":{"a":"s",' + ",".join(f'"{i:x}":"s"' for i in range(1, 10**6)) + "}}"
    (c.folder / "idx_million" / "model.safetensors.index.json").write_text(body)
    c.add("idx_million/model.safetensors.index.json", None, R, "error",
          "10**6 weight_map entries, all naming one shard that holds one tensor")
    (c.folder / "idx_not_dict").mkdir(exist_ok=True)
    (c.folder / "idx_not_dict" / "model.safetensors.index.json").write_text('{"weight_map": [1, 2, 3]}')
    c.add("idx_not_dict/model.safetensors.index.json", None, R, "error", "weight_map is a list")
    (c.folder / "idx_deep").mkdir(exist_ok=True)
    (c.folder / "idx_deep" / "model.safetensors.index.json").write_text('{"weight_map": ' + "[" * 100_000 + "]" * 100_000 + "}")
    c.add("idx_deep/model.safetensors.index.json", None, R, "error", "weight_map nested 100,000 deep")
    c.add(index("idx_nonstring_shard", {"a": 5}), None, R, "error", "a shard name that is an int")  # type: ignore[dict-item]
    # the Hugging Face cache: shards are symlinks into ../blobs (outside the folder): must load
    (c.folder / "blobs").mkdir(exist_ok=True)
    (c.folder / "blobs" / "5f1b0e2c").write_bytes(shard)
    c.add("blobs/5f1b0e2c", None, R, "ok", "control: a safetensors blob (no suffix), as in the Hugging Face cache")
    (c.folder / "idx_hf_cache").mkdir(exist_ok=True)
    link = c.folder / "idx_hf_cache" / "model-00001.safetensors"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to("../blobs/5f1b0e2c")
    c.add(index("idx_hf_cache", {"a": "model-00001.safetensors"}), None, R, "ok",
          "control: a shard that is a symlink into ../blobs, as the Hugging Face cache lays it out")


def build(folder: str | os.PathLike[str]) -> list[Path]:
    """Write the corpus and ``manifest.json`` into ``folder`` (created); returns the corpus files' paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = Corpus(folder)
    if c.marker.exists():
        c.marker.unlink()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _torch_files(c)
        _npy_files(c)
        _npz_files(c)
        _mxnet_files(c)
        _hdf5_files(c)
        _gguf_files(c)
        _safetensors_files(c)
        _index_files(c)
    (folder / MANIFEST_NAME).write_text(json.dumps(c.manifest, indent=1, sort_keys=True))
    return c.paths


def load_manifest(folder: str | os.PathLike[str]) -> tuple[Path, dict[str, dict[str, Any]]]:
    """(marker path, {file: entry}) of a corpus ``build`` wrote."""
    return marker_path(folder), json.loads((Path(folder) / MANIFEST_NAME).read_text())


if __name__ == "__main__":
    import time

    t = time.perf_counter()
    out = build(sys.argv[1] if len(sys.argv) > 1 else "hostile-corpus")
    print(f"wrote {len(out)} files in {time.perf_counter() - t:.1f} s")
