"""A Keras callback on :class:`CheckpointManager`: checkpoint during ``fit`` and resume it.

It does what ``ModelCheckpoint`` plus ``BackupAndRestore`` do, with the manager's
guarantees (atomic steps, checksums, retention, fallback past a corrupt step):
at the end of every epoch it saves the model, the optimizer, the epoch, the
random state and the epoch's logs (as metrics); when ``fit`` starts and the
folder holds a checkpoint, it restores them and ``fit`` continues with the
next epoch. Like ``BackupAndRestore``, it resumes at epoch boundaries.
"""

from __future__ import annotations

from typing import Any

import keras

from .manager import CheckpointManager
from .rng import rng_state, set_rng_state

__all__ = ["CheckpointCallback"]


class CheckpointCallback(keras.callbacks.Callback):
    """Checkpoint each epoch through ``manager`` and resume an interrupted ``fit``.

    Args:
        manager: where to save (its retention and ``best_metric`` apply; the
            metrics are the epoch's logs, e.g. ``loss``, ``val_loss``).
    """

    def __init__(self, manager: CheckpointManager) -> None:
        super().__init__()
        self.manager = manager

    def on_train_begin(self, logs: Any = None) -> None:
        if self.manager.latest_step is None:
            return
        state = self.manager.restore(state={"model": self.model, "optimizer": self.model.optimizer})
        set_rng_state(state["rng"])
        self.model._initial_epoch = int(state["epoch"]) + 1  # what BackupAndRestore sets too

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float)) or hasattr(v, "__float__")}
        self.manager.save(
            epoch,
            {"model": self.model, "optimizer": self.model.optimizer, "epoch": epoch, "rng": rng_state()},
            metrics=metrics,
            force=True,
        )
