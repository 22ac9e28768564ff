"""Architecture and parameters in one safe file: :func:`save_model` and :func:`load_model` (exercise 3 of the chapter).

``save_model`` captures a model's computation as a declarative graph over a closed vocabulary of ops
(:mod:`.vocabulary`; the format in ``docs/FORMAT.md``, "Model graphs") and writes ONE ordinary
tensorfile file: the parameters under their usual ``state_dict`` / attribute names, values unchanged
(never folded or renamed), plus the graph as JSON in ``__metadata__["tensorfile.model"]``. A plain
safetensors reader sees the parameters; ``load_model`` rebuilds a runnable model in any of the five
frameworks from the file alone: no class of the user's, nothing imported by a name from the file, no
pickle.

One module per framework captures (``capture_<framework>.py``: ``capture(model, example_inputs) ->
(graph dict, tensors)``) and one builds (``build_<framework>.py``: ``build(graph, tensors) -> model``);
:mod:`.reference` is the NumPy meaning of every op and the ``"numpy"`` build.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any, Mapping, Sequence

from ..errors import FormatError
from .graph import MODEL_KEY, Graph, UnsupportedArchitectureError, dump_graph, parse_graph

__all__ = ["save_model", "load_model", "read_graph", "UnsupportedArchitectureError", "MODEL_KEY", "register_composite"]

#: framework -> the module that captures its models (relative to this package).
_CAPTURE = {"torch": ".capture_torch", "keras": ".capture_keras", "jax": ".capture_jax", "mxnet": ".capture_mxnet"}
#: framework -> the module that rebuilds a graph in it.
_BUILD = {"torch": ".build_torch", "keras": ".build_keras", "tensorflow": ".build_keras", "jax": ".build_jax",
          "mxnet": ".build_mxnet", "numpy": ".build_numpy"}  # fmt: skip

#: name -> function of vocabulary ops registered by the user (see :func:`register_composite`).
COMPOSITES: dict[str, Any] = {}


def register_composite(name: str, fn: Any) -> None:
    """Let captures inline calls to ``fn`` (a torch module class or function built only of vocabulary ops)
    under ``name``: the file stores the ops it is made of, never ``name`` as code to import."""
    COMPOSITES[name] = fn


def _framework_of(model: Any) -> str:
    top = {c.__module__.partition(".")[0] for c in type(model).__mro__}
    for framework, packages in (("torch", {"torch"}), ("keras", {"keras", "tf_keras"}), ("jax", {"flax"}),
                                ("mxnet", {"mxnet"})):  # fmt: skip
        if top & packages:
            return framework
    raise UnsupportedArchitectureError(
        f"model: a {type(model).__module__}.{type(model).__qualname__} is not a model tensorfile captures "
        "(torch nn.Module, Keras model, Flax NNX module, Gluon HybridBlock)"
    )


def save_model(model: Any, path: str | os.PathLike[str], example_inputs: Sequence[Any] | Any, *,
               metadata: Mapping[str, str] | None = None) -> None:  # fmt: skip
    """Save ``model``'s architecture and parameters to one tensorfile file.

    Args:
        model: a torch ``nn.Module`` (captured with ``torch.fx``; run in eval mode), a Keras model
            (Sequential, functional or subclassed, traced on ``example_inputs``), a Flax NNX module,
            or an MXNet Gluon ``HybridBlock`` (from its hybridized symbol).
        path: the file (written atomically, as :func:`tensorfile.save`).
        example_inputs: a tensor or a tuple of tensors the model takes; their dtypes and shapes become
            the graph's inputs, the first dim named ``batch`` (symbolic).
        metadata: user metadata, str -> str.

    Raises:
        UnsupportedArchitectureError: the model uses data-dependent control flow, a Python side effect,
            an op outside the vocabulary or a custom kernel; the message names the node and the op.
    """
    from ..files import save

    framework = _framework_of(model)
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    capture = importlib.import_module(_CAPTURE[framework], __name__).capture
    graph, tensors = capture(model, inputs)
    text = dump_graph(graph)
    parse_graph(text, {k: tuple(v.shape) for k, v in tensors.items()}, os.fspath(path))  # never write a bad graph
    save(dict(tensors), path, metadata={**(metadata or {}), MODEL_KEY: text})


def read_graph(path: str | os.PathLike[str]) -> Graph:
    """The validated graph of a file written by :func:`save_model`.

    Raises:
        FormatError: the file holds no model graph; UnsupportedArchitectureError: a malformed graph.
    """
    from ..lazy import open as open_file

    with open_file(path, framework="numpy") as f:
        text = f.metadata.get(MODEL_KEY)
        if text is None:
            raise FormatError(f"{os.fspath(path)}: no model graph in this file (write one with tensorfile.save_model)")
        shapes = {name: tuple(f.info(name).shape) for name in f.keys()}
    return parse_graph(text, shapes, os.fspath(path))


def load_model(path: str | os.PathLike[str], framework: str = "numpy") -> Any:
    """Rebuild a runnable model from a file written by :func:`save_model`.

    Args:
        path: the file.
        framework: ``"torch"`` (an ``nn.Module`` in eval mode), ``"keras"`` (a ``keras.Model``),
            ``"jax"`` (a callable ``model(*inputs)`` with ``model.params``), ``"mxnet"`` (a Gluon
            ``HybridBlock``) or ``"numpy"`` (a callable of the reference interpreter).

    Returns:
        A model whose call on inputs like the example inputs gives the original model's outputs (one
        output: the array itself; several: a tuple).

    Raises:
        FormatError, IntegrityError: as :func:`tensorfile.load`; UnsupportedArchitectureError: a
            malformed or hostile graph (checked before any tensor is read); ValueError: unknown framework.
    """
    from ..files import load

    if framework not in _BUILD:
        raise ValueError(f"unknown framework {framework!r}; expected one of {sorted(_BUILD)}")
    graph = read_graph(path)
    tensors = load(path, framework="numpy")
    if not isinstance(tensors, dict):
        raise FormatError(f"{os.fspath(path)}: a model file holds a flat dict of parameters")
    missing = graph.params() - set(tensors)
    if missing:
        raise FormatError(f"{os.fspath(path)}: the graph uses tensors the file does not hold: {sorted(missing)[:5]}")
    build = importlib.import_module(_BUILD[framework], __name__).build
    return build(graph, tensors)


def graph_summary(graph: Graph) -> list[str]:
    """One line a node, like Keras ``summary()``: name, op, inputs, parameters, attributes (for ``tensorfile ls``).
    Every name printed was checked by :func:`parse_graph` (no control characters)."""
    def dims(shape: Sequence[Any]) -> str:
        return "[" + ", ".join(map(str, shape)) + "]"

    lines = ["inputs: " + ", ".join(f"{n}: {d} {dims(s)}" for n, d, s in graph.inputs)]
    for node in graph.nodes:
        params = ", ".join(node.params.values())
        attrs = {k: v for k, v in node.attrs.items() if v is not None}
        text = f"{node.name:<24} {node.op:<20} <- {', '.join(node.inputs) or '-':<20} {params}"
        if attrs:
            text += " " + json.dumps(attrs, separators=(",", ":"))
        lines.append(text.rstrip())
    lines.append("outputs: " + ", ".join(graph.outputs))
    return lines
