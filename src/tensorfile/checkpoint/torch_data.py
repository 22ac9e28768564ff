"""Exact mid-epoch resume of PyTorch data loading: :class:`ResumableLoader`.

A plain ``DataLoader`` over a shuffling ``RandomSampler`` or ``DistributedSampler``
cannot be resumed in the middle of an epoch: the sampler's order comes from a
generator drawn when the epoch's iterator is made, and nothing records how many
batches the training loop has taken (the loader's workers prefetch ahead of it).
A run restarted from a mid-epoch checkpoint then sees some samples twice and some
never (Lightning#5325).

:class:`ResumableLoader` makes each epoch's order a function of ``(seed, epoch)``
alone, as ``DistributedSampler`` does (``torch.randperm`` on a generator seeded
``seed + epoch``), and counts the batches the loop has *received*. Its
``state_dict()`` holds ``epoch`` and ``batches``; after ``load_state_dict`` the
next iteration starts at the first batch the interrupted run had not received, so
a resumed run sees every sample exactly once per epoch, in the same order and the
same batches as an uninterrupted one. Pass it to :class:`CheckpointManager` by name
like a model: ``manager.save(step, {"model": net, "data": loader, ...})``. The state also
records what decides the order (seed, data set size, batch size, shuffle, ranks), and a
loader with another refuses it.

The loader's own random seed for workers comes from a generator seeded from
``(seed, epoch)`` too, so making an epoch's iterator draws nothing from torch's
global generator (which the checkpoint's ``rng_state`` restores). Random
transforms inside worker processes depend on the worker seed and the sample's
order within the worker; with ``num_workers=0`` everything is exact.

``torch.Generator`` objects, and torchdata's ``StatefulDataLoader`` (which has its
own ``state_dict``), can be given to the manager directly as well.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["ResumableLoader", "EpochSampler"]


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation from ``(seed, epoch)`` (or ``range(n)``), this rank's share,
    from ``start`` on.

    The split over ``num_replicas`` ranks follows ``torch.utils.data.DistributedSampler``
    (reference: pytorch/pytorch ``torch/utils/data/distributed.py``): the order is padded
    by repeating its head to a multiple of ``num_replicas`` (or cut, with ``drop_last``),
    and rank ``r`` takes every ``num_replicas``-th index from ``r``.
    """

    def __init__(self, n: int, *, seed: int, epoch: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0,
                 drop_last: bool = False, start: int = 0) -> None:  # fmt: skip
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), not {rank}")
        self.n, self.seed, self.epoch, self.shuffle = n, seed, epoch, shuffle
        self.num_replicas, self.rank, self.drop_last, self.start = num_replicas, rank, drop_last, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.num_replicas > 1:
            if self.drop_last:
                order = order[: self.n - self.n % self.num_replicas]
            else:
                pad = -self.n % self.num_replicas
                order += (order * (pad // max(len(order), 1) + 1))[:pad]
            order = order[self.rank :: self.num_replicas]
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return max(len(self._indices()) - self.start, 0)


class ResumableLoader:
    """A ``DataLoader`` whose position (epoch, batches received) is saved and restored exactly.

    Args:
        dataset: a map-style dataset (``__getitem__`` and ``__len__``).
        batch_size: samples per batch.
        shuffle: a new order each epoch, from ``seed + epoch``; False: dataset order.
        seed: the base of every epoch's order (an int; the same on every rank).
        drop_last: drop the last incomplete batch (and, with several ranks, the tail
            that does not split evenly, as ``DistributedSampler(drop_last=True)``).
        num_replicas, rank: this process's share of each epoch, as ``DistributedSampler``.
        **loader_kwargs: passed to ``DataLoader`` (``num_workers``, ``collate_fn``,
            ``pin_memory``...); not ``sampler``, ``shuffle``, ``batch_sampler`` or ``generator``.

    Iterating gives one epoch (the rest of it, after a mid-epoch restore); the next
    iteration gives the next epoch. ``epoch`` and ``batches`` say where it stands.

    Raises:
        ValueError: a loader option that would take the order out of its hands.
    """

    def __init__(self, dataset: Any, batch_size: int = 1, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, num_replicas: int = 1, rank: int = 0, **loader_kwargs: Any) -> None:  # fmt: skip
        taken = {"sampler", "shuffle", "batch_sampler", "generator"} & set(loader_kwargs)
        if taken:
            raise ValueError(f"ResumableLoader decides {sorted(taken)} itself (the order must be a function of the seed)")
        if type(seed) is not int or not 0 <= seed < 2**62:
            raise ValueError(f"seed must be an int in [0, 2**62), not {seed!r}")
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.drop_last, self.num_replicas, self.rank = drop_last, num_replicas, rank
        self.loader_kwargs = loader_kwargs
        self.epoch = 0
        self.batches = 0  # batches of this epoch the loop has received

    def _sampler(self, start: int) -> EpochSampler:
        return EpochSampler(len(self.dataset), seed=self.seed, epoch=self.epoch, shuffle=self.shuffle,
                            num_replicas=self.num_replicas, rank=self.rank, drop_last=self.drop_last,
                            start=start)  # fmt: skip

    def __len__(self) -> int:
        """Batches in a whole epoch."""
        n = len(self._sampler(0))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)  # the workers' base seed: not the global RNG
        loader = DataLoader(self.dataset, self.batch_size, sampler=self._sampler(self.batches * self.batch_size),
                            drop_last=self.drop_last, generator=g, **self.loader_kwargs)  # fmt: skip
        for batch in loader:
            self.batches += 1  # counted when the loop receives it: a checkpoint saved now resumes after it
            yield batch
        self.epoch += 1
        self.batches = 0

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch at the next iteration (as ``DistributedSampler.set_epoch``)."""
        self.epoch, self.batches = epoch, 0

    def _layout(self) -> dict[str, Any]:
        """What decides the order and the batches: a state is only valid for a loader with the same."""
        return {"seed": self.seed, "samples": len(self.dataset), "batch_size": self.batch_size, "shuffle": self.shuffle,
                "drop_last": self.drop_last, "num_replicas": self.num_replicas, "rank": self.rank}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """Where the loop stands (``epoch``, ``batches`` received in it) and what decides the order (``seed``,
        ``samples``, ``batch_size``, ``shuffle``, ``drop_last``, ``num_replicas``, ``rank``)."""
        return {**self._layout(), "epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at ``state``'s position.

        Raises:
            ValueError: the state is malformed, or was saved by a loader with another seed, data set size,
                batch size, shuffle, drop_last or rank layout (its position would name other samples).
        """
        if not isinstance(state, Mapping) or any(k not in state for k in (*self._layout(), "epoch", "batches")):
            raise ValueError(f"not a ResumableLoader state: {state!r}")
        layout = {k: state[k] for k in self._layout()}
        if layout != self._layout() or any(type(a) is not type(b) for a, b in zip(layout.values(), self._layout().values())):
            differs = {k: (layout[k], v) for k, v in self._layout().items() if layout[k] != v or type(layout[k]) is not type(v)}
            raise ValueError(f"the state was saved by another loader layout (saved, this one): {differs}")
        epoch, batches = state["epoch"], state["batches"]
        if type(epoch) is not int or type(batches) is not int or not 0 <= epoch < 2**62 or not 0 <= batches <= len(self):
            raise ValueError(f"epoch must be an int in [0, 2**62) and batches an int in [0, {len(self)}], found "
                             f"{epoch!r} and {batches!r}")  # fmt: skip
        self.epoch, self.batches = epoch, batches
