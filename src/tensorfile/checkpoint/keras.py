"""Keras ``fit`` on :class:`CheckpointManager`: checkpoint during training and resume, at epoch ends or
in the middle of an epoch.

:class:`CheckpointCallback` does what ``ModelCheckpoint`` plus ``BackupAndRestore``
do, with the manager's guarantees (atomic steps, checksums, retention, fallback past
a corrupt step). It saves the model (weights and its layers' seed generator states),
the optimizer (its ``iterations`` included), the random state and the epoch's logs
(as metrics) at the end of every epoch, and with ``every_n_batches`` also in the
middle of one.

Epoch-end resume works with any data: when ``fit`` starts and the folder holds a
checkpoint, the callback restores it and ``fit`` continues with the next epoch (what
``BackupAndRestore`` does).

Mid-epoch resume needs data whose position is known: :func:`batches` yields the
batches of epoch after epoch from a global batch index, each epoch's order a
function of ``(seed, epoch)``. The position saved is the optimizer's ``iterations``
(batches trained), so Keras' prefetching does not matter. Resume with
:meth:`CheckpointCallback.resume`::

    callback = CheckpointCallback(manager, every_n_batches=10)
    done = callback.resume(model)                      # batches already trained (0 for a new run)
    per_epoch = steps_per_epoch(len(x), 64)
    model.fit(batches(x, y, 64, seed=0, start=done), steps_per_epoch=per_epoch, epochs=epochs,
              initial_epoch=done // per_epoch, shuffle=False, callbacks=[callback])

The callback stops ``fit`` when ``epochs * steps_per_epoch`` batches are trained, so
a run resumed at batch ``k`` of an epoch trains exactly the batches an uninterrupted
run trains after it, in the same order: the final weights are the same, bit for bit
(epoch-end logs of the resumed epoch then cover only its last batches).
"""

from __future__ import annotations

from typing import Any, Iterator

import keras
import numpy as np

from .manager import CheckpointManager
from .rng import rng_state, set_rng_state

__all__ = ["CheckpointCallback", "batches", "steps_per_epoch"]


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """Batches in an epoch of ``samples`` (the last one may be smaller)."""
    return -(-samples // batch_size)


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int = 0, start: int = 0,
            shuffle: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """``(x, y)`` batches forever, from global batch index ``start``.

    Epoch ``e`` is ``steps_per_epoch(len(x), batch_size)`` batches in the order
    ``np.random.default_rng([seed, e]).permutation(len(x))`` (or in order, without
    ``shuffle``); batch ``g`` is batch ``g % steps`` of epoch ``g // steps``.

    Args:
        x, y: arrays of the same first dimension (samples).
        batch_size: samples per batch.
        seed: the base of every epoch's order.
        start: the first global batch index (``CheckpointCallback.resume`` returns it).
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} samples, y {len(y)}")
    steps = steps_per_epoch(n, batch_size)
    g = start
    while True:
        epoch, i = divmod(g, steps)
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        while i < steps:
            take = order[i * batch_size : (i + 1) * batch_size]
            yield x[take], y[take]
            i += 1
            g += 1


class CheckpointCallback(keras.callbacks.Callback):
    """Checkpoint through ``manager`` during ``fit``, and resume an interrupted ``fit``.

    Args:
        manager: where to save (its retention and ``best_metric`` apply; the
            metrics are the epoch's logs, e.g. ``loss``, ``val_loss``).
        every_n_batches: also save after every N trained batches (the step saved is
            the optimizer's ``iterations``); None: at epoch ends only.

    Steps are numbered by batches trained when ``every_n_batches`` is set, else by epoch.
    """

    def __init__(self, manager: CheckpointManager, every_n_batches: int | None = None) -> None:
        super().__init__()
        if every_n_batches is not None and (type(every_n_batches) is not int or every_n_batches < 1):
            raise ValueError(f"every_n_batches must be a positive int or None, not {every_n_batches!r}")
        self.manager = manager
        self.every_n_batches = every_n_batches
        self._resumed = False
        self._total: int | None = None
        self._epoch = 0

    def _state(self, model: Any) -> dict[str, Any]:
        return {"model": model, "optimizer": model.optimizer}

    def resume(self, model: Any) -> int:
        """Restore the latest checkpoint into ``model`` (compiled, built) before ``fit``; returns the batches
        already trained (0 when the folder is empty). ``fit`` then restores nothing more."""
        self._resumed = True
        if self.manager.latest_step is None:
            return 0
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        state = self.manager.restore(state=self._state(model))
        set_rng_state(state["rng"])
        return int(state["batches"])

    def on_train_begin(self, logs: Any = None) -> None:
        params = self.params or {}
        if params.get("steps") and params.get("epochs"):
            self._total = int(params["steps"]) * int(params["epochs"])
        if self._resumed or self.manager.latest_step is None:
            return
        state = self.manager.restore(state=self._state(self.model))
        set_rng_state(state["rng"])
        self.model._initial_epoch = int(state["epoch"]) + 1  # what BackupAndRestore sets too

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        trained = int(self.model.optimizer.iterations.numpy())
        if self.every_n_batches and trained % self.every_n_batches == 0:
            self._save(trained, self._epoch - 1, {}, mid_epoch=True)
        if self._total is not None and trained >= self._total:
            self.model.stop_training = True  # a resumed run: the uninterrupted run's last batch is trained

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float)) or hasattr(v, "__float__")}
        trained = int(self.model.optimizer.iterations.numpy())
        steps = (self.params or {}).get("steps")
        whole = not steps or trained == (epoch + 1) * int(steps)  # fit stopped early (stop_training): not an epoch end
        self._save(trained if self.every_n_batches else epoch, epoch if whole else epoch - 1, metrics, mid_epoch=not whole)

    def _save(self, step: int, epoch: int, metrics: dict[str, float], mid_epoch: bool) -> None:
        trained = int(self.model.optimizer.iterations.numpy())
        self.manager.save(
            step,
            {**self._state(self.model), "epoch": epoch, "batches": trained, "mid_epoch": mid_epoch, "rng": rng_state()},
            metrics=metrics,
            force=True,
        )
