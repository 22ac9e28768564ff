"""Test helpers that edit files at the byte level."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Callable

from tensorfile.format.record import header_digest


def read_header(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_header(path: Path, header: dict[str, Any], data: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def rewrite_record(path: Path, change: Callable[[dict[str, Any]], None], *, resign: bool = True) -> None:
    """Rewrite tensorfile's record in ``path`` after ``change`` edits it in place.

    With ``resign`` the header checksum is recomputed, as a writer that meant
    the change would do; otherwise the file looks damaged.
    """
    header, data = read_header(path)
    record = json.loads(header["__metadata__"]["tensorfile"])
    change(record)
    if resign:
        user = {k: v for k, v in header["__metadata__"].items() if k != "tensorfile"}
        entries = [(k, v["dtype"], v["shape"]) for k, v in header.items() if k != "__metadata__"]
        record["header_checksum"] = header_digest(entries, user, record)
    header["__metadata__"]["tensorfile"] = json.dumps(record)
    write_header(path, header, data)
