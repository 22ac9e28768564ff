"""Capture and restore random number generator state, for bit-identical resumes.

:func:`rng_state` returns a plain structure that :func:`tensorfile.save` stores
and :func:`set_rng_state` puts back. It covers Python's ``random``, NumPy's
global generator and any ``np.random.Generator`` you name, torch's CPU
generator and every CUDA device's (when present), TensorFlow's global
generator and Keras' global seed generator (when one exists; layers' own seed
generators, e.g. ``Dropout``'s, are saved with their model). A framework is only touched when it is already imported. JAX has
no hidden state: keep your PRNG key in the checkpoint's state.
"""

from __future__ import annotations

import random
import sys
from typing import Any, Mapping

import numpy as np

__all__ = ["rng_state", "set_rng_state"]


def rng_state(generators: Mapping[str, np.random.Generator] | None = None) -> dict[str, Any]:
    """The current state of every random number generator in use.

    Args:
        generators: NumPy ``Generator`` objects to include, by name.
    """
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state()}
    if generators:
        state["generators"] = {name: g.bit_generator.state for name, g in generators.items()}
    torch = sys.modules.get("torch")
    if torch is not None:
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            state["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "random"):
        state["tensorflow"] = tf.random.get_global_generator().state.numpy()
    keras_seed = _keras_global_seed()
    if keras_seed is not None:
        state["keras"] = np.asarray(keras_seed.state.numpy())
    return state


def _keras_global_seed() -> Any:
    """Keras' global ``SeedGenerator`` (``keras.random`` calls without a seed), only if it exists already
    (making one draws from Python's ``random``)."""
    if "keras" not in sys.modules:
        return None
    try:
        from keras.src.backend.common import global_state

        return global_state.get_global_attribute("global_seed_generator")
    except (ImportError, AttributeError):
        return None


def set_rng_state(state: Mapping[str, Any], generators: Mapping[str, np.random.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` captured (after a save/load round trip too).

    Raises:
        KeyError: ``generators`` names a generator the state does not hold.
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    for name, g in (generators or {}).items():
        g.bit_generator.state = state["generators"][name]
    torch = sys.modules.get("torch")
    if torch is not None and "torch" in state:
        value = state["torch"]
        torch.set_rng_state(value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value)))
        if "torch_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() if isinstance(t, torch.Tensor) else torch.from_numpy(np.asarray(t)) for t in state["torch_cuda"]])
    tf = sys.modules.get("tensorflow")
    if tf is not None and "tensorflow" in state:
        tf.random.get_global_generator().reset(np.asarray(state["tensorflow"]))
    keras_seed = _keras_global_seed() if "keras" in state else None
    if keras_seed is not None:
        keras_seed.state.assign(np.asarray(state["keras"]))
