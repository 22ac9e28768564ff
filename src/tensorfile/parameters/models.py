"""Models of each framework as named parameters: read them, and write into them in place.

A :class:`ModelParams` knows a model's parameters by stable, readable names:

- torch ``nn.Module``: ``state_dict()`` names (persistent buffers included).
- Keras 3 models and layers (any backend): the layers of a ``Sequential`` or
  functional model by their names (``hidden.kernel``, ``dense_1.kernel``); the
  layers of a subclassed model or layer by attribute path (``encoder.kernel``;
  in lists ``blocks.0.kernel``); a single-layer wrapper (``TimeDistributed``) is
  named as the layer it wraps. Automatic layer names (``dense_1``) count the
  layers built in the process, so a model built again may have other numbers:
  :mod:`.counters` aligns them on loading. tensorfile 0.1 named a Sequential's or
  functional model's layers by position (``layers.0.kernel``):
  :attr:`ModelParams.aliases` maps those names to today's.
- MXNet Gluon ``Block``: structural names (``hidden.weight``), as Gluon's own
  ``save_parameters`` writes them.
- Flax NNX ``Module``: state paths (``hidden.kernel``); parameters and batch
  statistics, not RNG state.
- plain pytrees (nested dict / list of arrays of any framework): dotted paths.

Each parameter also has the class name of the layer that owns it (``Linear``,
``Dense``...), which :mod:`.convert` uses between frameworks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import UnsupportedTypeError
from ..frameworks import adapter_for, get_adapter

__all__ = ["Param", "ModelParams", "model_params", "unwrap", "strip_compiled"]


@dataclass
class Param:
    """One parameter: current value (host NumPy), layer kind, and how to set it."""

    value: np.ndarray | None  # None: not created yet (Gluon deferred init)
    shape: tuple[int | None, ...] | None  # None (in it) where the model does not know the size (rank) yet
    dtype: str
    kind: str
    set: Callable[[np.ndarray], None]
    source: Any = None  # the framework's own variable, where one exists (a Keras variable, a Gluon Parameter)
    check: Callable[[], None] | None = None  # raises when it cannot be written (else: set(value) is the check)


@dataclass
class ModelParams:
    """A model's parameters by name, in the model's order."""

    framework: str  # "torch", "keras", "mxnet" or "pytree"
    params: dict[str, Param] = field(default_factory=dict)
    tensors: dict[str, Any] = field(default_factory=dict)  # what save_parameters stores
    aliases: dict[str, str] = field(default_factory=dict)  # an older tensorfile's name -> the name today


def _top(value: Any) -> str:
    return type(value).__module__.partition(".")[0]


def _mro_modules(value: Any) -> set[str]:
    return {c.__module__.partition(".")[0] for c in type(value).__mro__}


def model_params(model: Any) -> ModelParams:
    """Read ``model``'s parameters.

    Raises:
        UnsupportedTypeError: ``model`` is none of the kinds above, or a Keras
            model that is not built yet.
    """
    mods = _mro_modules(model)
    if "torch" in mods:
        return _torch(model)
    if "keras" in mods:
        return _keras(model)
    if "mxnet" in mods:
        return _gluon(model)
    if "flax" in mods:
        return _nnx(model)
    if isinstance(model, (dict, list)):
        return _pytree(model)
    raise UnsupportedTypeError(
        f"{type(model).__module__}.{type(model).__qualname__} is not a model tensorfile knows: expected a torch "
        "nn.Module, a Keras model or layer, an MXNet Gluon Block, or a dict/list of arrays"
    )


def unwrap(model: Any) -> Any:
    """The model inside wrappers that only add a name prefix: torch ``DataParallel`` /
    ``DistributedDataParallel`` (``.module``) and ``torch.compile``'s ``OptimizedModule``
    (``._orig_mod``), nested in any order. Other objects are returned as they are."""
    for _ in range(16):
        names = {c.__name__ for c in type(model).__mro__ if c.__module__.startswith("torch.")}
        if names & {"DataParallel", "DistributedDataParallel"} and hasattr(model, "module"):
            model = model.module
        elif "OptimizedModule" in names and hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            break
    return model


def strip_compiled(name: str) -> str:
    """``name`` without ``_orig_mod`` segments: ``torch.compile`` of a submodule puts one inside
    (``encoder._orig_mod.weight`` -> ``encoder.weight``)."""
    return ".".join(part for part in name.split(".") if part != "_orig_mod") if "_orig_mod" in name else name


def _host(array: np.ndarray) -> np.ndarray:
    """``array`` as torch.from_numpy takes it: itself when C-contiguous and writable (a mapped tensor), else a copy."""
    return array if array.flags.c_contiguous and array.flags.writeable else np.array(array, order="C")


def _torch(model: Any) -> ModelParams:
    import torch

    model = unwrap(model)
    torch_adapter = get_adapter("torch")
    modules = {strip_compiled(k): v for k, v in model.named_modules()}
    state = model.state_dict(keep_vars=True)
    out = ModelParams("torch")
    for name, tensor in state.items():
        name = strip_compiled(name)  # a compiled submodule: encoder._orig_mod.weight
        prefix = name.rpartition(".")[0]
        kind = type(modules.get(prefix, model)).__name__
        if torch.nn.parameter.is_lazy(tensor):  # LazyLinear before its first batch: shaped by what is loaded

            def materialize(array: np.ndarray, tensor: Any = tensor) -> None:
                with torch.no_grad():
                    tensor.materialize(tuple(array.shape))
                    tensor.copy_(torch_adapter.from_numpy(_host(array), {}, {"map_location": tensor.device}))

            out.params[name] = Param(None, None, _torch_dtype_name(tensor.dtype), kind, materialize)
            continue

        def setter(array: np.ndarray, tensor: Any = tensor) -> None:
            with torch.no_grad():
                tensor.copy_(torch_adapter.from_numpy(_host(array), {}, {"map_location": tensor.device}))

        if tensor.device.type == "cpu":
            value, check = torch_adapter.to_numpy(tensor, name), None
        else:  # on a GPU: no host copy of the whole model just to learn shapes (a checkpoint's capture, pass 1)
            value, check = _shape_only(torch_adapter, tensor, name), functools.partial(_rewrite, tensor)
        out.params[name] = Param(value, tuple(value.shape), value.dtype.name, kind, setter, check=check)
        out.tensors[name] = tensor.detach()
    return out


def _shape_only(adapter: Any, tensor: Any, name: str) -> np.ndarray:
    """A read-only array of a device tensor's shape and NumPy dtype that holds no memory (every element is one
    zero): its values stay on the device. Raises UnsupportedTypeError as ``to_numpy`` would."""
    from ..format.dtypes import dtype_from_name
    from ..frameworks.torch import TORCH_TO_NAME

    adapter._check(tensor, name)
    one = np.zeros(1, dtype_from_name(TORCH_TO_NAME[tensor.dtype]))
    return np.lib.stride_tricks.as_strided(one, tuple(tensor.shape), (0,) * tensor.dim(), writeable=False)


def _rewrite(tensor: Any) -> None:
    """Write a tensor with its own value, on its device: raises as a load into it would (an inference tensor)."""
    import torch

    with torch.no_grad():
        tensor.copy_(tensor)


def _torch_dtype_name(dtype: Any) -> str:
    from ..frameworks.torch import TORCH_TO_NAME

    return TORCH_TO_NAME.get(dtype, str(dtype))


def _keras_children(layer: Any) -> list[tuple[str, Any, str]]:
    """A layer's sub-layers with their names and the names tensorfile 0.1 gave them: a Sequential's or
    functional model's layers by their names (0.1: ``layers.<i>``); other layers' by attribute path,
    public attributes first, then private ones (built-in layers such as MultiHeadAttention keep theirs in
    ``_query_dense``...)."""
    import keras
    from keras.src.models.functional import Functional

    def plain_wrapper(layer: Any) -> bool:  # TimeDistributed(Dense) holds a Dense's weights: named as that Dense
        return (isinstance(layer, keras.layers.Wrapper) and not isinstance(layer, keras.layers.Bidirectional)
                and not getattr(layer, "_trainable_variables", None)
                and not getattr(layer, "_non_trainable_variables", None))  # fmt: skip

    if isinstance(layer, (keras.Sequential, Functional)):
        inner = [sub for sub in layer.layers if not isinstance(sub, keras.layers.InputLayer)]
        return [((sub.layer if plain_wrapper(sub) else sub).name, sub, f"layers.{i}") for i, sub in enumerate(inner)]
    if plain_wrapper(layer):
        return [("", layer.layer, "")]
    children: list[tuple[str, Any]] = []
    items = sorted(vars(layer).items(), key=lambda kv: kv[0].startswith("_"))
    for attr, value in items:
        if attr in ("_layers", "_tracker", "_inbound_nodes", "_outbound_nodes") or attr.startswith("_self_"):
            continue  # Keras' and TensorFlow's own bookkeeping of the same layers
        if isinstance(value, keras.layers.Layer):
            children.append((attr, value))
        elif isinstance(value, (list, tuple)):
            children += [(f"{attr}.{i}", v) for i, v in enumerate(value) if isinstance(v, keras.layers.Layer)]
        elif isinstance(value, dict):
            children += [(f"{attr}.{k}", v) for k, v in value.items() if isinstance(v, keras.layers.Layer)]
    return [(attr, sub, attr) for attr, sub in children]


def _keras_layers(layer: Any, prefix: str, old: str, seen: set[int], visit: Callable[[Any, str, str], None]) -> None:
    if id(layer) in seen:
        return
    seen.add(id(layer))
    visit(layer, prefix, old)
    for attr, sub, old_attr in _keras_children(layer):
        new_prefix, old_prefix = (f"{prefix}{attr}." if attr else prefix), (f"{old}{old_attr}." if old_attr else old)
        _keras_layers(sub, new_prefix, old_prefix, seen, visit)


def _keras(model: Any, everything: bool = False) -> ModelParams:
    """A Keras model's weights by attribute path; with ``everything`` also each layer's seed generator
    state (``Dropout``'s, as ``<layer>._seed_generators.<i>.state``): what a checkpoint needs to resume
    dropout exactly."""
    import keras

    if not model.built:
        raise UnsupportedTypeError(
            f"the Keras {type(model).__name__} is not built yet: call it once on a batch (or call build) first"
        )
    out = ModelParams("keras")
    named: set[int] = set()

    def visit(layer: Any, prefix: str, old: str) -> None:
        own = list(getattr(layer, "_trainable_variables", [])) + list(getattr(layer, "_non_trainable_variables", []))
        for variable in own:
            if id(variable) in named:
                continue
            named.add(id(variable))
            name = prefix + variable.name
            if name in out.params:
                raise UnsupportedTypeError(f"two weights of the Keras {type(model).__name__} would both be named "
                                           f"{name!r}; rename one of the layers or variables")  # fmt: skip
            if old != prefix:
                out.aliases[old + variable.name] = name

            def setter(array: np.ndarray, variable: Any = variable) -> None:
                variable.assign(array)

            value = np.asarray(keras.ops.convert_to_numpy(variable))
            out.params[name] = Param(value, tuple(value.shape), value.dtype.name, type(layer).__name__, setter, variable)
            out.tensors[name] = keras.ops.convert_to_tensor(value)  # the backend's own tensor
        if everything:
            for i, generator in enumerate(getattr(layer, "_seed_generators", None) or []):
                state = getattr(generator, "state", None)
                if state is None or id(state) in named:
                    continue
                named.add(id(state))
                seed_name = f"{prefix}_seed_generators.{i}.state"
                if old != prefix:
                    out.aliases[f"{old}_seed_generators.{i}.state"] = seed_name

                def assign(array: np.ndarray, variable: Any = state) -> None:
                    variable.assign(array)

                value = np.asarray(keras.ops.convert_to_numpy(state))
                out.params[seed_name] = Param(value, tuple(value.shape), value.dtype.name, "SeedGenerator", assign, state)
                out.tensors[seed_name] = keras.ops.convert_to_tensor(value)

    _keras_layers(model, "", "", set(), visit)
    unnamed = [v.path for v in model.weights if id(v) not in named]
    if unnamed:
        raise UnsupportedTypeError(
            f"cannot give stable names to these weights of the Keras {type(model).__name__} (held outside layer "
            f"attributes, lists and dicts): {unnamed}"
        )
    return out


def _gluon(block: Any) -> ModelParams:
    import mxnet as mx

    kinds: dict[str, str] = {}

    def walk(b: Any, prefix: str) -> None:
        kinds[prefix.rstrip(".")] = type(b).__name__
        for name, child in b._children.items():
            walk(child, f"{prefix}{name}.")

    walk(block, "")
    out = ModelParams("mxnet")
    for name, param in block._collect_params_with_prefix().items():
        kind = kinds.get(name.rpartition(".")[0], type(block).__name__)

        def setter(array: np.ndarray, param: Any = param) -> None:
            make = mx.np.array if mx.util.is_np_array() else mx.nd.array
            data = make(array, dtype=array.dtype)
            if param._data is None:  # not initialized yet: take shape and value from the file, as Gluon does
                param._load_init(data, param._deferred_init[1] if param._deferred_init else mx.cpu())
            else:
                param.set_data(data)

        try:
            value = np.asarray(param.data().asnumpy())
            shape: tuple[int | None, ...] = tuple(value.shape)
        except (RuntimeError, mx.base.MXNetError):  # deferred initialization: shape partly unknown
            value, shape = None, tuple(d if d > 0 else None for d in (param.shape or ()))
        out.params[name] = Param(value, shape, np.dtype(param.dtype).name, kind, setter, param)
        if value is not None:
            out.tensors[name] = param.data()
    return out


def _nnx(module: Any, everything: bool = False) -> ModelParams:
    """A Flax NNX module's parameters and batch statistics by state path; with ``everything``, every
    variable of its state (an ``nnx.Optimizer``'s step and moments, ``nnx.Rngs`` keys and counts...):
    what a checkpoint needs. A typed PRNG key is held as its ``key_data`` (uint32) and set back as a key
    of the same implementation."""
    import jax
    from flax import nnx

    jax_adapter = get_adapter("jax")
    out = ModelParams("flax")
    for path, state in nnx.to_flat_state(nnx.state(module)):
        if not everything and not issubclass(state.type, (nnx.Param, nnx.BatchStat)):
            continue  # RNG keys and counters are not parameters
        owner = module
        for part in path[:-1]:
            owner = owner[part] if isinstance(part, int) else getattr(owner, str(part))
        variable = owner[path[-1]] if isinstance(path[-1], int) else getattr(owner, str(path[-1]))
        name = ".".join(map(str, path))
        current = variable.get_value() if hasattr(variable, "get_value") else variable.value
        number = type(current) if type(current) in (bool, int, float) else None  # nnx.Variable(3): a Python number
        if number is not None:
            current = np.asarray(current)
        impl = jax.random.key_impl(current) if jax.dtypes.issubdtype(current.dtype, jax.dtypes.prng_key) else None

        def setter(array: np.ndarray, variable: Any = variable, impl: Any = impl, number: Any = number) -> None:
            new = jax_adapter.from_numpy(np.array(array, order="C"), {}, {})
            if number is not None:
                new = number(np.asarray(array).item())
            elif impl is not None:
                new = jax.random.wrap_key_data(new, impl=impl)
            if hasattr(variable, "set_value"):  # flax >= 0.12; `.value =` before
                variable.set_value(new)
            else:
                variable.value = new

        if impl is not None:
            current = jax.random.key_data(current)
        value = np.asarray(current)
        out.params[name] = Param(value, tuple(value.shape), value.dtype.name, type(owner).__name__, setter)
        out.tensors[name] = current
    return out


def _fill(node: Any, key: Any, array: np.ndarray, adapter: Any) -> None:
    """Write ``array`` into ``node[key]`` in place where the tensor is mutable; replace it otherwise (JAX)."""
    value = node[key]
    kind = type(value).__module__.partition(".")[0]
    if kind == "numpy" and isinstance(value, np.ndarray) and value.flags.writeable:
        value[...] = array
    elif kind == "torch":
        import torch

        with torch.no_grad():
            value.copy_(adapter.from_numpy(np.array(array, order="C"), {}, {"map_location": value.device}))
    elif kind == "tensorflow" and hasattr(value, "assign"):
        value.assign(array)
    elif kind == "mxnet":
        value[:] = array
    else:
        node[key] = adapter.from_numpy(np.array(array, order="C"), {}, {})


def _pytree(tree: Any) -> ModelParams:
    out = ModelParams("pytree")

    def walk(node: Any, prefix: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            name = f"{prefix}{key}"
            if isinstance(value, (dict, list)):
                walk(value, name + ".")
                continue
            adapter = adapter_for(value)
            if adapter is None:
                raise UnsupportedTypeError(f"{name}: {type(value).__name__} is not an array")

            def setter(array: np.ndarray, node: Any = node, key: Any = key, adapter: Any = adapter) -> None:
                _fill(node, key, array, adapter)

            host = adapter.to_numpy(value, name)
            out.params[name] = Param(host, tuple(host.shape), host.dtype.name, "", setter)
            out.tensors[name] = value

    walk(tree, "")
    return out
