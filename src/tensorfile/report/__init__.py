"""Pictures of what is in a tensor file or a checkpoint folder: ``tensorfile report`` (one static HTML page)
and ``tensorfile show`` (the terminal).

Modules, one job each: :mod:`.read` (a tensor in pieces of rows, sampled above a size), :mod:`.bins`
(histogram bins per dtype, NaN/inf apart), :mod:`.stats` (streaming statistics), :mod:`.diff` (relative
change between two files), :mod:`.folder` (a CheckpointManager folder's steps, metrics, best step and
moves), :mod:`.summary` (a file's summary), :mod:`.charts` (matplotlib SVG), :mod:`.sparks` (small
histograms), :mod:`.page` (the HTML), :mod:`.build` (the report), :mod:`.show` (the terminal view).
Needs ``pip install 'tensorfile[report]'`` (matplotlib, rich).
"""

from __future__ import annotations

from .build import SAMPLE_ABOVE, Options, report
from .stats import TensorStats, tensor_stats

__all__ = ["report", "Options", "SAMPLE_ABOVE", "TensorStats", "tensor_stats"]
