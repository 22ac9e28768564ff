"""Live training objects in a checkpoint's state: saved through their state, filled in place on restore.

Kinds (the name is recorded with the checkpoint):

- ``torch.module``: ``nn.Module`` -> ``state_dict()`` / ``load_state_dict``, of the model
  inside ``DataParallel`` / ``DistributedDataParallel`` / ``torch.compile`` (plain names).
- ``torch.stateful``: torch optimizers, LR schedulers, ``GradScaler`` (anything
  from torch with ``state_dict`` / ``load_state_dict``; ``Counter`` and ``defaultdict``
  in a state are stored as dicts and come back as they were).
- ``torch.generator``: a ``torch.Generator`` -> ``get_state()`` / ``set_state``. tensorfile's
  own :class:`~tensorfile.checkpoint.torch_data.ResumableLoader` and torchdata's
  ``StatefulDataLoader`` are ``torch.stateful``.
- ``keras.layer``: Keras models and layers -> their variables by layer name or attribute
  path (:mod:`tensorfile.parameters.models`), and their layers' seed generator states
  (``Dropout``), so that dropout resumes exactly.
- ``keras.optimizer``: a Keras optimizer -> its variables in order (built on
  restore from the Keras model restored with it, if needed).
- ``flax.nnx``: a Flax NNX module or object (``nnx.Optimizer``, ``nnx.Rngs``) -> every
  variable of its state by path (parameters, batch statistics, optimizer step and
  moments, RNG keys as key data and counts).
- ``pytree``: a JAX pytree that is not a plain container (optax states, which are
  NamedTuples; Flax ``FrozenDict``, ``TrainState``, ``nnx.State``) -> dicts by field
  name and lists of its children; restored by path into the structure of the object
  given (a new object: pytrees are immutable).

Restoring is in two steps: :func:`check` compares every live object with its saved
state without touching it, then :func:`apply` fills it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..frameworks import Inner, adapter_for, pytree_children
from ..parameters.matching import match_params, partial_layers, unwrap_names
from ..parameters.models import model_params, strip_compiled, unwrap
from ..parameters.report import LoadReport, Mismatch

__all__ = ["kind_of", "capture", "check", "apply", "Plan", "class_of", "snapshot", "rollback", "APPLY_ORDER"]


def _mro(value: Any) -> set[str]:
    return {f"{c.__module__.partition('.')[0]}.{c.__name__}" for c in type(value).__mro__}


def kind_of(value: Any) -> str | None:
    """The live kind of ``value``, or None for data (tensors, containers, plain values)."""
    mro = _mro(value)
    if "torch.Module" in mro:
        return "torch.module"
    if "torch.Generator" in mro:
        return "torch.generator"
    from_torch = any(c.__module__.startswith(("torch", "tensorfile.")) for c in type(value).__mro__[:-1])
    if from_torch and hasattr(value, "state_dict") and hasattr(value, "load_state_dict"):
        return "torch.stateful"  # optimizers, LR schedulers, GradScaler, StatefulDataLoader, ResumableLoader
    if "keras.Optimizer" in mro or any(m.startswith("keras.") and m.endswith("Optimizer") for m in mro):
        return "keras.optimizer"
    if "keras.Layer" in mro:
        return "keras.layer"
    nnx = [c.__name__ for c in type(value).__mro__ if c.__module__.startswith("flax.nnx")]
    if nnx and not {"State", "FlatState"} & set(nnx):  # modules, nnx.Optimizer, nnx.Rngs (nnx.State: a pytree)
        return "flax.nnx"
    if _holds_namedtuple(value) or pytree_children(value) is not None:
        return "pytree"  # optax states, Flax FrozenDict / TrainState / nnx.State, registered pytrees
    return None


def _holds_namedtuple(value: Any, depth: int = 0) -> bool:
    """True for NamedTuples and plain tuples/lists holding them (optax states: ``(ScaleByAdamState(...), ...)``)."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return True
    if type(value) in (tuple, list) and depth < 8:
        return any(_holds_namedtuple(v, depth + 1) for v in value)
    return False


def capture(kind: str, value: Any) -> Any:
    """What to store for a live object."""
    if kind == "torch.module":
        state = unwrap(value).state_dict()  # DataParallel/DDP/torch.compile: the plain model's names
        return type(state)((strip_compiled(k), v) for k, v in state.items())
    if kind == "torch.stateful":
        return _plain(value.state_dict())
    if kind == "torch.generator":
        return value.get_state()
    if kind in ("keras.layer", "flax.nnx"):
        return dict(_params(kind, value).tensors)
    if kind == "keras.optimizer":
        return [np.asarray(v) for v in value.variables]
    if kind == "pytree":
        return value  # stored as dicts (by field) and lists of its children: see tensorfile.tree
    raise ValueError(kind)


def _params(kind: str, value: Any) -> Any:
    """The tensors a checkpoint holds for a model: its parameters (and buffers); for Flax NNX every
    variable of its state, so that an ``nnx.Optimizer``'s moments and ``nnx.Rngs`` streams resume too."""
    if kind == "flax.nnx":
        from ..parameters.models import _nnx

        return _nnx(value, everything=True)
    if kind == "keras.layer":
        from ..parameters.models import _keras

        if not getattr(value, "built", True):
            return model_params(value)  # raises the clear "not built" error
        return _keras(value, everything=True)
    return model_params(value)


def _plain(value: Any) -> Any:
    """``value`` with dict subclasses (``Counter`` of ``MultiStepLR``, ``defaultdict``) as plain dicts."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_plain(v) for v in value)
    return value


def _like(saved: Any, live: Any) -> Any:
    """``saved`` with the container types ``live`` has at the same places (a ``Counter`` comes back a
    ``Counter``: ``MultiStepLR`` looks its milestones up in one)."""
    if isinstance(saved, dict) and isinstance(live, dict):
        out = {k: _like(v, live.get(k)) for k, v in saved.items()}
        if type(live) is dict or type(live).__name__ == "OrderedDict":
            return out
        if hasattr(live, "default_factory"):
            return type(live)(live.default_factory, out)
        try:
            return type(live)(out)
        except TypeError:
            return out
    if type(saved) in (list, tuple) and type(live) in (list, tuple) and len(saved) == len(live):
        return type(saved)(_like(a, b) for a, b in zip(saved, live))
    return saved


def _host(value: Any, name: str) -> np.ndarray:
    adapter = adapter_for(value)
    return adapter.to_numpy(value, name) if adapter is not None else np.asarray(value)


@dataclass
class Plan:
    """What :func:`apply` will do for one live object: decided by :func:`check`, before anything is touched."""

    kind: str
    live: Any
    saved: Any
    report: LoadReport
    load: bool = True  # False: the object cannot take this state at all (strict=False leaves it as it is)
    extra: dict[str, Any] = field(default_factory=dict)


def class_of(value: Any) -> str:
    """``module.QualName`` of ``value``'s class, recorded with each live object of a checkpoint."""
    return f"{type(value).__module__}.{type(value).__qualname__}"


def check(kind: str, live: Any, saved: Any, others: Mapping[str, Any], saved_class: str | None = None) -> Plan:
    """Compare a live object with its saved state: names, shapes and dtypes (tensors), sizes (an
    optimizer's parameter groups, a Keras optimizer's variables, a pytree's leaves). Touches nothing
    but a Keras optimizer, which is built (variables created) if the model it trains is restored with it."""
    report = LoadReport()
    plan = Plan(kind, live, saved, report)
    if saved_class and kind in ("torch.stateful", "torch.generator", "keras.optimizer") and saved_class != class_of(live):
        # an SGD state into Adam, a StepLR's into CosineAnnealingLR: torch would take it half-way or mix them
        report.mismatched.append(Mismatch("(class)", (), saved_class, (), class_of(live)))
        plan.load = False
        return plan
    if kind in ("torch.module", "keras.layer", "flax.nnx"):
        if not isinstance(saved, Mapping):
            report.mismatched.append(Mismatch("(state)", (), type(saved).__name__, (), "a dict of tensors"))
            plan.load = False
            return plan
        target = _params(kind, live)
        raw = dict(saved)
        unwrap_names(raw, target.params, report, target.framework)
        arrays = {k: _host(v, k) for k, v in raw.items()}
        match_params(target, arrays, report)
        seeds = [n for n in report.missing_keys if "_seed_generators." in n]
        if seeds:  # a checkpoint from before seed generators were saved: dropout goes on from where it is
            report.missing_keys = [n for n in report.missing_keys if n not in seeds]
            report.skipped += seeds
            report.notes.append("Note: the checkpoint holds no seed generator state (saved by tensorfile 0.1)")
        bad = {m.name for m in report.mismatched} | partial_layers(target, arrays, report)
        plan.extra.update(target=target, raw=raw, arrays=arrays, use=[n for n in target.params if n in arrays and n not in bad])
    elif kind == "torch.stateful":
        if not isinstance(saved, Mapping):
            report.mismatched.append(Mismatch("(state)", (), type(saved).__name__, (), "a state_dict"))
            plan.load = False
        elif hasattr(live, "param_groups"):  # an optimizer: torch.optim checks group sizes, not shapes
            _check_optimizer(live, saved, report)
            plan.load = not report.mismatched
    elif kind == "torch.generator":
        have, host = tuple(live.get_state().shape), _host(saved, "generator")
        if host.shape != have or host.dtype != np.uint8:
            report.mismatched.append(Mismatch("(state)", host.shape, host.dtype.name, have, "uint8"))
            plan.load = False
    elif kind == "keras.optimizer":
        if len(live.variables) != len(saved):
            models = [m for m in others.values() if kind_of(m) == "keras.layer"]
            if models:
                live.build(models[0].trainable_variables)
        names = [getattr(v, "path", f"variables.{i}") for i, v in enumerate(live.variables)]
        if len(live.variables) != len(saved):
            report.mismatched.append(Mismatch("variables", (len(saved),), "variables", (len(live.variables),), "variables"))
        else:
            for name, variable, value in zip(names, live.variables, saved):
                host = _host(value, name)
                if tuple(host.shape) != tuple(variable.shape):
                    report.mismatched.append(Mismatch(name, tuple(host.shape), host.dtype.name, tuple(variable.shape),
                                                      str(getattr(variable, "dtype", ""))))  # fmt: skip
        plan.load = not report.mismatched
        plan.extra["names"] = names
    elif kind == "pytree":
        plan.extra["leaves"] = _pytree_leaves(live, saved, report)  # what does not fit keeps its live value
    else:
        raise ValueError(kind)
    return plan


def _pytree_leaves(live: Any, saved: Any, report: LoadReport) -> list[Any]:
    """The leaves to rebuild ``live`` with, in the order of ``jax.tree_util.tree_leaves(live)``: each saved
    leaf that fits (same shape and dtype; a Python number of the same kind), else the live one. Matched by
    path (a checkpoint stores a pytree as dicts by field name and lists, see
    :func:`tensorfile.frameworks.pytree_children`; tensorfile 0.1 stored the list of leaves). Missing,
    unexpected and mismatched leaves go to ``report``."""
    import jax
    import jax.numpy as jnp

    from ..frameworks.jax import one_level

    leaves = jax.tree_util.tree_leaves(live)
    pairs: list[tuple[str, Any, Any, bool]] = []  # (name, live leaf, saved value, saved value present)
    if isinstance(saved, list) and len(saved) == len(leaves) and not any(isinstance(v, (dict, list)) for v in saved):
        pairs = [(str(i), mine, value, True) for i, (mine, value) in enumerate(zip(leaves, saved))]  # 0.1
        used = None
    else:
        used = set()

        def walk(node: Any, stored: Any, name: str) -> None:
            inner = pytree_children(node)
            if isinstance(inner, Inner):
                node = inner.value
            items = None if isinstance(inner, Inner) else one_level(node)
            if items is None:  # a leaf (an NNX Variable: its value)
                if node is not None:
                    pairs.append((name.rstrip("."), node, stored, True))
                    used.add(name.rstrip("."))
                return
            for part, child in items:
                key = part if isinstance(stored, dict) and part in stored else str(part)
                if isinstance(stored, dict) and key in stored:
                    walk(child, stored[key], f"{name}{part}.")
                elif isinstance(stored, (list, tuple)) and type(part) is int and 0 <= part < len(stored):
                    walk(child, stored[part], f"{name}{part}.")
                else:  # nothing saved here: the live leaves stay
                    for path, leaf in jax.tree_util.tree_leaves_with_path(child):
                        missing = f"{name}{part}" + "".join(f".{_part(k)}" for k in path)
                        report.missing_keys.append(missing)
                        pairs.append((missing, leaf, None, False))

        walk(live, saved, "")
    if used is not None and isinstance(saved, (dict, list)):
        report.unexpected_keys += [n for n in _leaf_names(saved, "") if n not in used]
    out = []
    for name, mine, value, present in pairs:
        if not present:
            out.append(mine)
        elif not hasattr(mine, "shape"):  # a Python number in the tree (TrainState.step: 0, then an array)
            kinds = {bool: "b", int: "iu", float: "fiu"}.get(type(mine), "")
            if type(value) in (bool, int, float):
                fits = type(value) is type(mine) or (type(mine) is float and type(value) is int)
                taken = type(mine)(value) if fits else mine
            else:
                host = _host(value, name) if adapter_for(value) is not None or isinstance(value, np.generic) else None
                fits = host is not None and host.shape == () and host.dtype.kind in kinds
                taken = (jnp.asarray(host) if fits else mine)
            if not fits:
                report.mismatched.append(Mismatch(name, tuple(getattr(value, "shape", ())), type(value).__name__, (),
                                                  type(mine).__name__))  # fmt: skip
            out.append(taken)
        else:
            host, have = _host(value, name), _host(mine, name)
            if host.shape != have.shape or host.dtype != have.dtype:
                report.mismatched.append(Mismatch(name, host.shape, host.dtype.name, have.shape, have.dtype.name))
                out.append(mine)
            elif jax.dtypes.issubdtype(mine.dtype, jax.dtypes.prng_key):  # a typed key: same implementation
                out.append(jax.random.wrap_key_data(jnp.asarray(host), impl=jax.random.key_impl(mine)))
            else:
                out.append(jnp.asarray(host) if isinstance(mine, jax.Array) else host)
    return out


def _leaf_names(node: Any, prefix: str) -> list[str]:
    """Dotted paths of the values (tensors, numbers, strings) inside loaded dicts and lists."""
    if isinstance(node, dict):
        return [n for k, v in node.items() for n in _leaf_names(v, f"{prefix}{k}.")]
    if isinstance(node, (list, tuple)):
        return [n for i, v in enumerate(node) for n in _leaf_names(v, f"{prefix}{i}.")]
    return [] if node is None else [prefix.rstrip(".")]


def _part(key: Any) -> str:
    return str(next((getattr(key, a) for a in ("name", "key", "idx") if hasattr(key, a)), key))


def _check_optimizer(live: Any, saved: Mapping[str, Any], report: LoadReport) -> None:
    groups = saved.get("param_groups")
    if not isinstance(groups, (list, tuple)) or len(groups) != len(live.param_groups):
        have = len(groups) if isinstance(groups, (list, tuple)) else 0
        report.mismatched.append(Mismatch("param_groups", (have,), "groups", (len(live.param_groups),), "groups"))
        return
    state = saved.get("state") or {}
    for i, (mine, theirs) in enumerate(zip(live.param_groups, groups)):
        ids = theirs.get("params", []) if isinstance(theirs, Mapping) else []
        if len(ids) != len(mine["params"]):
            report.mismatched.append(Mismatch(f"param_groups.{i}.params", (len(ids),), "parameters",
                                              (len(mine["params"]),), "parameters"))  # fmt: skip
            continue
        for key, param in zip(ids, mine["params"]):
            for slot, value in (state.get(key) or {}).items() if isinstance(state.get(key), Mapping) else ():
                shape = tuple(getattr(value, "shape", ()))
                if len(shape) and shape != tuple(param.shape):
                    report.mismatched.append(Mismatch(f"state.{key}.{slot}", shape, str(getattr(value, "dtype", "")),
                                                      tuple(param.shape), str(param.dtype)))  # fmt: skip


def apply(plan: Plan, others: Mapping[str, Any]) -> Any:
    """Fill the live object as ``plan`` says; returns the restored object (a new one for immutable pytrees)."""
    kind, live, saved, report = plan.kind, plan.live, plan.saved, plan.report
    if not plan.load:
        return live
    if kind == "torch.module":
        model = unwrap(live)
        actual = {strip_compiled(k): k for k in model.state_dict(keep_vars=True)}
        raw, use = plan.extra["raw"], plan.extra["use"]
        model.load_state_dict({actual[n]: raw[n] for n in use}, strict=report.ok)
        report.loaded += use
        return live
    if kind == "torch.stateful":
        live.load_state_dict(_like(saved, live.state_dict()))
        report.loaded.append("(state_dict)")
        return live
    if kind == "torch.generator":
        import torch

        live.set_state(torch.from_numpy(np.array(_host(saved, "generator"), copy=True)))
        report.loaded.append("(state)")
        return live
    if kind in ("keras.layer", "flax.nnx"):
        target, arrays = plan.extra["target"], plan.extra["arrays"]
        for name in plan.extra["use"]:
            target.params[name].set(arrays[name])
            report.loaded.append(name)
        return live
    if kind == "keras.optimizer":
        for name, variable, value in zip(plan.extra["names"], live.variables, saved):
            variable.assign(_host(value, name))
            report.loaded.append(name)
        return live
    if kind == "pytree":
        import jax

        report.loaded.append("(leaves)")
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(live), plan.extra["leaves"])
    raise ValueError(kind)


#: Kinds in the order restore fills them: the cheap torch objects whose own ``load_state_dict`` may still refuse
#: (LR schedulers, GradScaler, data loaders; snapshotted first, put back if anything later fails), optimizers,
#: generators, then models, whose every tensor was checked.
APPLY_ORDER = ("torch.stateful", "torch.generator", "keras.optimizer", "pytree", "keras.layer", "flax.nnx", "torch.module")


def snapshot(plan: Plan) -> Any:
    """A copy of what :func:`apply` may change in a cheap live object (not an optimizer's state: large, and
    checked before), to put back with :func:`rollback`; None when there is nothing to keep."""
    if plan.kind == "torch.stateful" and not hasattr(plan.live, "param_groups"):
        import copy

        return copy.deepcopy(plan.live.state_dict())
    return None


def rollback(plan: Plan, kept: Any) -> None:
    """Put back a :func:`snapshot`."""
    if kept is not None:
        plan.live.load_state_dict(kept)
