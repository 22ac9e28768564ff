"""The tensorfile container: a safetensors file with a record of its own.

This docstring is the normative specification; ``docs/FORMAT.md`` says the same
at more length. MUST and SHOULD are as in RFC 2119.

Reference: huggingface/safetensors ``safetensors/src/tensor.rs`` (format 0.8).

Byte layout::

    offset 0      u64 little-endian N: length of the header in bytes
    offset 8      N bytes: UTF-8 JSON object, padded with spaces (0x20) so that
                  8 + N is a multiple of 16
    offset 8+N    data buffer: every tensor's bytes, little-endian, C order,
                  back to back, with no gap and nothing after the last tensor

Header: each key except ``"__metadata__"`` is a tensor name mapped to exactly
``{"dtype": CODE, "shape": [d0, d1, ...], "data_offsets": [BEGIN, END]}``.
Offsets are relative to the data buffer; END is exclusive; END - BEGIN MUST equal
product(shape) x item size of CODE. Sorted by BEGIN, the tensors MUST tile the
data buffer exactly. Codes: BOOL U8 I8 U16 I16 U32 I32 U64 I64 F16 BF16 F32 F64
C64 F8_E4M3 F8_E5M2 F8_E4M3FNUZ F8_E5M2FNUZ F8_E8M0. A reader MUST reject N >
100,000,000, N beyond the file, invalid JSON, duplicate keys at any depth, an
entry with other fields, an unknown code, negative or non-integer dims, a size
mismatch, holes, overlaps and trailing bytes (sorted by BEGIN, then END).

``"__metadata__"``, when present, MUST be an object of string to string. A
tensorfile writer stores user metadata there and one entry of its own under the
key ``"tensorfile"``: a JSON document (see :mod:`tensorfile.format.record`) with
``version`` (1), ``header_checksum`` (XXH3-64 of the N header bytes with its
own 16 digits read as ``0``, so header damage is caught like data damage; the
header MUST start ``{"__metadata__":{"tensorfile":"{\\"version\\":1,\\"header_checksum\\":\\"``), ``root`` (the container structure, see :mod:`tensorfile.tree`),
``tensors`` (per tensor: ``checksum``, 16 hex digits of XXH3-64 over its stored
bytes; ``framework``; optional ``dtype`` for complex128 stored as F64 with a
trailing axis of 2; optional ``parameter``, ``requires_grad``, ``device``,
``scalar``) and optional ``shared`` (groups of tensors that were views of one
storage: storage size in bytes, and per member its byte offset and strides in
elements).

Writer rules: ``__metadata__`` first and the record first inside it; tensors
ordered by item size descending (complex128 counts 16), then name (so each is
naturally aligned when the data buffer starts at a multiple of 16); a flat dict
of string keys is stored under its own keys; otherwise names are dotted paths
(``"optimizer.state.0.exp_avg"``), made unique with a ``#N`` suffix. A file
without the ``"tensorfile"`` entry is a plain safetensors file and loads as a
flat dict.
"""

from typing import Any

from .header import MAX_HEADER_SIZE, Header, TensorEntry, build_header, parse_header
from .record import FORMAT_VERSION, RECORD_KEY


def __getattr__(name: str) -> Any:
    """:class:`SafetensorsReader` on first use (PEP 562): it imports NumPy, which reading a header does not need."""
    if name == "SafetensorsReader":
        from .reader import SafetensorsReader

        return SafetensorsReader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX_HEADER_SIZE",
    "Header",
    "TensorEntry",
    "build_header",
    "parse_header",
    "SafetensorsReader",
    "FORMAT_VERSION",
    "RECORD_KEY",
]
