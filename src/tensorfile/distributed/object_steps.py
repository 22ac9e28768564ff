""":class:`tensorfile.CheckpointManager` under ``torch.distributed`` on object storage (an fsspec URL).

Each step is a distributed checkpoint (:mod:`.remote`) in a folder of its own attempt,
``<root>/step_<N>/dist-<writer>/``, committed by the step's commit object (:mod:`tensorfile.checkpoint.objects`):

1. Rank 0 checks that step N has no commit object and picks the attempt's name (16 random hex digits, sent to
   every rank).
2. Every rank uploads its shard object under the attempt's folder (:class:`.remote.ObjectFolder`).
3. Rank 0, once every rank reported success, puts the attempt's ``manifest.json``, then creates
   ``step_<N>/commit.json`` naming it with the conditional put (``If-None-Match: *``): the commit. It then
   applies retention (the commit object of a step first, then its objects) and tells every rank the outcome
   (:func:`.saving.write_checkpoint`).

A rank killed before step 3's commit object leaves no committed step, only objects that the sweep of
:meth:`~tensorfile.checkpoint.objects.ObjectSteps.sweep` deletes once stale. Readers load a step through its
commit object's manifest with :func:`tensorfile.distributed.load`: each rank reads the byte ranges it needs.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Callable, Mapping

from ..errors import IntegrityError
from . import manifest as mf
from .comm import Group
from .remote import ObjectFolder
from .saving import try_prepare, write_checkpoint
from .steps import Writer, _agree

__all__ = ["ObjectWriter", "manifest_url"]


class ObjectWriter(Writer):
    """One step being written to object storage (see the module docs); :meth:`stage` and :meth:`background`
    as :class:`.steps.Writer`'s.

    Args:
        objects: the manager's :class:`~tensorfile.checkpoint.objects.ObjectSteps`. step: the step.
        tree: this rank's captured state. info: the step's JSON record (``{"step": N, "metrics": ...}``),
            stored under ``key`` in the manifest's metadata and as the commit object's ``info``.
        group: the ranks. after_commit: rank 0, once committed (retention).

    Raises:
        CheckpointConflictError (rank 0), CheckpointCommitError (other ranks): step N is committed already.
    """

    def __init__(self, objects: Any, step: int, tree: Any, info: Mapping[str, Any], key: str, group: Group,
                 after_commit: Callable[[], None]) -> None:  # fmt: skip
        self.objects, self.step, self.group, self.info = objects, step, group, dict(info)
        self.metadata, self.after_commit = {key: json.dumps(self.info)}, after_commit
        self.plan, self.failed = try_prepare(tree, group)  # reported by write(): no rank waits for a failed one

        def begin() -> str:
            objects.check_free(step)
            return secrets.token_hex(8)

        self.writer = _agree(group, begin)
        self.name = f"dist-{self.writer}/{mf.MANIFEST}"
        self.folder = ObjectFolder(objects.folder(step).child(f"dist-{self.writer}").url, objects.storage_options)

    def write(self) -> None:
        """Every rank: upload, commit (rank 0), return when the step is committed.

        Raises:
            CheckpointCommitError, CheckpointConflictError, OSError: nothing committed; the attempt's objects
                are removed.
        """

        def publish(manifest: mf.Manifest) -> None:
            self.folder.publish(manifest)
            entry = {"object": self.name, "size": len(mf.dumps(manifest))}
            self.objects.publish(self.step, self.writer, {mf.MANIFEST: entry}, self.info)
            self.after_commit()

        try:
            write_checkpoint(self.plan, self.folder, self.group, self.metadata, publish, failed=self.failed,
                             committed=lambda files: self.objects.committed_by(self.step, self.writer))  # fmt: skip
        except BaseException:
            if self.group.rank == 0 and not self.objects.committed_by(self.step, self.writer):
                self.objects.discard(self.step, self.name)
            raise


def manifest_url(objects: Any, step: int) -> str:
    """The URL of committed step ``step``'s manifest object.

    Raises:
        CheckpointNotFoundError: no commit object. IntegrityError: a bad one, or the step was saved by one
            process (a data object, not a distributed checkpoint).
    """
    record = objects.record(step)
    where = objects.data(step, record)
    if not objects.is_distributed(record):
        raise IntegrityError(f"{where.url}: step {step} was saved by one process, not across the ranks of "
                             "torch.distributed (restore it with distributed=False)")  # fmt: skip
    return where.url
