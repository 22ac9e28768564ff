"""Training checkpoints: :class:`CheckpointManager`, random-state helpers, and (with PyTorch)
:class:`~tensorfile.checkpoint.torch_data.ResumableLoader` for exact mid-epoch resume."""

from typing import Any

from .manager import CheckpointManager
from .restore import Restored
from .rng import rng_state, set_rng_state

__all__ = ["CheckpointManager", "Restored", "rng_state", "set_rng_state", "ResumableLoader"]


def __getattr__(name: str) -> Any:
    if name == "ResumableLoader":  # imports torch: only when asked for
        from .torch_data import ResumableLoader

        globals()[name] = ResumableLoader
        return ResumableLoader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
