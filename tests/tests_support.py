"""Test helpers that edit files at the byte level."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Callable


def rewrite_record(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite tensorfile's record in ``path`` after ``change`` edits it in place."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    record = json.loads(header["__metadata__"]["tensorfile"])
    change(record)
    header["__metadata__"]["tensorfile"] = json.dumps(record)
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
