"""The few collectives a distributed save needs, over bytes, on ``torch.distributed`` (never a pickle).

``torch.distributed``'s object collectives (``gather_object``, ``broadcast_object_list``) pickle what
they send and unpickle what they receive; here every message is JSON text in a ``uint8`` tensor, so no
rank ever unpickles another's bytes. Tensors go where the group's backend wants them
(``distributed_c10d._get_object_coll_device``: the CPU for gloo, the current CUDA device for NCCL).

Without an initialized process group (or with ``group`` a one-rank world) every collective is the
identity: a save then runs as rank 0 of a world of 1, as ``torch.distributed.checkpoint.save`` does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Group", "group_of"]


class Group:
    """A process group (or a world of one, ``torch.distributed`` not initialized) and its rank and size."""

    def __init__(self, pg: Any, rank: int, size: int) -> None:
        self.pg, self.rank, self.size = pg, rank, size

    def _device(self) -> Any:
        import torch
        import torch.distributed.distributed_c10d as c10d

        pick = getattr(c10d, "_get_object_coll_device", None)
        kind = pick(self.pg) if pick is not None else "cpu"
        if kind == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device(kind)

    def _sizes(self, nbytes: int) -> list[int]:
        import torch
        import torch.distributed as dist

        device = self._device()
        mine = torch.tensor([nbytes], dtype=torch.int64, device=device)
        sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(self.size)]
        dist.all_gather(sizes, mine, group=self.pg)
        return [int(s.item()) for s in sizes]

    def _padded(self, data: bytes) -> tuple[Any, list[int], int, Any]:
        """``data`` as a uint8 tensor padded to the longest rank's length, every rank's length, that length and
        the device the exchange runs on (what both :meth:`all_gather` and :meth:`gather` send)."""
        import torch

        sizes = self._sizes(len(data))
        device = self._device()
        longest = max(sizes) or 1
        mine = torch.zeros(longest, dtype=torch.uint8)
        if data:
            mine[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return mine.to(device), sizes, longest, device

    def all_gather(self, data: bytes) -> list[bytes]:
        """Every rank's ``data``, in rank order, on every rank."""
        if self.size == 1:
            return [data]
        import torch
        import torch.distributed as dist

        mine, sizes, longest, device = self._padded(data)
        out = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(self.size)]
        dist.all_gather(out, mine, group=self.pg)
        return [bytes(t[:n].cpu().numpy().tobytes()) for t, n in zip(out, sizes)]

    def gather(self, data: bytes) -> list[bytes]:
        """Every rank's ``data``, in rank order, on rank 0 (an empty list on the other ranks)."""
        if self.size == 1:
            return [data]
        import torch
        import torch.distributed as dist

        mine, sizes, longest, device = self._padded(data)
        out = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(self.size)] if self.rank == 0 else None
        dist.gather(mine, out, dst=self._global(0), group=self.pg)
        return [bytes(t[:n].cpu().numpy().tobytes()) for t, n in zip(out, sizes)] if out is not None else []

    def broadcast(self, data: bytes) -> bytes:
        """Rank 0's ``data`` on every rank (what other ranks pass is ignored)."""
        if self.size == 1:
            return data
        import torch
        import torch.distributed as dist

        device = self._device()
        size = torch.tensor([len(data) if self.rank == 0 else 0], dtype=torch.int64, device=device)
        dist.broadcast(size, src=self._global(0), group=self.pg)
        n = int(size.item())
        buf = torch.zeros(max(n, 1), dtype=torch.uint8)
        if self.rank == 0 and n:
            buf[:n] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        buf = buf.to(device)
        dist.broadcast(buf, src=self._global(0), group=self.pg)
        return bytes(buf[:n].cpu().numpy().tobytes())

    def barrier(self) -> None:
        """Wait for every rank of the group."""
        if self.size > 1:
            self.all_gather(b"")

    def _global(self, rank: int) -> int:
        import torch.distributed as dist

        return rank if self.pg is None else dist.get_global_rank(self.pg, rank)


def group_of(process_group: Any = None) -> Group:
    """The :class:`Group` of ``process_group`` (None: the default group, or a world of one when
    ``torch.distributed`` is not initialized; no framework is imported when torch was not).

    Raises:
        ValueError: ``process_group`` is given but ``torch.distributed`` is not initialized.
    """
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        if process_group is not None:
            raise ValueError("process_group was given, but torch.distributed is not initialized")
        return Group(None, 0, 1)
    return Group(process_group, dist.get_rank(process_group), dist.get_world_size(process_group))
