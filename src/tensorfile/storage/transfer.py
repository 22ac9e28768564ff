"""Moving whole objects: staged uploads, conditional (create-only) puts, downloads to a temporary file.

Object stores have no rename, so nothing is ever written in place under its final name:

* :func:`staged` gives a local temporary file (under ``tempfile.gettempdir()``, i.e. ``TMPDIR``) for the
  writer, which needs to seek back to its header; :func:`upload` then sends it with the backend's
  ``put_file``. s3fs (``s3fs/core.py``, ``_put_file``) sends a file under twice its chunk size
  (50 MiB by default) in one ``PutObject``, and a larger one as a multipart upload completed only
  after every part is in and aborted on error: the object appears whole or not at all. Other
  backends follow their own ``put_file`` (GCS: one upload, or a resumable one finished at the end).
* :func:`put` writes a small object in one request (``pipe_file``), replacing any of that name.
* :func:`put_new` writes an object only if none exists under its name (fsspec ``pipe_file(path,
  data, mode="create")``; s3fs sends ``If-None-Match: *`` with ``PutObject``, AWS S3 conditional
  writes, and the store answers ``412 Precondition Failed`` when the key exists, which s3fs raises as
  ``FileExistsError``). Backends without conditional writes fall back to fsspec's check-then-write,
  which two writers can still both pass.
* :func:`download` copies an object into a local temporary file (``get_file``).
* :func:`renamed`: errors raised while handling the temporary name the URL instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import tempfile
from typing import Iterator

from . import Location

__all__ = ["staged", "upload", "put", "put_new", "download", "renamed"]


@contextlib.contextmanager
def staged(location: Location) -> Iterator[str]:
    """A local path (in a fresh temporary folder, same base name as the object) for a writer; removed at exit."""
    name = posixpath.basename(location.path) or "object"
    with tempfile.TemporaryDirectory(prefix="tensorfile-") as folder:
        yield os.path.join(folder, name)


def upload(local: str, location: Location) -> None:
    """Send the local file ``local`` to ``location`` in one piece (see the module docs).

    Raises:
        OSError: the store refuses or the connection fails (FileNotFoundError for a missing bucket);
            with s3fs, a multipart upload begun is aborted first. The message names the URL.
    """
    try:
        location.fs.put_file(local, location.path)
    except OSError as exc:
        if location.url in str(exc):
            raise
        raise _named(exc, f"{location.url}: the upload failed: {exc}") from exc


def _named(exc: OSError, message: str) -> OSError:
    """An error of ``exc``'s type with ``message``."""
    try:
        return type(exc)(message)
    except TypeError:  # a subclass with a constructor of its own
        return OSError(exc.errno or errno.EIO, message)


def put(location: Location, data: bytes) -> None:
    """Write the object ``location`` holding ``data`` in one request, replacing any object of that name (the
    store swaps it whole: a reader gets the old object or the new one).

    Raises:
        OSError: the store refuses or the connection fails (the message names the URL).
    """
    try:
        location.fs.pipe_file(location.path, data)
    except OSError as exc:
        if location.url in str(exc):
            raise
        raise _named(exc, f"{location.url}: the upload failed: {exc}") from exc


def put_new(location: Location, data: bytes) -> None:
    """Create the object ``location`` holding ``data``, only if no object has that name (``If-None-Match: *``).

    Raises:
        FileExistsError: an object of that name exists (S3: 412 Precondition Failed).
        OSError: any other failure of the store.
    """
    location.fs.pipe_file(location.path, data, mode="create")


def download(location: Location, local: str) -> None:
    """Copy the object ``location`` into the local file ``local``.

    Raises:
        FileNotFoundError: no such object (named by its URL). IsADirectoryError: a prefix, not an object.
        OSError: the store refuses or the connection fails.
    """
    fs = location.fs
    try:
        info = fs.info(location.path)
    except FileNotFoundError:
        raise FileNotFoundError(2, "no such object", location.url) from None
    if info.get("type") == "directory":
        raise IsADirectoryError(21, "a folder (a prefix of objects), not an object", location.url)
    fs.get_file(location.path, local)


@contextlib.contextmanager
def renamed(temporary: str, url: str) -> Iterator[None]:
    """Errors raised inside the block name ``url`` where they named the local file ``temporary``."""
    try:
        yield
    except BaseException as exc:
        exc.args = tuple(a.replace(temporary, url) if isinstance(a, str) else a for a in exc.args)
        if isinstance(exc, OSError) and exc.filename == temporary:
            exc.filename = url
        raise
