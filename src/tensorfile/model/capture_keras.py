"""Capture a Keras 3 model (Sequential, functional or subclassed) as a graph of vocabulary ops.

The model is traced symbolically: its ``call`` runs once on ``keras.KerasTensor`` placeholders shaped
like ``example_inputs`` (batch dim ``None``). Every layer call and every ``keras.ops`` operation on a
symbolic tensor records a ``keras.src.ops.node.Node`` in the tensor's ``_keras_history`` (Keras'
own functional-API mechanism, ``keras/src/ops/node.py``), so walking back from the outputs gives the
computation in order. Built-in layers map to vocabulary ops (:mod:`.capture_keras_layers`);
``Sequential`` / functional sub-models, user layers with their own ``call`` and activation functions
are traced into in turn, so the file holds vocabulary ops only. The nodes the trace adds to the
model's layers are removed afterwards: the model is left as it was.

Parameters keep the names :func:`tensorfile.save_parameters` gives the same model (layer names for a
``Sequential`` / functional model, attribute paths for a subclassed one) and their exact values.

Refused, with :class:`UnsupportedArchitectureError` naming the layer or op: layers and ops outside
the vocabulary, a ``call`` that uses a backend op on a symbolic tensor (``tf.*``, a custom kernel),
data-dependent control flow (``if`` on a tensor), constants that are neither Python numbers nor the
model's own weights.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Sequence

import numpy as np

from ..parameters.models import _keras_layers, model_params
from .graph import UnsupportedArchitectureError

__all__ = ["capture", "Tracer"]

_CONST_DTYPES = ("float32", "float64", "int64", "int32")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().replace("re_lu", "relu")


def _clean(name: str) -> str:
    """A node name the graph accepts (``[A-Za-z_][A-Za-z0-9_./-]*``)."""
    name = re.sub(r"[^A-Za-z0-9_./\-]", "_", name) or "node"
    return name if re.match(r"[A-Za-z_]", name) else "_" + name


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 160 else text[:157] + "..."


class Tracer:
    """The graph under construction: emitted nodes, and which graph value each symbolic tensor is.

    Attributes:
        nodes: graph node dicts, in an order where each uses only inputs and earlier nodes.
        refs: ``id(KerasTensor)`` -> the value's name in the graph.
        var_names: ``id(variable)`` -> its tensor name in the file (``save_parameters``' name).
        paths: ``id(layer)`` -> its module path (``hidden``, ``encoder.dense``).
    """

    def __init__(self, var_names: dict[int, str], paths: dict[int, str], input_names: Sequence[str]) -> None:
        import keras

        self.keras = keras
        self.nodes: list[dict[str, Any]] = []
        self.refs: dict[int, str] = {}
        self.var_names, self.paths = var_names, paths
        self.used: set[str] = set(input_names)
        self._keep: list[Any] = []  # the traced tensors stay alive, so their ids stay unique
        self._consts: dict[str, str] = {}

    # -- emitting -------------------------------------------------------------------------------------

    def unique(self, base: str) -> str:
        base = _clean(base)
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def emit(self, op: str, inputs: Sequence[str], base: str, params: dict[str, str] | None = None,
             attrs: dict[str, Any] | None = None) -> str:  # fmt: skip
        """Append a node of vocabulary op ``op``; its name (``base``, made unique) is returned."""
        name = self.unique(base)
        self.nodes.append({"name": name, "op": op, "inputs": list(inputs), "params": dict(params or {}),
                           "attrs": dict(attrs or {})})  # fmt: skip
        return name

    def weight(self, variable: Any, where: str) -> str:
        """The file's name of one of the model's variables."""
        name = self.var_names.get(id(variable))
        if name is None:
            raise UnsupportedArchitectureError(
                f"{where}: uses a variable {getattr(variable, 'path', '?')!r} that is not one of the model's "
                "named weights (created inside call?)"
            )
        return name

    def param_const(self, variable: Any, where: str) -> str:
        """A ``constant`` node holding one of the model's variables (one node per variable)."""
        name = self.weight(variable, where)
        if name not in self._consts:
            self._consts[name] = self.emit("constant", [], name, {"value": name})
        return self._consts[name]

    def value(self, x: Any, where: str, like: Any = None, base: str = "const") -> str:
        """The graph value of an operand: a traced tensor, one of the model's variables, or a Python
        number (a ``constant`` node named ``base``, of the dtype of ``like``, the tensor it meets)."""
        keras = self.keras
        if isinstance(x, keras.KerasTensor):
            if id(x) not in self.refs:
                raise UnsupportedArchitectureError(f"{where}: a tensor that does not come from the model's inputs")
            return self.refs[id(x)]
        if isinstance(x, keras.Variable):
            return self.param_const(x, where)
        number = isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))
        if not number or not np.isfinite(x) or abs(x) >= 1e300:
            raise UnsupportedArchitectureError(
                f"{where}: a constant {type(x).__name__} operand is not recordable: only finite Python numbers "
                "and the model's own weights (hold arrays as weights: add_weight)"
            )
        dtype = str(getattr(like, "dtype", "float32"))
        dtype = dtype if dtype in _CONST_DTYPES and not (isinstance(x, float) and "int" in dtype) else "float32"
        value = float(x) if "float" in dtype else int(x)
        return self.emit("constant", [], base, attrs={"value": value, "dtype": dtype})

    def keep(self, tensor: Any) -> None:
        """Hold ``tensor`` for the trace's lifetime (its id names a graph value)."""
        self._keep.append(tensor)

    # -- tracing --------------------------------------------------------------------------------------

    def trace(self, fn: Callable[..., Any], args: Any, kwargs: dict[str, Any], scope: str, what: str) -> list[str]:
        """Call ``fn`` on fresh placeholders standing for the traced tensors in ``args`` / ``kwargs`` and
        record what it computes; the graph values of its outputs (flattened), in order."""
        keras = self.keras

        def stand_in(x: Any) -> Any:
            if not isinstance(x, keras.KerasTensor):
                return x
            placeholder = keras.KerasTensor(x.shape, dtype=x.dtype)
            self.refs[id(placeholder)] = self.refs[id(x)]
            self._keep.append(placeholder)
            return placeholder

        args, kwargs = keras.tree.map_structure(stand_in, (args, kwargs))
        try:
            outputs = fn(*args, **kwargs)
        except UnsupportedArchitectureError:
            raise
        except Exception as exc:  # noqa: BLE001 -- a backend op on a symbolic tensor, a custom kernel...
            if isinstance(exc, TypeError) and "cannot be used as a boolean" in str(exc):
                why = "data-dependent control flow (a Python `if`/`while` on a tensor) cannot be recorded"
            else:
                why = f"its call cannot be traced into vocabulary ops ({_short(exc)})"
            raise UnsupportedArchitectureError(f"{what}: {why}") from None
        return [self.resolve(t, scope, what) for t in keras.tree.flatten(outputs)]

    def resolve(self, tensor: Any, scope: str, what: str) -> str:
        """The graph value of a symbolic ``tensor``, emitting the nodes it depends on first."""
        from .capture_keras_layers import convert

        keras = self.keras
        if not isinstance(tensor, keras.KerasTensor):
            raise UnsupportedArchitectureError(
                f"{what}: returns a {type(tensor).__name__}, not a tensor computed from the inputs"
            )
        stack = [tensor]
        while stack:
            current = stack[-1]
            if id(current) in self.refs:
                stack.pop()
                continue
            history = getattr(current, "_keras_history", None)
            if history is None or history.operation is None:
                raise UnsupportedArchitectureError(f"{what}: a tensor that does not come from the model's inputs")
            node = history.operation._inbound_nodes[history.node_index]
            pending = [t for t in node.input_tensors if id(t) not in self.refs]
            if pending:
                stack.extend(pending)
                continue
            results = convert(self, node, scope)
            if len(results) != len(node.outputs):
                raise UnsupportedArchitectureError(
                    f"{what}: {type(node.operation).__name__} gives {len(node.outputs)} results, "
                    f"recorded {len(results)}"
                )
            for out, ref in zip(node.outputs, results):
                self.refs[id(out)] = ref
                self._keep.append(out)
            stack.pop()
        return self.refs[id(tensor)]

    def call_layer(self, layer: Any, args: Any, kwargs: dict[str, Any], scope: str, what: str) -> list[str]:
        """Trace into ``layer.call`` (a sub-model or a user layer), in inference mode."""
        accepted = inspect.signature(layer.call).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}  # Keras records training= / mask= it adds
        if "training" in accepted:
            kwargs = {**kwargs, "training": False}
        return self.trace(layer.call, args, kwargs, scope, what)


def _to_numpy(x: Any) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x)) if not isinstance(x, np.ndarray) else x


def _packing(model: Any, count: int) -> Callable[[list], list]:
    """How ``model.call`` takes ``count`` inputs: as one list where it has one required argument (a
    functional model's ``call(inputs)``), else positionally."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(model.call).parameters.values()
    required = [p for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]
    spread = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    return (lambda xs: [xs]) if count > 1 and len(required) == 1 and not spread else list


def _snapshot(model: Any) -> list[tuple[Any, int, int]]:
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    return [(layer, len(layer._inbound_nodes), len(layer._outbound_nodes)) for layer in layers]


def capture(model: Any, example_inputs: Sequence[Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The graph of a Keras 3 model and its parameters.

    Args:
        model: a ``keras.Sequential``, functional ``keras.Model`` or subclassed ``keras.Model`` /
            ``keras.layers.Layer`` (built, or buildable by one call on ``example_inputs``).
        example_inputs: the tensors ``model`` takes (NumPy or backend arrays), in order: given
            to ``call`` as one list where it has one required argument (a functional model's
            ``model.inputs``), else as its arguments. Their dtypes and shapes become the graph's inputs (``x`` for one,
            ``x0``, ``x1``... for several), the first dim named ``batch``.

    Returns:
        ``(graph, tensors)``: the graph as a JSON-ready dict (:mod:`.graph`) with ``framework``
        ``"keras"``, and every weight of the model as a NumPy array under its
        :func:`tensorfile.save_parameters` name, bit for bit.

    Raises:
        UnsupportedArchitectureError: a layer or op outside the vocabulary, a call that cannot be
            traced (backend ops, data-dependent control flow), or unnamed constants; the message names
            the layer or op.
    """
    import keras

    arrays = [_to_numpy(x) for x in example_inputs]
    pack = _packing(model, len(arrays))
    if not model.built:
        model(*pack([keras.ops.convert_to_tensor(a) for a in arrays]))
    named = model_params(model)
    tensors = {name: np.asarray(p.value) for name, p in named.params.items()}
    var_names = {id(p.source): name for name, p in named.params.items()}
    paths: dict[int, str] = {}
    modules: dict[str, str] = {}

    def visit(layer: Any, prefix: str, old: str) -> None:
        paths[id(layer)] = prefix.rstrip(".")
        modules[prefix.rstrip(".")] = type(layer).__name__

    _keras_layers(model, "", "", set(), visit)
    names = ["x"] if len(arrays) == 1 else [f"x{i}" for i in range(len(arrays))]
    inputs = []
    tracer = Tracer(var_names, paths, names)
    placeholders = []
    for name, array in zip(names, arrays):
        if array.ndim == 0:
            raise UnsupportedArchitectureError(f"input {name!r}: a scalar has no batch dim; give a batch of examples")
        placeholder = keras.KerasTensor((None,) + array.shape[1:], dtype=array.dtype.name)
        tracer.refs[id(placeholder)] = name
        placeholders.append(placeholder)
        inputs.append({"name": name, "dtype": array.dtype.name, "shape": ["batch", *array.shape[1:]]})
    before = _snapshot(model)
    try:
        outputs = tracer.call_layer(model, pack(placeholders), {}, "", f"model {type(model).__name__}")
    finally:
        for layer, inbound, outbound in before:  # the trace only appended: drop what it added
            del layer._inbound_nodes[inbound:]
            del layer._outbound_nodes[outbound:]
    graph = {"framework": "keras", "inputs": inputs, "nodes": tracer.nodes, "outputs": outputs, "modules": modules}
    return graph, tensors
