"""``load_parameters`` into torch parameters on an accelerator: the file's bytes copied straight into them.

Pass 2 of :func:`tensorfile.parameters.load_parameters` for a torch model whose parameters live on CUDA:
instead of reading each tensor into fresh host memory, copying it to the device, then into the
parameter, the bytes go through the pinned ring of :mod:`tensorfile.frameworks.torch_device` into the
parameter's own memory, the read of one piece overlapping the copy of the one before. Only parameters
whose stored bytes are exactly what the model holds qualify (no layout conversion, same dtype and shape,
contiguous); the others take the host path.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from ..files import _verify
from ..format.reader import SafetensorsReader

__all__ = ["fill_on_device"]


def fill_on_device(source_file: Any, tensors: Mapping[str, Any], wanted: Sequence[tuple[str, str]],
                   converts: bool) -> list[str]:  # fmt: skip
    """Fill the parameters that can be filled from the file's bytes as they are; their names, in ``wanted``'s order.

    Args:
        source_file: the open file (:class:`tensorfile.lazy.TensorFile`; anything else: nothing is filled).
        tensors: the model's torch tensors by parameter name.
        wanted: ``(parameter name, the file's tensor name)`` for each parameter to fill, in the model's order.
        converts: True when the file's layouts are converted for the model (nothing is filled then).

    Raises:
        IntegrityError: a tensor's checksum no longer matches (the file changed since pass 1 checked it).
        FormatError: the file ended early. RuntimeError: from CUDA.
    """
    reader = getattr(source_file, "_reader", None)
    if converts or not isinstance(reader, SafetensorsReader) or not wanted:
        return []
    if not any(getattr(tensors.get(name), "is_cuda", False) or _extra_device(tensors.get(name)) for name, _ in wanted):
        return []
    from ..frameworks import torch_device

    record = getattr(source_file, "_record", None)
    infos = record.tensors if record is not None else {}
    fills, names = [], []
    for name, stored in wanted:
        entry, tensor = reader.entries.get(stored), tensors.get(name)  # no tensor yet: a lazy module's parameter
        if entry is not None and tensor is not None and torch_device.fillable(tensor, entry, infos.get(stored, {})):
            fills.append((entry, tensor))
            names.append(name)
    if not fills:
        return []
    check: Callable[[str, str | None], None] | None = None
    if record is not None:
        def check(stored: str, found: str | None) -> None:
            _verify(reader.path, stored, infos[stored]["checksum"], found)

    torch_device.fill_streamed(reader, fills, check)
    return names


def _extra_device(tensor: Any) -> bool:
    """A tensor on another device type that streams (tests add ``"cpu"``)."""
    device = getattr(tensor, "device", None)
    if device is None:
        return False
    from ..frameworks.torch_device import streams_to

    return streams_to(device)
