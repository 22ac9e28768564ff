"""Hugging Face sharded safetensors: ``model.safetensors.index.json`` and its shards, read and written.

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

__all__ = ["is_index", "read_index", "MAX_INDEX_BYTES", "parse_size", "plan_shards", "shard_names", "write_index", "previous_shards"]

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


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}  # fmt: skip


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as ``"5GB"`` (10**9) or ``"2GiB"`` (2**30), as huggingface_hub reads them.

    Raises:
        ValueError: not a positive size.
    """
    if isinstance(size, str):
        text = size.strip().upper().replace(" ", "")
        number = text.rstrip("KMGTIB")
        unit = text[len(number):]
        if unit not in _UNITS or not number.replace(".", "", 1).isdigit():
            raise ValueError(f"max_shard_size {size!r}: expected bytes as an int or a string like '5GB' or '500MiB'")
        value = int(float(number) * _UNITS[unit])
    elif isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        raise ValueError(f"max_shard_size {size!r}: expected bytes as an int or a string like '5GB'")
    if value <= 0:
        raise ValueError(f"max_shard_size {size!r}: must be positive")
    return value


def plan_shards(sizes: dict[str, int], max_shard_size: int) -> list[list[str]]:
    """Split tensor names, in order, into shards of at most ``max_shard_size`` bytes of data.

    A tensor larger than the limit gets a shard of its own (as huggingface_hub does).
    """
    shards: list[list[str]] = []
    used = 0
    for name, nbytes in sizes.items():
        if not shards or (used + nbytes > max_shard_size and shards[-1]):
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    return shards or [[]]


def shard_names(path: str, count: int) -> tuple[list[str], str]:
    """Shard file names and the index path for ``path`` (``model.safetensors`` ->
    ``model-00001-of-00003.safetensors`` ... and ``model.safetensors.index.json``)."""
    if path.endswith(".index.json"):
        path = path[: -len(".index.json")]
    folder, base = os.path.split(path)
    stem, suffix = os.path.splitext(base)
    names = [f"{stem}-{i:05d}-of-{count:05d}{suffix or '.safetensors'}" for i in range(1, count + 1)]
    return names, os.path.join(folder, base + ".index.json")


def previous_shards(index: str) -> set[str]:
    """The shard file names an existing index names (empty when there is none or it is unreadable)."""
    try:
        with open(index, "rb") as f:
            weight_map = json.loads(f.read(MAX_INDEX_BYTES).decode("utf-8")).get("weight_map", {})
        return {v for v in weight_map.values() if isinstance(v, str) and v == os.path.basename(v) and v not in ("", ".", "..")}
    except (OSError, ValueError, AttributeError):
        return set()


def write_index(path: str, weight_map: dict[str, str], total_size: int, metadata: dict[str, str]) -> None:
    """Write the index ``{"metadata": {"total_size": bytes, ...}, "weight_map": {...}}`` atomically."""
    from ..atomic import atomic_write

    doc = {"metadata": {"total_size": total_size, **metadata}, "weight_map": weight_map}
    data = json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
    with atomic_write(path) as f:
        view = memoryview(data)
        while view:
            view = view[f.write(view) :]
