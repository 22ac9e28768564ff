"""Standard layers' parameters between frameworks: names and layouts.

Each parameter is mapped to a canonical form (PyTorch's names and layouts),
then to the target framework's. Only the layers in :data:`KINDS` are known;
anything else passes through unchanged and is reported if it does not fit.

Layouts (reference: each framework's layer docs):

- Dense / Linear: Keras ``kernel`` (in, out) <-> torch / Gluon ``weight`` (out, in).
- Conv1D: Keras (W, I, O) <-> torch (O, I, W); Conv2D: Keras HWIO <-> torch OIHW.
- BatchNorm: ``gamma``/``beta``/``moving_mean``/``moving_variance`` (Keras) and
  ``gamma``/``beta``/``running_mean``/``running_var`` (Gluon) <->
  ``weight``/``bias``/``running_mean``/``running_var`` (torch); torch's
  ``num_batches_tracked`` has no counterpart and is skipped.
- Embedding: Keras ``embeddings`` <-> ``weight``; LayerNorm: ``gamma``/``beta`` <-> ``weight``/``bias``.
- Flax NNX: ``Linear`` ``kernel`` (in, out) like Keras; ``BatchNorm`` ``scale``/``bias``/``mean``/``var``;
  ``Embed`` ``embedding``; ``LayerNorm`` ``scale``/``bias``. (Flax convolutions are not mapped.)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["KINDS", "to_framework", "TORCH_ONLY", "UNMAPPED"]

#: (framework, layer class name) -> canonical kind.
KINDS: dict[tuple[str, str], str] = {}
for _fw, _names in {
    "torch": {"Linear": "dense", "Conv1d": "conv1d", "Conv2d": "conv2d", "BatchNorm1d": "batchnorm",
              "BatchNorm2d": "batchnorm", "Embedding": "embedding", "LayerNorm": "layernorm"},
    "keras": {"Dense": "dense", "Conv1D": "conv1d", "Conv2D": "conv2d", "BatchNormalization": "batchnorm",
              "Embedding": "embedding", "LayerNormalization": "layernorm"},
    "mxnet": {"Dense": "dense", "Conv1D": "conv1d", "Conv2D": "conv2d", "BatchNorm": "batchnorm",
              "Embedding": "embedding", "LayerNorm": "layernorm"},
    "flax": {"Linear": "dense", "BatchNorm": "batchnorm", "Embed": "embedding", "LayerNorm": "layernorm"},
}.items():  # fmt: skip
    for _cls, _kind in _names.items():
        KINDS[(_fw, _cls)] = _kind

#: framework -> canonical kind -> {framework's name: canonical (torch) name}.
_NAMES: dict[str, dict[str, dict[str, str]]] = {
    "torch": {},
    "keras": {
        "dense": {"kernel": "weight", "bias": "bias"},
        "conv1d": {"kernel": "weight", "bias": "bias"},
        "conv2d": {"kernel": "weight", "bias": "bias"},
        "batchnorm": {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"},
        "embedding": {"embeddings": "weight"},
        "layernorm": {"gamma": "weight", "beta": "bias"},
    },
    "mxnet": {
        "batchnorm": {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var"},
        "layernorm": {"gamma": "weight", "beta": "bias"},
    },
    "flax": {
        "dense": {"kernel": "weight", "bias": "bias"},
        "batchnorm": {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"},
        "embedding": {"embedding": "weight"},
        "layernorm": {"scale": "weight", "bias": "bias"},
    },
}

#: framework -> (canonical kind, canonical name) -> array transform into canonical layout.
_TO_CANONICAL: dict[str, dict[tuple[str, str], Callable[[np.ndarray], np.ndarray]]] = {
    "flax": {("dense", "weight"): lambda a: a.T},
    "keras": {
        ("dense", "weight"): lambda a: a.T,
        ("conv1d", "weight"): lambda a: a.transpose(2, 1, 0),
        ("conv2d", "weight"): lambda a: a.transpose(3, 2, 0, 1),
    },
}
_FROM_CANONICAL: dict[str, dict[tuple[str, str], Callable[[np.ndarray], np.ndarray]]] = {
    "flax": {("dense", "weight"): lambda a: a.T},
    "keras": {
        ("dense", "weight"): lambda a: a.T,
        ("conv1d", "weight"): lambda a: a.transpose(2, 1, 0),
        ("conv2d", "weight"): lambda a: a.transpose(2, 3, 1, 0),
    },
}

#: canonical kind -> its canonical (torch) parameter names.
_CANONICAL: dict[str, set[str]] = {
    "dense": {"weight", "bias"},
    "conv1d": {"weight", "bias"},
    "conv2d": {"weight", "bias"},
    "batchnorm": {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"},
    "embedding": {"weight"},
    "layernorm": {"weight", "bias"},
}

#: canonical kind -> the dims of its weight (its layout transform needs them).
_WEIGHT_DIMS = {"dense": 2, "conv1d": 3, "conv2d": 4, "embedding": 2}

#: Returned for a parameter of a standard layer whose name that layer does not have.
UNMAPPED: tuple[str, np.ndarray] = ("", np.empty(0))

#: Canonical parameters only torch has: skipped (and listed) when converting away from torch.
TORCH_ONLY = {("batchnorm", "num_batches_tracked")}


def to_framework(name: str, kind: str, array: np.ndarray, source: str, target: str) -> tuple[str, np.ndarray] | None:
    """Convert one parameter from ``source``'s naming and layout to ``target``'s.

    Args:
        name: the parameter's full name (``hidden.weight``): the last part is
            renamed, the prefix kept.
        kind: the class name of the layer that owned it in ``source``.

    Returns:
        ``(new name, array)``; the input unchanged when the layer kind is not a
        standard one; None for a parameter the target has no counterpart of;
        :data:`UNMAPPED` for a name the standard layer does not have.
    """
    canonical_kind = KINDS.get((source, kind))
    if canonical_kind is None or source == target:
        return name, array
    prefix, _, leaf = name.rpartition(".")
    canonical = _NAMES.get(source, {}).get(canonical_kind, {}).get(leaf, leaf)
    if canonical not in _CANONICAL[canonical_kind]:
        return UNMAPPED  # a name this layer does not have in `source` (renamed away?): reported, never guessed
    if (canonical_kind, canonical) in TORCH_ONLY and target != "torch":
        return None
    if canonical == "weight" and array.ndim != _WEIGHT_DIMS.get(canonical_kind, array.ndim):
        return UNMAPPED  # the layer kind the file claims does not fit the array: reported, never transposed
    array = _TO_CANONICAL.get(source, {}).get((canonical_kind, canonical), lambda a: a)(array)
    back = {v: k for k, v in _NAMES.get(target, {}).get(canonical_kind, {}).items()}
    array = _FROM_CANONICAL.get(target, {}).get((canonical_kind, canonical), lambda a: a)(array)
    new_leaf = back.get(canonical, canonical)
    return (f"{prefix}.{new_leaf}" if prefix else new_leaf), np.array(array, order="C")
