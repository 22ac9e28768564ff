"""Format objects of the NumPy, MXNet and HDF5 modules (to move into those modules)."""

from __future__ import annotations

from typing import Any

from ..limits import Budget
from ._write import flat_writer
from ._zip import open_zip
from .base import Format, Probe
from .hdf5 import HDF5_MAGIC, read_h5, read_keras_archive
from .mxnet import MAGIC as MX_MAGIC
from .mxnet import read_mxnet
from .npy import MAGIC as NPY_MAGIC
from .npy import read_npy, read_npz, write_npz


def _npz_body(f: Any, names: Any, arrays: Any, bar: Any) -> None:
    write_npz(f, names if names is not None else [f"arr_{i}" for i in range(len(arrays))], arrays, bar)


def _mxnet_body(np_semantics: bool) -> Any:
    from .mxnet import write_mxnet

    return lambda f, names, arrays, bar: write_mxnet(f, names, arrays, np_semantics=np_semantics, progress=bar)


def _npz_sniff(probe: Probe) -> float:
    names = probe.zip_names()
    return 0.9 if names and all(n.endswith(".npy") for n in names) else 0.0


def _keras_sniff(probe: Probe) -> float:
    names = probe.zip_names()
    return 0.9 if names and "model.weights.h5" in names and "config.json" in names else 0.0


def _read_npz(path: str, budget: Budget) -> Any:
    with open_zip(path, budget) as zf:
        return read_npz(path, zf, budget)


def _read_keras(path: str, budget: Budget) -> Any:
    with open_zip(path, budget) as zf:
        return read_keras_archive(path, zf, budget)


NPY = Format("npy", "NumPy .npy", "numpy", (".npy",), sniff=lambda p: float(p.prefix.startswith(NPY_MAGIC)),
             read=lambda path, budget: read_npy(path, budget))  # fmt: skip
NPZ = Format("npz", "NumPy .npz", "numpy", (".npz",), sniff=_npz_sniff, read=_read_npz, write=flat_writer("a NumPy .npz file", _npz_body), flat=True)
MXNET = Format(
    "mxnet", "MXNet NDArray file", "mxnet", (".params", ".nd"), sniff=lambda p: float(p.prefix.startswith(MX_MAGIC)),
    read=lambda path, budget: read_mxnet(path, budget), write=flat_writer("an MXNet nd.save file", _mxnet_body(False)), flat=True,
)  # fmt: skip
MXNET_NP = Format("mxnet-np", "MXNet NDArray file (npx.save)", "mxnet", (), write=flat_writer("an MXNet npx.save file", _mxnet_body(True)), flat=True)
HDF5 = Format(
    "hdf5", "HDF5 (Keras weights)", "numpy", (".h5", ".hdf5", ".weights.h5"),
    sniff=lambda p: float(p.prefix.startswith(HDF5_MAGIC)), read=lambda path, budget: read_h5(path, budget),
)  # fmt: skip
KERAS = Format("keras", "Keras .keras archive", "numpy", (".keras",), sniff=_keras_sniff, read=_read_keras)
