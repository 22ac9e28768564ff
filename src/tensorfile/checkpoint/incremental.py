"""Incremental checkpoints: which tensors a step writes, and how a tensor is known to be unchanged.

A step writes only the tensors whose bytes differ from the newest committed step (its *base*); every other
tensor is named in the step's manifest by the blob of an older step that holds it (:mod:`.blobs`). Whether
bytes differ is decided by their XXH3-64 checksum, the one the format stores for every tensor
(:mod:`tensorfile.format.checksums`), compared with the base's; a flag alone is never trusted. What is hashed
when:

* a synchronous save hashes every tensor that has a counterpart of the same dtype and shape in the base
  (on :data:`~tensorfile.format.reader.READERS` threads; ``xxhash`` releases the GIL) and writes those whose
  checksum differs, plus the new ones. Nothing moves during the save, so the step is exact. On a local disk the
  tensors whose torch version counter did not move since the previous save are hashed *while* the blob of the
  others and the manifest are written and fsynced; the step is committed (its folder renamed into place) only once
  those hashes match the base, and a tensor found changed behind its counter makes the save start the step again
  with it in the blob (the temporary folder of the first try is discarded: nothing was committed).
* an asynchronous save must copy, during the training step's stall, what it will write. It copies the
  tensors whose torch version counter moved since the previous save (and every tensor without a counter:
  NumPy, TensorFlow, JAX, MXNet), and no others. In the background it hashes the copies (writing the ones that
  differ from the base) *and* the tensors it did not copy, read live: a tensor whose counter had not moved
  but whose bytes differ from the base was changed behind its counter (``p.data.add_()``, a NumPy view, a
  copy into ``untyped_storage()``) or after the save returned. Its bytes at the instant of the save are then
  unknown, so the step is **not committed** (a ``RuntimeWarning`` names the tensor) and that tensor is copied
  in every later stall. A committed step is therefore exact, except in one case no checksum can see: a
  tensor changed behind its counter before the save and changed back to the base's bytes before the
  background hash read it. ``trust_version_counter=False`` closes it: every stall copies every tensor (the
  stall of a full async save) and only the write is incremental.

Where the kernel records writes (:mod:`.written`: Linux 6.7+), a CPU torch tensor of 64 KiB or more whose counter
did not move and none of whose whole pages was written since the previous plan (and whose partial end pages hash
as then) holds the bytes of the previous step: when that step is the base, it is shared without a hash, sync or
async; a tensor of the same memory found written behind its counter is copied in the async stall. Every other
tensor is decided as above.

A counter is ``(tensor._version, data_ptr, storage_offset, shape, stride, dtype, device, requires_grad, is_neg,
is_conj, type)`` (the neg and conj bits: ``x.conj().imag`` is the memory of ``x.imag``, read negated);
a tensor met under a name that had another counter at the previous stall, or a new name, is copied. A save of a
state with the previous save's structure and tensor identities (sync or async) skips the flatten altogether
(:mod:`.layout`); otherwise, for a CPU tensor whose counter did not move, the flatten reuses the previous
stall's host view of it (same memory), about 15 us instead of 60 (:class:`_Flattener`). Measured
(``benchmarks/incremental.py``, ``docs/PERFORMANCE.md``): XXH3-64 runs at about 7 GB/s per core here, so a
synchronous step of a 256 MiB frozen backbone spends 25 to 36 ms hashing it on an idle machine; an async stall
of 136 tensors, 3 MiB of them changed, is about 2 to 3 ms of CPU with the layout (10 without).
"""

from __future__ import annotations

import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import xxhash

from .. import tree
from ..distributed import manifest as mf
from ..errors import UnsupportedTypeError
from ..format.dtypes import name_of
from ..format.reader import READERS
from ..format.writer import tensor_chunks
from .blobs import INCREMENTAL_KEY, Base, Ref, blob_name
from .layout import Layout

__all__ = ["Tracker", "Plan", "counter", "digest", "digests"]

_FLAGS = ("parameter", "requires_grad")  # the flags a manifest entry records


def counter(value: Any) -> tuple[Any, ...] | None:
    """A torch tensor's version counter and identity, or None (no counter: another framework, a sparse tensor)."""
    if not type(value).__module__.startswith("torch"):
        return None
    try:
        return (value._version, value.data_ptr(), value.storage_offset(), value.shape, value.stride(), value.dtype,
                value.device, value.requires_grad, value.is_neg(), value.is_conj(), type(value))  # fmt: skip
    except (AttributeError, RuntimeError, TypeError, NotImplementedError):
        return None


class _Flattener(tree._Flattener):
    """:func:`tensorfile.tree.flatten` (``tie_once``) that reuses, for a CPU torch tensor met at the same path with
    the same :func:`counter` as in the previous flatten, that flatten's host view, storage and record (the same
    memory, so the same values): a stall then costs about 1 us per unchanged tensor instead of about 50."""

    def __init__(self, cache: dict[tuple[str, ...], tuple[Any, Any]]) -> None:
        super().__init__(tie_once=True)
        self.cache = cache
        self.next: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def _tensor(self, value: Any, adapter: Any, where: str, parts: list[str]) -> dict[str, Any]:
        key = counter(value)
        path = tuple(parts)
        hit = self.cache.get(path) if key is not None and key[6].type == "cpu" else None
        if hit is None or hit[0] != key or id(value) in self.by_id:
            node = super()._tensor(value, adapter, where, parts)
            leaf = self.by_id.get(id(value))
            # only a view of the tensor's memory is reused (a neg or conj view is stored from a copy)
            if key is not None and leaf is not None and leaf.name == node["name"] and leaf.storage is not None:
                self.next[path] = (key, leaf)
            return node
        old = hit[1]
        storage = old.storage
        view_key = None
        if storage is not None:
            view_key = (storage.key, storage.offset, storage.strides, old.array.shape, old.array.dtype.str, repr(old.record))
            first = self.by_view.get(view_key)
            if first is not None:  # tied to a tensor met before under another name
                self.by_id[id(value)] = first
                return {"type": "tensor", "name": first.name}
        leaf = tree.Leaf(self._name(parts), old.array, old.framework, old.record, storage, source=value)
        self.by_id[id(value)] = leaf
        if view_key is not None:
            self.by_view[view_key] = leaf
        self.out.leaves.append(leaf)
        self.next[path] = (key, leaf)
        return {"type": "tensor", "name": leaf.name}


def digest(array: np.ndarray) -> str:
    """XXH3-64 of ``array`` as stored (little-endian, C order): the checksum a tensorfile file records for it."""
    h = xxhash.xxh3_64()
    for piece in tensor_chunks(array):
        h.update(piece)
    return h.hexdigest()


def digests(arrays: Mapping[str, np.ndarray]) -> dict[str, str]:
    """:func:`digest` of each array, the large ones on :data:`READERS` threads (largest first)."""
    names = sorted(arrays, key=lambda n: -arrays[n].nbytes)
    if READERS < 2 or sum(arrays[n].nbytes for n in names[1:]) < (4 << 20):
        return {n: digest(arrays[n]) for n in names}
    with ThreadPoolExecutor(READERS, thread_name_prefix="tensorfile-hash") as pool:
        return dict(zip(names, pool.map(lambda n: digest(arrays[n]), names)))


@dataclass
class Marks:
    """What the kernel's write tracking (:mod:`.written`) said of each tracked tensor when a save was planned:
    ``{name: (identity, range, generation, XXH3 of the partial end pages)}``; ``committed`` is set to the step
    once that save is committed."""

    marks: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    committed: int | None = None


@dataclass
class Plan:
    """One save of an incremental manager: the state's structure, each tensor's facts, what was copied."""

    root: dict[str, Any]
    entries: dict[str, tuple[str, tuple[int, ...], str, dict[str, bool]]]  # dtype name, shape, framework, flags
    copied: dict[str, np.ndarray]  # staged copies (async) or the live arrays (sync): compared, written if changed
    clean: dict[str, np.ndarray] = field(default_factory=dict)  # async: not copied (counter still); read live
    sync: bool = True
    verified: set[str] = field(default_factory=set)  # of clean: not written since the previous plan (kernel)
    marks: Marks = field(default_factory=Marks)  # this plan's
    after: Marks | None = None  # the previous plan's: ``verified`` holds only if that one is the base


class Tracker:
    """The incremental state of one :class:`~tensorfile.CheckpointManager`.

    Args:
        store: a :class:`.blobs.LocalBlobs` or :class:`.blobs.ObjectBlobs`.
        steps: the committed steps, ascending (called when the base must be read again).
        trust_version_counter: False: an async save copies every tensor (see the module docs).
    """

    def __init__(self, store: Any, steps: Callable[[], list[int]], trust_version_counter: bool = True) -> None:
        self.store, self._steps, self.trust = store, steps, trust_version_counter
        self._seen: dict[str, tuple[Any, ...]] = {}  # counters at the previous stall
        self._views: dict[tuple[str, ...], tuple[Any, Any]] = {}  # path -> (counter, leaf) of the previous stall
        self._layout: Layout | None = None  # the previous save's layout (a save of the same structure
        # skips the flatten: :mod:`.layout`)
        self.untrusted: set[str] = set()  # tensors found changed behind their counter: copied at every stall
        self._marks: Marks | None = None  # the previous plan's write-tracking marks
        self._tracked: dict[str, tuple[Any, tuple[int, int], tuple[int, int]]] = {}  # name -> (identity, range
        # registered, the first and past-the-last byte addresses of its memory)
        self._base: Base | None = None
        self._loaded = False
        #: bytes of tensor data the last committed step wrote (its blob's tensors)
        self.written_bytes = 0
        #: tensors the last committed step shared without hashing them (the kernel saw no write: :mod:`.written`)
        self.unhashed = 0

    def reset(self) -> None:
        """Forget the counters and the base (after a failed or discarded save): the next save copies every
        tensor and reads the base back from the newest committed step."""
        self._seen, self._views, self._base, self._loaded, self._layout = {}, {}, None, False, None
        self._marks = None

    def close(self) -> None:
        """Stop tracking this tracker's tensors (their pages are plain memory again)."""
        from . import written

        kernel = written.tracker() if self._tracked else None
        for _, where, _ in self._tracked.values():
            if kernel is not None:
                kernel.release(where)
        self._tracked, self._marks = {}, None

    def base(self) -> Base | None:
        """The newest committed step as a base (read from storage after a reset)."""
        if not self._loaded:
            self._base, self._loaded = self.store.base(self._steps()), True
        return self._base

    def prepare(self, state: Any, staging: Any = None) -> Plan:
        """The plan of a save of ``state``: with ``staging`` (async), the tensors to copy copied into its buffers.

        Raises:
            UnsupportedTypeError: a value cannot be stored (names its place).
        """
        if self._layout is not None:
            plan = self._prepare_cached(state, staging, self._layout)
            if plan is not None:
                return plan
        self._layout = None
        flattener = _Flattener(self._views)
        try:
            flattener.out.root = flattener.node(state, "obj", [])
        except RecursionError:
            raise UnsupportedTypeError("obj: containers nested too deeply to store") from None
        self._views = flattener.next
        flat = flattener.out
        entries: dict[str, tuple[str, tuple[int, ...], str, dict[str, bool]]] = {}
        seen: dict[str, tuple[Any, ...]] = {}
        copy: dict[str, np.ndarray] = {}
        clean: dict[str, np.ndarray] = {}
        watched: list[tuple[str, Any, np.ndarray, tuple[Any, ...]]] = []
        for leaf in flat.leaves:
            array = leaf.array
            flags = {k: True for k in _FLAGS if leaf.record.get(k)}
            entries[leaf.name] = (name_of(array.dtype), tuple(array.shape), leaf.framework, flags)
            key = counter(leaf.source)
            if key is not None:
                seen[leaf.name] = key
                watched.append((leaf.name, leaf.source, array, key))
            still = key is not None and self.trust and self._seen.get(leaf.name) == key
            if still and leaf.name not in self.untrusted:
                clean[leaf.name] = array
            else:
                copy[leaf.name] = array
        self._layout = Layout.build(state, flat.root, flat.leaves, entries)
        verified, marks = self._watch(watched, clean, copy)
        if staging is not None:
            copy = staging.stage(copy)
        self._seen = seen
        return self._plan(Plan(flat.root, entries, copy, clean, staging is None, verified, marks))

    def _prepare_cached(self, state: Any, staging: Any, layout: Layout) -> Plan | None:
        """:meth:`prepare` of a state of the previous save's layout, without its flatten: the same decisions per
        tensor (counter moved or untrusted: copied when async; else checked against the base by checksum). None
        when ``state`` does not have that layout."""
        found = layout.match(state)
        if found is None:
            return None
        root, tensors = found
        previous, untrusted, trust = self._seen, self.untrusted, self.trust
        seen: dict[str, tuple[Any, ...]] = {}
        copy: dict[str, np.ndarray] = {}
        clean: dict[str, np.ndarray] = {}
        watched: list[tuple[str, Any, np.ndarray, tuple[Any, ...]]] = []
        for leaf, i in zip(layout.leaves, layout.first):
            source = tensors[i]
            key = seen[leaf.name] = (source._version, *layout.identities[i], type(source))  # counter(source)
            watched.append((leaf.name, source, leaf.array, key))
            if trust and previous.get(leaf.name) == key and leaf.name not in untrusted:
                clean[leaf.name] = leaf.array
            else:
                copy[leaf.name] = leaf.array
        verified, marks = self._watch(watched, clean, copy)
        copied = staging.stage(copy) if staging is not None else copy
        self._seen = seen
        return self._plan(Plan(root, dict(layout.entries), copied, clean, staging is None, verified, marks))

    def _plan(self, plan: Plan) -> Plan:
        plan.after, self._marks = self._marks, plan.marks
        return plan

    def _watch(self, tensors: list[tuple[str, Any, np.ndarray, tuple[Any, ...]]], clean: dict[str, np.ndarray],
               copy: dict[str, np.ndarray]) -> tuple[set[str], Marks]:  # fmt: skip
        """Ask the kernel (:mod:`.written`) which tracked tensors were written since the previous plan; track the
        CPU torch tensors of ``clean`` (counter still) of :data:`.written.MIN_BYTES` or more not yet tracked, and
        stop tracking the others. Returns the names of ``clean`` whose pages no one wrote and whose partial edge
        pages hold the same bytes (no hash needed, if the previous plan's step is the base) and this plan's
        marks. A tensor of ``clean`` written behind its counter is moved to ``copy`` (copied in an async stall)."""
        from . import written

        kernel = written.tracker() if self.trust else None
        if kernel is None:
            return set(), Marks()
        try:
            kernel.poll()
        except OSError:  # trust nothing this time; the next plan compares with empty marks
            return set(), Marks()
        before = self._marks.marks if self._marks is not None else {}
        marks: dict[str, tuple[Any, ...]] = {}
        verified: set[str] = set()
        tracked: dict[str, tuple[Any, tuple[int, int], tuple[int, int]]] = {}
        for name, source, array, key in tensors:
            identity = key[1:]
            if name not in clean or array.nbytes < written.MIN_BYTES or key[6].type != "cpu":
                continue  # only tensors whose counter stands still are tracked: a trained one, written at every
                # step, would take a fault per page after every save (and its tracking is dropped below)
            old = self._tracked.pop(name, None)
            if old is not None and old[0] == identity and kernel.generation(old[1]) is not None:
                where: tuple[int, int] | None = old[1]
                bounds = old[2]
            else:
                if old is not None:
                    kernel.release(old[1])
                if array.__array_interface__["data"][0] != key[1]:  # a copy (a neg or conj view), not its memory
                    continue
                if source.is_shared() or source.is_pinned():  # another process or a device may write them
                    continue
                bounds = written.bounds(array)
                pages = written.pages(*bounds)
                where = kernel.track(*pages) if pages is not None else None
                if where is None:
                    continue
            tracked[name] = (identity, where, bounds)
            # the pages the tensor fills are tracked; the bytes it holds of the pages it shares with its neighbours
            # (other heap objects, written all the time) are hashed instead
            mark = marks[name] = (identity, where, kernel.generation(where), written.edges(bounds, where))
            if name in before:
                if before[name] == mark:
                    verified.add(name)
                elif before[name][:2] == mark[:2]:  # the same memory, written behind the version counter
                    copy[name] = clean.pop(name)
        for _, where, _ in self._tracked.values():  # tensors gone from the state, or replaced
            kernel.release(where)
        self._tracked = tracked
        return verified, Marks(marks)

    def write(self, step: int, plan: Plan, metadata: Mapping[str, str], commit: Callable[..., None]) -> bool:
        """Write step ``step`` of ``plan``: compare, write what changed, commit with ``commit(step, base, new,
        files, manifest)`` (the store's). Returns False when an async step was not committed (a tensor changed
        behind its counter: warned).

        Raises:
            OSError, TensorFileError: the write failed (the tracker is reset).
        """
        try:
            return self._write(step, plan, metadata, commit)
        except BaseException:
            self.reset()
            raise

    def _write(self, step: int, plan: Plan, metadata: Mapping[str, str], commit: Callable[..., None]) -> bool:
        base = self.base()
        refs = base.refs if base is not None else {}

        def matching(name: str) -> Ref | None:
            ref = refs.get(name)
            dtype, shape = plan.entries[name][:2]
            return ref if ref is not None and ref.dtype == dtype and ref.shape == shape else None

        # not written since the previous plan (the kernel saw no write), whose step is the base: no hash needed
        after = plan.after
        unwritten = plan.verified if base is not None and after is not None and after.committed == base.step else set()
        plan.after = None
        # sync, local: the tensors whose counter did not move are hashed while the step's blob is written
        deferred = {n: a for n, a in plan.clean.items() if n not in unwritten and matching(n) is not None} if (
            plan.sync and getattr(self.store, "overlaps", False)) else {}  # fmt: skip
        pool = ThreadPoolExecutor(1, thread_name_prefix="tensorfile-verify") if deferred else None
        pending = pool.submit(digests, deferred) if pool is not None else None
        try:
            sums = digests({n: a for n, a in {**plan.copied, **plan.clean}.items()
                            if n not in deferred and n not in unwritten and matching(n) is not None})  # fmt: skip
            kept: dict[str, Ref] = {}
            new: dict[str, np.ndarray] = {}
            behind = []
            for name in plan.entries:
                ref = matching(name)
                if name in unwritten and ref is not None:
                    kept[name] = ref
                elif name in deferred or (ref is not None and (ref.checksum == sums[name] or not ref.blob)):
                    kept[name] = ref  # type: ignore[assignment]
                elif name in plan.clean and not plan.sync:
                    behind.append(name)
                elif int(np.prod(plan.entries[name][1])):
                    new[name] = plan.copied.get(name, plan.clean.get(name))
                else:  # no elements: nothing to store
                    kept[name] = Ref("", digest(np.zeros(0, np.uint8)), *plan.entries[name][:2])
            if behind:
                self.untrusted.update(behind)
                self.reset()
                warnings.warn(f"checkpoint step {step} was not committed: {', '.join(repr(n) for n in behind[:5])}"
                              f"{' ...' if len(behind) > 5 else ''} changed though its torch version counter had not "
                              "moved (an in-place write through .data, a NumPy view or the storage, or a change "
                              "while the step was being written); from now on each save copies it", RuntimeWarning,
                              stacklevel=2)  # fmt: skip
                return False
            try:
                self._commit(step, plan, metadata, commit, base, kept, new, pending)
            except _Changed as changed:  # written behind its counter: write it too (rare: a second try)
                for name in changed.names:
                    new[name] = plan.clean[name]
                    del kept[name]
                self._commit(step, plan, metadata, commit, base, kept, new, None)
        finally:
            if pool is not None:
                pool.shutdown()
        self.written_bytes = sum(a.nbytes for a in new.values())
        self.unhashed = len(unwritten)
        plan.marks.committed = step
        return True

    def _commit(self, step: int, plan: Plan, metadata: Mapping[str, str], commit: Callable[..., None],
                base: Base | None, kept: dict[str, Ref], new: dict[str, np.ndarray], pending: Any) -> None:  # fmt: skip
        """Commit the step: ``new`` into its blob, ``kept`` named in older ones. ``pending``: the checksums of
        tensors in ``kept`` still being computed; checked after the manifest is written and before the step is
        committed (:class:`_Changed`: the step's temporary folder is discarded)."""
        shared = sorted({r.blob for r in kept.values() if r.blob})
        files = shared + ([blob_name(step)] if new else [])

        def confirm() -> None:  # the manifest is written (not committed) while the shared tensors are hashed
            changed = [n for n, checksum in pending.result().items() if checksum != kept[n].checksum]
            if changed:
                raise _Changed(changed)

        def manifest(written: Mapping[str, str]) -> bytes:
            index = {name: i for i, name in enumerate(files)}
            entries = {}
            checksums = {}
            for name, (dtype, shape, framework, flags) in plan.entries.items():
                blob = files[-1] if name in new else kept[name].blob
                checksums[name] = written[name] if name in new else kept[name].checksum
                chunks = (mf.Chunk(index[blob], (0,) * len(shape), shape),) if blob else ()
                entries[name] = mf.Entry(name, dtype, shape, framework, flags, chunks)
            facts = {"checksums": checksums, "written": sorted(new), "base": base.step if base is not None else None}
            doc = mf.Manifest(tuple(files), entries, plan.root, {**metadata, INCREMENTAL_KEY: json.dumps(facts)}, 1)
            self._next = Base(step, {n: Ref(files[e.chunks[0].file] if e.chunks else "", checksums[n], e.dtype,
                                            e.shape) for n, e in entries.items()})  # fmt: skip
            return mf.dumps(doc)

        if pending is None:
            commit(step, base, new, files, manifest)
        else:
            commit(step, base, new, files, manifest, confirm)
        self._base, self._loaded = self._next, True


class _Changed(Exception):
    """Tensors whose counter did not move were found changed while their step was being written (sync)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"changed behind their version counter: {names}")
        self.names = names
