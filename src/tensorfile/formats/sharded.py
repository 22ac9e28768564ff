"""Hugging Face sharded safetensors: ``model.safetensors.index.json`` and its shards, read and written.

Reference: huggingface/huggingface_hub ``src/huggingface_hub/serialization/_base.py``
(the index is ``{"metadata": {...}, "weight_map": {tensor name: shard file name}}``).
Shard names must be plain file names in the index's folder, and every tensor must
be in exactly one shard (the one the index names); anything else is a
:class:`FormatError`.
"""

from __future__ import annotations

import heapq
import json
import os
import re
from typing import Any, Callable, Mapping

from ..errors import FormatError
from ..limits import Limits
from .base import Format, Probe

__all__ = ["is_index", "read_index", "MAX_INDEX_BYTES", "parse_size", "plan_shards", "shard_names", "write_index", "stale_shards"]

MAX_INDEX_BYTES = 64 << 20


def is_index(prefix: bytes) -> bool:
    """True when a file starts like a JSON object: ``{`` and only text in its first bytes.

    (A safetensors file can start with byte 0x7B, ``{``, when its header is 123
    bytes long, but its length field then holds zero bytes, which text never does.)
    """
    prefix = prefix[:16]
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
    own = os.path.basename(path)
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        names = shards.get(shard)
        if names is None:  # each shard's name checked once
            if shard == own:
                raise FormatError(f"{path}: tensor {name!r} names the index itself as its shard")
            if shard != os.path.basename(shard) or shard in ("", ".", "..") or "\\" in shard:
                raise FormatError(f"{path}: tensor {name!r} names shard {shard!r}, which is not a file in the index's folder")
            names = shards[shard] = []
        names.append(name)
    loaded: dict[str, Any] = {}
    for shard, names in shards.items():
        if not os.path.isfile(os.path.join(folder, shard)):
            raise FormatError(f"{path}: shard {shard!r}, named by the index for {_some(set(names))}, is missing")
        tensors = load_shard(os.path.join(folder, shard))
        if len(tensors) != len(names) or not all(n in tensors for n in names):
            extra, missing = set(tensors) - set(names), set(names) - set(tensors)
            raise FormatError(f"{path}: shard {shard!r} holds {_some(extra)} the index does not map to it, "
                              f"and lacks {_some(missing)}")  # fmt: skip
        loaded.update(tensors)
    return {name: loaded[name] for name in weight_map}


def _some(names: set[str], shown: int = 5) -> str:
    """At most ``shown`` of ``names`` (the first in sorted order) and how many there are: messages stay short."""
    first = heapq.nsmallest(shown, names)
    if len(names) <= shown:
        return str(first) if names else "nothing"
    return f"{len(names)} tensors, {first} ..."


_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}  # fmt: skip
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]I?B|B)?", re.ASCII)
#: Largest shard limit accepted (bytes): far beyond any file system's file size.
MAX_LIMIT = 1 << 60


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as ``"5GB"`` (10**9) or ``"2GiB"`` (2**30), as huggingface_hub reads them.

    Raises:
        ValueError: not a positive size of at most 2**60 bytes.
    """
    usage = f"max_shard_size {size!r:.40}: expected bytes as an int or a string like '5GB' or '500MiB'"
    if isinstance(size, str):
        match = _SIZE.fullmatch(size.strip().upper())
        if match is None or len(match.group(1)) > 30:
            raise ValueError(usage)
        value = int(float(match.group(1)) * _UNITS[match.group(2) or "B"])
    elif isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        raise ValueError(usage)
    if not 0 < value <= MAX_LIMIT:
        raise ValueError(f"max_shard_size {size!r:.40}: must be between 1 and 2**60 bytes")
    return value


def plan_shards(sizes: dict[str, int], max_shard_size: int) -> list[list[str]]:
    """Split tensor names into shards of at most ``max_shard_size`` bytes of data, as huggingface_hub does
    (``split_state_dict_into_shards_factory``): names in order, a new shard when the next tensor would
    overflow the current one; a tensor larger than the limit gets a shard of its own, placed when it is met.
    """
    shards: list[list[str]] = []
    current: list[str] = []
    used = 0
    for name, nbytes in sizes.items():
        if nbytes > max_shard_size:
            shards.append([name])
            continue
        if current and used + nbytes > max_shard_size:
            shards.append(current)
            current, used = [], 0
        current.append(name)
        used += nbytes
    if current or not shards:
        shards.append(current)
    return shards


def shard_names(path: str, count: int) -> tuple[list[str], str]:
    """Shard file names and the index path for ``path`` (``model.safetensors`` ->
    ``model-00001-of-00003.safetensors`` ... and ``model.safetensors.index.json``).

    Raises:
        ValueError: ``path`` names a folder rather than a file.
    """
    if path.endswith(".index.json"):
        path = path[: -len(".index.json")]
    folder, base = os.path.split(path)
    if not base or base in (".", "..") or os.path.isdir(path):
        raise ValueError(f"{path!r}: a sharded save needs a file name such as 'folder/model.safetensors'")
    stem, suffix = os.path.splitext(base)
    names = [f"{stem}-{i:05d}-of-{count:05d}{suffix or '.safetensors'}" for i in range(1, count + 1)]
    return names, os.path.join(folder, base + ".index.json")


def stale_shards(index: str, keep: set[str]) -> list[str]:
    """Files beside ``index`` named as shards of the same checkpoint (``model-NNNNN-of-NNNNN.safetensors``)
    that are not in ``keep``: what an earlier sharded save left. Nothing else is ever named."""
    folder, base = os.path.split(index[: -len(".index.json")])
    stem, suffix = os.path.splitext(base)
    pattern = re.compile(re.escape(stem) + r"-\d{5}-of-\d{5}" + re.escape(suffix or ".safetensors"))
    return sorted(n for n in os.listdir(folder or ".") if pattern.fullmatch(n) and n not in keep)


def write_index(path: str, weight_map: dict[str, str], total_size: int, metadata: dict[str, str]) -> None:
    """Write the index ``{"metadata": {"total_size": bytes, ...}, "weight_map": {...}}`` atomically."""
    from ..atomic import atomic_write

    doc = {"metadata": {"total_size": total_size, **metadata}, "weight_map": weight_map}
    data = json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
    with atomic_write(path) as f:
        view = memoryview(data)
        while view:
            view = view[f.write(view) :]


def _load(path: str, framework: str | None, options: Mapping[str, Any], limits: Limits) -> Any:
    from ..files import load_tensorfile

    return read_index(path, lambda shard: load_tensorfile(shard, framework, options, limits))


def _open(path: str, limits: Limits, framework: str | None, options: Mapping[str, Any], verify: bool) -> Any:
    from ._opened import open_sharded

    return open_sharded(path, framework, options, verify, limits)


def _sniff(probe: Probe) -> float:
    return 0.8 if is_index(probe.prefix) else 0.0


#: The Hugging Face sharded layout, named by its index (``model.safetensors.index.json``): shards are safetensors files.
SHARDED = Format("sharded", "sharded safetensors index", "numpy", (".safetensors.index.json", ".json"), sniff=_sniff,
                 load=_load, open=_open)  # fmt: skip
