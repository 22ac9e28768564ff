"""Recognize a file's kind from its first bytes.

Used to tell a user what a file that is not safetensors looks like. The magic
numbers come from each format's reference implementation (see
``docs/FORMAT.md`` and ``shared/FORMATS.md``).
"""

from __future__ import annotations

__all__ = ["looks_like", "header_fits"]

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (e.g. Keras .h5 / .weights.h5)"),
    (b"PK\x03\x04", "a zip archive (e.g. a torch.save file, a NumPy .npz or a .keras archive)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"GGUF", "a GGUF file"),
    (b"\x12\x01" + b"\x00" * 14, "an MXNet NDArray file (nd.save / save_parameters)"),
    (b"\x1f\x8b", "a gzip-compressed file"),
)


def header_fits(prefix: bytes, size: int) -> bool:
    """True when ``prefix`` (the first 9 bytes or more of a file of ``size`` bytes) starts like a safetensors
    file: a u64 little-endian header length N with 2 <= N <= size - 8, then ``{``."""
    if len(prefix) < 9 or prefix[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(prefix[:8], "little") <= size - 8


def looks_like(prefix: bytes) -> str | None:
    """Return a phrase naming the kind of file that starts with ``prefix``.

    ``prefix`` should hold at least the first 16 bytes. Returns ``None`` when the
    kind is not recognized.
    """
    if not prefix:
        return "an empty file"
    for magic, what in _MAGICS:
        if prefix.startswith(magic):
            return what
    # Pickle: PROTO opcode (0x80) followed by a protocol number 2..5; a legacy
    # torch.save stream is a sequence of pickles and starts the same way.
    if len(prefix) >= 2 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5:
        return "a Python pickle that is not a torch.save file (tensorfile reads pickles only inside torch.save and .npy files)"
    # A safetensors length prefix is a small number: its high bytes are zero, never text.
    if len(prefix) >= 8 and all(32 <= b < 127 or b in b"\t\n\r" for b in prefix):
        return "a text file"
    return None
