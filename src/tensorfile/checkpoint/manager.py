"""``CheckpointManager``: crash-safe, retained, optionally asynchronous training checkpoints.

On disk, ``<directory>/step_<N>/state.tensorfile`` per committed step (see
:mod:`.commit` for how a step appears atomically); under ``torch.distributed``,
``<directory>/step_<N>/`` is a distributed checkpoint (``manifest.json`` and one file
per rank: :mod:`tensorfile.distributed.steps`). The file's user metadata
``tensorfile.checkpoint`` holds JSON ``{"step": N, "metrics": {...}, "live":
{name: kind}}`` so that retention and ``best_step`` read only headers.

On object storage (an fsspec URL: ``s3://``, ``gs://``, ``memory://``...), where renames
are not atomic, each step is data objects plus one commit object written last with a
conditional put (:mod:`.objects`); the commit object also holds that JSON.
Under ``torch.distributed`` there, the commit object names the manifest of a distributed
checkpoint uploaded by every rank (:mod:`tensorfile.distributed.object_steps`).

With ``incremental=True`` a step is a manifest naming blobs shared with older steps (:mod:`.blobs`; which
tensors a step writes: :mod:`.incremental`; the save flow: :mod:`.incremental_saves`).

Reading steps back: :mod:`.reading` (one step, or the newest that verifies); filling live objects: :mod:`.restore`.
"""

from __future__ import annotations

import atexit
import functools
import json
import operator
import os
import re
import sys
import threading
import warnings
import weakref
from collections import deque
from typing import Any, Callable, Mapping

from ..errors import CheckpointNotFoundError, TensorFileError
from ..files import _save
from ..lazy import open as open_file
from ..storage import is_url, local_path
from .commit import commit, delete, remove_temporaries
from .live import capture, class_of, kind_of
from .lock import FolderLock
from .objects import ObjectSteps
from .reading import load_newest, load_step
from .restore import Restored, fill
from .retention import Retention
from .staging import Staging
from .writer import Job, Writer

__all__ = ["CheckpointManager", "Restored"]

STATE_FILE = "state.tensorfile"
METADATA_KEY = "tensorfile.checkpoint"
_STEP = re.compile(r"step_([0-9]{8,})")  # ASCII digits only: \d also takes other scripts' digits


def _close_at_exit(ref: "weakref.ref[CheckpointManager]") -> None:
    """At interpreter exit: finish a manager's background saves; say so on stderr if the last one failed."""
    manager = ref()
    if manager is None or manager._closed or manager._pid != os.getpid():  # a fork's copy: the parent commits
        return
    try:
        manager.close()
    except BaseException as exc:  # nothing above to catch it any more
        sys.stderr.write(f"tensorfile: {manager.directory}: a checkpoint could not be committed at exit: "
                         f"{type(exc).__name__}: {exc}\n")  # fmt: skip


class CheckpointManager:
    """Save and restore training state under ``directory``, one folder per step.

    Args:
        directory: the checkpoint folder (created if missing).
        max_to_keep: keep the newest N steps (None: keep every step).
        keep_every_n_steps: also keep every step divisible by N.
        keep_best: also keep the N best steps by ``best_metric``.
        best_metric: the name of a metric passed to :meth:`save`.
        best_mode: ``"min"`` or ``"max"``: which values of the metric are best.
        best_fn: instead of ``best_metric``, a function of a step's metrics dict to a
            number ranked by ``best_mode`` (Orbax's ``best_fn``); a step it raises
            ``KeyError``/``TypeError``/``ValueError``/``ArithmeticError`` for, or scores NaN or
            inf, is never best.
        save_interval_steps: :meth:`save` skips steps not divisible by this unless ``force``.
        async_save: :meth:`save` snapshots the state to host memory and returns; a
            background thread writes and commits. The snapshot goes into staging
            buffers allocated by the first save and reused by later ones (see
            :mod:`.staging`), so after the first save the stall is a memory copy.
            A save still writing when the interpreter exits normally is committed
            then (a failure is written to stderr).
        async_buffers: host copies of the state an async manager may hold, 1 or 2.
            With 2 (the default), a save copies the state while the previous save is
            still writing, then waits for that write; the second copy is allocated
            and faulted in behind the first save. With 1, host memory stays at one
            copy of the state: :meth:`save` waits for the previous write, then copies.
            Memory held until :meth:`close`: ``async_buffers`` x the state's tensor bytes.
        lock_timeout: seconds to wait for another manager (another process)
            holding the folder, 0 to fail at once.
        read_only: a reader: takes no lock, removes and writes nothing, so it works
            beside a trainer's manager and on a read-only folder. ``steps``,
            ``latest_step``, ``best_step`` and :meth:`restore` see each step as soon
            as the trainer commits it; :meth:`save` raises ``PermissionError``.
        storage_options: for a ``directory`` that is an fsspec URL (``s3://bucket/run1``,
            ``gs://...``, ``memory://...``; needs ``pip install 'tensorfile[remote]'`` and
            the protocol's backend): options for its filesystem, as
            ``fsspec.core.url_to_fs`` takes them (credentials otherwise from the
            environment). There a step is committed by a commit object written after
            its data with a conditional put (``If-None-Match: *``, AWS S3 conditional
            writes; :mod:`tensorfile.checkpoint.objects`): readers ignore steps without
            one, retention deletes it first, two managers saving one step cannot both
            commit it (the second gets :class:`CheckpointConflictError`), and a step
            already committed is never replaced. No lock is taken (an object store has
            none); a writing manager aborts stale unfinished multipart uploads and
            deletes stale uncommitted data objects under ``directory`` when it starts
            and after each save. Ignored for a local path (``file://`` URLs are local).
        distributed: work across the ranks of ``torch.distributed``'s default group
            (None, the default: when it is initialized with more than one rank, and for
            states holding ``DTensor`` s on one rank; True: always, without it as a world
            of one; False: never). Then every rank makes the manager and calls each method
            with the same arguments (SPMD); ``directory`` must be on storage every rank
            sees. Each step is a distributed checkpoint (:mod:`tensorfile.distributed`):
            every rank writes the slices it holds (FSDP2 / tensor parallel ``DTensor``
            shards; replicated tensors once), modules and their optimizers are saved
            through ``torch.distributed.checkpoint.state_dict`` (by parameter name, so a
            step restores on another world size), and rank 0 commits the step by renaming
            its folder once every rank's files are in it: a rank killed mid-save never
            leaves a committed partial step. Rank 0 holds the lock, applies retention and
            picks the step to restore; the other ranks follow its decisions. On object
            storage (a URL) each rank uploads its shard object under ``step_<N>/dist-<16 hex>/``,
            rank 0 puts the manifest there, then commits the step with its commit object
            (conditional put; :mod:`tensorfile.distributed.object_steps`) and deletes the commit
            object first on retention; each rank's restore reads only its slices' byte ranges.
        incremental: each step writes only the tensors whose bytes changed since the newest committed
            step (XXH3-64 checksums; an async save copies in its stall only the torch tensors whose version
            counter moved and checks the others in the background: :mod:`tensorfile.checkpoint.incremental`).
            A step is a manifest naming one blob per step that wrote a tensor it holds
            (:mod:`tensorfile.checkpoint.blobs`): on a local disk the step folder holds hard links to them, so
            it is complete on its own (``tensorfile.load(step folder)`` reads it); on object storage blobs
            live under ``<directory>/blobs/`` and are deleted when no committed step names them. Not under
            ``torch.distributed``.
        trust_version_counter: with ``incremental`` and ``async_save``: False copies every tensor in the
            stall (as a full async save does) and writes only the changed ones, which is exact even for
            tensors changed behind their version counter and changed back before the write.

    Raises:
        CheckpointLockedError: another manager holds the folder.
        CheckpointNotFoundError: ``read_only`` and no such folder (no object under the URL).
        ValueError: inconsistent retention options.
        ImportError: ``directory`` is a URL and fsspec or its backend is not installed.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_to_keep: int | None = None,
        keep_every_n_steps: int | None = None,
        keep_best: int | None = None,
        best_metric: str | None = None,
        best_mode: str = "min",
        best_fn: Callable[[Mapping[str, float]], float] | None = None,
        save_interval_steps: int = 1,
        async_save: bool = False,
        async_buffers: int = 2,
        lock_timeout: float = 0.0,
        read_only: bool = False,
        storage_options: Mapping[str, Any] | None = None,
        distributed: bool | None = None,
        incremental: bool = False,
        trust_version_counter: bool = True,
    ) -> None:
        directory = local_path(directory)
        self.directory = directory.rstrip("/") if is_url(directory) else os.fspath(directory)
        #: the step store on object storage (None on a local disk)
        self._objects = ObjectSteps(self.directory, storage_options) if is_url(directory) else None
        self.retention = Retention(max_to_keep, keep_every_n_steps, keep_best, best_metric, best_mode, best_fn)
        if not isinstance(save_interval_steps, int) or save_interval_steps < 1:
            raise ValueError(f"save_interval_steps must be a positive int, not {save_interval_steps!r}")
        self.save_interval_steps = save_interval_steps
        self.async_save = async_save
        if type(async_buffers) is not int or async_buffers not in (1, 2):
            raise ValueError(f"async_buffers must be 1 or 2, not {async_buffers!r}")
        self.async_buffers = async_buffers
        self.read_only = read_only
        self._closed = False
        self._pid = os.getpid()  # a forked child (a DataLoader worker) never waits for its parent's writes
        self._lock: FolderLock | None = None
        from ..distributed.steps import group_for

        self._group = group_for(distributed)
        self._distributed = distributed
        if self._objects is not None:  # no lock, no folders: a writer (rank 0) only cleans up after dead writers
            if read_only and not self._objects.exists():
                raise CheckpointNotFoundError(f"{self.directory}: no such checkpoint location (no object under it)")
            if not read_only and (self._group is None or self._group.rank == 0):
                self._objects.sweep()
        elif read_only:  # a reader: no lock, no clean-up, nothing written (the folder may be read-only)
            if not os.path.isdir(self.directory):
                raise CheckpointNotFoundError(f"{self.directory}: no such checkpoint folder")
        elif self._group is not None:  # rank 0 locks and cleans; every rank raises if that failed
            from ..distributed.steps import lock

            self._lock = lock(self.directory, lock_timeout, self._group)
        else:
            os.makedirs(self.directory, exist_ok=True)
            self._lock = FolderLock(self.directory, lock_timeout)
            remove_temporaries(self.directory)
        self._error: BaseException | None = None
        self._free: list[Staging] = []  # staging buffers not used by a write in flight
        self._inflight: deque[tuple[Job, Staging]] = deque()  # the write in flight, if any
        self._writer = Writer("tensorfile-checkpoint")  # the thread of async writes (started by the first)
        self._stagings = 0
        self._prefault: threading.Thread | None = None
        # An async save still writing when the script ends is committed at interpreter exit (not lost). The
        # write uses thread pools, which refuse work once concurrent.futures' own exit hook has run; threading's
        # exit hooks run before it (newest first), plain atexit hooks after. Python 3.9+ has the former.
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        if not read_only:
            getattr(threading, "_register_atexit", atexit.register)(self._at_exit)
        self._metrics: dict[int, dict[str, float]] = {}
        self._incremental = None
        if incremental:
            if self._group is not None:
                raise ValueError("incremental=True is not supported under torch.distributed")
            from .incremental_saves import tracker_for

            self._incremental = tracker_for(self, trust_version_counter)

    # ------------------------------------------------------------ what is there

    @property
    def steps(self) -> list[int]:
        """Committed steps, ascending (a step being written in the background is not one yet)."""
        if self._objects is not None:
            return self._objects.steps()
        found = []
        for entry in os.listdir(self.directory):
            match = _STEP.fullmatch(entry)
            if match and os.path.isdir(os.path.join(self.directory, entry)):
                found.append(int(match.group(1)))
        return sorted(found)

    @property
    def latest_step(self) -> int | None:
        """The newest committed step, or None."""
        steps = self.steps
        return steps[-1] if steps else None

    @property
    def best_step(self) -> int | None:
        """The best committed step by ``best_metric`` or ``best_fn`` (None without either)."""
        if not self.retention.ranks:
            return None
        best = self.retention.best(self.steps, self._all_metrics(), 1)
        return best[0] if best else None

    def _path(self, step: int) -> str:
        return os.path.join(self.directory, f"step_{step:08d}")

    def _state_path(self, step: int) -> str:
        """The step's file, or for a distributed step its folder (read through its manifest)."""
        path = os.path.join(self._path(step), STATE_FILE)
        return path if os.path.exists(path) or not os.path.isdir(self._path(step)) else self._path(step)

    def _step_info(self, step: int) -> dict[str, Any]:
        if self._objects is not None:
            try:
                return dict(self._objects.record(step)["info"])
            except (TensorFileError, OSError):
                return {}
        try:
            with open_file(self._state_path(step)) as f:
                return json.loads(f.metadata.get(METADATA_KEY, "{}"))
        except (OSError, ValueError):
            return {}

    def _all_metrics(self) -> dict[int, dict[str, float]]:
        for step in self.steps:
            if step not in self._metrics:
                self._metrics[step] = self._step_info(step).get("metrics", {})
        return self._metrics

    # ------------------------------------------------------------ saving

    def save(self, step: int, state: Mapping[str, Any], *, metrics: Mapping[str, float] | None = None, force: bool = False) -> bool:
        """Checkpoint ``state`` as ``step``.

        Args:
            step: the training step (an int >= 0).
            state: names to tensors, containers, plain values and live objects
                (torch modules, optimizers, schedulers, GradScaler; Keras models
                and optimizers; Flax NNX modules; optax states), each saved
                through its state.
            metrics: numbers for ``keep_best`` / ``best_step`` (e.g. ``{"loss": 0.3}``).
            force: save even when ``step`` is not on ``save_interval_steps``.

        Returns:
            True when a checkpoint was written (or, with ``async_save``, started).

        Raises:
            TensorFileError, OSError: this or (async) the previous save failed;
                earlier steps are intact and no partial step is visible.
        """
        self._check_open()
        if self.read_only:
            raise PermissionError(f"{self.directory}: this CheckpointManager is read-only (read_only=True)")
        if isinstance(step, bool) or not hasattr(step, "__index__") or operator.index(step) < 0:
            raise ValueError(f"step must be an int >= 0, not {step!r}")
        step = operator.index(step)
        self._raise_pending()
        if not force and step % self.save_interval_steps:
            return False
        if self._group_of(state) is not None:
            self._save_group(step, state, metrics)
            return True
        live: dict[str, str] = {}
        classes: dict[str, str] = {}
        tree: dict[str, Any] = {}
        for name, value in state.items():
            kind = kind_of(value)
            if kind is not None:
                live[name], classes[name] = kind, class_of(value)
                value = capture(kind, value)
            tree[name] = value
        info = {"step": step, "metrics": {k: float(v) for k, v in (metrics or {}).items()}, "live": live,
                "classes": classes}  # fmt: skip
        if self._incremental is not None:
            from .incremental_saves import save

            save(self, step, tree, info)
            return True
        if not self.async_save:
            self._write(step, tree, info)
            return True
        # Later changes to the live state must not leak into the checkpoint: snapshot into a staging
        # that the write in flight does not use, then wait for that write (its error is raised here).
        if self.async_buffers == 1:
            self.wait()
        staging = self._free.pop() if self._free else self._new_staging()
        try:
            snapshot = staging.snapshot(tree)
            self.wait()
        except BaseException:
            self._free.append(staging)
            raise
        if self._stagings < self.async_buffers:  # the first save: fault in the second staging beside the write
            spare = self._new_staging()
            self._free.append(spare)
            self._prefault = threading.Thread(target=spare.prefault, args=(staging,), daemon=True,
                                              name="tensorfile-checkpoint-prefault")  # fmt: skip
            self._prefault.start()
        self._start(step, lambda: self._write(step, snapshot, info), staging)
        return True

    def _start(self, step: int, job: Callable[[], None], staging: Staging) -> None:
        handle = self._writer.submit(functools.partial(self._write_async, step, job), f"tensorfile-checkpoint-{step}")
        self._inflight.append((handle, staging))

    def _save_group(self, step: int, state: Mapping[str, Any], metrics: Mapping[str, float] | None) -> None:
        """:meth:`save` across the ranks (see ``distributed``): every rank writes its slices, rank 0 commits."""
        from ..distributed.steps import Writer, capture

        tree, live, classes = capture(state)
        info = {"step": step, "metrics": {k: float(v) for k, v in (metrics or {}).items()}, "live": live,
                "classes": classes}  # fmt: skip
        group, after = self._group_of(state), lambda: self._retain(step, info)
        if self._objects is not None:
            from ..distributed.object_steps import ObjectWriter

            writer: Writer = ObjectWriter(self._objects, step, tree, info, METADATA_KEY, group, after)
        else:
            writer = Writer(self.directory, step, tree, {METADATA_KEY: json.dumps(info)}, group, after)

        def job() -> None:
            writer.write()
            self._metrics[step] = info["metrics"]

        if not self.async_save:
            job()
            return
        if self.async_buffers == 1:
            self.wait()
        staging = self._free.pop() if self._free else self._new_staging()
        try:
            writer.stage(staging)
            self.wait()
        except BaseException:
            self._free.append(staging)
            raise
        writer.background()
        self._start(step, job, staging)

    def _group_of(self, state: Mapping[str, Any]) -> Any:
        """The ranks a save or restore of ``state`` works across (None: this process alone, as without
        torch.distributed): the manager's group, or a world of one for a state holding DTensors."""
        if self._group is not None or self._distributed is False:
            return self._group
        from ..distributed.comm import group_of
        from ..distributed.steps import holds_dtensors

        return group_of() if holds_dtensors(state) else None

    def _new_staging(self) -> Staging:
        self._stagings += 1
        return Staging()

    def _retire(self) -> None:
        job, staging = self._inflight[0]
        job.join()  # an interrupt here (Ctrl-C) leaves the write listed as in flight
        self._inflight.popleft()
        self._free.append(staging)

    def _write_async(self, step: int, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # raised again at the next save / wait / close
            if hasattr(exc, "add_note"):
                exc.add_note(f"(while saving checkpoint step {step} in the background)")
            if self._error is None:  # the first failure is the one to report
                self._error = exc

    def _write(self, step: int, tree: Any, info: dict[str, Any]) -> None:
        metadata = {METADATA_KEY: json.dumps(info)}
        if self._objects is not None:  # staged locally (no fsync needed), uploaded, then committed
            self._objects.commit(step, lambda local: _save(tree, local, metadata, durable=False), info)
        else:
            commit(self.directory, f"step_{step:08d}", lambda folder: _save(tree, os.path.join(folder, STATE_FILE), metadata, durable=True))
        self._retain(step, info)

    def _retain(self, step: int, info: dict[str, Any]) -> None:
        """After step ``step`` is committed (under torch.distributed: on rank 0): retention."""
        self._metrics[step] = info["metrics"]
        self._apply_retention()
        if step not in self.steps:
            warnings.warn(
                f"{self.directory}: step {step} was saved but retention removed it at once: newer steps "
                f"{[s for s in self.steps if s > step]} fill max_to_keep={self.retention.max_to_keep}",
                stacklevel=3,
            )

    def _apply_retention(self) -> None:
        steps = self.steps
        keep = self.retention.keep(steps, self._all_metrics())
        for step in steps:
            if step not in keep:
                if self._objects is not None:
                    self._objects.delete(step)  # the commit object first
                else:
                    delete(self.directory, os.path.basename(self._path(step)))
                self._metrics.pop(step, None)
        if self._objects is not None:
            self._objects.sweep()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.directory}: this CheckpointManager is closed")

    def wait(self) -> None:
        """Wait for background saves to finish; raise the first error, if any. (In a process forked while a save
        was in flight, that save is the parent's: its thread did not come along, so it is not waited for.)"""
        if self._pid != os.getpid():
            self._inflight.clear()
        while self._inflight:
            self._retire()
        self._raise_pending()

    def close(self) -> None:
        """Finish pending saves and release the folder (raises a pending save's error)."""
        if self._closed:
            return
        self._closed = True
        if self._pid != os.getpid():  # a forked copy: the writes, buffers and threads are the parent's (their locks
            if self._lock is not None:  # may have been held at the fork); only this process's descriptor is closed
                self._lock.close()
                self._lock = None
            return
        try:
            self.wait()
        except BaseException:
            if self._inflight:  # interrupted while a write runs: keep the folder locked and the manager open
                self._closed = False
                raise
            self._release()
            raise
        self._release()

    def _release(self) -> None:
        """Free the staging buffers and the folder (every write has ended)."""
        self._writer.stop()
        if self._prefault is not None:
            self._prefault.join()
        for staging in self._free:
            staging.clear()
        self._free.clear()
        if self._incremental is not None:
            self._incremental.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        atexit.unregister(self._at_exit)

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ restoring

    def restore(self, step: int | None = None, state: Mapping[str, Any] | None = None, *,
                strict: bool = True) -> "Restored":  # fmt: skip
        """Load a checkpoint: the latest valid one, or ``step``.

        All or nothing: every live object in ``state`` is checked against the
        checkpoint (names, shapes and dtypes of tensors; an optimizer's parameter
        groups; a Keras optimizer's variables; a pytree's leaves) before any of them
        is touched. Names with a wrapper's prefix (``module.`` of DataParallel/DDP,
        ``_orig_mod.`` of ``torch.compile``) match the plain model's names, both ways.

        Args:
            step: None for the latest step that loads and verifies; a corrupt or
                partial latest step is skipped with a warning naming it.
            state: live objects by name (the same names as at save), filled in place.
            strict: True: any missing, unexpected or mismatched tensor raises and
                nothing is filled. False: fill what matches (an object that cannot
                take its state at all, e.g. an optimizer with other parameter groups,
                is left as it is) and report the rest in ``.report``.

        Returns:
            :class:`Restored`: the whole saved dict, live objects filled (immutable
            pytrees rebuilt), everything else as loaded values; its ``.report`` is a
            :class:`~tensorfile.LoadReport` over all live objects (names prefixed
            ``"<state name>."``), ``.reports`` one per live object.

        Raises:
            CheckpointNotFoundError: no committed step (or none valid, or ``step`` absent).
            IntegrityError: ``step`` was given and is corrupt, truncated or incomplete.
            ParameterMismatchError: ``strict`` and a live object does not fit (nothing was filled;
                ``.report`` lists every problem).
            KeyError: ``strict`` and ``state`` names something the checkpoint lacks.
            ValueError: a name in ``state`` was saved as another kind of object.
        """
        self._check_open()
        self.wait()
        steps = self.steps
        group = self._group_of(state or {})
        if group is not None:
            from ..distributed.steps import restore

            where, options = None, None
            if self._objects is not None:
                from ..distributed.object_steps import manifest_url

                where, options = functools.partial(manifest_url, self._objects), self._objects.storage_options
            step, out, report, reports = restore(self.directory, steps, step, state or {}, strict, group,
                                                 METADATA_KEY, where, options)  # fmt: skip
            restored = Restored(out)
            restored.step, restored.report, restored.reports = step, report, reports
            return restored
        if step is not None:
            if step not in steps:
                raise CheckpointNotFoundError(f"{self.directory}: no checkpoint for step {step} (have {steps})")
            loaded, info = load_step(self, step)
        else:
            step, loaded, info = load_newest(self, steps)
        return fill(self.directory, step, loaded, info, state or {}, strict)
