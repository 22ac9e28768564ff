"""Capture a torch ``nn.Module`` as a graph of the vocabulary: ``capture(model, example_inputs)``.

How (reference: pytorch/pytorch ``torch/fx/_symbolic_trace.py``, ``torch/fx/proxy.py``,
``torch/fx/interpreter.py``):

1. ``torch.fx`` symbolic tracing, the model in eval mode (its mode is restored afterwards). Standard
   ``torch.nn`` modules are leaves (``call_module`` nodes, mapped by :mod:`.capture_torch_modules`);
   containers (``Sequential``, ``ModuleList``, ``ModuleDict``), the user's own modules and classes
   registered with :func:`tensorfile.model.register_composite` are traced through.
2. The traced graph is run twice by an ``fx.Interpreter`` (no grad), on the example inputs and on
   them with one more batch row, recording every value's shape and dtype. Dims that differ between
   the runs depend on the batch: a reshape target keeps them symbolic (``"$k"`` or ``-1``); a number
   that differs cannot become a constant and is refused.
3. Each live node becomes vocabulary nodes (dead ones are dropped). Python numbers computed from shapes
   (``x.size(0)``, ``x.shape[-1] ** 0.5``) are evaluated, never stored as code.

Refused with :class:`~tensorfile.model.graph.UnsupportedArchitectureError`, naming the node and the op:
data-dependent control flow (a traced value in ``if``/``while``/``for``), Python side effects that
can be seen (printing or formatting a traced value, forward hooks, attributes set on a module during
``forward``), ops outside the vocabulary (``torch.fft.fft``, ``x.sum().item()``, custom
``torch.ops`` kernels) and custom ``torch.autograd.Function`` s.

The tensors are the model's ``state_dict()`` (parameters and persistent buffers, names and values
unchanged, nothing folded), plus any non-persistent buffer the graph reads, under its attribute path.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from .graph import _DTYPES, _NAME, UnsupportedArchitectureError

__all__ = ["capture"]


# ---------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class TensorMeta:
    """What the recording runs saw of one tensor: its shape and dtype name."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Param:
    """A value that is a tensor of the file (an fx ``get_attr``): ``name`` is its dotted path."""

    name: str


@dataclass(frozen=True)
class Static:
    """A Python value computed from shapes only (``x.size(0)``); fixed unless it depends on the batch."""

    node: fx.Node


@dataclass(frozen=True)
class Multi:
    """A tuple of values (``split``, ``nn.MultiheadAttention``): refs, ``None`` where unsupported."""

    refs: tuple[str | None, ...]
    what: str


def _describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorMeta(tuple(value.shape), str(value.dtype).removeprefix("torch."))
    if isinstance(value, (tuple, list)) and not isinstance(value, torch.Size):
        return tuple(_describe(v) for v in value)
    if isinstance(value, torch.Size):
        return tuple(value)
    return value


def refuse(node: fx.Node | str, op: Any, why: str) -> UnsupportedArchitectureError:
    """The error for ``node`` (an fx node or a module path) running ``op``."""
    name = node.name if isinstance(node, fx.Node) else node
    return UnsupportedArchitectureError(f"model: node {name!r} ({_op_name(op)}): {why}")


def label(node: fx.Node, root: nn.Module | None = None) -> Any:
    """What ``node`` runs, for messages: a function, ``Tensor.<method>``, or ``torch.nn.<Module>``."""
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_module" and root is not None:
        return f"torch.nn.{type(root.get_submodule(node.target)).__name__}"
    return node.target


def _op_name(op: Any) -> str:
    if isinstance(op, str):
        return op
    module = getattr(op, "__module__", None) or ""
    name = getattr(op, "__qualname__", None) or getattr(op, "__name__", None) or type(op).__name__
    if name.startswith("_") and "." in name:  # torch._VariableFunctionsClass.tanh is torch.tanh
        name = getattr(op, "__name__", name)
    if module in ("_operator", "operator"):
        module = "operator"
    elif module.startswith("torch._C._nn") or module == "torch.nn.functional":
        module = "torch.nn.functional"
    elif isinstance(op, torch._ops.OpOverloadPacket | torch._ops.OpOverload):
        return f"torch.ops.{op}"
    return f"{module}.{name}" if module else str(name)


# ----------------------------------------------------------------------------------------------- trace


class _Proxy(fx.Proxy):
    """A proxy that refuses being printed or formatted: a Python side effect on a traced value."""

    def __str__(self) -> str:
        op = label(self.node, getattr(self.tracer, "root", None))
        raise refuse(self.node, op, "Python side effect: a traced value is printed or formatted "
                     "(print, f-string, logging); only tensor ops can be saved")  # fmt: skip

    def __format__(self, spec: str) -> str:
        return self.__str__()


class _Tracer(fx.Tracer):
    """fx tracer: torch.nn modules are leaves except containers and registered composites; refuses
    control flow on traced values and nodes made inside a custom ``torch.autograd.Function``."""

    def __init__(self, composites: tuple[type, ...]) -> None:
        super().__init__()
        self.composites = composites
        self.autograd = _autograd_forwards()

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)) or (
            self.composites and isinstance(m, self.composites)
        ):
            return False
        return super().is_leaf_module(m, module_qualified_name)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def to_bool(self, obj: fx.Proxy) -> bool:
        why = "a traced value decides a Python if/while/assert; the graph cannot hold branches"
        raise refuse(obj.node, label(obj.node, self.root), f"data-dependent control flow: {why}")

    def iter(self, obj: fx.Proxy) -> Any:
        why = "a traced value is iterated over (a loop over a tensor, or *args of it)"
        raise refuse(obj.node, label(obj.node, self.root), f"data-dependent control flow: {why}")

    def create_node(self, kind: str, target: Any, args: Any, kwargs: Any, name: str | None = None,
                    type_expr: Any = None) -> fx.Node:  # fmt: skip
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        frame = sys._getframe(1)
        while frame is not None and self.autograd:
            owner = self.autograd.get(frame.f_code)
            if owner is not None:
                raise refuse(node, target, f"custom kernel: inside the custom autograd function {owner}.forward; "
                             "write it with vocabulary ops in an nn.Module instead")  # fmt: skip
            frame = frame.f_back
        return node


def _autograd_forwards() -> dict[Any, str]:
    """``forward`` code object -> class name, for every ``torch.autograd.Function`` subclass defined now."""
    out, stack = {}, list(torch.autograd.Function.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        forward = cls.__dict__.get("forward")
        code = getattr(getattr(forward, "__func__", forward), "__code__", None)
        if code is not None:
            out[code] = cls.__qualname__
    return out


def _state(model: nn.Module) -> dict[str, Any]:
    """What forward must not change: each module's plain attributes (by identity) and its registered names."""
    snap = {}
    for path, m in model.named_modules(remove_duplicate=False):
        for key, value in vars(m).items():
            if key in ("_parameters", "_buffers", "_modules"):
                snap[f"{path}:{key}"] = tuple(value)
            elif not (key.startswith("__") or key == "forward"):
                plain = isinstance(value, (int, float, str, bool, type(None)))
                snap[f"{path}.{key}" if path else key] = repr(value) if plain else id(value)
    return snap


def _check_hooks(model: nn.Module) -> None:
    for path, m in model.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            raise refuse(path or type(model).__name__, type(m).__name__,
                         "Python side effect: the module has forward hooks, which the graph cannot hold")  # fmt: skip


def _defaults(model: nn.Module, given: int) -> dict[str, Any]:
    """forward's parameters after the ``given`` example inputs, fixed to their defaults (``mask=None``)."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        p.name: p.default for p in parameters[given:] if p.kind in kinds and p.default is not inspect.Parameter.empty
    }


def _trace(model: nn.Module, given: int) -> fx.GraphModule:
    from . import COMPOSITES

    composites = tuple(c for c in COMPOSITES.values() if isinstance(c, type) and issubclass(c, nn.Module))
    tracer = _Tracer(composites)
    before = _state(model)
    try:
        graph = tracer.trace(model, concrete_args=_defaults(model, given) or None)
    except UnsupportedArchitectureError:
        raise
    except (fx.proxy.TraceError, RuntimeError, NotImplementedError, TypeError) as exc:
        raise UnsupportedArchitectureError(
            f"model: torch.fx cannot trace {type(model).__name__}: {str(exc)[:160]}"
        ) from exc
    after = _state(model)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k, ...) != after.get(k, ...))
    if changed:
        raise refuse(changed[0].partition(":")[0], "setattr", "Python side effect: forward sets or registers "
                     f"{changed[0]!r} on a module; the graph cannot hold it")  # fmt: skip
    return fx.GraphModule(model, graph, type(model).__name__)


class _Recorder(fx.Interpreter):
    """Runs the traced graph, keeping a description (shape, dtype or Python value) of every node's result."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.seen: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.seen[n] = _describe(result)
        return result


def _grow(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x[:1]]) if x.ndim and x.shape[0] else x


def _record(gm: fx.GraphModule, inputs: Sequence[torch.Tensor]) -> tuple[dict[fx.Node, Any], dict[fx.Node, Any]]:
    runs = []
    with torch.no_grad():
        for batch in (inputs, [_grow(x) for x in inputs]):
            recorder = _Recorder(gm)
            try:
                recorder.run(*batch)
            except Exception as exc:  # the model does not run on these inputs: say which run
                grown = " with one more row in the batch (the batch dim is symbolic)" if runs else ""
                raise UnsupportedArchitectureError(f"model: {type(gm).__name__} failed on the example inputs{grown}: "
                                                   f"{type(exc).__name__}: {str(exc)[:140]}") from exc  # fmt: skip
            runs.append(recorder.seen)
    return runs[0], runs[1]


# ------------------------------------------------------------------------------------------- emitting


class Capture:
    """The graph being written: vocabulary nodes emitted for the fx nodes, value references, shapes."""

    def __init__(self, model: nn.Module, first: Mapping[fx.Node, Any], second: Mapping[fx.Node, Any]) -> None:
        self.model, self.first, self.second = model, first, second
        self.nodes: list[dict[str, Any]] = []
        self.names: set[str] = set()
        self.values: dict[fx.Node, Any] = {}
        self.extra: dict[str, torch.Tensor] = {}  # non-persistent buffers the graph reads
        self._constants: dict[str, str] = {}
        self._state = set(model.state_dict())

    # -- names and nodes

    def name(self, base: str) -> str:
        base = base if _NAME.fullmatch(base) else f"_{base}".replace(" ", "_")[:180]
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def emit(self, op: str, inputs: Sequence[str], base: str, params: Mapping[str, str | None] | None = None,
             **attrs: Any) -> str:  # fmt: skip
        """Append a node; returns its name (its value's reference). ``None`` params are left out."""
        name = self.name(base)
        node = {"name": name, "op": op, "inputs": list(inputs)}
        kept = {k: v for k, v in (params or {}).items() if v is not None}
        if kept:
            node["params"] = kept
        if attrs:
            node["attrs"] = attrs
        self.nodes.append(node)
        return name

    # -- values

    def meta(self, arg: Any) -> Any:
        return self.first[arg] if isinstance(arg, fx.Node) else arg

    def tensor(self, arg: Any) -> TensorMeta:
        meta = self.meta(arg)
        if not isinstance(meta, TensorMeta):
            raise refuse(
                arg if isinstance(arg, fx.Node) else "?", "tensor", f"expected a tensor, found {type(meta).__name__}"
            )
        return meta

    def shapes(self, arg: fx.Node) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The shape of a tensor in both recording runs (dims that differ depend on the batch)."""
        return self.first[arg].shape, self.second[arg].shape

    def static(self, arg: Any, node: fx.Node, what: str) -> Any:
        """A Python value of ``arg`` (numbers, slices, tuples, shape computations), checked not to depend
        on the batch size and not to be a tensor."""
        if isinstance(arg, fx.Node):
            value = self.values.get(arg)
            if not isinstance(value, Static):
                raise refuse(node, label(node), f"{what} must be a fixed number, found the tensor {arg.name!r}")
            one, two = self.first[arg], self.second[arg]
            if one != two:
                raise refuse(
                    node, node.target, f"{what} depends on the batch size ({one} / {two}); only reshape targets may"
                )
            return one
        if isinstance(arg, (tuple, list)):
            return type(arg)(self.static(a, node, what) for a in arg)
        if isinstance(arg, slice):
            return slice(*(self.static(a, node, what) for a in (arg.start, arg.stop, arg.step)))
        if isinstance(arg, torch.dtype):
            return arg
        if arg is None or arg is Ellipsis or isinstance(arg, (bool, int, float, str)):
            return arg
        raise refuse(node, label(node), f"{what}: a {type(arg).__name__} cannot be stored")

    def ref(self, arg: Any, node: fx.Node, dtype: str = "float32") -> str:
        """The reference of a tensor operand; a parameter read directly becomes a ``constant`` node naming
        it, a Python number a ``constant`` node of ``dtype``."""
        value = self.values.get(arg) if isinstance(arg, fx.Node) else None
        if isinstance(value, str):
            return value
        if isinstance(value, Param):
            if value.name not in self._constants:
                self._constants[value.name] = self.emit("constant", [], value.name, {"value": value.name})
            return self._constants[value.name]
        if isinstance(value, Multi):
            raise refuse(node, label(node), f"uses the whole result of {arg.name!r} ({value.what}); take one element")
        number = self.static(arg, node, "a number operand")
        if isinstance(number, bool) or not isinstance(number, (int, float)) or abs(number) >= 1e300:
            raise refuse(node, label(node), f"operand {str(number)[:40]!r} is not a tensor or a number")
        kind = dtype if dtype in ("float32", "float64", "int64", "int32") else "float32"
        kind = "int64" if dtype.startswith(("int", "uint")) and kind == "float32" else kind
        value = float(number) if kind.startswith("float") else int(number)
        return self.emit("constant", [], f"{node.name}_const", value=value, dtype=kind)

    def param(self, arg: Any, node: fx.Node, role: str) -> str | None:
        """The file's tensor name of a parameter operand (``self.weight``, ``self.weight.data``), or None."""
        if arg is None:
            return None
        value = self.values.get(arg) if isinstance(arg, fx.Node) else None
        if not isinstance(value, Param):
            raise refuse(node, label(node), f"{role} must be a parameter or buffer of the model, not a computed value")
        return value.name

    def get_attr(self, target: str, node: fx.Node) -> Param:
        if target in self._state:
            return Param(target)
        owner, _, leaf = target.rpartition(".")
        module = self.model.get_submodule(owner)
        if leaf in module._buffers and module._buffers[leaf] is not None:
            self.extra[target] = module._buffers[leaf].detach()
            return Param(target)
        raise refuse(node, "get_attr", f"{target!r} is a tensor made in forward or outside the state_dict; "
                     "register it as a parameter or buffer")  # fmt: skip


# -------------------------------------------------------------------------------------------- capture


def _live(graph: fx.Graph) -> set[fx.Node]:
    out = [n for n in graph.nodes if n.op == "output"]
    live, stack = set(out), list(out)
    while stack:
        for n in stack.pop().all_input_nodes:
            if n not in live:
                live.add(n)
                stack.append(n)
    return live


def _inputs(gm: fx.GraphModule, inputs: Sequence[Any]) -> list[dict[str, Any]]:
    holders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    needed = [n for n in holders if not n.args]  # the others have defaults, fixed when tracing
    if not len(needed) <= len(inputs) <= len(holders):
        raise UnsupportedArchitectureError(f"model: forward takes {len(needed)} to {len(holders)} inputs, "
                                           f"example_inputs gives {len(inputs)}")  # fmt: skip
    holders = holders[: len(inputs)]
    out = []
    for node, x in zip(holders, inputs):
        if not isinstance(x, torch.Tensor):
            raise refuse(node, "placeholder", f"example input must be a tensor, found {type(x).__name__}")
        dtype = str(x.dtype).removeprefix("torch.")
        if dtype not in _DTYPES or x.ndim == 0:
            raise refuse(node, "placeholder", f"an input must be a tensor of rank >= 1 and dtype among {_DTYPES}; "
                         f"found {dtype}{list(x.shape)}")  # fmt: skip
        out.append({"name": node.name, "dtype": dtype, "shape": ["batch", *x.shape[1:]]})
    return out


def capture(model: nn.Module, example_inputs: Sequence[Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The graph and tensors of ``model``.

    Args:
        model: a torch ``nn.Module``; traced in eval mode, its mode restored afterwards.
        example_inputs: the tensors ``forward`` takes, in order; each input's dtype and shape become the
            graph's, the first dim named ``"batch"``.

    Returns:
        ``(graph, tensors)``: the graph as a dict (``graph.py``'s JSON) and ``model.state_dict()``
        (values bit-identical, names unchanged) plus non-persistent buffers the graph reads.

    Raises:
        UnsupportedArchitectureError: data-dependent control flow, a Python side effect that can be seen,
            an op or module outside the vocabulary, a custom autograd function or kernel; the message
            names the node and the op.
    """
    from .capture_torch_layers import FUNCTIONS, METHODS, static_op
    from .capture_torch_modules import call_module

    _check_hooks(model)
    was_training = model.training
    model.eval()
    try:
        gm = _trace(model, len(example_inputs))
        first, second = _record(gm, example_inputs)
        cap = Capture(model, first, second)
        graph_inputs = _inputs(gm, example_inputs)
        cap.names.update(i["name"] for i in graph_inputs)
        live = _live(gm.graph)
        outputs: list[str] = []
        for node in gm.graph.nodes:
            if node.op == "placeholder" and node.name in cap.names:  # placeholders come first: these are inputs
                cap.values[node] = node.name
            elif node not in live:
                continue
            elif node.op == "placeholder":
                raise refuse(
                    node, "placeholder", "forward reads an argument left at its default; pass it in example_inputs"
                )
            elif node.op == "get_attr":
                cap.values[node] = cap.get_attr(node.target, node)
            elif node.op == "output":
                outputs = _outputs(cap, node)
            elif not isinstance(first[node], (TensorMeta, tuple)) or (
                isinstance(first[node], tuple) and not any(isinstance(m, TensorMeta) for m in first[node])
            ):
                static_op(cap, node)
            elif node.op == "call_module":
                cap.values[node] = call_module(cap, node, gm.get_submodule(node.target))
            else:
                table = FUNCTIONS if node.op == "call_function" else METHODS
                handler = table.get(node.target) if node.op == "call_method" or _hashable(node.target) else None
                if handler is None:
                    raise refuse(node, label(node), "op outside the vocabulary of IR version 1 "
                                 "(see docs/FORMAT.md, 'Model graphs')")  # fmt: skip
                cap.values[node] = handler(cap, node, list(node.args), dict(node.kwargs))
    finally:
        model.train(was_training)
    graph = {"framework": "torch", "inputs": graph_inputs, "nodes": cap.nodes, "outputs": outputs,
             "modules": {path: type(m).__name__ for path, m in model.named_modules()}}  # fmt: skip
    tensors = {name: t.detach() for name, t in model.state_dict().items()}
    tensors.update(cap.extra)
    return graph, tensors


def _hashable(target: Any) -> bool:
    try:
        hash(target)
    except TypeError:
        return False
    return True


def _outputs(cap: Capture, node: fx.Node) -> list[str]:
    result = node.args[0]
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    refs = []
    for item in items:
        value = cap.values.get(item) if isinstance(item, fx.Node) else None
        if isinstance(value, Multi) and all(value.refs):
            refs.extend(value.refs)  # type: ignore[arg-type]
        elif isinstance(value, (str, Param)):
            refs.append(cap.ref(item, node))
        else:
            raise refuse(
                node, "output", f"outputs must be tensors (a tensor or a tuple/list of them), found {str(item)[:60]}"
            )
    return refs


#: A handler of an fx call: ``(capture, node, args, kwargs) -> value`` (a reference, :class:`Multi` or :class:`Param`).
Handler = Callable[[Capture, fx.Node, list, dict], Any]
