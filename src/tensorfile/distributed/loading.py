"""Loading a distributed checkpoint in place, resharded onto whatever mesh the destination tensors live on.

Each rank reads the manifest and only the chunks that overlap the slice it holds of each tensor
(:mod:`.read`); no collective is needed, so any world size and any mesh work, and so does a single process.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import CheckpointNotFoundError, ParameterMismatchError, UnsupportedTypeError
from ..format.dtypes import dtype_from_name, name_of
from ..format.memory import empty_array
from ..limits import DEFAULT_LIMITS, Limits
from ..parameters.report import LoadReport, Mismatch
from ..tree import decode_plain, unflatten
from . import manifest as mf
from .plan import is_dtensor, local_region
from .read import Shards, assemble, fill

__all__ = ["load", "locate", "read_manifest"]


def locate(path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(folder, manifest path)`` of the checkpoint at ``path`` (its folder or its manifest).

    Raises:
        CheckpointNotFoundError: no manifest there (no committed checkpoint).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        found = mf.manifest_in(path)
        if found is None:
            raise CheckpointNotFoundError(f"{path}: no committed distributed checkpoint here (no {mf.MANIFEST})")
        return path, found
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"{path}: no such checkpoint folder or manifest")
    return os.path.dirname(os.path.abspath(path)), path


def read_manifest(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS,
                  storage_options: Mapping[str, Any] | None = None) -> tuple[str, mf.Manifest]:  # fmt: skip
    """The folder (a path, or the URL of a checkpoint on object storage) and the checked manifest of the
    checkpoint at ``path``."""
    from ..storage import is_url, local_path

    path = local_path(path)
    if is_url(path):
        from .remote import read_manifest as read_remote

        where, manifest = read_remote(path, storage_options, limits)  # type: ignore[arg-type]
        return where.url, manifest
    folder, manifest_path = locate(path)
    return folder, mf.read(manifest_path, limits)


def _tensor_facts(value: Any) -> tuple[tuple[int, ...], str] | None:
    """Global shape and dtype name of a tensor the load can fill in place; None for anything else."""
    if isinstance(value, np.ndarray):
        return tuple(value.shape), name_of(value.dtype)
    if type(value).__module__.startswith("torch"):
        import torch

        if isinstance(value, torch.Tensor):
            from ..frameworks.torch import TORCH_TO_NAME

            return tuple(int(d) for d in value.shape), TORCH_TO_NAME.get(value.dtype, str(value.dtype))
    return None


class _Matcher:
    """Walks the destination beside the saved structure: tensors to fill, plain values to replace, problems."""

    def __init__(self, manifest: mf.Manifest) -> None:
        self.manifest = manifest
        self.targets: list[tuple[Any, mf.Entry, str]] = []
        self.replace: list[tuple[Callable[[Any], None], dict[str, Any], str | None]] = []
        self.report = LoadReport()

    def visit(self, dest: Any, node: dict[str, Any], name: str, put: Callable[[Any], None]) -> None:
        kind = node.get("type")
        facts = _tensor_facts(dest)
        if facts is not None:
            if kind != "tensor":
                self.report.mismatched.append(Mismatch(name, (), f"a {kind}", facts[0], facts[1]))
                return
            entry = self.manifest.tensors[node["name"]]
            if facts != (entry.shape, entry.dtype):
                self.report.mismatched.append(Mismatch(name, entry.shape, entry.dtype, facts[0], facts[1]))
                return
            self.targets.append((dest, entry, name))
            return
        if isinstance(dest, dict):
            if kind not in ("dict", "ordered_dict"):
                self.report.mismatched.append(Mismatch(name, (), f"a {kind}", (), "a dict"))
                return
            saved = {decode_plain(k): v for k, v in node["items"]}
            for key, value in dest.items():
                where = f"{name}.{key}" if name else str(key)
                if key not in saved:
                    self.report.missing_keys.append(where)
                    continue
                self.visit(value, saved[key], where, lambda v, key=key: dest.__setitem__(key, v))
            return
        if type(dest) in (list, tuple):
            items = node.get("items") if kind in ("list", "tuple") else None
            if items is None or len(items) != len(dest):
                saved = f"a {kind} of {len(items)}" if items is not None else f"a {kind}"
                self.report.mismatched.append(Mismatch(name, (), saved, (len(dest),), f"a {type(dest).__name__}"))
                return
            if type(dest) is list:
                for i, value in enumerate(dest):
                    self.visit(value, items[i], f"{name}.{i}", lambda v, i=i: dest.__setitem__(i, v))
                return
            rebuilt = list(dest)  # a tuple cannot change: rebuilt, then put in its parent's place
            before = len(self.replace)
            for i, value in enumerate(dest):
                self.visit(value, items[i], f"{name}.{i}", lambda v, i=i: rebuilt.__setitem__(i, v))
            if len(self.replace) > before:
                self.replace.append((lambda _: put(tuple(rebuilt)), {"type": "none"}, None))
            return
        self.replace.append((put, node, name))


def _fill_torch(shards: Shards, dest: Any, entry: mf.Entry, name: str, verify: bool) -> None:
    import torch

    from ..frameworks import get_adapter

    adapter = get_adapter("torch")
    offsets: tuple[int, ...] = (0,) * len(entry.shape)
    local = dest
    if is_dtensor(dest):
        region = local_region(dest, name)
        if region is None:  # this rank is not in the tensor's mesh
            return
        offsets, lengths, _ = region
        local = dest.to_local()
        if not all(lengths):
            return
    with torch.no_grad():
        if local.device.type == "cpu" and not local.is_conj() and not local.is_neg():
            fill(shards, entry, adapter.to_numpy(local, name), offsets, verify=verify)  # into the tensor's memory
            return
        host = empty_array(tuple(local.shape), dtype_from_name(entry.dtype))
        fill(shards, entry, host, offsets, verify=verify)
        local.copy_(adapter.from_numpy(host, {}, {"map_location": "cpu"}))


def load(state_dict: Any, path: str | os.PathLike[str], *, strict: bool = True, verify: bool = False,
         limits: Limits | None = None, storage_options: Mapping[str, Any] | None = None) -> LoadReport:  # fmt: skip
    """Fill ``state_dict`` in place from the distributed checkpoint at ``path``, resharded to its tensors.

    As ``torch.distributed.checkpoint.load`` (reference: pytorch/pytorch ``torch/distributed/checkpoint/
    state_dict_loader.py``): the destination decides what is read. Each ``DTensor`` gets the slice its
    rank holds on its own mesh and placements (any world size, any mesh: FSDP2 on 3 ranks from a save on
    2), a plain torch tensor or NumPy array the whole tensor, each read from only the chunks that overlap
    it. Plain values (and containers without tensors) in the destination are replaced by the saved ones;
    names the checkpoint holds but ``state_dict`` lacks are not read. Call it on every rank that holds
    part of the state; it needs no process group (one process loads too). Load an optimizer with
    ``torch.distributed.checkpoint.state_dict``: ``sd = get_state_dict(model, optim)``, ``load(sd, path)``,
    ``set_state_dict(model, optim, model_state_dict=sd[0], optim_state_dict=sd[1])``.

    Args:
        state_dict: the destination, as for :func:`save` (tensors on any device; filled under
            ``torch.no_grad()``).
        path: the checkpoint folder or its ``manifest.json``; or an fsspec URL of one (``s3://bucket/ckpt``:
            each chunk, or the rows of it this rank needs, is read by byte ranges).
        strict: raise on any name the checkpoint lacks or any shape or dtype that differs (nothing is
            filled); False: fill what fits, leave the rest as it is, and report it.
        verify: check the checksum of every chunk read even where only part of it is needed (reads those
            chunks whole). Chunks read whole are always checked.
        limits: bounds on what the manifest and files may make this rank allocate (:class:`tensorfile.Limits`).
        storage_options: for a URL ``path``, the fsspec filesystem's options (``{"endpoint_url": ...}``).

    Returns:
        A :class:`~tensorfile.LoadReport`: the names filled or replaced (dotted paths), and with
        ``strict=False`` what was missing or did not fit.

    Raises:
        CheckpointNotFoundError: no committed checkpoint at ``path``.
        ParameterMismatchError: ``strict`` and a name of ``state_dict`` the checkpoint lacks, or a tensor whose global shape
            or dtype differs (``.report`` lists every problem); nothing was filled.
        FormatError, IntegrityError: the manifest or a shard file is malformed, missing or damaged.
    """
    limits = limits or DEFAULT_LIMITS
    folder, manifest = read_manifest(path, limits, storage_options)
    matcher = _Matcher(manifest)
    matcher.visit(state_dict, manifest.structure, "", lambda v: None)
    report = matcher.report
    if strict and not report.ok:
        lines = "\n\t".join(report.problems())
        raise ParameterMismatchError(f"{folder}: the checkpoint does not fit the state_dict; nothing was loaded:\n\t{lines}",
                                     report)  # fmt: skip
    with Shards(folder, manifest, limits, storage_options=storage_options) as shards:
        for dest, entry, name in matcher.targets:
            if isinstance(dest, np.ndarray):
                if not dest.flags.writeable:
                    raise UnsupportedTypeError(f"{name}: a read-only NumPy array cannot be loaded in place")
                fill(shards, entry, dest, (0,) * dest.ndim, verify=verify)
            else:
                _fill_torch(shards, dest, entry, name, verify)
            report.loaded.append(name)
        for put, node, name in matcher.replace:
            put(unflatten(node, lambda name: _whole(shards, manifest.tensors[name])))
            if name is not None:
                report.loaded.append(name)
    return report


def _whole(shards: Shards, entry: mf.Entry) -> Any:
    """A whole tensor, assembled, in its saved framework (on the host)."""
    from ..handoff import pick_adapter

    return pick_adapter(None, entry.framework, shards.folder).from_numpy(assemble(shards, entry), entry.record, {})
