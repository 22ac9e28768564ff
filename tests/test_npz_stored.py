"""``.npz`` archives on disk: stored members read straight from the file, large ones on helper threads, each
member's CRC-32 computed as it is read (formats/_zip.py ``StoredMember``, formats/npy.py ``read_npz``).

NumPy's own reader (``np.load``) is the oracle for the values; the archives are written by ``np.savez`` and
``np.savez_compressed``, then damaged byte by byte where a test needs it.
"""

from __future__ import annotations

import io
import zipfile
import zlib

import numpy as np
import pytest

import tensorfile
from tensorfile.errors import FormatError, IntegrityError
from tensorfile.format import reader
from tensorfile.formats._zip import READ_CHUNK, StoredMember, check_zip
from tensorfile.limits import DEFAULT_LIMITS


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "big_f32": rng.standard_normal((600, 1000)).astype(np.float32),  # 2.4 MB: a helper thread
        "big_i64": rng.integers(-(2**40), 2**40, (300, 700)),  # 1.7 MB: a helper thread
        "fortran": np.asfortranarray(rng.standard_normal((500, 400))),  # 1.6 MB, Fortran order in the file
        "swapped": rng.standard_normal((512, 300)).astype(">f8"),  # big-endian in the file
        "small": np.arange(10, dtype=np.int16),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.float64(2.5),
        "text": np.array(["a", "bé", "ccc"]),
    }


def test_savez_archives_read_as_np_load_reads_them(tmp_path):
    data = arrays()
    for name, save in (("stored.npz", np.savez), ("deflated.npz", np.savez_compressed)):
        path = tmp_path / name
        save(path, **data)
        got = tensorfile.load(path, framework="numpy")
        with np.load(path) as expected:
            assert list(got) == list(expected.files)  # the archive's order
            for key in expected.files:
                want = expected[key]
                assert got[key].shape == want.shape and got[key].dtype == want.dtype.newbyteorder("=")
                assert got[key].flags.c_contiguous and got[key].flags.writeable
                np.testing.assert_array_equal(got[key], want)


def test_helper_threads_read_the_large_members_and_the_values_are_the_same_on_one_thread(tmp_path, monkeypatch):
    path = tmp_path / "a.npz"
    np.savez(path, **arrays())
    threads: set[str] = set()
    real = StoredMember.readinto

    def spy(self, buffer):
        import threading

        threads.add(threading.current_thread().name)
        return real(self, buffer)

    monkeypatch.setattr(StoredMember, "readinto", spy)
    both = tensorfile.load(path, framework="numpy")
    if reader.READERS > 1:
        assert any(name.startswith("tensorfile-read") for name in threads)
    import tensorfile.formats.npy as npy

    monkeypatch.setattr(npy, "READERS", 1)
    threads.clear()
    one = tensorfile.load(path, framework="numpy")
    assert threads == {"MainThread"}
    for key in both:
        np.testing.assert_array_equal(both[key], one[key])


def _member_data(path, member: str) -> tuple[int, int]:
    """Where member ``member``'s bytes start in the file, and how many there are."""
    with zipfile.ZipFile(path) as zf:
        offsets = check_zip(str(path), zf, DEFAULT_LIMITS.budget(str(path), path.stat().st_size))
        return offsets[member], zf.getinfo(member).file_size


@pytest.mark.parametrize("where", ["header", "middle", "last byte", "after the data"])
def test_one_flipped_byte_of_a_stored_member_is_an_integrity_error_naming_it(tmp_path, where):
    data = {"ok": np.arange(5.0), "big": np.arange(400_000, dtype=np.float64), "ok2": np.ones(3)}
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:  # "big" with 16 bytes after its data
        for name, array in data.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, array)
            zf.writestr(name + ".npy", buf.getvalue() + (b"\x00" * 16 if name == "big" else b""))
    np.testing.assert_array_equal(tensorfile.load(path, framework="numpy")["big"], data["big"])  # trailing bytes ok
    start, size = _member_data(path, "big.npy")
    at = {"header": 20, "middle": size // 2, "last byte": size - 17, "after the data": size - 3}[where]
    raw = bytearray(path.read_bytes())
    if where == "header":  # a space of the header's padding made a tab: the header still parses
        at = bytes(raw[start : start + 128]).index(b"}") + 3
        raw[start + at] = ord("\t")
    else:
        raw[start + at] ^= 0x20
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=r"member 'big\.npy': bad CRC-32: 0x[0-9a-f]{8} of its bytes") as info:
        tensorfile.load(path, framework="numpy")
    assert str(path) in str(info.value)


def test_the_crc_in_the_message_is_the_central_directorys(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.arange(300_000, dtype=np.float32))
    start, size = _member_data(path, "x.npy")
    with zipfile.ZipFile(path) as zf:
        recorded = zf.getinfo("x.npy").CRC
    raw = bytearray(path.read_bytes())
    raw[start + size - 1] ^= 0xFF
    path.write_bytes(bytes(raw))
    actual = zlib.crc32(bytes(raw[start : start + size]))
    with pytest.raises(IntegrityError) as info:
        tensorfile.load(path, framework="numpy")
    assert f"bad CRC-32: {actual:#010x} of its bytes, {recorded:#010x} in the archive" in str(info.value)


def test_stored_member_reads_in_pieces_of_read_chunk_and_refuses_seeking(tmp_path):
    payload = np.random.default_rng(1).bytes(3 * READ_CHUNK + 5)
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("m", payload)
    start, size = _member_data(path, "m")
    with open(path, "rb") as f, zipfile.ZipFile(path) as zf:
        member = StoredMember(f.fileno(), start, zf.getinfo("m"), "the member")
        out = bytearray(size)
        sizes = []
        view = memoryview(out)
        done = 0
        while done < size:
            got = member.readinto(view[done:])
            sizes.append(got)
            done += got
        assert bytes(out) == payload
        assert sizes == [READ_CHUNK, READ_CHUNK, READ_CHUNK, 5]
        assert member.readinto(bytearray(10)) == 0
        with pytest.raises(io.UnsupportedOperation):
            member.seek(0)


def test_a_stored_member_cut_short_by_a_shrinking_file_is_a_format_error(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("m", b"x" * 1000)
    start, size = _member_data(path, "m")
    with open(path, "rb") as f, zipfile.ZipFile(path) as zf:
        info = zf.getinfo("m")
        with open(path, "r+b") as w:
            w.truncate(start + 600)  # after the checks: the file shrank under the reader
        member = StoredMember(f.fileno(), start, info, "the member")
        assert member.readinto(bytearray(1000)) == 600
        with pytest.raises(FormatError, match="the file ended at byte"):
            member.readinto(bytearray(400))


def test_an_archive_that_is_not_a_file_on_disk_is_read_through_zipfile(tmp_path):
    data = arrays()
    buf = io.BytesIO()
    np.savez(buf, **data)
    from tensorfile.formats.npy import read_npz

    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        got = read_npz("in-memory.npz", zf, DEFAULT_LIMITS.budget("in-memory.npz", len(buf.getvalue())))
    for key, want in data.items():
        np.testing.assert_array_equal(got[key], want)


def test_an_archive_with_members_that_are_not_arrays_is_refused_naming_them(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, a=np.arange(3), b=np.ones((2, 2)))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("notes.txt", b"hello")
        zf.writestr("sub/", b"")  # an empty folder entry: not named
    for read in (lambda: tensorfile.load(path, framework="numpy"), lambda: tensorfile.open(path)):
        with pytest.raises(FormatError, match=r"an \.npz of arrays and 1 other member\(s\): 'notes\.txt'; ") as info:
            read()
        assert str(path) in str(info.value)
