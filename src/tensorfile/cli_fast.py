"""The ``tensorfile`` console script (and ``python -m tensorfile``): ``ls`` of a tensorfile or safetensors
file without importing click or NumPy; everything else through the click CLI (:mod:`tensorfile.cli`).

``tensorfile ls [--json] FILE`` of a local tensorfile or safetensors file reads one header, yet the click
CLI's start-up (NumPy, click, every format module: 0.3-0.5 s) is most of its time. Here the header is read
and checked by the functions :func:`tensorfile.open` uses, with the same default limits
(:func:`tensorfile.format.header.read_header`: strict JSON and every rule of the header;
:func:`tensorfile.format.record.read_record`: tensorfile's record and its header checksum), and printed by
the click command's own :func:`tensorfile.cli_ls.ls_lines`: the output, error line and exit code are the
click command's, byte for byte.

Everything else goes to the click CLI, which then does all the work again: other commands and options
(``--max-bytes``...), a URL, a path that does not open as a regular file (missing, a folder, a sharded
checkpoint's name), a file whose first bytes are not a safetensors header (another format or a damaged
file: the click CLI names it), an error other than a :class:`tensorfile.TensorFileError`, and output the
click CLI would write differently (an escape sequence, which ``click.echo`` strips when not on a terminal,
or text the stream cannot encode). ``TENSORFILE_FULL_CLI=1`` in the environment sends every command to the
click CLI.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Any, TextIO

__all__ = ["main", "ls_request", "fast_ls", "FULL_CLI_ENV"]

#: Environment variable that, when set to anything but empty, turns the fast path off.
FULL_CLI_ENV = "TENSORFILE_FULL_CLI"


def main() -> Any:
    """Run the command in ``sys.argv``: the console script's entry point. Returns the exit code of a fast
    ``ls``; the click CLI exits the process itself."""
    request = ls_request(sys.argv[1:])
    if request is not None and not os.environ.get(FULL_CLI_ENV):
        code = fast_ls(*request)
        if code is not None:
            return code
    from .cli import main as click_main

    return click_main()


def ls_request(args: list[str]) -> tuple[str, bool] | None:
    """``(FILE, as_json)`` for the arguments ``ls FILE``, ``ls --json FILE`` or ``ls FILE --json``; None for
    any other command line (left to click, which knows every option and message)."""
    if not args or args[0] != "ls":
        return None
    rest = args[1:]
    as_json = rest.count("--json") == 1
    if as_json:
        rest.remove("--json")
    if len(rest) != 1 or rest[0].startswith("-"):
        return None
    return rest[0], as_json


def fast_ls(file: str, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> int | None:
    """``tensorfile ls [--json] FILE`` of a tensorfile or safetensors file, printed to ``out`` (stdout), an
    error to ``err`` (stderr).

    Returns:
        The exit code (0, or 2 after an error line), or None, having printed nothing, when the click CLI
        must run the command (see the module's docstring).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    from .cli_ls import error_line, ls_lines
    from .errors import TensorFileError

    try:
        listing = _listing(file)
    except TensorFileError as exc:
        return 2 if _write(err, [error_line(str(exc))]) else None
    except Exception:  # an OSError while reading, MemoryError...: the click CLI has a message for each
        return None
    if listing is None:
        return None
    rows, metadata = listing
    return 0 if _write(out, ls_lines(file, rows, metadata, as_json)) else None


def _listing(file: str) -> tuple[list[Any], dict[str, str]] | None:
    """The rows and user metadata ``ls`` shows for ``file`` as :meth:`tensorfile.TensorFile.info` and
    ``.metadata`` give them; None when ``file`` is not a local tensorfile or safetensors file.

    :func:`tensorfile.formats.detect` picks the safetensors format for a file whose header length fits and
    is followed by ``{`` (:func:`.format.sniff.header_fits`, confidence 0.9) unless another format is
    surer, and every format surer than that starts with a magic number :func:`.format.sniff.looks_like`
    knows (npy, HDF5, zip, GGUF, MXNet, pickle): a file with neither is read here.

    Raises:
        TensorFileError: the header or the record is invalid (as :func:`tensorfile.open` raises it).
    """
    from .format.codes import name_of_code
    from .format.header import OPEN_FLAGS, read_header
    from .format.record import RECORD_KEY, logical_shape, read_record
    from .format.sniff import header_fits, looks_like
    from .limits import DEFAULT_LIMITS
    from .storage import is_url, local_path

    path = local_path(file)
    if is_url(path) or not isinstance(path, str):
        return None
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        prefix = os.pread(fd, 16, 0)
        if not header_fits(prefix, info.st_size) or looks_like(prefix) is not None:
            return None
        _, header = read_header(fd, path, DEFAULT_LIMITS)
    finally:
        os.close(fd)
    record = read_record(header, path)
    tensors = record.tensors if record is not None else {}
    rows = []
    for name in sorted(header.entries):
        entry, facts = header.entries[name], tensors.get(name, {})
        rows.append((name, facts.get("dtype") or name_of_code(entry.code), logical_shape(entry, facts), entry.nbytes))
    metadata = {k: v for k, v in (header.metadata or {}).items() if k != RECORD_KEY}
    return rows, metadata


def _write(stream: TextIO, lines: list[str]) -> bool:
    """Write ``lines`` as ``click.echo`` would, or nothing and False where click would write other bytes: an
    escape sequence (stripped off a terminal) or text the stream cannot encode (click may rewrap it)."""
    text = "".join(line + "\n" for line in lines)
    if "\x1b" in text:
        return False
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8", getattr(stream, "errors", None) or "strict")
    except (UnicodeEncodeError, LookupError):
        return False
    stream.write(text)
    stream.flush()
    return True
