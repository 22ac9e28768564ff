"""The ``tensorfile`` command line: look into tensorfile, safetensors and other tools' files, and convert them.

Commands: ``ls``, ``info``, ``verify``, ``cat``, ``diff``, ``convert`` (``--json`` for scripts
where it makes sense); ``report`` and ``show`` (:mod:`tensorfile.cli_report`). Any file :func:`tensorfile.load` reads is accepted. An
error prints one line and exits with code 2; ``verify`` exits 1 when a file is
damaged and ``diff`` exits 1 when the files differ.

The console script enters through :mod:`tensorfile.cli_fast`, which lists a tensorfile or safetensors
file itself (no click, no NumPy) and hands every other command here; ``ls`` prints through
:func:`tensorfile.cli_ls.ls_lines` on both paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from typing import Any, Iterator, NoReturn

import click
import numpy as np

from . import formats
from .cli_ls import abbreviated, error_line, ls_lines, one_line, shown, size_text
from .cli_values import count_values, is_flat, json_number, plain_values
from .errors import FormatError, IntegrityError, TensorFileError, UnsafeFileError
from .files import load, resolve_index, save
from .formats.base import Probe
from .lazy import TensorFile
from .lazy import open as open_file
from .limits import Limits
from .tree import flat_arrays, unflatten

__all__ = ["main"]


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(error_line(message), err=True)
    sys.exit(code)


#: The limits the current command reads files with (set by --max-bytes and --max-expansion).
_LIMITS: list[Limits] = [Limits()]


def _max_bytes(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        from .formats.sharded import parse_size

        try:
            size = int(value) if value.isascii() and value.isdigit() else parse_size(value)
        except (ValueError, TensorFileError):
            raise click.BadParameter(f"{value!r} is not a size: give bytes, or a number with KB, MB, GB, KiB, MiB, GiB")
        _LIMITS[0] = dataclasses.replace(_LIMITS[0], max_bytes=size)


def _max_expansion(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        _LIMITS[0] = dataclasses.replace(_LIMITS[0], max_expansion=value)


def limits_option(command: Any) -> Any:
    """``--max-bytes`` and ``--max-expansion``: every command that reads files takes them."""
    command = click.option(
        "--max-expansion", type=click.IntRange(min=1), default=None, expose_value=False, callback=_max_expansion,
        help="Largest inflated/compressed ratio of a zip member (default 200; a trusted, highly compressed .npz).",
    )(command)  # fmt: skip
    return click.option(
        "--max-bytes", metavar="SIZE", default=None, expose_value=False, callback=_max_bytes,
        help="Most memory a file may make tensorfile allocate ('8GiB', or bytes). Default: 4x the file's size + 64 MiB.",
    )(command)  # fmt: skip


def _folder_message(path: str) -> str:
    """A folder was given: point at a sharded checkpoint's index inside it, if there is one."""
    try:
        indexes = sorted(n for n in os.listdir(path) if n.endswith(".safetensors.index.json"))
    except OSError:
        indexes = []
    hint = f"; for its sharded checkpoint give the index, {os.path.join(path, indexes[0])}" if indexes else ""
    return f"{path}: is a folder, not a file{hint}"


def _load_all(path: str) -> Any:
    """Everything in any readable file, tensors as NumPy arrays; checksums verified."""
    try:
        return load(path, framework="numpy", limits=_LIMITS[0])
    except FileNotFoundError:
        _fail(f"{path}: no such file")
    except IsADirectoryError:
        _fail(_folder_message(path))
    except (TensorFileError, OSError, ImportError) as exc:
        _fail(str(exc))


def _read(path: str) -> dict[str, np.ndarray]:
    """Every tensor of any readable file as NumPy arrays by (dotted) name; checksums verified."""
    return flat_arrays(_load_all(path))


_TENSOR = object()  # a tensor's place in a structure read without its data


def _structure_values(f: Any, path: str) -> dict[str, Any]:
    """The values other than tensors of an opened file (``epoch``, a learning rate...), without reading a
    tensor: from a tensorfile file's structure record, or the structure another tool's file was opened
    with (its pickle, for a torch file); none in a plain safetensors, sharded or GGUF file."""
    if isinstance(f, TensorFile):
        return plain_values(unflatten(f._record.root, lambda name: _TENSOR)) if f._record is not None else {}
    structure = getattr(f, "structure", None)
    return plain_values(structure) if structure is not None else {}


class _Commands(click.Group):
    """The command group: an error a command did not turn into a line of its own still prints one line."""

    def invoke(self, ctx: click.Context) -> Any:
        _LIMITS[0] = Limits()  # each command starts from the defaults (main() may run many in one process)
        try:
            return super().invoke(ctx)
        except TensorFileError as exc:
            _fail(str(exc))
        except OSError as exc:  # a path that cannot be read: a symlink loop, /proc files, permissions
            _fail(f"{exc.filename}: {exc.strerror or exc}" if exc.filename else str(exc))


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tensorfile")
def main() -> None:
    """Inspect and convert tensorfile, safetensors, PyTorch, NumPy, MXNet, Keras/HDF5 and GGUF files, and DCP folders."""


@main.command("ls")
@limits_option
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def ls_command(file: str, as_json: bool) -> None:
    """List the tensors in FILE: name, dtype, shape, bytes, and totals."""
    with _opened(file) as f:  # lazy where the format allows: no data read
        rows = [(i.name, i.dtype, i.shape, i.nbytes) for i in (f.info(n) for n in sorted(f.keys()))]
        metadata = f.metadata
    for line in ls_lines(file, rows, metadata, as_json):
        click.echo(line)


@contextlib.contextmanager
def _opened(path: str, verify: bool = False) -> Iterator[Any]:
    """:func:`tensorfile.open` of any readable file, failing with one line."""
    try:
        f = open_file(path, framework="numpy", verify=verify, limits=_LIMITS[0])
    except FileNotFoundError:
        _fail(f"{path}: no such file")
    except IsADirectoryError:
        _fail(_folder_message(path))
    except (TensorFileError, ImportError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{path}: {exc.strerror or exc}")
    with f:
        yield f


@main.command("info")
@limits_option
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def info_command(file: str, as_json: bool) -> None:
    """The format of FILE (detected by content), its metadata, and whether it carries checksums."""
    file = resolve_index(file)  # a sharded save: its index
    folder = os.path.isdir(file) and formats.detect_folder(file) is not None  # a checkpoint kept as a folder (DCP)
    if os.path.isdir(file) and not folder:
        _fail(_folder_message(file))
    if not folder and not os.path.isfile(file):
        _fail(f"{file}: no such file" if not os.path.exists(file) else f"{file}: not a regular file")
    with _opened(file) as f:
        metadata, checksums = f.metadata, f.has_record
        count, total = len(f.keys()), sum(f.info(n).nbytes for n in f.keys())
        fmt = formats.get(f.format)
    if fmt.name == "safetensors" and checksums:
        fmt = formats.get("tensorfile")
    kind = fmt.title
    doc = {"file": file, "format": kind, "format_name": fmt.name, "checksums": checksums, "tensors": count,
           "nbytes": total, "metadata": metadata}  # fmt: skip
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"format:    {kind}")
    click.echo(f"checksums: {'yes (xxh3-64 per tensor, and the header)' if checksums else 'no'}")
    click.echo(f"tensors:   {count}, {total} bytes ({size_text(total)})")
    for key, value in sorted(metadata.items()):
        click.echo(f"metadata   {shown(key)}: {abbreviated(value)}")


@main.command("verify")
@limits_option
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def verify_command(file: str, as_json: bool) -> None:
    """Read all of FILE, checking every checksum and the structure; exit 1 if it is damaged."""
    file = resolve_index(file)  # a sharded save: its index
    folder = os.path.isdir(file) and formats.detect_folder(file) is not None  # a checkpoint kept as a folder (DCP)
    if os.path.isdir(file) and not folder:
        _fail(_folder_message(file))
    if os.path.exists(file) and not folder and not os.path.isfile(file):
        _fail(f"{file}: not a regular file")
    probe = Probe.of(file) if os.path.isfile(file) else None
    if probe is not None:
        fmt = formats.detect(probe)
        if fmt is None and formats.damaged_zip(probe) is not None:  # a torch.save / .npz / .keras cut short
            _verdict(as_json, file, False, str(formats.not_tensors(probe)))
        if fmt is None:  # not a damaged tensor file: another kind of file
            _fail(str(formats.not_tensors(probe)))
    try:
        value = _verified(file, probe is not None and fmt is formats.get("safetensors"))
    except FileNotFoundError:
        _fail(f"{file}: no such file")
    except (IntegrityError, FormatError, UnsafeFileError) as exc:  # damaged, malformed or hostile: not sound
        _verdict(as_json, file, False, str(exc))
    except (TensorFileError, OSError) as exc:
        _fail(str(exc))
    arrays = flat_arrays(value)
    if probe is not None and probe.zip_names() is not None:  # torch.save, .npz, .keras: each member has a CRC-32
        bad = _zip_crc_failure(file)
        if bad:
            _verdict(as_json, file, False, f"{file}: {bad}")
        checked = "CRC-32 of every zip member verified"
    else:
        try:
            with open_file(file, limits=_LIMITS[0]) as f:
                checked = "checksums verified" if f.has_record else "no checksums in this file; structure read"
        except (FormatError, OSError):
            checked = "no checksums in this format; structure read"
    _verdict(as_json, file, True, f"{len(arrays)} tensor{'' if len(arrays) == 1 else 's'}, {checked}", len(arrays))


def _verified(file: str, safetensors: bool) -> Any:
    """Everything in ``file``, checksums checked. A tensorfile or safetensors file is hashed where it is mapped
    (no copy in memory: 0.2 s instead of 3.6 s for 1.3 GiB here); one that records shared storage, and every
    other format, is loaded."""
    if safetensors:
        with open_file(file, framework="numpy", verify=True, limits=_LIMITS[0]) as f:
            if isinstance(f, TensorFile) and not f.has_shared_storage:
                return f.load(mapped=True)
    return load(file, framework="numpy", limits=_LIMITS[0])


def _verdict(as_json: bool, file: str, ok: bool, detail: str, tensors: int | None = None) -> NoReturn:
    """Print verify's result (a line, or JSON) and exit: 0 when the file is sound, 1 when it is damaged."""
    if as_json:
        click.echo(json.dumps({"file": file, "ok": ok, "tensors": tensors, "detail": detail}, indent=2))
    else:
        click.echo(one_line(f"OK: {detail}" if ok else f"FAILED: {detail}"))
    sys.exit(0 if ok else 1)


def _zip_crc_failure(path: str) -> str | None:
    """What is wrong with a zip member's CRC-32 (``load`` of a torch file skips it, as torch.load does)."""

    from .formats._zip import open_zip

    try:
        with open_zip(path, _LIMITS[0].budget(path, os.path.getsize(path))) as zf:
            name = zf.testzip()
    except TensorFileError as exc:
        return str(exc)
    except Exception as exc:  # zipfile raises many kinds (BadZipFile, NotImplementedError, RuntimeError, zlib.error...)
        return f"the zip archive is damaged: {exc}"
    return None if name is None else f"member {name!r} fails its CRC-32 check: the file is corrupt"


@main.command("cat")
@limits_option
@click.argument("file")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts: dtype, shape and every value.")
def cat_command(file: str, name: str, as_json: bool) -> None:
    """Print tensor NAME of FILE, summarized as NumPy prints arrays."""
    with _opened(file, verify=True) as f:  # reads only this tensor where the format allows
        names = f.keys()
        if name not in names:
            values = _structure_values(f, file)
            if name in values:  # a value other than a tensor: the epoch, a step, a learning rate...
                value = values[name]
                if as_json:
                    click.echo(json.dumps({"name": name, "type": type(value).__name__, "value": json_number(value)}))
                else:
                    click.echo(f"{name}: {type(value).__name__} {abbreviated(repr(value))}")
                return
            known = sorted(names) + sorted(values)
            _fail(f"{file}: no tensor or value named {name!r}; it has {', '.join(known[:10])}{' ...' if len(known) > 10 else ''}")
        try:
            array = np.asarray(f[name])
        except TensorFileError as exc:
            _fail(str(exc))
    shown = array.astype(np.float32) if array.dtype.name.startswith(("bfloat", "float8")) else array
    if as_json:
        try:
            values = [json_number(v) for v in shown.reshape(-1).tolist()]
        except (ValueError, TypeError, SystemError) as exc:  # values NumPy cannot turn into Python's
            _fail(f"{file}: tensor {name!r} ({array.dtype.name}) cannot be shown as JSON: {exc}")
        click.echo(json.dumps({"name": name, "dtype": array.dtype.name, "shape": list(array.shape), "values": values},
                              default=str))  # fmt: skip
        return
    click.echo(f"{name}: {array.dtype.name} {tuple(array.shape)}")
    try:
        text = np.array2string(shown, threshold=200, edgeitems=3)
    except (ValueError, TypeError, SystemError) as exc:  # dtypes NumPy cannot print (generic datetimes, raw bytes)
        text = f"(values not printable: {exc})"
    click.echo(text)


@main.command("diff")
@limits_option
@click.argument("a")
@click.argument("b")
@click.option("--atol", type=float, default=0.0, show_default=True, help="Absolute tolerance.")
@click.option("--rtol", type=float, default=0.0, show_default=True, help="Relative tolerance.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar on stderr (default: on a terminal, for files of 64 MiB or more).")  # fmt: skip
def diff_command(a: str, b: str, atol: float, rtol: float, as_json: bool, progress: bool | None) -> None:
    """Compare the tensors and the other values (epoch, step...) of A and B; exit 1 when they differ beyond the
    tolerances (values other than tensors must be equal). Tensors are read one pair at a time: memory stays
    about the two largest tensors, whatever the files' sizes."""
    from .cli_diff import diff_files
    from .files import _progress

    with _opened(a, verify=True) as fa, _opened(b, verify=True) as fb:
        common = set(fa.keys()) & set(fb.keys())
        total = sum(fa.info(n).nbytes + fb.info(n).nbytes for n in common)
        with _progress(total, "diff", progress) as bar:
            result = diff_files(fa, fb, _structure_values(fa, a), _structure_values(fb, b), atol, rtol, bar)
    changed = [{"name": n, "a": abbreviated(a_), "b": abbreviated(b_)} for n, a_, b_ in result.changed]
    finite = lambda v: v if np.isfinite(v) else ("nan" if np.isnan(v) else "inf")  # noqa: E731 - JSON has no inf
    compared = [{**c, "max_abs": finite(c["max_abs"]), "max_rel": finite(c["max_rel"])} for c in result.compared]
    different = result.different
    if as_json:
        click.echo(json.dumps({"only_in_a": result.only_a, "only_in_b": result.only_b, "changed": changed,
                               "compared": compared, "different": different}, indent=2))  # fmt: skip
    else:
        for name in result.only_a:
            click.echo(f"only in A: {name}")
        for name in result.only_b:
            click.echo(f"only in B: {name}")
        for c in changed:
            click.echo(f"changed:   {c['name']}: {c['a']} -> {c['b']}")
        for c in compared:
            if not c["same"]:
                click.echo(f"differs:   {c['name']}: max abs {float(c['max_abs']):.6g}, max rel {float(c['max_rel']):.6g}")
        values = result.values
        also = f" and {values} other value{'' if values == 1 else 's'}" if values else ""
        click.echo("different" if different else f"same: {len(compared)} tensors within atol={atol}, rtol={rtol}{also}")
    sys.exit(1 if different else 0)


def _source(path: str) -> Any:
    """Everything in ``path`` as NumPy arrays in their structure; tensorfile and safetensors
    files (and sharded ones) memory-mapped, so a conversion streams them from the page cache."""
    with _opened(path, verify=True) as f:
        try:
            if isinstance(f, TensorFile) and not f.has_shared_storage:
                return f.load(mapped=True)  # verified tensor by tensor as the writer reads it
            if not isinstance(f, TensorFile) and f.format == "sharded":
                return {name: f[name] for name in f.keys()}
        except TensorFileError as exc:
            _fail(str(exc))
    try:
        return load(path, framework="numpy", limits=_LIMITS[0])
    except (TensorFileError, OSError, ImportError) as exc:
        _fail(str(exc))


@main.command("convert")
@limits_option
@click.argument("src")
@click.argument("dst")
@click.option("--format", "fmt", type=click.Choice(formats.written()), default=None,
              help=f"Output format. Default: from DST's suffix ({formats.suffix_rules()}), else tensorfile "
                   "(.params too: MXNet's format only with --format mxnet).")  # fmt: skip
@click.option("--max-shard-size", default=None, metavar="SIZE",
              help="Write Hugging Face shards of at most SIZE bytes of data ('5GB', '500MiB', or bytes) and an index.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def convert_command(src: str, dst: str, fmt: str | None, max_shard_size: str | None, as_json: bool) -> None:
    """Convert SRC (any readable file) to DST in another format; DST is replaced atomically.

    Formats that hold only a flat dict of tensors (npz, mxnet, safetensors,
    shards) get nested structures flattened to dotted names; values that are
    not tensors are then left out, with a note.
    """
    if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
        _fail(f"{dst}: is SRC itself; convert writes a new file (choose another DST)")
    if fmt is None:
        target = formats.for_destination(dst)
        if target.write is None:
            suffix = next(x for x in sorted(target.suffixes, key=len, reverse=True) if dst.lower().endswith(x))
            _fail(f"{dst}: tensorfile reads {suffix} files ({target.title}) but does not write them; choose a format with --format "
                  f"({', '.join(formats.written())})")  # fmt: skip
        fmt = target.name
    value = _source(src)
    if (formats.get(fmt).flat or max_shard_size) and not is_flat(value):
        flat = flat_arrays(value)  # a name taken twice gets a #N suffix: nothing is lost
        dropped = count_values(value) - len(flat)
        click.echo(f"note: {src}: nested structure flattened to {len(flat)} dotted names"
                   + (f"; {dropped} value{'' if dropped == 1 else 's'} other than tensors left out" if dropped else ""), err=True)  # fmt: skip
        value = flat
    size = None
    if max_shard_size is not None:
        size = int(max_shard_size) if max_shard_size.isascii() and max_shard_size.isdigit() else max_shard_size
    try:
        save(value, dst, format=fmt, max_shard_size=size)
    except (TensorFileError, ValueError, OSError) as exc:
        _fail(f"{dst}: {exc}" if not str(exc).startswith(dst) else str(exc))
    arrays = flat_arrays(value)
    total = sum(a.nbytes for a in arrays.values())
    if as_json:
        click.echo(json.dumps({"src": src, "dst": dst, "format": fmt, "sharded": bool(size), "tensors": len(arrays),
                               "nbytes": total}, indent=2))  # fmt: skip
        return
    click.echo(f"{src} -> {dst} ({fmt}{', sharded' if size else ''}): {len(arrays)} tensors, {size_text(total)}")


from . import cli_report  # noqa: E402, F401 - registers ``report`` and ``show`` on main

if __name__ == "__main__":  # pragma: no cover
    main()
