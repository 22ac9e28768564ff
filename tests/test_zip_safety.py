"""Zip archives that disagree with themselves are refused before a member is read (formats/_zip.py).

The archives are built byte by byte (PKWARE APPNOTE 4.3.7, 4.3.12, 4.3.16) so each
test breaks exactly one rule; ``.npz`` files also go through ``tensorfile.load``.
"""

from __future__ import annotations

import gc
import io
import os
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import tensorfile
from conftest import FIXTURES
from tensorfile.errors import FormatError, IntegrityError, LimitError, TensorFileError
from tensorfile.formats._zip import MEMBER_BYTES, check_zip, member_array, member_count, open_zip, read_member_into
from tensorfile.formats.npy import read_npz
from tensorfile.limits import DEFAULT_LIMITS, Limits


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, array, allow_pickle=False)
    return out.getvalue()


class Member:
    """One member as a writer lays it out; every field may be set to disagree with the others."""

    def __init__(self, member_name: str, data: bytes, *, deflate: bool = False, **local: object) -> None:
        self.name, self.usize, self.crc = member_name.encode(), len(data), zlib.crc32(data)
        self.method = 8 if deflate else 0
        if deflate:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            data = c.compress(data) + c.flush()
        self.data, self.flags = data, 0
        self.local = local  # overrides of local header fields: name, method, crc, csize, usize, flags

    def local_header(self) -> bytes:
        get = self.local.get
        name = get("name", self.name)
        return struct.pack(
            "<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, get("flags", self.flags), get("method", self.method), 0, 33,
            get("crc", self.crc), get("csize", len(self.data)), get("usize", self.usize), len(name), 0,
        ) + name  # fmt: skip

    def central(self, offset: int, **over: object) -> bytes:
        get = over.get
        return struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 0, 20, 0, get("flags", self.flags), self.method, 0, 33,
            get("crc", self.crc), get("csize", len(self.data)), get("usize", self.usize), len(self.name), 0, 0, 0, 0,
            0, offset,
        ) + self.name  # fmt: skip


def build(members: list[Member], *, central: list[tuple[Member, int, dict]] | None = None) -> bytes:
    """Local headers and data in order, then the central directory (by default one entry per member, at its offset)."""
    out, offsets = b"", []
    for m in members:
        offsets.append(len(out))
        out += m.local_header() + m.data
    entries = central if central is not None else [(m, off, {}) for m, off in zip(members, offsets)]
    cd = b"".join(m.central(off, **over) for m, off, over in entries)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(cd), len(out), 0)
    return out + cd + eocd


def write(tmp_path: Path, raw: bytes, name: str = "f.npz") -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def refused(path: Path, error: type = FormatError, match: str | None = None, *,
            load_match: bool = True) -> TensorFileError:  # fmt: skip
    """Assert open_zip, and tensorfile.load (which must not read around the check), refuse ``path``."""
    budget = DEFAULT_LIMITS.budget(str(path), path.stat().st_size)
    with pytest.raises(error, match=match) as info:
        open_zip(str(path), budget).close()
    assert str(path) in str(info.value)
    with pytest.raises(error, match=match if load_match else None) as again:
        tensorfile.load(path)
    assert str(path) in str(again.value)
    return info.value


A = npy_bytes(np.arange(6, dtype=np.float32))
B = npy_bytes(np.arange(3, dtype=np.int64))


def test_a_well_formed_hand_made_archive_reads(tmp_path):
    path = write(tmp_path, build([Member("a.npy", A), Member("b.npy", B, deflate=True)]))
    value = tensorfile.load(path)
    assert value["a"].tolist() == [0, 1, 2, 3, 4, 5] and value["b"].tolist() == [0, 1, 2]


def test_duplicate_member_names_are_refused(tmp_path):
    # torch (miniz) reads the first "a.npy", zipfile the last: a polyglot
    other = npy_bytes(np.full(6, 9, dtype=np.float32))
    path = write(tmp_path, build([Member("a.npy", A), Member("a.npy", other)]))
    error = refused(path, match="'a.npy' appears twice")
    assert "member" in str(error)


def test_duplicate_names_written_by_zipfile_itself(tmp_path):
    path = tmp_path / "dup.npz"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "w") as zf:
        zf.writestr("w.npy", A)
        zf.writestr("w.npy", B)
    refused(path, match="appears twice")


def test_local_header_naming_another_member(tmp_path):
    path = write(tmp_path, build([Member("a.npy", A, name=b"b.npy")]))
    refused(path, match="local header names b'b.npy'")


def test_local_header_with_another_compression_method(tmp_path):
    path = write(tmp_path, build([Member("a.npy", A, method=8)]))
    refused(path, match="compression method 8 in its local header")


def test_local_header_with_another_crc_or_size(tmp_path):
    refused(write(tmp_path, build([Member("a.npy", A, crc=1234)])), match="CRC-32 0x000004d2 in its local header")
    refused(write(tmp_path, build([Member("a.npy", A, usize=7)])), match="sizes .* in its local header")


def test_data_descriptor_flag_skips_the_local_sizes(tmp_path):
    # bit 3: CRC and sizes follow the data; the local header may hold zeros (zipfile reads the central ones)
    m = Member("a.npy", A, flags=0x8, crc=0, csize=0, usize=0)
    m.flags = 0x8
    path = write(tmp_path, build([m]))
    assert tensorfile.load(path)["a"].tolist() == [0, 1, 2, 3, 4, 5]


def test_encrypted_members_are_refused(tmp_path):
    m = Member("a.npy", A)
    m.flags = 0x1
    refused(write(tmp_path, build([m])), match="encrypted")


def test_other_compression_methods_are_refused(tmp_path):
    path = tmp_path / "bz.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("a.npy", A)
    refused(path, match="compression method 12")


def test_nul_in_a_member_name(tmp_path):
    refused(write(tmp_path, build([Member("a.npy\x00x", A)])), match="NUL")


def test_member_running_into_the_central_directory(tmp_path):
    m = Member("a.npy", A, csize=len(A) + 40, usize=len(A) + 40)
    m.usize = len(A) + 40
    raw = build([m], central=[(m, 0, {"csize": len(A) + 40})])
    refused(write(tmp_path, raw), match="run past the start of the central directory")


def test_no_local_header_at_the_offset(tmp_path):
    m = Member("a.npy", A)
    raw = build([m], central=[(m, 7, {})])
    refused(write(tmp_path, raw), match="no local file header at byte 7")


def test_overlapping_members_are_refused(tmp_path):
    # member a's stored data holds all of member b (local header and data); the central directory lists both
    inner = Member("b.npy", B)
    outer = Member("a.npy", inner.local_header() + inner.data)
    raw = build([outer], central=[(outer, 0, {}), (inner, 30 + len("a.npy"), {})])
    refused(write(tmp_path, raw), match="members 'a.npy' and 'b.npy' overlap")


def test_not_a_zip_and_a_truncated_zip_are_format_errors(tmp_path):
    refused(write(tmp_path, b"PK\x03\x04" + b"\x00" * 60), match="not a readable zip archive", load_match=False)
    good = build([Member("a.npy", A)])
    refused(write(tmp_path, good[:-10]), match="not a readable zip archive", load_match=False)


def test_a_missing_file_keeps_its_own_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_zip(str(tmp_path / "nothing.npz"), DEFAULT_LIMITS.budget("x", 0))


def test_one_member_claiming_a_zip_bomb(tmp_path):
    m = Member("a.npy", A, deflate=True)
    huge = 300 * len(m.data) + (1 << 20)
    m.usize = huge
    refused(write(tmp_path, build([m])), LimitError, "refused as a zip bomb")


def test_many_members_each_under_the_ratio_but_a_bomb_together(tmp_path):
    members = []
    for i in range(40):
        m = Member(f"m{i}.npy", A, deflate=True)
        m.usize = 1 << 20  # each within 200x + 1 MiB; 40 MiB from a few kilobytes together
        members.append(m)
    refused(write(tmp_path, build(members)), LimitError, "the compressed members together")


def test_a_bad_crc_is_an_integrity_error(tmp_path):
    m = Member("a.npy", A, deflate=True)
    m.crc ^= 1
    path = write(tmp_path, build([m]))
    with pytest.raises(IntegrityError, match="CRC"):
        tensorfile.load(path)
    with zipfile.ZipFile(path) as zf, pytest.raises(IntegrityError, match="CRC"):
        member_array(zf, zf.infolist()[0], DEFAULT_LIMITS.budget(str(path), 1000), "member 'a.npy'")


def test_damaged_deflate_stream_is_a_format_error(tmp_path):
    m = Member("a.npy", A, deflate=True)
    m.data = b"\xff" * len(m.data)
    with pytest.raises(FormatError, match="a.npy"):
        tensorfile.load(write(tmp_path, build([m])))


@pytest.mark.parametrize("deflate", [False, True])
def test_member_array_and_read_member_into(tmp_path, deflate):
    data = os.urandom(3 << 20) + bytes(1 << 20)
    path = write(tmp_path, build([Member("x", data, deflate=deflate)]), "x.zip")
    budget = DEFAULT_LIMITS.budget(str(path), path.stat().st_size)
    with open_zip(str(path), budget) as zf:
        info = zf.getinfo("x")
        assert budget.used == MEMBER_BYTES  # the central directory's one member, charged before zipfile reads it
        got = member_array(zf, info, budget, "member 'x'")
        assert got.dtype == np.uint8 and got.tobytes() == data and budget.used == MEMBER_BYTES + len(data)
        out = bytearray(len(data))
        read_member_into(zf, info, memoryview(out))
        assert bytes(out) == data
        with pytest.raises(LimitError, match="member 'x'"):
            member_array(zf, info, Limits(max_bytes=len(data) - 1).budget(str(path), 0), "member 'x'")


def test_every_zip_fixture_passes_the_checks():
    paths = [p for p in FIXTURES.rglob("*")
             if p.is_file() and "hostile" not in p.parts and p.read_bytes()[:4] == b"PK\x03\x04"]  # fmt: skip
    assert len(paths) >= 10  # npz, torch .pt (Zip64, 64-byte aligned records), .keras
    for path in paths:
        budget = DEFAULT_LIMITS.budget(str(path), path.stat().st_size)
        with zipfile.ZipFile(path) as zf:
            check_zip(str(path), zf, budget)


def test_npz_written_by_tensorfile_has_zip64_local_headers_and_passes(tmp_path):
    from tensorfile.formats.npy import write_npz

    with open(tmp_path / "w.npz", "wb") as f:
        write_npz(f, ["w"], [np.arange(10.0)])
    raw = (tmp_path / "w.npz").read_bytes()
    assert struct.unpack_from("<L", raw, 18)[0] == 0xFFFFFFFF  # sizes in the local Zip64 extra field
    assert tensorfile.load(tmp_path / "w.npz")["w"].tolist() == list(np.arange(10.0))


def test_a_150_mb_deflated_member_is_read_with_one_copy(tmp_path):
    n = 150_000_000 // 4
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("w.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.arange(n, dtype=np.int32) % 1000)
    assert 200 * path.stat().st_size > 150_000_000  # honestly under the zip-bomb ratio
    gc.collect()
    tracemalloc.start()
    try:
        with zipfile.ZipFile(path) as zf:
            value = read_npz(str(path), zf)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    w = value["w"]
    assert w.shape == (n,) and w.dtype == np.int32 and w.nbytes == 150_000_000
    assert peak < 1.3 * w.nbytes, f"peak {peak / w.nbytes:.2f}x the array"
    assert w[:2000:999].tolist() == [0, 999, 998] and w[-1] == (n - 1) % 1000
    del value, w


def test_the_central_directory_is_charged_before_zipfile_reads_it(tmp_path):
    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(2000):
            zf.writestr(f"m{i}.npy", b"")
    assert member_count(str(path)) == 2000
    with pytest.raises(LimitError, match="2000 members, more than 1000"):
        open_zip(str(path), tensorfile.Limits(max_tensors=1000).budget(str(path), path.stat().st_size))
    with pytest.raises(LimitError, match="central directory of 2000 members"):
        open_zip(str(path), tensorfile.Limits(max_bytes=2000 * MEMBER_BYTES - 1).budget(str(path), 0))
    (tmp_path / "plain").write_bytes(b"PK\x03\x04 not a zip")
    assert member_count(str(tmp_path / "plain")) is None
