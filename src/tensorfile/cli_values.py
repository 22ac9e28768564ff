"""Values as the CLI shows and compares them: JSON numbers, tolerant comparison, flatness of a structure."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["json_number", "compare", "is_flat", "count_values", "plain_values", "changed_values"]


def json_number(value: Any) -> Any:
    """A value as JSON holds it: nan / inf / -inf as strings, complex as [re, im] (flat C order)."""
    if isinstance(value, complex):
        return [json_number(value.real), json_number(value.imag)]
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


#: Elements compared at a time: the float64 temporaries of a piece (about 40 bytes an element) stay in cache,
#: and comparing a tensor never needs memory in proportion to its size.
COMPARE_CHUNK = 1 << 16


def compare(x: np.ndarray, y: np.ndarray, atol: float, rtol: float) -> tuple[float, float, bool]:
    """Max absolute and relative difference, and whether ``|x - y| <= atol + rtol * |y|`` everywhere.

    NaN matches NaN and an infinity the same infinity (a file equals itself); arrays
    that are not numbers (strings) are compared for equality (differences 0 or inf).
    Numbers are compared in float64 (complex128), :data:`COMPARE_CHUNK` elements at a
    time; pieces whose bits are equal are skipped (differences 0).
    """
    if x.dtype.kind not in "biufc" and not x.dtype.name.startswith(("bfloat", "float8")):
        same = bool(np.array_equal(x, y))
        return (0.0, 0.0, same) if same else (float("inf"), float("inf"), False)
    kind = np.complex128 if x.dtype.kind == "c" else np.float64
    xf, yf = x.reshape(-1), y.reshape(-1)  # a copy only where a tensor is a strided view
    bits = _bits(x.dtype) if x.dtype == y.dtype else None
    # float64 work buffers, reused piece after piece: a fresh 512 KiB array costs a page fault per 4 KiB
    work = np.empty((3, min(COMPARE_CHUNK, xf.size))) if kind is np.float64 else None
    max_abs = max_rel = 0.0
    same = True
    for start in range(0, xf.size, COMPARE_CHUNK):
        xc, yc = xf[start : start + COMPARE_CHUNK], yf[start : start + COMPARE_CHUNK]
        if bits is not None and _same_bits(xc, yc, bits):
            continue
        a, r, s = _compare_piece(xc, yc, kind, atol, rtol, work)
        max_abs, max_rel, same = max(max_abs, a), max(max_rel, r), same and s
    return max_abs, max_rel, same


def _same_bits(x: np.ndarray, y: np.ndarray, bits: np.dtype) -> bool:
    if bits.itemsize != x.dtype.itemsize and not (x.flags.c_contiguous and y.flags.c_contiguous):
        return False  # words across items need contiguous items: compared by value instead
    return bool(np.array_equal(x.view(bits), y.view(bits)))


def _bits(dtype: np.dtype) -> np.dtype:
    """An unsigned integer dtype that views an array of ``dtype`` (contiguous) item for item, or in 8-byte words."""
    size = dtype.itemsize
    return np.dtype(f"u{size}") if size in (1, 2, 4, 8) else np.dtype("u8" if size % 8 == 0 else "u1")


def _compare_piece(x: np.ndarray, y: np.ndarray, kind: type, atol: float, rtol: float,
                   work: np.ndarray | None) -> tuple[float, float, bool]:  # fmt: skip
    """:func:`compare` of one piece; ``work``: three float64 rows at least as long, or None (complex)."""
    with warnings.catch_warnings():  # long doubles beyond float64 become inf: compared as such
        warnings.simplefilter("ignore")
        if work is not None:
            xf, yf, tmp = work[0, : x.size], work[1, : x.size], work[2, : x.size]
            np.copyto(xf, x, casting="unsafe")
            np.copyto(yf, y, casting="unsafe")
        else:
            xf, yf, tmp = x.astype(kind), y.astype(kind), None
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(np.subtract(xf, yf, out=tmp), out=tmp)  # float64 work in place
        max_abs = float(diff.max())
        if np.isfinite(max_abs):  # no NaN or infinity on either side (the common case: fewer passes)
            scale = np.abs(yf, out=yf if work is not None else None)
            if atol == 0 and rtol == 0:
                same = max_abs == 0
            else:
                bound = np.add(np.multiply(scale, rtol, out=xf if work is not None else None), atol,
                               out=xf if work is not None else None)  # fmt: skip
                ok = diff <= bound
                if atol < 0 or rtol < 0:
                    ok |= diff == 0
                same = bool(ok.all())
            rel = np.divide(diff, scale, out=diff)  # 0 / 0 (equal zeros) is NaN, which fmax skips; d / 0 is inf
            max_rel = float(np.fmax.reduce(rel))
            return max_abs, 0.0 if max_rel != max_rel else max_rel, same
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xf, yf = x.astype(kind), y.astype(kind)
        scale = np.abs(yf)
        exact = (xf == yf) | (np.isnan(xf) & np.isnan(yf))  # nan == nan, inf == inf
        both = np.isfinite(xf) & np.isfinite(yf)
        diff = np.where(exact, 0.0, np.where(both, np.abs(xf - yf), np.inf))
        rel = np.where(diff == 0, 0.0, np.where(both & (scale > 0), diff / np.where(scale > 0, scale, 1), np.inf))
        same = bool(np.all(exact | (both & (diff <= atol + rtol * scale))))
    return float(diff.max()), float(rel.max()), same


def is_flat(value: Any) -> bool:
    if isinstance(value, (np.ndarray, np.generic)):
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, np.ndarray) for v in value)
    return False


def count_values(value: Any) -> int:
    """Values other than containers in ``value``, each container counted once (a file's may be shared or cyclic)."""
    count, seen, stack = 0, set(), [value]
    while stack:
        node = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            if id(node) not in seen:
                seen.add(id(node))
                stack.extend(node.values() if isinstance(node, dict) else node)
        else:
            count += 1
    return count


def plain_values(value: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """The values that are not tensors (None, bool, int, float, str) inside nested dicts / lists / tuples, by
    dotted path as :func:`tensorfile.tree.flat_arrays` names tensors (``"epoch"``, ``"optimizer.param_groups.0.lr"``)."""
    out: dict[str, Any] = {}
    if depth > 200:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(plain_values(v, f"{prefix}{k}.", depth + 1))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out.update(plain_values(v, f"{prefix}{i}.", depth + 1))
    elif value is None or type(value) in (bool, int, float, str):
        out[prefix[:-1] if prefix else "value"] = value
    return out


def changed_values(values_a: dict[str, Any], values_b: dict[str, Any], tensors_a: Any, tensors_b: Any) -> list[tuple[str, str, str]]:
    """``(name, a, b)`` for each value (not a tensor) that differs between two files, shown by ``repr`` (NaN
    equals NaN), and each name that is a value on one side and a tensor on the other."""
    out = []
    for name in sorted(set(values_a) & set(values_b)):
        x, y = values_a[name], values_b[name]
        if type(x) is not type(y) or (x != y and not (isinstance(x, float) and x != x and y != y)):
            out.append((name, repr(x), repr(y)))
    for name in sorted((set(values_a) & set(tensors_b)) | (set(values_b) & set(tensors_a))):
        out.append((name, "a value" if name in values_a else "a tensor", "a value" if name in values_b else "a tensor"))
    return out
