"""``save_parameters`` / ``load_parameters``: a model's parameters to a file and back.

The file is an ordinary tensorfile file holding the parameters under their
names (see :mod:`.models`) plus one ``__metadata__`` entry,
``"tensorfile.parameters"``: JSON ``{"framework": ..., "layers": {name: layer
class}}``, so that :func:`load_parameters` can convert standard layers between
frameworks (:mod:`.convert`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..errors import FormatError, ParameterMismatchError, TensorFileError, UnsupportedTypeError, clip_values
from ..files import load, save
from ..lazy import open as open_file
from ..tree import flat_arrays, unflatten
from . import gluon_export
from .convert import UNMAPPED, to_framework
from .matching import match_params, partial_layers, prefix_hint, writer
from .models import model_params
from .report import LoadReport, Mismatch

__all__ = ["save_parameters", "load_parameters", "LoadReport", "Mismatch", "PARAMETERS_KEY"]

PARAMETERS_KEY = "tensorfile.parameters"

Select = str | Iterable[str] | Callable[[str], bool] | None
Rename = Mapping[str, str] | Callable[[str], str] | None


def save_parameters(model: Any, path: str | os.PathLike[str], *, metadata: Mapping[str, str] | None = None) -> None:
    """Save a model's parameters under stable, readable names.

    Args:
        model: a torch ``nn.Module`` (its state_dict, persistent buffers
            included; a tied parameter under each of its names), a built Keras 3 model or
            layer (a Sequential's or functional model's layers by their names,
            ``dense_1.kernel``; a subclassed model's by attribute path,
            ``hidden.kernel``), an MXNet Gluon ``Block`` (structural names such as
            ``hidden.weight``), a Flax NNX
            ``Module`` (state paths such as ``hidden.kernel``), or a dict/list
            of arrays (dotted paths).
        path: destination (any name, e.g. the chapter's ``mlp.params``);
            written atomically like :func:`tensorfile.save`.
        metadata: user metadata, str -> str.

    Raises:
        UnsupportedTypeError: an unknown kind of model, or a Keras model that is
            not built / a Gluon block not initialized.
    """
    params = model_params(model)
    uninitialized = [name for name in params.params if name not in params.tensors]
    if uninitialized:
        raise UnsupportedTypeError(
            f"parameters not initialized yet (a lazy module such as nn.LazyLinear, or Gluon's deferred "
            f"initialization): run the model once on a batch first; load_parameters can fill them from a file, "
            f"taking the file's shapes: {uninitialized}"
        )
    record = {"framework": params.framework, "layers": {n: p.kind for n, p in params.params.items() if p.kind}}
    save(dict(params.tensors), path, metadata={**(metadata or {}), PARAMETERS_KEY: json.dumps(record)})


def _parameters_info(text: str | None, path: str) -> tuple[str | None, dict[str, str]]:
    """The file's framework and layer classes, from its ``tensorfile.parameters`` entry."""
    if text is None:
        return None, {}
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if (
        not isinstance(info, dict)
        or not isinstance(info.get("framework"), str)
        or not isinstance(info.get("layers", {}), dict)
        or not all(isinstance(v, str) for v in info.get("layers", {}).values())
    ):
        raise FormatError(f"{path}: the {PARAMETERS_KEY!r} metadata entry is malformed")
    return info["framework"], info.get("layers", {})


def _selector(select: Select) -> Callable[[str], bool]:
    if select is None:
        return lambda name: True
    if callable(select):
        return select
    patterns = [select] if isinstance(select, str) else list(select)

    def chosen(name: str) -> bool:
        for p in patterns:
            if any(ch in p for ch in "*?[") and fnmatch.fnmatchcase(name, p):
                return True
            if name == p or (p.endswith(".") and name.startswith(p)) or name.startswith(p + "."):
                return True
        return False

    return chosen


def _renamer(rename: Rename) -> Callable[[str], str]:
    if rename is None:
        return lambda name: name
    if callable(rename):
        return rename
    prefixes = sorted(rename.items(), key=lambda kv: -len(kv[0]))

    def renamed(name: str) -> str:
        for old, new in prefixes:
            if name.startswith(old):
                return new + name[len(old) :]
        return name

    return renamed


def load_parameters(
    model: Any,
    path: str | os.PathLike[str],
    *,
    strict: bool = True,
    select: Select = None,
    rename: Rename = None,
) -> LoadReport:
    """Fill ``model``'s parameters in place from a file and report what happened.

    Steps: read the file's parameters (nested dicts are flattened to dotted
    names); keep those ``select`` chooses; apply ``rename``; when the file came
    from another framework, convert standard layers' names and layouts
    (:mod:`tensorfile.parameters.convert`); match against the model's
    parameters by name, shape and dtype (Keras layers named automatically match
    when only their numbers differ, :mod:`tensorfile.parameters.counters`); load
    what matches, each layer whole or not at all. torch parameters on a CUDA device are filled in place
    from the file's bytes through pinned host buffers (:mod:`.device_fill`).

    Args:
        model: as for :func:`save_parameters`.
        path: a file written by :func:`save_parameters` or :func:`tensorfile.save`
            of a (flat or nested) dict of tensors, e.g. a state_dict, or any file
            :func:`tensorfile.load` reads. A Keras model and a Keras weights file
            (``.weights.h5``, ``.keras``, Keras 2 / legacy ``.h5``) are matched by
            Keras's own ``model.load_weights`` (which reads only the weights, never
            the file's config), as Keras's layout needs Keras's own walk of the model;
            ``select`` and ``rename`` do not apply there. A Gluon export file
            (``x-0000.params`` of ``HybridBlock.export``: ``arg:``/``aux:`` and Gluon's
            global names) loads into a Gluon Block by the Block's own names, its global
            names aligned with the Block's (:mod:`tensorfile.parameters.gluon_export`);
            into other models as ``dense0.weight``..., for ``rename`` to map.
        strict: raise if anything is missing, unexpected or mismatched (nothing is
            loaded then); with False, load what fits and report the rest.
        select: which file parameters to use: a glob (``"hidden.*"``), a name or
            prefix, a list of those, or a predicate ``name -> bool``.
        rename: a prefix mapping (``{"hidden.": "encoder.0."}``, longest prefix
            first) or a function ``name -> name``; applied after ``select``.

    Returns:
        :class:`LoadReport`: ``missing_keys``, ``unexpected_keys``, ``mismatched``, ``loaded``.

    Raises:
        ParameterMismatchError: ``strict`` and there are problems; the message
            lists every one and ``.report`` holds them.
        ValueError: ``select``/``rename`` map two file parameters to one name.
        FileNotFoundError, FormatError, IntegrityError: as :func:`tensorfile.load`.
    """
    keras_file = _keras_weights_file(model, os.fspath(path))
    if keras_file:
        return _load_keras_weights(model, os.fspath(path), strict, select, rename)
    with _Source(os.fspath(path)) as f:
        source, kinds = _parameters_info(f.metadata.get(PARAMETERS_KEY), os.fspath(path))
        target = model_params(model)
        chosen, renamed = _selector(select), _renamer(rename)
        report = LoadReport()

        def converted(name: str, array: np.ndarray) -> tuple[str, np.ndarray] | None:
            new = renamed(name)
            if source and target.framework != "pytree":
                return to_framework(new, kinds.get(name, ""), array, source, target.framework)
            return new, array

        names = {name: name for name in f.keys()}  # the file's name -> the name select/rename see
        if source is None and gluon_export.is_export(names):  # HybridBlock.export: arg:/aux: and global names
            source = "mxnet"
            shapes = {name: _Incoming(name, f.shape(name), np.dtype("float32")) for name in names}
            if target.framework == "mxnet":
                mapped = gluon_export.for_block(shapes, target, report, os.fspath(path))
            else:
                mapped, kinds = gluon_export.for_other(shapes, os.fspath(path), report)
            names = {ref.file_name: new for new, ref in mapped.items()}
        # Pass 1: what the file offers, one tensor at a time (read, checksum checked, converted, dropped), so
        # nothing is changed before every check passed and memory stays at one tensor above the model.
        incoming: dict[str, _Incoming] = {}
        for stored, name in names.items():
            if not chosen(name):
                continue
            out = converted(name, f[stored])
            if out is None:
                report.skipped.append(renamed(name))
                continue
            if out is UNMAPPED:
                report.unexpected_keys.append(f"{renamed(name)} (from {name}: no such parameter in a "
                                              f"{kinds.get(name)} of {source})")  # fmt: skip
                continue
            if out[0] in incoming:
                raise ValueError(f"select/rename map two parameters of {os.fspath(path)!r} to {out[0]!r}")
            incoming[out[0]] = _Incoming(stored, tuple(out[1].shape), out[1].dtype, name)
            del out
        match_params(target, incoming, report, foreign=bool(source) and source != target.framework)
        hint = prefix_hint(report.missing_keys, report.unexpected_keys)
        if hint:
            report.notes.append(hint)
        if not report.ok and source is None and target.framework != "pytree":
            wrote = writer(os.fspath(path))
            report.notes.append(
                f"Note: the file has no layer information (written by {wrote}, not tensorfile.save_parameters), "
                "so standard layers cannot be converted between frameworks"
                + ("." if hint else "; if it comes from another framework, save it again with tensorfile.save_parameters.")
            )
        if strict and not report.ok:
            lines = "\n\t".join(report.problems())
            raise ParameterMismatchError(
                f"Error(s) in loading parameters from {os.fspath(path)!r} into {type(model).__name__}:\n\t{lines}", report
            )
        bad = {m.name for m in report.mismatched} | partial_layers(target, incoming, report, missing=select is None)
        # Each parameter to fill is first written with its own value, so that one that cannot be written (an
        # inference tensor, a read-only variable) stops the load before anything changed, with no copy of the model.
        for name, param in target.params.items():
            if name in incoming and name not in bad and param.value is not None:
                try:
                    param.check() if param.check is not None else param.set(param.value)
                except Exception as exc:
                    raise TensorFileError(f"could not load parameter {name!r} from {os.fspath(path)!r}: it cannot be "
                                          f"written ({exc}); nothing was loaded") from exc  # fmt: skip
        # Pass 2: fill, one tensor at a time; torch parameters on a GPU straight from the file (.device_fill).
        todo = [name for name in target.params if name in incoming and name not in bad]
        filled = set(_fill_on_device(f, target, incoming, todo, bool(source) and source != target.framework, path))
        report.loaded.extend(name for name in todo if name in filled)
        for name, param in target.params.items():
            if name in incoming and name not in bad and name not in filled:
                out = converted(incoming[name].seen_as, f[incoming[name].file_name])
                try:
                    param.set(out[1])  # type: ignore[index]
                except Exception as exc:
                    raise TensorFileError(
                        f"could not load parameter {name!r} from {os.fspath(path)!r} ({exc}); every check had passed "
                        f"and {len(report.loaded)} parameter(s) were loaded before it: the model is partly loaded"
                    ) from exc
                del out
                report.loaded.append(name)
        if filled:  # in the model's order, as without a device
            done = set(report.loaded)
            report.loaded = [name for name in todo if name in done]
    return report


def _fill_on_device(f: "_Source", target: Any, incoming: Mapping[str, "_Incoming"], todo: list[str], converts: bool,
                    path: Any) -> list[str]:  # fmt: skip
    """:func:`.device_fill.fill_on_device` for a torch model (the names filled); nothing for other models."""
    if target.framework != "torch" or f._file is None:
        return []
    from .device_fill import fill_on_device

    try:
        return fill_on_device(f._file, target.tensors, [(n, incoming[n].file_name) for n in todo], converts)
    except Exception as exc:
        raise TensorFileError(f"could not load parameters from {os.fspath(path)!r} onto their device ({exc}); every "
                              "check had passed: the model may be partly loaded") from exc  # fmt: skip


@dataclass(frozen=True)
class _Incoming:
    """A parameter the file offers, as the model will receive it (after rename and conversion)."""

    file_name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    seen_as: str = ""  # the name select and rename saw (a Gluon export's without arg:/aux:)


class _Source:
    """The file's tensors by flat dotted name, read one at a time where the format allows
    (:func:`tensorfile.open`, checksums checked), else loaded whole (formats ``open`` cannot serve)."""

    def __init__(self, path: str) -> None:
        self.metadata: Mapping[str, str] = {}
        self._file: Any = None
        self._arrays: dict[str, np.ndarray] = {}
        try:
            self._file = open_file(path, framework="numpy", verify=True)
        except (FormatError, UnsupportedTypeError):
            self._arrays = flat_arrays(load(path, framework="numpy"))
        else:
            self.metadata = self._file.metadata

    def keys(self) -> list[str]:
        """Names in the saved structure's order (a state_dict's), which reports follow."""
        if self._file is None:
            return list(self._arrays)
        names = self._file.keys()
        record = getattr(self._file, "_record", None)
        if record is None:
            return names
        order: dict[str, int] = {}
        unflatten(record.root, lambda name: order.setdefault(name, len(order)))
        return sorted(names, key=lambda name: order.get(name, len(order)))

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._file.info(name).shape) if self._file is not None else self._arrays[name].shape

    def __getitem__(self, name: str) -> np.ndarray:
        if self._file is None:
            return self._arrays[name]
        read = getattr(self._file, "read", None)  # a TensorFile: fresh memory, freed with the array
        return np.asarray(read(name) if read is not None else self._file[name])

    def __enter__(self) -> "_Source":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            self._file.close()


def _keras_weights_file(model: Any, path: str) -> bool:
    """True for a Keras model (with ``load_weights``) and a Keras weights file: a ``.keras`` archive, or
    HDF5 laid out by Keras 3 (a top-level ``vars`` group) or Keras 2 (``model_weights`` / ``layer_names``)."""
    if not hasattr(model, "load_weights") or "keras" not in {c.__module__.split(".")[0] for c in type(model).__mro__}:
        return False
    from ..files import find_format
    from ..formats import HDF5, KERAS

    try:
        kind = find_format(path)
        if kind is KERAS:
            return True
        if kind is not HDF5:
            return False
        import h5py

        with h5py.File(path, "r") as f:
            return "vars" in f or "model_weights" in f or "layer_names" in f.attrs
    except (OSError, ValueError):
        return False  # the generic path then names the problem


#: Top-level groups of Keras files that hold the optimizer's state, not the model's weights.
_KERAS_OPTIMIZER = ("optimizer/", "optimizer_weights/")


def _load_keras_weights(model: Any, path: str, strict: bool, select: Select, rename: Rename) -> LoadReport:
    """Keras's own ``load_weights`` for Keras's own files (reference: keras-team/keras
    ``keras/src/saving/saving_lib.py`` and ``legacy/saving/legacy_h5_format.py``), then a check of what
    it did: each model weight must now hold one of the file's arrays (matched by shape, dtype and
    bytes), and every array of the file must have found a weight."""
    import tempfile

    from ..format.checksums import checksum

    if select is not None or rename is not None:
        raise ValueError(f"{path}: select and rename do not apply to a Keras weights file loaded into a Keras model")
    target = model_params(model)
    names = {id(p.source): name for name, p in target.params.items()}
    before = [(p.source, p.value) for p in target.params.values()]
    file_arrays = {k: a for k, a in flat_arrays(load(path, framework="numpy")).items() if not k.startswith(_KERAS_OPTIMIZER)}

    def restore() -> None:
        for variable, value in before:
            variable.assign(value)

    suffix = ".keras" if _is_zip(path) else (".weights.h5" if _is_keras3_h5(path) else ".h5")
    report = LoadReport()
    with tempfile.TemporaryDirectory(prefix="tensorfile-keras-") as folder:
        link = os.path.join(folder, "weights" + suffix)  # Keras decides the layout by the file's suffix
        os.symlink(os.path.abspath(path), link)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Keras warns of what it skips; the report says it
                model.load_weights(link, skip_mismatch=not strict)
        except Exception as exc:
            restore()
            text = str(exc).replace(link, path)
            text = clip_values(text)  # Keras puts whole weight matrices in its messages
            if not isinstance(exc, (ValueError, KeyError)):
                raise FormatError(f"{path}: Keras could not read its weights: {text}") from None
            report.notes.append(text)
            report.missing_keys.extend(target.params)
            if strict:
                raise ParameterMismatchError(
                    f"Error(s) in loading parameters from {path!r} into {type(model).__name__}:\n\t{text}", report
                ) from None
            return report

    def key(array: np.ndarray) -> tuple[Any, ...]:
        return array.shape, array.dtype.name, checksum(np.ascontiguousarray(array).tobytes())

    pool: dict[tuple[Any, ...], list[str]] = {}
    for name, array in file_arrays.items():
        pool.setdefault(key(array), []).append(name)
    import keras

    for variable in model.weights:
        found = pool.get(key(np.asarray(keras.ops.convert_to_numpy(variable))))
        (report.loaded if found else report.missing_keys).append(names.get(id(variable), variable.path))
        if found:
            found.pop()
    report.unexpected_keys.extend(sorted(k for keys in pool.values() for k in keys))
    if report.missing_keys:
        report.notes.append("Keras left these weights as they were (no array of the file fits them)")
    half = partial_layers(target, set(report.loaded), report)  # Keras assigns a layer's weights one by one
    for name in half:
        param = target.params[name]
        param.source.assign(param.value)
    report.loaded = [n for n in report.loaded if n not in half]
    if strict and not report.ok:
        restore()
        lines = "\n\t".join(report.problems())
        raise ParameterMismatchError(f"Error(s) in loading parameters from {path!r} into {type(model).__name__}:\n\t{lines}", report)
    return report


def _is_zip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _is_keras3_h5(path: str) -> bool:
    """A Keras 3 ``.weights.h5`` (a top-level ``vars`` group) rather than a Keras 2 ``.h5``."""
    import h5py

    with h5py.File(path, "r") as f:
        return "model_weights" not in f and "layer_names" not in f.attrs
