"""Training checkpoints: :class:`CheckpointManager` and random-state helpers."""

from .manager import CheckpointManager
from .rng import rng_state, set_rng_state

__all__ = ["CheckpointManager", "rng_state", "set_rng_state"]
