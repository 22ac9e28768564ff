"""Capture a Flax NNX module as a model graph: :func:`capture`.

How: the module is cloned (``nnx.split`` / ``nnx.merge``; the user's module is never changed), put in
eval mode (``Dropout`` deterministic, ``BatchNorm`` on its running statistics) and traced with
``jax.make_jaxpr``, every variable of its state an input of the trace, twice: on inputs shaped like
``example_inputs`` with a first dim of 2 and of 3, so that the sizes derived from the batch size show
(:mod:`.capture_jaxpr` walks both jaxprs in lockstep and turns them into nodes). While it is traced,
the calls of the layers below, and of ``gelu`` / ``softmax`` through ``jax.nn`` and ``flax.nnx``, each
run under a ``jax.jit`` of a name of ours, so that the jaxpr shows one equation per call, which becomes
one node, named by the layer's module path (``hidden``) and holding its parameters under the names
:func:`tensorfile.save_parameters` gives them (``hidden.kernel``). Spec followed: ``flax/nnx/nn/linear.py``,
``flax/nnx/nn/normalization.py``, ``flax/nnx/nn/stochastic.py``:

========================  =========================================================================
``nnx.Linear``            ``linear``, ``weight_layout="in_out"`` (Flax kernels are ``[in, out]``)
``nnx.Conv`` (1-d, 2-d)   ``conv1d`` / ``conv2d``, ``data_format="channels_last"``,
                          ``kernel_layout="spatial_in_out"`` (HWIO); ``SAME`` / ``VALID`` / ``CAUSAL``
                          / explicit padding; no input dilation, no mask
``nnx.BatchNorm``         ``batch_norm`` on ``mean`` / ``var`` (BatchStat), ``scale``, ``bias``; one axis
``nnx.LayerNorm``         ``layer_norm`` over trailing reduction axes, features last
``nnx.Embed``             ``embedding``
``nnx.Dropout``           ``dropout`` (identity at inference)
``gelu`` / ``softmax``    ``gelu`` (``approximate=True``: ``"tanh"``) / ``softmax`` over one axis
========================  =========================================================================

The rest of the computation (``nnx.relu``, arithmetic, reshapes, pooling...) is read from the jaxpr's
primitives: see :mod:`.capture_jaxpr` for the table and what is refused.

The patching of the layer classes and functions lasts only while :func:`capture` traces (not thread
safe: do not capture and run the same layers from another thread at once).
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any, Callable, Sequence

import numpy as np

from .capture_jaxpr import TAG, Batch, Other, Param, Translator, Value, fail
from .graph import UnsupportedArchitectureError

__all__ = ["capture"]

#: The batch sizes of the two traces.
BATCHES = (2, 3)


class _Recorder:
    """Makes each call of a known layer or function one ``jit`` equation of a name of ours, and remembers
    what was called (kind, module, its path, kwargs) under that name while the model is traced."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[str, Any, str | None, dict[str, Any]]] = {}
        self.paths: dict[int, str] = {}
        self._undo: list[tuple[Any, str, Any]] = []
        self._count = itertools.count()

    def _jit(self, kind: str, owner: Any, kwargs: dict[str, Any], fn: Callable[[Any], Any], x: Any) -> Any:
        import jax

        name = f"{TAG}{next(self._count)}"
        self.calls[name] = (kind, owner, self.paths.get(id(owner)) if owner is not None else None, dict(kwargs))

        def call(x: Any) -> Any:
            return fn(x)

        call.__name__ = call.__qualname__ = name
        return jax.jit(call)(x)

    def _patch(self, holder: Any, attr: str, replacement: Any) -> None:
        self._undo.append((holder, attr, getattr(holder, attr)))
        setattr(holder, attr, replacement)

    def __enter__(self) -> "_Recorder":
        import jax
        from flax import nnx

        try:
            for cls in (nnx.Linear, nnx.Conv, nnx.BatchNorm, nnx.LayerNorm, nnx.Embed, nnx.Dropout):
                self._patch(cls, "__call__", self._layer(cls.__call__, cls.__name__))
            for fname in ("gelu", "softmax"):
                original = getattr(jax.nn, fname)
                for holder in (jax.nn, nnx):
                    if getattr(holder, fname, None) is original:
                        self._patch(holder, fname, self._function(original, fname))
        except BaseException:
            self.__exit__()
            raise
        return self

    def _layer(self, original: Any, kind: str) -> Callable[..., Any]:
        def layer_call(module: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
            where = f"a {kind} call ({self.paths.get(id(module), '?')})"
            if args:
                raise fail(where, f"takes one array here, got {1 + len(args)} positional arguments")
            _CHECKS.get(kind, _no_check)(module, kwargs, where)
            return self._jit(kind, module, kwargs, lambda v: original(module, v, **kwargs), x)

        return layer_call

    def _function(self, original: Any, kind: str) -> Callable[..., Any]:
        def fn_call(x: Any, *args: Any, **kwargs: Any) -> Any:
            bound = inspect.signature(original).bind(x, *args, **kwargs)
            bound.apply_defaults()
            options = dict(list(bound.arguments.items())[1:])
            return self._jit(kind, None, options, lambda v: original(v, *args, **kwargs), x)

        return fn_call

    def __exit__(self, *exc: Any) -> None:
        for holder, attr, value in reversed(self._undo):
            setattr(holder, attr, value)
        self._undo.clear()

    def translate(self, t: Translator, tag: str, ins: list[Any], shape: tuple[Any, ...], where: str) -> Value:
        """The node of the recorded call ``tag`` (the ``on_call`` of :class:`.capture_jaxpr.Translator`)."""
        kind, module, path, kwargs = self.calls[tag]
        x = t.value(ins[-1], where)  # the call's one argument; the layer's variables come first
        if module is None:
            return _FUNCTIONS[kind](t, x, kwargs, shape, where)
        if path is None:
            raise fail(where, f"a {kind} that is not a submodule of the model (created while it runs?)")
        return _LAYERS[kind](t, module, path, x, kwargs, shape, where)


def _dotted(path: Sequence[Any]) -> str:
    return ".".join(str(p) for p in path)


def _input_names(model: Any, count: int) -> list[str]:
    """The parameter names of the module's ``__call__`` (``x``), else ``input_0``..."""
    try:
        names = [p.name for p in inspect.signature(type(model).__call__).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]  # fmt: skip
    except (TypeError, ValueError):
        names = []
    if len(names) >= count and all(n.isidentifier() for n in names[:count]):
        return names[:count]
    return [f"input_{i}" for i in range(count)]


def capture(model: Any, example_inputs: Sequence[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Capture a Flax NNX module's inference computation as a graph.

    Args:
        model: an ``nnx.Module`` whose ``__call__`` takes the example inputs as positional arrays, each
            with the batch first.
        example_inputs: arrays (NumPy or JAX) like the inputs; their dtypes and shapes become the graph's
            inputs, the first dim ``batch`` (symbolic); their values are not used.

    Returns:
        ``(graph, tensors)``: the graph as a dict (``docs/FORMAT.md``, "Model graphs"), and every
        parameter and batch statistic of the module by the names :func:`tensorfile.save_parameters`
        gives them (``hidden.kernel``), the module's own arrays (bit for bit).

    Raises:
        UnsupportedArchitectureError: data-dependent control flow, randomness, a Python callback or a
            custom kernel, a primitive outside the vocabulary, a computation that depends on the batch
            size, or a layer used in a way the vocabulary cannot express; the message names the
            equation, its primitive and the source line.
    """
    import jax
    from flax import nnx

    from ..parameters.models import model_params

    tensors = model_params(model).tensors
    clone = nnx.merge(*nnx.split(model))
    clone.eval()
    graphdef, state = nnx.split(clone)
    keyed, treedef = jax.tree_util.tree_flatten_with_path(state)
    leaf_names = [_dotted(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path
                          if not (isinstance(k, jax.tree_util.GetAttrKey) and k.name == "value"))
                  for path, _ in keyed]  # fmt: skip
    leaves = [leaf for _, leaf in keyed]
    arrays = [x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x) for x in example_inputs]
    if any(len(x.shape) == 0 for x in arrays):
        raise fail(f"{type(model).__name__}.__call__", "every input needs a batch dim (a scalar input was given)")
    names = _input_names(model, len(arrays))
    recorder = _Recorder()

    def apply(leaves: list[Any], *xs: Any) -> Any:
        module = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, leaves))
        recorder.paths = {id(m): _dotted(p) for p, m in nnx.iter_modules(module)}
        return module(*xs)

    traces = []
    for batch in BATCHES:
        specs = [jax.ShapeDtypeStruct((batch,) + tuple(x.shape[1:]), x.dtype) for x in arrays]
        try:
            with recorder:
                traces.append(jax.make_jaxpr(apply)(leaves, *specs))
        except UnsupportedArchitectureError:
            raise
        except jax.errors.ConcretizationTypeError as exc:
            raise fail(f"{type(model).__name__}.__call__", "data-dependent control flow (Python control flow on "
                       f"a traced value): {str(exc).splitlines()[0][:120]}") from None  # fmt: skip
        except Exception as exc:
            raise fail(f"{type(model).__name__}.__call__", f"cannot be traced with a batch of {batch} "
                       f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]})") from None  # fmt: skip
    first = traces[0].jaxpr
    env: dict[Any, Any] = {}
    for var, name, leaf in zip(first.invars, leaf_names, leaves):
        env[var] = Param(name, tuple(np.shape(leaf))) if name in tensors else Other(name)
    graph_inputs = []
    for var, name, x in zip(first.invars[len(leaves) :], names, arrays):
        env[var] = Value(name, (Batch(*BATCHES),) + tuple(int(d) for d in x.shape[1:]))
        graph_inputs.append({"name": name, "dtype": np.dtype(x.dtype).name, "shape": ["batch", *map(int, x.shape[1:])]})
    translator = Translator(recorder.translate, set(names))
    translator.check(traces[0])
    outs = translator.run(traces[0], traces[1], env)
    outputs = [translator.output(v) for v in outs]
    modules = {_dotted(p): type(m).__name__ for p, m in nnx.iter_modules(model)}
    graph = {"framework": "jax", "inputs": graph_inputs, "nodes": translator.nodes, "outputs": outputs,
             "modules": modules}  # fmt: skip
    return graph, dict(tensors)


# -- layers and functions ---------------------------------------------------------------------------------------------


def _pname(module: Any, path: str, attr: str) -> str | None:
    if getattr(module, attr, None) is None:
        return None
    return f"{path}.{attr}" if path else attr


def _params(module: Any, path: str, **roles: str) -> dict[str, str]:
    found = {role: _pname(module, path, attr) for role, attr in roles.items()}
    return {role: name for role, name in found.items() if name is not None}


def _no_kwargs(kind: str, kwargs: dict[str, Any], where: str, allowed: Sequence[str] = ()) -> None:
    extra = {k: v for k, v in kwargs.items() if k not in allowed and v is not None}
    if extra:
        raise fail(where, f"{kind} called with {sorted(extra)}, which a model graph cannot express")


def _linear(t: Translator, m: Any, path: str, x: Value, kwargs: dict[str, Any], shape: Any, where: str) -> Value:
    _no_kwargs("Linear", kwargs, where)
    params = _params(m, path, weight="kernel", bias="bias")
    return t.emit(path, "linear", [x], shape, params, {"weight_layout": "in_out"})


def _tuple(value: Any, rank: int) -> list[int]:
    if value is None:
        return [1] * rank
    if isinstance(value, int):
        return [value] * rank
    return [int(v) for v in value]


def _conv(t: Translator, m: Any, path: str, x: Value, kwargs: dict[str, Any], shape: Any, where: str) -> Value:
    _no_kwargs("Conv", kwargs, where)
    rank = len(m.kernel_size)
    if rank not in (1, 2) or len(x.shape) != rank + 2:
        raise fail(where, f"a Conv of {rank} spatial dims on an input of shape {list(x.shape)}: conv1d / conv2d "
                           "on batched inputs only")  # fmt: skip
    if getattr(m, "mask", None) is not None or any(d != 1 for d in _tuple(m.input_dilation, rank)):
        raise fail(where, "a Conv with a kernel mask or input dilation is outside the vocabulary")
    stride, dilation = _tuple(m.strides, rank), _tuple(m.kernel_dilation, rank)
    kernel = [int(k) for k in m.kernel_size]
    padding = _conv_padding(m.padding, x.shape[1:-1], kernel, stride, dilation, where)
    params = _params(m, path, weight="kernel", bias="bias")
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": int(m.feature_group_count),
             "data_format": "channels_last", "kernel_layout": "spatial_in_out"}  # fmt: skip
    return t.emit(path, f"conv{rank}d", [x], shape, params, attrs)


def _conv_padding(padding: Any, spatial: Sequence[Any], kernel: list[int], stride: list[int], dilation: list[int],
                  where: str) -> Any:  # fmt: skip
    """Flax's padding (``flax/nnx/nn/linear.py`` ``Conv``) in the vocabulary's terms."""
    from .reference import same_padding

    rank = len(kernel)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return "valid"
        if mode == "SAME":
            if all(s == 1 for s in stride):
                return "same"
            if not all(isinstance(d, int) for d in spatial):
                raise fail(where, "SAME padding with strides needs fixed spatial dims")
            return [same_padding(int(d), k, s, di) for d, k, s, di in zip(spatial, kernel, stride, dilation)]
        if mode == "CAUSAL" and rank == 1:
            return [[(kernel[0] - 1) * dilation[0], 0]]
        raise fail(where, f"Conv padding {padding!r} is outside the vocabulary (VALID, SAME, CAUSAL, explicit)")
    if isinstance(padding, int):
        return [[padding, padding]] * rank
    pads = [[int(p), int(p)] if isinstance(p, int) else [int(p[0]), int(p[1])] for p in padding]
    if len(pads) != rank:
        raise fail(where, f"Conv padding {padding!r} does not have {rank} entries")
    return pads


def _no_check(module: Any, kwargs: dict[str, Any], where: str) -> None:
    pass


def _check_batch_norm(m: Any, kwargs: dict[str, Any], where: str) -> None:
    _no_kwargs("BatchNorm", kwargs, where, ("use_running_average",))
    running = kwargs.get("use_running_average")
    if not (m.use_running_average if running is None else running) or m.axis_name is not None:
        raise fail(where, "a BatchNorm on batch statistics (use_running_average=False) is not an inference graph")
    if not isinstance(m.axis, int):
        raise fail(where, f"a BatchNorm over axes {m.axis!r}: one feature axis only")


def _check_dropout(m: Any, kwargs: dict[str, Any], where: str) -> None:
    _no_kwargs("Dropout", kwargs, where, ("deterministic",))
    deterministic = kwargs.get("deterministic")
    if not (m.deterministic if deterministic is None else deterministic) and m.rate > 0:
        raise fail(where, "a Dropout that is not deterministic draws random numbers (not an inference graph)")


#: Checks made before a layer runs (a Dropout that would draw random numbers fails inside the trace).
_CHECKS = {"BatchNorm": _check_batch_norm, "Dropout": _check_dropout}


def _batch_norm(t: Translator, m: Any, path: str, x: Value, kwargs: dict[str, Any], shape: Any, where: str) -> Value:
    params = _params(m, path, mean="mean", var="var", scale="scale", offset="bias")
    return t.emit(path, "batch_norm", [x], shape, params, {"eps": float(m.epsilon), "axis": int(m.axis)})


def _axes(axes: Any, rank: int) -> list[int]:
    return sorted(a % rank for a in ((axes,) if isinstance(axes, int) else axes))


def _layer_norm(t: Translator, m: Any, path: str, x: Value, kwargs: dict[str, Any], shape: Any, where: str) -> Value:
    _no_kwargs("LayerNorm", kwargs, where)
    rank = len(x.shape)
    reduced, features = _axes(m.reduction_axes, rank), _axes(m.feature_axes, rank)
    if reduced != list(range(rank - len(reduced), rank)) or features != [rank - 1] or m.axis_name is not None:
        raise fail(where, f"a LayerNorm over axes {m.reduction_axes!r} with features {m.feature_axes!r}: the "
                           "vocabulary normalizes trailing axes with the features last")  # fmt: skip
    params = _params(m, path, scale="scale", offset="bias")
    return t.emit(path, "layer_norm", [x], shape, params, {"eps": float(m.epsilon), "axes": len(reduced)})


def _embed(t: Translator, m: Any, path: str, x: Value, kwargs: dict[str, Any], shape: Any, where: str) -> Value:
    _no_kwargs("Embed", kwargs, where)
    return t.emit(path, "embedding", [x], shape, _params(m, path, weight="embedding"))


def _dropout(t: Translator, m: Any, path: str, x: Value, kwargs: dict[str, Any], shape: Any, where: str) -> Value:
    return t.emit(path, "dropout", [x], shape)


def _gelu(t: Translator, x: Value, options: dict[str, Any], shape: Any, where: str) -> Value:
    return t.emit(
        "gelu", "gelu", [x], shape, attrs={"approximate": "tanh" if options.get("approximate", True) else "none"}
    )


def _softmax(t: Translator, x: Value, options: dict[str, Any], shape: Any, where: str) -> Value:
    axis = options.get("axis", -1)
    if isinstance(axis, (tuple, list)) and len(axis) == 1:
        axis = axis[0]
    if not isinstance(axis, int) or options.get("where") is not None or options.get("initial") is not None:
        raise fail(where, f"softmax over axis {axis!r} (with where/initial): one axis, no mask")
    return t.emit("softmax", "softmax", [x], shape, attrs={"axis": axis})


_LAYERS: dict[str, Callable[..., Value]] = {"Linear": _linear, "Conv": _conv, "BatchNorm": _batch_norm,
                                             "LayerNorm": _layer_norm, "Embed": _embed, "Dropout": _dropout}  # fmt: skip
_FUNCTIONS: dict[str, Callable[..., Value]] = {"gelu": _gelu, "softmax": _softmax}
