"""TensorFlow adapter: ``tf.Tensor`` (eager) and ``tf.Variable``.

bfloat16 and float8 arrive as ``ml_dtypes`` NumPy arrays (TensorFlow uses the
same types). ``device`` (e.g. ``"/GPU:0"``) places tensors on load.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from ..errors import UnsupportedTypeError
from .base import Adapter

__all__ = ["ADAPTER"]


class TensorFlowAdapter(Adapter):
    name = "tensorflow"

    def is_tensor(self, value: Any) -> bool:
        return isinstance(value, (tf.Tensor, tf.Variable))

    def to_numpy(self, value: Any, where: str) -> np.ndarray:
        if isinstance(value, tf.Tensor) and not hasattr(value, "numpy"):
            raise UnsupportedTypeError(f"{where}: a symbolic tf.Tensor (inside tf.function) has no value")
        if value.dtype in (tf.string, tf.resource, tf.variant):
            raise UnsupportedTypeError(f"{where}: TensorFlow dtype {value.dtype.name} is not supported")
        return np.asarray(value.numpy())

    def record(self, value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(value, tf.Variable):
            out["variable"] = True
            if value.trainable:
                out["trainable"] = True
        return out

    def from_numpy(self, array: np.ndarray, record: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        device = options.get("device")
        with tf.device(device) if device else _nullcontext():
            if record.get("variable"):
                return tf.Variable(array, trainable=bool(record.get("trainable")))
            return tf.convert_to_tensor(array)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


ADAPTER = TensorFlowAdapter()
