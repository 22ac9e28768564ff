"""PyTorch adapter: ``torch.Tensor`` and ``torch.nn.Parameter``.

Tensors on a device are saved from host copies; ``map_location`` (as in
``torch.load``) places them on load. dtypes NumPy lacks (bfloat16, float8, the
unsigned types) move through a same-size integer view, without copying.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import UnsupportedTypeError
from ..format.dtypes import dtype_from_name
from .base import Adapter, StorageView, fill_storage

__all__ = ["ADAPTER"]

_NAMES = (
    "bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64", "complex64", "complex128",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
)  # fmt: skip
#: torch dtype -> NumPy dtype name.
TORCH_TO_NAME: dict[torch.dtype, str] = {getattr(torch, n): n for n in _NAMES if hasattr(torch, n)}
NAME_TO_TORCH: dict[str, torch.dtype] = {n: t for t, n in TORCH_TO_NAME.items()}
#: dtypes moved through an integer view of the same size.
_CARRIER = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_CARRIER_NP: dict[int, np.dtype] = {1: np.dtype("u1"), 2: np.dtype("i2"), 4: np.dtype("i4"), 8: np.dtype("i8")}
_NATIVE = {"bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "complex64", "complex128"}


_NATIVE_NP = frozenset(np.dtype(n) for n in _NATIVE)


def _location(device: torch.device) -> str:
    return str(device)


@functools.lru_cache(maxsize=64)
def _saved_device(saved: str) -> torch.device:
    """The saved device if this machine has it (CUDA only), else the CPU."""
    try:
        device = torch.device(saved)
    except (RuntimeError, TypeError, ValueError):
        return torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count():
        return device
    return torch.device("cpu")


def _target_device(saved: str, map_location: Any) -> torch.device:
    if map_location is None:
        return _saved_device(saved)
    if isinstance(map_location, (str, torch.device)):
        return torch.device(map_location)
    if isinstance(map_location, dict):
        return torch.device(map_location[saved]) if saved in map_location else _saved_device(saved)
    raise TypeError(f"map_location must be None, a str, a torch.device, a dict or a callable, got {map_location!r}")


class TorchAdapter(Adapter):
    name = "torch"

    def is_tensor(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor)

    def _check(self, t: Any, where: str) -> None:
        kind = type(t).__qualname__
        if t.layout != torch.strided:
            raise UnsupportedTypeError(f"{where}: sparse torch tensor ({t.layout}) is not supported; call .to_dense()")
        if t.is_quantized:
            raise UnsupportedTypeError(f"{where}: quantized torch tensor ({t.dtype}) is not supported; call .dequantize()")
        if getattr(t, "is_nested", False):
            raise UnsupportedTypeError(f"{where}: nested torch tensor is not supported")
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            raise UnsupportedTypeError(f"{where}: torch tensor subclass {kind} is not supported")
        if t.dtype not in TORCH_TO_NAME:
            raise UnsupportedTypeError(f"{where}: torch dtype {t.dtype} is not supported")
        if t.device.type == "meta":
            raise UnsupportedTypeError(f"{where}: a tensor on the meta device has no data")

    def to_numpy(self, value: Any, where: str) -> np.ndarray:
        self._check(value, where)
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.resolve_conj().resolve_neg()
        name = TORCH_TO_NAME[t.dtype]
        if name in _NATIVE:
            return t.numpy()
        return t.view(_CARRIER[t.element_size()]).numpy().view(dtype_from_name(name))

    def device_source(self, value: Any, where: str) -> Any | None:
        from .torch_device import DeviceSource, streams_to

        if not streams_to(value.device):  # a host tensor: staged from to_numpy's array
            return None
        self._check(value, where)
        return DeviceSource(value)

    def record(self, value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(value, torch.nn.Parameter):
            out["parameter"] = True
        if value.requires_grad:
            out["requires_grad"] = True
        if value.device.type != "cpu":
            out["device"] = _location(value.device)
        return out

    def storage(self, value: Any) -> StorageView | None:
        if value.numel() == 0 or value.layout != torch.strided or value.is_quantized or value.device.type == "meta":
            return None
        if value.is_conj() or value.is_neg():  # lazy flags: the stored bytes are not the storage's
            return None
        s = value.untyped_storage()
        return StorageView(
            ("torch", str(value.device), s.data_ptr()),
            s.nbytes(),
            value.storage_offset() * value.element_size(),
            tuple(value.stride()),
        )

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        if array.dtype in _NATIVE_NP:
            return torch.from_numpy(array)
        view = array.view(_CARRIER_NP[array.dtype.itemsize])
        return torch.from_numpy(view).view(NAME_TO_TORCH[array.dtype.name])

    def _finish(self, t: torch.Tensor, record: Mapping[str, Any], options: Mapping[str, Any]) -> torch.Tensor:
        saved = record.get("device", "cpu")
        map_location = options.get("map_location")
        if map_location is None and options.get("device") is not None:
            map_location = options["device"]
        if callable(map_location) and not isinstance(map_location, (str, torch.device, dict)):
            moved = map_location(t, saved)
            t = moved if isinstance(moved, torch.Tensor) else t
        else:
            device = _target_device(saved, map_location)
            if t.device != device:
                t = t.to(device)
        grad = bool(record.get("requires_grad")) and (t.is_floating_point() or t.is_complex())
        if record.get("parameter"):
            return torch.nn.Parameter(t, requires_grad=grad)
        return t.requires_grad_(True) if grad else t

    def from_numpy(self, array: np.ndarray, record: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        return self._finish(self._tensor(array), record, options)

    def views(
        self,
        nbytes: int,
        members: Sequence[tuple[np.ndarray, int, Sequence[int], Mapping[str, Any]]],
        options: Mapping[str, Any],
    ) -> list[Any] | None:
        map_location = options.get("map_location")
        if callable(map_location) and not isinstance(map_location, (str, torch.device, dict)):
            return None
        devices = {_target_device(r.get("device", "cpu"), map_location) for _, _, _, r in members}
        if len(devices) != 1:
            return None
        for data, offset, strides, _ in members:
            if any(s < 0 for s in strides) or offset % data.dtype.itemsize:
                return None
        device = devices.pop()
        buffer, _ = fill_storage(nbytes, members)
        base = torch.from_numpy(buffer)
        storage = (base if device.type == "cpu" else base.to(device)).untyped_storage()
        out = []
        for data, offset, strides, record in members:
            view = torch.empty(0, dtype=NAME_TO_TORCH[data.dtype.name], device=device)
            view.set_(storage, offset // data.dtype.itemsize, tuple(data.shape), tuple(strides))
            out.append(self._finish(view, {**record, "device": str(device)}, {"map_location": device}))
        return out


ADAPTER = TorchAdapter()
