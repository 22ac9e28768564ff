"""``save``, ``load`` and ``open`` of a URL: what :mod:`tensorfile.files` and :mod:`tensorfile.lazy` call.

* save: the file is written locally by the format's own writer into a temporary folder,
  then uploaded in one piece (:func:`.transfer.upload`): a failed save leaves no object,
  and never a partial one, under the name; an existing object is replaced only by a
  complete one.
* load: the object is downloaded into a temporary file and read there by the local
  readers (every format :func:`tensorfile.load` reads, checksums verified); errors name
  the URL.
* open: a tensorfile or safetensors object is read lazily by byte ranges
  (:class:`.reader.ObjectReader`); other formats are read with ``load``.
* a distributed checkpoint (a folder with ``manifest.json``, or that manifest) is loaded and opened by
  :mod:`tensorfile.formats.distributed`, each chunk read by byte ranges.
"""

from __future__ import annotations

import errno
from typing import Any, Callable, Mapping

from ..errors import FormatError
from ..format.sniff import looks_like
from ..limits import Limits
from . import Location, locate
from .reader import HEAD_BYTES, ObjectReader
from .transfer import download, renamed, staged, upload

__all__ = ["save_url", "load_url", "open_url"]


def save_url(url: str, storage_options: Mapping[str, Any] | None, write: Callable[[str], None]) -> None:
    """``write(local_path)`` writes the file; it is then uploaded to ``url`` in one piece.

    Raises:
        whatever ``write`` raises (nothing is uploaded then); OSError: the upload failed (the message names ``url``).
    """
    location = locate(url, storage_options)
    with staged(location) as local:
        with renamed(local, url):
            write(local)
        upload(local, location)


def load_url(url: str, storage_options: Mapping[str, Any] | None, load_local: Callable[[str], Any],
             load_checkpoint: Callable[[str], Any] | None = None) -> Any:  # fmt: skip
    """The object at ``url`` downloaded to a temporary file, then ``load_local(local_path)``; a distributed
    checkpoint (a folder holding ``manifest.json``, or that manifest) is ``load_checkpoint(url)`` instead.

    Raises:
        FileNotFoundError: no such object. FormatError: a sharded checkpoint's index (its shards are
        other objects), or whatever ``load_local`` raises, naming ``url``.
    """
    from ..files import find_format

    location = locate(url, storage_options)
    with staged(location) as local:
        try:
            download(location, local)
        except IsADirectoryError:
            if load_checkpoint is not None and _holds_checkpoint(location):
                return load_checkpoint(url)
            raise
        with renamed(local, url):
            if load_checkpoint is not None and find_format(local).name == "distributed":
                return load_checkpoint(url)
            if find_format(local).name == "sharded":
                raise FormatError(f"{url}: a sharded checkpoint's index; its shards are other objects, which "
                                  "tensorfile does not fetch: download the index and its shards first")  # fmt: skip
            return load_local(local)


def open_url(url: str, storage_options: Mapping[str, Any] | None, limits: Limits, framework: str | None,
             map_location: Any, device: Any, verify: bool) -> Any:  # fmt: skip
    """A :class:`tensorfile.TensorFile` over the tensorfile or safetensors object at ``url``, read by ranges.

    Raises:
        FileNotFoundError: no such object. FormatError: not a safetensors object (another format: the
        message says to use ``tensorfile.load``), or a malformed one. LimitError: a header over ``limits``.
    """
    from ..distributed.manifest import looks_like as manifest_like
    from ..formats.distributed import open_url as open_checkpoint
    from ..lazy import TensorFile

    location = locate(url, storage_options)
    fs = location.fs
    try:
        info = fs.info(location.path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such object", url) from None
    options = {"map_location": map_location, "device": device}
    if info.get("type") == "directory":
        if _holds_checkpoint(location):
            return open_checkpoint(url, storage_options, limits, framework, options, verify)
        raise IsADirectoryError(errno.EISDIR, "a folder (a prefix of objects), not an object", url)
    size = int(info.get("size") or 0)
    head = fs.cat_file(location.path, start=0, end=min(size, HEAD_BYTES)) if size else b""
    if manifest_like(head):
        return open_checkpoint(url, storage_options, limits, framework, options, verify)
    kind = looks_like(head[:16])
    if kind is not None and head[8:9] != b"{":
        raise FormatError(f"{url}: not a safetensors file; it looks like {kind}. open() reads tensorfile and "
                          "safetensors objects by ranges; tensorfile.load(url) reads the other formats")  # fmt: skip
    reader = ObjectReader(location, size, head, limits)
    return TensorFile(url, framework, map_location, verify, device, limits=limits, reader=reader,
                      storage_options=storage_options)  # fmt: skip


def _holds_checkpoint(folder: Location) -> bool:
    """True when the folder (prefix) ``folder`` holds a distributed checkpoint's ``manifest.json``."""
    from ..distributed.manifest import MANIFEST

    return bool(folder.fs.isfile(folder.child(MANIFEST).path))
