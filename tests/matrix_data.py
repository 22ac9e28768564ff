"""Reference tensors for the cross-framework matrix: NumPy only, importable from both environments."""

from __future__ import annotations

import numpy as np

#: dtypes every one of the five frameworks holds.
COMMON = ["float16", "float32", "float64", "int8", "uint8", "int32", "int64", "bool"]


def reference() -> dict[str, np.ndarray]:
    out = {}
    for i, name in enumerate(COMMON):
        base = (np.arange(12).reshape(3, 4) - 5) * (1.5 if name.startswith("float") else 1) + i
        out[name] = (base > 3) if name == "bool" else base.astype(name if not name.startswith("uint") else "int64").astype(name)
    out["scalar"] = np.array(2.5, np.float32)
    out["empty"] = np.zeros((0, 3), np.float32)
    return out


def as_numpy(value) -> np.ndarray:
    """Any framework's tensor as a host NumPy array."""
    for attr in ("asnumpy", "numpy"):
        if hasattr(value, attr) and type(value).__module__.partition(".")[0] in ("mxnet", "torch", "tensorflow"):
            return np.asarray(getattr(value, attr)())
    return np.asarray(value)


def check(loaded: dict, where: str) -> list[str]:
    """Differences between ``loaded`` and :func:`reference` (empty when equal to the bit)."""
    problems = []
    ref = reference()
    if sorted(loaded) != sorted(ref):
        return [f"{where}: keys {sorted(loaded)}"]
    for k, want in ref.items():
        got = as_numpy(loaded[k])
        if got.dtype != want.dtype or got.shape != want.shape or got.tobytes() != want.tobytes():
            problems.append(f"{where}[{k}]: {got.dtype} {got.shape} != {want.dtype} {want.shape}")
    return problems
