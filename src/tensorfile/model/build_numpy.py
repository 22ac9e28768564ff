"""``load_model(path, "numpy")``: the graph run by the reference interpreter (:mod:`.reference`)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .graph import Graph
from .reference import run

__all__ = ["NumpyModel", "build"]


class NumpyModel:
    """A callable model: ``model(*inputs)`` gives the output array (a tuple for several outputs).

    Attributes:
        graph: the validated graph; params: the file's tensors by name (NumPy arrays).
    """

    def __init__(self, graph: Graph, params: Mapping[str, np.ndarray]) -> None:
        self.graph, self.params = graph, dict(params)

    def __call__(self, *inputs: Any) -> Any:
        outputs = run(self.graph, self.params, *(np.asarray(x) for x in inputs))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def build(graph: Graph, tensors: Mapping[str, np.ndarray]) -> NumpyModel:
    """The NumPy model of ``graph`` over ``tensors``."""
    return NumpyModel(graph, tensors)
