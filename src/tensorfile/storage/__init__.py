"""Object storage through fsspec: ``s3://``, ``gs://``, ``memory://`` and any fsspec URL.

:func:`tensorfile.save`, :func:`tensorfile.load`, :func:`tensorfile.open` and
:class:`tensorfile.CheckpointManager` take a URL where they take a path, with
``storage_options=`` (a dict handed to the fsspec filesystem, e.g.
``{"endpoint_url": ..., "anon": True}``; credentials otherwise come from the
environment, as fsspec and its backends find them). ``fsspec`` is an optional
extra (``pip install 'tensorfile[remote]'``) imported only when a URL is used;
the backend (``s3fs``, ``gcsfs``, ...) is the user's choice.

Reference: fsspec/filesystem_spec ``fsspec/spec.py`` (``AbstractFileSystem``:
``cat_file(path, start, end)``, ``pipe_file(path, value, mode="create")``,
``put_file``, ``get_file``) and ``fsspec/core.py`` (``url_to_fs``).

Modules: :mod:`.transfer` (staged uploads, conditional puts, downloads),
:mod:`.reader` (lazy reads by byte range), :mod:`.uploads` (aborting unfinished
S3 multipart uploads), :mod:`.files` (``save`` / ``load`` / ``open`` of a URL).
A ``file://`` URL is a local path and keeps the local, rename-based behaviour.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Location", "is_url", "local_path", "locate", "check_options"]

_FILE = "file://"


def is_url(path: Any) -> bool:
    """True for an fsspec URL other than ``file://`` (``s3://b/k``, ``memory://x``, ``simplecache::s3://b/k``).

    Only a ``str`` can be one: an ``os.PathLike`` is always a local path.
    """
    return isinstance(path, str) and ("://" in path or "::" in path) and not path.startswith(_FILE)


def local_path(path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """``path`` with a leading ``file://`` removed (``file:///data/x`` is ``/data/x``); anything else as given."""
    if isinstance(path, str) and path.startswith(_FILE):
        return path[len(_FILE) :]
    return path


def check_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``storage_options`` as a plain dict (empty for None).

    Raises:
        TypeError: not a mapping with str keys.
    """
    if storage_options is None:
        return {}
    if not isinstance(storage_options, Mapping) or not all(isinstance(k, str) for k in storage_options):
        raise TypeError(f"storage_options must be a dict of str to values for fsspec, not {type(storage_options).__name__}")
    return dict(storage_options)


@dataclass(frozen=True)
class Location:
    """One object on an fsspec filesystem.

    Attributes:
        fs: the ``fsspec.AbstractFileSystem`` (cached by fsspec per protocol and options).
        path: the object's path on ``fs`` (no protocol: ``bucket/key`` on S3).
        url: the URL as the user gave it, for messages.
    """

    fs: Any
    path: str
    url: str

    def child(self, name: str) -> "Location":
        """The object ``name`` (a relative path with ``/``) below this one."""
        return Location(self.fs, f"{self.path}/{name}", f"{self.url}/{name}")


def locate(url: str, storage_options: Mapping[str, Any] | None) -> Location:
    """The filesystem and path of ``url`` (``fsspec.core.url_to_fs(url, **storage_options)``).

    Raises:
        ImportError: fsspec, or the backend of the URL's protocol (s3fs for ``s3://``), is not
            installed; the message says what to install.
        ValueError: fsspec knows no such protocol.
    """
    options = check_options(storage_options)
    try:
        import fsspec.core
    except ImportError:
        raise ImportError(f"{url}: object storage needs fsspec: pip install 'tensorfile[remote]' "
                          "(plus the backend of the protocol: s3fs for s3://, gcsfs for gs://)") from None  # fmt: skip
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:  # fsspec's message names the package of the protocol
        raise ImportError(f"{url}: {exc}") from None
    return Location(fs, path.rstrip("/"), url.rstrip("/"))
