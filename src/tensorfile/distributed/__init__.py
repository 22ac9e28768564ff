"""Distributed checkpoints on ``torch.distributed``: :func:`save`, :func:`async_save` and :func:`load`, SPMD.

Every rank calls the same function, as with ``torch.distributed.checkpoint`` (DCP). Each rank writes the
slices of the state it holds (``DTensor`` shards of FSDP2 or tensor parallelism; replicated tensors once, on
one rank) as an ordinary tensorfile file with a checksum per tensor; rank 0 commits one JSON manifest
(never a pickle) that says which file holds which slice of each tensor. :func:`load` fills a state dict in
place on any world size and mesh, each rank reading only the slices it needs. One process, without a
process group, reads everything: ``tensorfile.load(folder)``, ``tensorfile.open(folder)`` and the CLI
(``tensorfile ls / info / convert``) assemble the whole state dict.

    >>> import tensorfile.distributed as tfd
    >>> from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    >>> model_sd, optim_sd = get_state_dict(model, optimizer)          # FSDP2: DTensors
    >>> tfd.save({"model": model_sd, "optim": optim_sd, "step": 100}, "ckpt")
    >>> state = {"model": model_sd, "optim": optim_sd, "step": 0}
    >>> tfd.load(state, "ckpt")                                        # any world size
    >>> set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])

``path`` may be an fsspec URL (``s3://bucket/ckpt``, ``memory://...``) with ``storage_options=``: the same layout
as objects, the manifest object as the commit (:mod:`tensorfile.distributed.remote`).

The layout and the commit protocol are specified in ``docs/FORMAT.md`` ("Distributed checkpoints") and in
:mod:`tensorfile.distributed.manifest`. Importing this module imports no framework.
"""

from __future__ import annotations

from .loading import load
from .saving import CheckpointCommitError, async_save, save

__all__ = ["save", "async_save", "load", "CheckpointCommitError"]
