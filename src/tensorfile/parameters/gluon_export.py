"""Files written by Gluon's ``HybridBlock.export`` (MXNet 1.x): ``arg:``/``aux:`` and global names.

``export(path, epoch)`` writes ``<path>-symbol.json`` and ``<path>-<epoch:04d>.params``, an ``nd.save``
dict whose keys are ``arg:`` (weights) or ``aux:`` (BatchNorm's running statistics) followed by each
parameter's global name: ``dense0_weight``, ``hybridsequential0_batchnorm0_running_mean`` (reference:
mxnet ``python/mxnet/gluon/block.py``, ``HybridBlock.export``; mxnet#19257). Global names follow a
count of the blocks built so far in the process, so a Block built again has other numbers
(``dense3_weight``); Gluon's own ``load_parameters`` then refuses the file.

- Into a Gluon Block: the file's global names are aligned with the Block's own
  (:func:`tensorfile.parameters.counters.align`) and the parameters loaded by the Block's structural
  names (``0.weight``, ``1.running_mean``).
- Into any other model: the names are split at the layer (``dense0_weight`` -> ``dense0.weight``),
  with the layer classes Gluon's prefixes give (``dense`` -> ``Dense``), so that ``rename`` and the
  conversion of standard layers (:mod:`.convert`) apply.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from ..errors import FormatError
from .counters import align, few, gluon_key
from .report import LoadReport

__all__ = ["is_export", "for_block", "for_other"]

_PREFIXES = ("arg:", "aux:")

#: Gluon's block prefixes (the class name in lower case) of standard layers -> the class, as ``.convert``
#: knows it. ``conv`` is left out: Conv1D, Conv2D and their transposes share it.
_KINDS = {"dense": "Dense", "batchnorm": "BatchNorm", "embedding": "Embedding", "layernorm": "LayerNorm"}

#: A global name: the prefixes of the blocks that own it (each ``<alias><count>_``), then the parameter.
_GLOBAL = re.compile(r"^(?P<layer>.*?(?P<alias>[a-z]+)\d+)_(?P<leaf>[^\d]+)$")


def is_export(names: Any) -> bool:
    """True when every name (at least one) starts with ``arg:`` or ``aux:``."""
    names = list(names)
    return bool(names) and all(isinstance(n, str) and n.startswith(_PREFIXES) for n in names)


def _stripped(arrays: Mapping[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if name[4:] in out:
            raise FormatError(f"{path}: the Gluon export file holds both 'arg:{name[4:]}' and 'aux:{name[4:]}'")
        out[name[4:]] = array
    return out


def for_block(arrays: Mapping[str, np.ndarray], target: Any, report: LoadReport, path: str) -> dict[str, np.ndarray]:
    """The arrays of an export file by the Block's structural names (``target``: its
    :class:`~.models.ModelParams`, each ``Param.source`` the Gluon ``Parameter``). Names that could not
    be aligned keep their global names (reported as unexpected); ``report`` gets a note of what was done."""
    globals_ = {p.source.name: name for name, p in target.params.items() if p.source is not None}
    stripped = _stripped(arrays, path)
    alignment = align({k: tuple(a.shape) for k, a in stripped.items()},
                      {g: target.params[s].shape for g, s in globals_.items()}, gluon_key)  # fmt: skip
    own = {k: globals_[alignment.renames.get(k, k)] for k in stripped if alignment.renames.get(k, k) in globals_}
    out = {own.get(name, name): array for name, array in stripped.items()}
    pairs = ", ".join(f"{k} -> {v}" for k, v in list(own.items())[:3]) + (", ..." if len(own) > 3 else "")
    how = "Gluon's global names renumbered to the Block's" if alignment.renames else "Gluon's global names"
    report.notes.append(f"Note: a Gluon export file (HybridBlock.export): 'arg:'/'aux:' removed, {how}, "
                        f"loaded by the Block's names ({pairs})")  # fmt: skip
    for conflict in alignment.conflicts:
        report.notes.append(f"Note: cannot tell which of the Block's parameters the file's are: {conflict}")
    left = [k for k in stripped if k not in own]
    if left and not alignment.conflicts:
        unused = [g for g, s in globals_.items() if s not in out]
        report.notes.append(f"Note: the file's global names {few(left)} match none of the Block's "
                            f"({few(unused) or 'none left'}): not the same architecture?")  # fmt: skip
    return out


def for_other(
    arrays: Mapping[str, np.ndarray], path: str, report: LoadReport
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays of an export file for a model of another framework (or a dict of arrays): names split
    at the layer (``dense0_weight`` -> ``dense0.weight``), and the layer classes known from Gluon's
    prefixes (name -> ``Dense``...)."""
    out: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for name, array in _stripped(arrays, path).items():
        match = _GLOBAL.match(name)
        dotted = f"{match['layer']}.{match['leaf']}" if match else name
        out[dotted] = array
        if match and match["alias"] in _KINDS:
            kinds[dotted] = _KINDS[match["alias"]]
    example = next(iter(out), "")
    layer = example.partition(".")[0] + "."
    report.notes.append(f"Note: a Gluon export file (HybridBlock.export): 'arg:'/'aux:' removed and Gluon's global "
                        f"names split at the layer (e.g. {example!r}); they count blocks built in MXNet's process, "
                        f"not this model's layers: map them with rename (e.g. {{{layer!r}: '0.'}}) or load the file "
                        "into the Gluon Block")  # fmt: skip
    return out, kinds
