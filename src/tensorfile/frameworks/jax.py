"""JAX adapter: ``jax.Array``.

64-bit arrays keep their dtype on load even when ``jax_enable_x64`` is off
(they are placed under ``jax.enable_x64(True)``); JAX's own operations may still
compute in 32 bits then. ``device`` (a ``jax.Device`` or ``"cpu"``, ``"gpu:1"``)
places arrays on load.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from ..errors import FormatError, UnsupportedTypeError
from ..format.record import PRNG_IMPLS  # nothing else is passed to jax.random.wrap_key_data
from .base import Adapter

__all__ = ["ADAPTER", "children", "one_level", "PRNG_IMPLS"]



def _impl_name(key: Any) -> str:
    name = str(jax.random.key_impl(key))  # the implementation's registered name: "threefry2x32", "rbg"...
    if name not in PRNG_IMPLS:
        raise UnsupportedTypeError(f"a JAX PRNG key of the implementation {name!r} cannot be stored (known: "
                                   f"{', '.join(PRNG_IMPLS)})")  # fmt: skip
    return name


def one_level(value: Any) -> list[tuple[Any, Any]] | None:
    """``value``'s children with their names (str field or key, int position), in JAX's flattening order;
    None for a leaf. NamedTuples are named by their fields (``flatten_one_level_with_keys`` of JAX 0.10
    names every field of a NamedTuple after the first); names that still clash become positions."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return list(zip(value._fields, value))
    try:
        items, _ = jax.tree_util.flatten_one_level_with_keys(value)
    except (ValueError, TypeError):
        return None  # a leaf: not a registered container
    parts = []
    for key, _ in items:
        part = next((getattr(key, a) for a in ("name", "key", "idx") if hasattr(key, a)), str(key))
        parts.append(part if type(part) in (str, int) else str(part))
    if len(set(parts)) != len(parts):
        parts = list(range(len(items)))
    return [(part, child) for part, (_, child) in zip(parts, items)]


def children(value: Any) -> Any:
    """One level of a registered pytree node, by name (see ``frameworks.pytree_children``); None for a leaf."""
    if isinstance(value, jax.Array):
        return None
    if type(value).__module__.startswith("flax.nnx") and hasattr(value, "get_value") and hasattr(value, "set_value"):
        from . import Inner

        return Inner(value.get_value())  # an NNX Variable: stored as its value
    items = one_level(value)
    if items is None:
        return None
    if [p for p, _ in items] == list(range(len(items))) and not hasattr(value, "_fields"):
        return [child for _, child in items]  # (a NamedTuple is a dict of its fields, even an empty one)
    return {part: child for part, child in items}


def _device(spec: Any) -> Any:
    if spec is None or not isinstance(spec, str):
        return spec
    platform, _, index = spec.partition(":")
    return jax.devices(platform)[int(index or 0)]


class JaxAdapter(Adapter):
    name = "jax"

    def is_tensor(self, value: Any) -> bool:
        return isinstance(value, jax.Array)

    def to_numpy(self, value: Any, where: str) -> np.ndarray:
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):  # a typed key: stored as its key data
            _impl_name(value)
            value = jax.random.key_data(value)
        return np.asarray(jax.device_get(value))

    def record(self, value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            out["prng_impl"] = _impl_name(value)
        devices = value.devices() if hasattr(value, "devices") else set()
        if len(devices) == 1:
            (device,) = devices
            if device.platform != "cpu":
                out["device"] = f"{device.platform}:{device.id}"
        return out

    def from_numpy(self, array: np.ndarray, record: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        impl = record.get("prng_impl")
        if impl is not None:  # a typed PRNG key, from its key data (uint32, trailing dimension of the impl)
            if not isinstance(impl, str) or impl not in PRNG_IMPLS or array.dtype != np.uint32:
                raise FormatError(f"a PRNG key record names {impl!r} over {array.dtype} data; expected one of "
                                  f"{tuple(PRNG_IMPLS)} over uint32")  # fmt: skip
            try:
                return jax.random.wrap_key_data(jax.device_put(array, _device(options.get("device"))), impl=impl)
            except (ValueError, TypeError):
                raise FormatError(f"a {impl} PRNG key cannot have key data of shape {array.shape}") from None
        device = _device(options.get("device"))
        if array.dtype.itemsize == 8 or array.dtype.name == "complex128":
            with jax.enable_x64(True):
                return jax.device_put(array, device)
        return jax.device_put(array, device)


ADAPTER = JaxAdapter()
