"""Writing a distributed checkpoint: :func:`save` and :func:`async_save`, SPMD on every rank.

The commit protocol (``docs/FORMAT.md``, "Distributed checkpoints"):

1. Every rank plans the state (:mod:`.plan`: global shapes, the slice it holds, which slices it writes),
   then writes its slices as one ordinary tensorfile file under a fresh name,
   ``rank<NNNNN>-<8 random hex>.tensorfile`` (atomically and durably: :func:`tensorfile.atomic.atomic_write`).
2. Rank 0 gathers what each rank wrote (JSON over ``torch.distributed``, never a pickle), checks that every
   tensor is covered exactly once, and writes ``manifest.json`` with ``atomic_write``: the commit.
3. Rank 0 then removes the shard files no manifest names any more (an earlier save's, a failed save's).
4. Every rank returns once rank 0 has committed, or raises when any rank failed.

On object storage (an fsspec URL) the steps are the same, with uploads for writes and one PUT of the manifest
object as the commit: :mod:`.remote`.

An overwrite never leaves the folder without a valid checkpoint: until the manifest's rename the old manifest
and the old files are untouched (new files have new names); after it the new ones are complete. A rank killed
at any point leaves the previous checkpoint (or none) in force, plus unreferenced files that the next save
removes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import secrets
import threading
from typing import Any, Callable, Mapping

from ..errors import CheckpointCommitError, TensorFileError
from ..format.checksums import checksum
from . import manifest as mf
from .comm import Group, group_of
from .plan import Plan, assign, walk

__all__ = ["save", "async_save", "write_checkpoint", "CheckpointCommitError", "prepare", "try_prepare", "wait_pending"]

#: Leftover temporaries of shard files (``atomic_write`` names them ``.<name>.tmp-<12 hex>``).
_SHARD_TEMP = re.compile(r"\.rank[0-9]{5,}-[0-9a-f]{8}\.tensorfile\.tmp-[0-9a-f]{12}")
_MESSAGE_CHARS = 1000


def prepare(state_dict: Any, group: Group) -> Plan:
    """The plan of ``state_dict`` on this rank, writers chosen (see :mod:`.plan`)."""
    plan = walk(state_dict)
    assign(plan, group.rank, group.size)
    return plan


def try_prepare(state_dict: Any, group: Group, staging: Any = None) -> tuple[Plan | None, Exception | None]:
    """:func:`prepare` (and :func:`stage` into ``staging``), or the error it raised: a rank that fails here must
    still take part in the exchange of :func:`write_checkpoint` (its state may differ from its peers')."""
    try:
        plan = prepare(state_dict, group)
        if staging is not None:
            stage(plan, staging)
        return plan, None
    except Exception as exc:
        return None, exc


def _digest(plan: Plan) -> str:
    """What every rank must agree on: tensor names, dtypes and global shapes."""
    return checksum(json.dumps([[leaf.name, leaf.dtype, list(leaf.shape)] for leaf in plan.leaves]).encode("utf-8"))


def write_shard(folder: str, plan: Plan, rank: int, world: int) -> str | None:
    """Write the slices this rank writes as one tensorfile file in ``folder``; its name (None: nothing to write)."""
    from ..files import _save

    written = plan.written()
    if not written:
        return None
    name = f"rank{rank:05d}-{secrets.token_hex(4)}.tensorfile"
    info = json.dumps({"rank": rank, "world_size": world})
    _save({leaf.name: leaf.value for leaf in written}, os.path.join(folder, name), {"tensorfile.distributed": info},
          durable=True)  # fmt: skip
    return name


def _report(plan: Plan, file: str | None) -> bytes:
    chunks = [[leaf.name, list(leaf.offsets), list(leaf.lengths)] for leaf in plan.written()]
    return json.dumps({"file": file, "chunks": chunks, "digest": _digest(plan)}).encode("utf-8")


def _manifest(plan: Plan, reports: list[dict[str, Any]], metadata: Mapping[str, str], world: int) -> mf.Manifest:
    """Rank 0: the manifest from every rank's report, every tensor checked to be covered exactly once."""
    mine = reports[0]["digest"]
    for rank, report in enumerate(reports):
        if report["digest"] != mine:
            raise CheckpointCommitError(f"rank {rank} holds other tensors (names, dtypes or global shapes) than rank "
                                        "0: every rank must save the same state_dict")  # fmt: skip
    files: list[str] = []
    chunks: dict[str, list[mf.Chunk]] = {leaf.name: [] for leaf in plan.leaves}
    for report in reports:
        if report["file"] is None:
            continue
        files.append(report["file"])
        for name, offsets, lengths in report["chunks"]:
            chunks[name].append(mf.Chunk(len(files) - 1, tuple(offsets), tuple(lengths)))
    tensors = {}
    for leaf in plan.leaves:
        problem = mf.check_grid(leaf.shape, chunks[leaf.name])
        if problem:
            raise CheckpointCommitError(f"tensor {leaf.name!r} of shape {list(leaf.shape)}: {problem}; do all ranks "
                                        "hold the same DTensor layout?")  # fmt: skip
        tensors[leaf.name] = mf.Entry(leaf.name, leaf.dtype, leaf.shape, leaf.framework, leaf.record,
                                      tuple(chunks[leaf.name]))  # fmt: skip
    return mf.Manifest(tuple(files), tensors, plan.root, dict(metadata), world)


class LocalFolder:
    """Where :func:`write_checkpoint` puts shard files: a local folder (:class:`.remote.ObjectFolder` is the
    object-storage one: the same methods)."""

    def __init__(self, path: str) -> None:
        self.path = self.where = path

    def write(self, plan: Plan, rank: int, world: int) -> str | None:
        """Write this rank's shard file; its name (None: nothing to write)."""
        return write_shard(self.path, plan, rank, world)

    def remove(self, name: str) -> None:
        """Remove this rank's shard file (its save failed)."""
        with contextlib.suppress(OSError):
            os.remove(os.path.join(self.path, name))

    def publish(self, manifest: mf.Manifest) -> None:
        """Rank 0: write the manifest (the commit: renamed into place), then remove unreferenced shard files."""
        mf.write(os.path.join(self.path, mf.MANIFEST), manifest)
        remove_unreferenced(self.path, set(manifest.files))

    def committed(self, files: list[str]) -> bool:
        """Rank 0, after :meth:`publish` raised: whether the manifest in force names exactly ``files``."""
        try:
            return set(mf.read(os.path.join(self.path, mf.MANIFEST)).files) == set(files)
        except (OSError, TensorFileError):
            return False


def write_checkpoint(
    plan: Plan | None, folder: Any, group: Group, metadata: Mapping[str, str], publish: Callable[[mf.Manifest], None],
    *, committed: Callable[[list[str]], bool] = lambda files: False, failed: Exception | None = None,
) -> None:  # fmt: skip
    """Every rank: write this rank's slices into ``folder`` (a local path, or a :class:`LocalFolder` /
    :class:`.remote.ObjectFolder`); rank 0 then builds the manifest and calls
    ``publish(manifest)`` (the commit). Returns on every rank once ``publish`` returned on rank 0.

    Args:
        committed: rank 0, after ``publish`` raised: whether the files listed were committed anyway (then
            they are kept).
        failed: this rank already failed (planning the state: ``plan`` is None); it still reports, so that no
            rank waits for it, and raises this.

    Raises:
        CheckpointCommitError: another rank failed, or the ranks' states disagree (this rank's files removed).
        Exception: what this rank's own write or (rank 0) ``publish`` raised.
    """
    target = LocalFolder(os.fspath(folder)) if isinstance(folder, (str, os.PathLike)) else folder
    folder = target.where
    own: Exception | None = failed
    file = None
    if own is None and plan is not None:
        try:
            file = target.write(plan, group.rank, group.size)
            report = _report(plan, file)
        except Exception as exc:  # every rank still takes part in the exchange: no peer waits for ever
            own = exc
    if own is not None:
        report = json.dumps({"error": f"{type(own).__name__}: {own}"[:_MESSAGE_CHARS]}).encode("utf-8")
    payloads = group.gather(report)
    status: dict[str, Any] = {}
    failure: Exception | None = None
    if group.rank == 0:
        status, failure = _commit_on_zero(plan, payloads, metadata, group.size, publish, committed)
    status = json.loads(group.broadcast(json.dumps(status).encode("utf-8")).decode("utf-8"))
    if status.get("error") is None:
        return
    if file is not None and not status.get("kept"):
        target.remove(file)
    if own is not None:
        raise own
    if failure is not None:
        raise failure
    if status.get("kept"):
        raise CheckpointCommitError(f"{folder}: the checkpoint was committed, then rank 0 failed: {status['error']}")
    raise CheckpointCommitError(f"{folder}: the checkpoint was not committed: {status['error']}")


def _commit_on_zero(plan: Plan | None, payloads: list[bytes], metadata: Mapping[str, str], world: int,
                    publish: Callable[[mf.Manifest], None], committed: Callable[[list[str]], bool],
                    ) -> tuple[dict[str, Any], Exception | None]:  # fmt: skip
    """Rank 0: check every rank's report, build the manifest and publish it; the status every rank gets, and
    what rank 0 raises."""
    reports = [json.loads(p.decode("utf-8")) for p in payloads]
    failed = [(r, rep["error"]) for r, rep in enumerate(reports) if "error" in rep]
    if failed:
        return {"error": "; ".join(f"rank {r} failed: {e}" for r, e in failed)[:_MESSAGE_CHARS]}, None
    files = [rep["file"] for rep in reports if rep["file"] is not None]
    if plan is None:  # cannot be: rank 0's own report then holds its error
        return {"error": "rank 0 has no plan of its state"}, None
    try:
        manifest = _manifest(plan, reports, metadata, world)
        publish(manifest)
    except Exception as exc:
        status = {"error": f"rank 0 failed: {type(exc).__name__}: {exc}"[:_MESSAGE_CHARS], "kept": committed(files)}
        return status, exc
    return {}, None


def remove_unreferenced(folder: str, keep: set[str]) -> list[str]:
    """Remove shard files (and their leftover temporaries) in ``folder`` that ``keep`` does not name."""
    removed = []
    for entry in os.listdir(folder):
        if entry in keep or not (mf.SHARD_FILE.fullmatch(entry) or _SHARD_TEMP.fullmatch(entry)):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, entry))
            removed.append(entry)
    return removed


def _folder(path: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> Any:
    """The :class:`LocalFolder` (created if missing) or :class:`.remote.ObjectFolder` (an fsspec URL) at ``path``."""
    from ..storage import is_url, local_path

    path = local_path(path)
    if is_url(path):
        from .remote import ObjectFolder

        return ObjectFolder(path, storage_options)  # type: ignore[arg-type]
    folder = os.fspath(path)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder}: a distributed checkpoint is a folder; this is a file")
    os.makedirs(folder, exist_ok=True)
    return LocalFolder(folder)


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("metadata must map str to str")
    return dict(metadata)


def save(state_dict: Any, path: str | os.PathLike[str], *, process_group: Any = None,
         metadata: Mapping[str, str] | None = None, storage_options: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """Save ``state_dict`` as a distributed checkpoint in folder ``path``; call it on every rank (SPMD).

    As ``torch.distributed.checkpoint.save`` (reference: pytorch/pytorch ``torch/distributed/checkpoint/
    state_dict_saver.py``): each rank writes the slices it holds, replicated data once, and a coordinator
    (rank 0) commits. Here every slice file is an ordinary tensorfile file with an XXH3-64 checksum per
    tensor, and the commit is one JSON manifest (``path/manifest.json``) renamed into place (see the module
    docs): an overwrite never leaves ``path`` without a valid checkpoint. ``tensorfile.load(path)`` reads
    the whole state in one process; :func:`tensorfile.distributed.load` reshards it onto any mesh.

    Args:
        state_dict: nested dicts / lists / tuples of tensors (``DTensor`` of any mesh and ``Shard`` /
            ``Replicate`` placements: FSDP2 ``fully_shard``, tensor parallel; plain torch tensors and NumPy
            arrays, taken to be the same on every rank) and plain values (None, bool, int, float, str),
            such as ``get_state_dict(model, optimizer)`` returns. Any dtype tensorfile stores.
            The same structure, names, dtypes and global shapes on every rank; plain values are rank 0's.
        path: the checkpoint folder (created if missing), on storage every rank sees; or an fsspec URL
            (``s3://bucket/ckpt``): each rank uploads its shard object in one piece, then rank 0 puts the
            manifest object, the commit (:mod:`tensorfile.distributed.remote`).
        process_group: the group of ranks that save (default: the default group). Without an initialized
            process group, a world of one.
        metadata: str -> str, kept in the manifest.
        storage_options: for a URL ``path``, the fsspec filesystem's options (``{"endpoint_url": ...}``;
            credentials otherwise from the environment).

    Raises:
        UnsupportedTypeError: a value that cannot be stored (names its place), a ``Partial`` DTensor.
        CheckpointCommitError: another rank failed, or the ranks disagree on the state (nothing committed).
        NotADirectoryError: ``path`` is a file (an object, for a URL).
        OSError: this rank cannot write or upload (nothing committed; an earlier checkpoint at ``path`` stays valid).
        ImportError: ``path`` is a URL and fsspec or its backend is not installed.

    Example:
        >>> sd = {"model": model.state_dict(), "step": 10}       # FSDP2: DTensors
        >>> tensorfile.distributed.save(sd, "ckpt/step10")
    """
    wait_pending()
    group = group_of(process_group)
    user = _check_metadata(metadata)
    folder = _folder(path, storage_options)
    plan, failed = try_prepare(state_dict, group)
    write_checkpoint(plan, folder, group, user, folder.publish, committed=folder.committed, failed=failed)


# ---------------------------------------------------------------- asynchronous saves

_lock = threading.Lock()
_pending: concurrent.futures.Future | None = None
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_staging: Any = None
_groups: dict[int, tuple[Any, Any, Any]] = {}  # id(group) -> (group, default group, its background group)


def wait_pending() -> None:
    """Wait for this process's asynchronous save in flight, if any (its error stays in its future)."""
    pending = _pending
    if pending is not None:
        concurrent.futures.wait([pending])


def background_group(group: Group) -> Group:
    """A gloo group over ``group``'s ranks for the collectives of a background commit, made once (a collective
    call on every rank of the default group): collectives issued from another thread on the training's own
    group could interleave with the training's, as ``torch.distributed.checkpoint.async_save`` warns."""
    if group.size == 1:
        return group
    import torch.distributed as dist

    world = dist.group.WORLD
    found = _groups.get(id(group.pg))
    if found is None or found[0] is not group.pg or found[1] is not world:  # new, or made before a re-init
        ranks = dist.get_process_group_ranks(group.pg or world)
        found = _groups[id(group.pg)] = (group.pg, world, dist.new_group(ranks=ranks, backend="gloo"))
    pg = found[2]
    return Group(pg, dist.get_rank(pg), dist.get_world_size(pg))


def stage(plan: Plan, staging: Any) -> None:
    """Copy every slice this rank writes into host buffers of ``staging`` (a :class:`~tensorfile.checkpoint.staging.
    Staging`): the leaves then hold the copies, and training may change the tensors."""
    written = plan.written()
    copies = staging.snapshot({leaf.name: leaf.value for leaf in written})
    for leaf in written:
        leaf.value = copies[leaf.name]


def async_save(state_dict: Any, path: str | os.PathLike[str], *, process_group: Any = None,
               metadata: Mapping[str, str] | None = None, storage_options: Mapping[str, Any] | None = None,
               ) -> concurrent.futures.Future:  # fmt: skip
    """:func:`save` in the background: copy the slices this rank writes to host memory, then return a future.

    As ``torch.distributed.checkpoint.async_save``: call it on every rank, and ``future.result()`` before
    the next save or the end of the program (it raises what :func:`save` would). Host memory is bounded:
    one copy of what this rank writes, in buffers allocated by the first call and reused by later ones with
    the same layout (:mod:`tensorfile.checkpoint.staging`); a call made while the previous save still writes
    first waits for it. The background commit talks over a gloo group of the same ranks, made by the
    first call (every rank calls it, as a collective).

    Returns:
        A ``concurrent.futures.Future`` whose ``result()`` is None once the checkpoint is committed.

    ``path`` and ``storage_options`` as for :func:`save` (a URL: the upload and the commit run in the background).

    Raises:
        UnsupportedTypeError, NotADirectoryError, TypeError: at once, as :func:`save`.
    """
    global _pending, _executor, _staging
    from ..checkpoint.staging import Staging

    wait_pending()
    group = group_of(process_group)
    user = _check_metadata(metadata)
    folder = _folder(path, storage_options)
    background = background_group(group)
    with _lock:
        if _staging is None:
            _staging = Staging()
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tensorfile-distributed-save")
    plan, failed = try_prepare(state_dict, group, _staging)
    future = _executor.submit(write_checkpoint, plan, folder, background, user, folder.publish,
                              committed=folder.committed, failed=failed)  # fmt: skip
    _pending = future
    if failed is not None:  # the peers learn it in the background, through the future
        raise failed
    return future
