"""tensorfile's distributed checkpoints, read whole by one process: the folder's ``manifest.json`` and its shards.

The layout and every rule are in :mod:`tensorfile.distributed.manifest` (``docs/FORMAT.md``, "Distributed
checkpoints"). ``load`` assembles every tensor from its chunks (each chunk's checksum checked) and rebuilds the
saved structure, with no process group; ``open`` lists the tensors by name with their global shapes and reads
a tensor (or rows of one: ``f.slice(name)[a:b]`` reads only the chunks those rows lie in) when asked for.
A folder is read through its manifest (:func:`manifest_in`). On object storage (an fsspec URL of the folder or
of its ``manifest.json``, with ``storage_options``) :func:`load_url` and :func:`open_url` read the same way, each
chunk by byte ranges (:mod:`tensorfile.distributed.remote`).
"""

from __future__ import annotations

from typing import Any, Mapping

from ..limits import Limits
from .base import Format, Probe

__all__ = ["DISTRIBUTED", "manifest_in", "load_url", "open_url"]


def manifest_in(folder: str) -> str | None:
    """The manifest of a checkpoint folder, or None when ``folder`` holds none."""
    from ..distributed.manifest import manifest_in as found

    return found(folder)


def _sniff(probe: Probe) -> float:
    from ..distributed.manifest import looks_like

    return 0.95 if looks_like(probe.prefix) else 0.0  # above a Hugging Face index's 0.8: both are JSON


def _converter(path: str, framework: str | None, options: Mapping[str, Any], entries: Mapping[str, Any]) -> Any:
    from ..handoff import pick_adapter, to_framework

    def convert(name: str, array: Any) -> Any:
        entry = entries[name]
        return to_framework(pick_adapter(framework, entry.framework, path), path, name, array, entry.record, options)

    return convert


def _load(path: str, framework: str | None, options: Mapping[str, Any], limits: Limits,
          storage_options: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
    from ..distributed.loading import read_manifest
    from ..distributed.read import Shards, assemble
    from ..tree import unflatten

    folder, manifest = read_manifest(path, limits, storage_options)
    convert = _converter(path, framework, options, manifest.tensors)
    built: dict[str, Any] = {}

    def tensor(name: str) -> Any:
        if name not in built:  # a tensor named twice (tied) comes back as one object
            built[name] = convert(name, assemble(shards, manifest.tensors[name]))
        return built[name]

    with Shards(folder, manifest, limits, storage_options=storage_options) as shards:
        return unflatten(manifest.structure, tensor)


def _open(path: str, limits: Limits, framework: str | None, options: Mapping[str, Any], verify: bool,
          storage_options: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
    from ..distributed.loading import read_manifest
    from ..distributed.read import Shards, assemble
    from ..files import load
    from ..format.dtypes import code_of, dtype_from_name
    from ..lazyfile import TensorInfo
    from ._opened import ForeignFile

    folder, manifest = read_manifest(path, limits, storage_options)
    entries = manifest.tensors
    shards = Shards(folder, manifest, limits, storage_options=storage_options)
    try:
        checked = shards.all_checked()
    except BaseException:
        shards.close()
        raise
    infos = {}
    for name, e in entries.items():
        dtype = dtype_from_name(e.dtype)
        count = 1
        for d in e.shape:
            count *= d
        code = code_of(dtype) if e.dtype != "complex128" else ""
        infos[name] = TensorInfo(name, e.dtype, e.shape, count * dtype.itemsize, code, None, None)
    return ForeignFile(
        path, DISTRIBUTED, infos, {**manifest.metadata, "world_size": str(manifest.world_size)},
        mapped=lambda name: assemble(shards, entries[name]), convert=_converter(path, framework, options, entries),
        load=lambda: load(path, framework=framework, limits=limits, storage_options=storage_options, **options), close=shards.close,
        has_record=checked, rows=lambda name, start, stop: assemble(shards, entries[name], start, stop),
    )  # fmt: skip


#: A distributed checkpoint (``tensorfile.distributed.save``), named by its folder or its ``manifest.json``.
DISTRIBUTED = Format("distributed", "tensorfile distributed checkpoint", "numpy", (), sniff=_sniff, load=_load,
                     open=_open, folder=manifest_in)  # fmt: skip


def load_url(url: str, storage_options: Mapping[str, Any] | None, framework: str | None, options: Mapping[str, Any],
             limits: Limits) -> Any:  # fmt: skip
    """:func:`tensorfile.load` of the distributed checkpoint at ``url`` (its folder or its ``manifest.json``)."""
    return _load(url, framework, options, limits, storage_options)


def open_url(url: str, storage_options: Mapping[str, Any] | None, limits: Limits, framework: str | None,
             options: Mapping[str, Any], verify: bool) -> Any:  # fmt: skip
    """:func:`tensorfile.open` of the distributed checkpoint at ``url`` (its folder or its ``manifest.json``)."""
    return _open(url, limits, framework, options, verify, storage_options)
