"""Hugging Face sharded safetensors: ``model.safetensors.index.json`` and its shards.

Reference: huggingface/huggingface_hub ``src/huggingface_hub/serialization/_base.py``
(the index is ``{"metadata": {...}, "weight_map": {tensor name: shard file name}}``).
Shard names must be plain file names in the index's folder, and every tensor must
be in exactly one shard (the one the index names); anything else is a
:class:`FormatError`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from ..errors import FormatError

__all__ = ["is_index", "read_index", "MAX_INDEX_BYTES"]

MAX_INDEX_BYTES = 64 << 20


def is_index(prefix: bytes) -> bool:
    """True when a file starts like a JSON object: ``{`` and only text in its first bytes.

    (A safetensors file can start with byte 0x7B, ``{``, when its header is 123
    bytes long, but its length field then holds zero bytes, which text never does.)
    """
    return prefix.lstrip()[:1] == b"{" and all(32 <= b < 127 or b in b"\t\n\r" for b in prefix)


def read_index(path: str, load_shard: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """Load every shard an index names, as one dict in the index's order.

    Args:
        path: the index file.
        load_shard: loads one shard file into a flat dict.

    Raises:
        FormatError: not an index, a shard name outside the folder, a tensor in
            the wrong shard or in none, or a tensor in two shards.
    """
    if os.path.getsize(path) > MAX_INDEX_BYTES:
        raise FormatError(f"{path}: an index of more than {MAX_INDEX_BYTES} bytes")
    with open(path, "rb") as f:
        try:
            doc = json.loads(f.read().decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise FormatError(f"{path}: not a safetensors index (invalid JSON: {exc})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise FormatError(f"{path}: not a safetensors index: expected an object with a 'weight_map' of names to files")
    folder = os.path.dirname(os.path.abspath(path))
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if shard != os.path.basename(shard) or shard in ("", ".", "..") or "\\" in shard:
            raise FormatError(f"{path}: tensor {name!r} names shard {shard!r}, which is not a file in the index's folder")
        shards.setdefault(shard, []).append(name)
    loaded: dict[str, Any] = {}
    for shard, names in shards.items():
        tensors = load_shard(os.path.join(folder, shard))
        if set(tensors) != set(names):
            extra, missing = sorted(set(tensors) - set(names)), sorted(set(names) - set(tensors))
            raise FormatError(f"{path}: shard {shard!r} holds {extra} the index does not map to it, lacks {missing}")
        loaded.update(tensors)
    return {name: loaded[name] for name in weight_map}
