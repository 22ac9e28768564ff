"""Test helpers that edit files at the byte level."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Callable

from tensorfile.format.record import SEALED_PREFIX, seal


def read_header(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_header(path: Path, header: dict[str, Any], data: bytes, *, resign: bool = False) -> None:
    """Write ``header`` compactly (in its own key order) before ``data``; ``resign`` re-seals it."""
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-(8 + len(text)) % 8)
    if resign and text.startswith(SEALED_PREFIX):  # other versions start differently: left unsealed
        text = seal(text)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def rewrite_record(path: Path, change: Callable[[dict[str, Any]], None], *, resign: bool = True) -> None:
    """Rewrite tensorfile's record in ``path`` after ``change`` edits it in place.

    With ``resign`` the header checksum is recomputed, as a writer that meant
    the change would do; otherwise the file looks damaged.
    """
    header, data = read_header(path)
    record = json.loads(header["__metadata__"]["tensorfile"])
    change(record)
    record = {"version": record.pop("version", None), "header_checksum": "0" * 16, **record}
    header["__metadata__"]["tensorfile"] = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    write_header(path, header, data, resign=resign)
