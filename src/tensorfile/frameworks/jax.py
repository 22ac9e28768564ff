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

from ..errors import UnsupportedTypeError
from .base import Adapter

__all__ = ["ADAPTER"]


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
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            raise UnsupportedTypeError(
                f"{where}: a typed JAX PRNG key ({value.dtype}); store jax.random.key_data(key) and rewrap it "
                "with jax.random.wrap_key_data after loading"
            )
        return np.asarray(jax.device_get(value))

    def record(self, value: Any) -> dict[str, Any]:
        devices = value.devices() if hasattr(value, "devices") else set()
        if len(devices) == 1:
            (device,) = devices
            if device.platform != "cpu":
                return {"device": f"{device.platform}:{device.id}"}
        return {}

    def from_numpy(self, array: np.ndarray, record: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        device = _device(options.get("device"))
        if array.dtype.itemsize == 8 or array.dtype.name == "complex128":
            with jax.enable_x64(True):
                return jax.device_put(array, device)
        return jax.device_put(array, device)


ADAPTER = JaxAdapter()
