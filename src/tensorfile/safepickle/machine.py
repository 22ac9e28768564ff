"""The one restricted unpickler for foreign pickles (torch ``.pt``; reference:
pytorch/pytorch ``torch/_weights_only_unpickler.py`` for the idea, not the code).

``find_class`` never imports: it resolves ``(module, name)`` only through the
explicit table handed to :class:`RestrictedUnpickler`; anything else raises
:class:`UnsafeFileError` naming the global. The table's entries are our own
plain functions and classes, so REDUCE, NEWOBJ and BUILD can only ever call
those. ``persistent_load`` is the caller's (torch storages).
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Callable, Mapping

from ..errors import FormatError, UnsafeFileError

__all__ = ["RestrictedUnpickler", "restricted_loads"]

#: Most nested containers a foreign pickle may build (recursion guard).
MAX_DEPTH = 1000


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals come only from ``table`` and which never imports.

    Args:
        file: a binary file positioned at the pickle.
        table: ``(module, name) -> object`` allowed for GLOBAL / STACK_GLOBAL.
        persistent_load: handles persistent ids (None: a persistent id is an error).
        what: names the data in messages (e.g. ``"x.pt: data.pkl"``).
    """

    def __init__(
        self,
        file: Any,
        table: Mapping[tuple[str, str], Any],
        persistent_load: Callable[[Any], Any] | None = None,
        what: str = "pickle",
    ) -> None:
        super().__init__(file, encoding="latin1")
        self._table = table
        self._persistent = persistent_load
        self._what = what

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - pickle's hook
        try:
            return self._table[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"{self._what}: refuses the global {module}.{name}: it is not a known-safe name "
                "(nothing was imported or run)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102 - pickle's hook
        if self._persistent is None:
            raise UnsafeFileError(f"{self._what}: unexpected persistent id {pid!r}")
        return self._persistent(pid)


def restricted_loads(data: bytes | io.BufferedIOBase, table: Mapping[tuple[str, str], Any], **kwargs: Any) -> Any:
    """Unpickle ``data`` (bytes or a binary file) with :class:`RestrictedUnpickler`.

    Raises:
        UnsafeFileError: a global outside ``table``.
        FormatError: a malformed or truncated pickle.
    """
    file = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    what = kwargs.get("what", "pickle")
    try:
        return RestrictedUnpickler(file, table, **kwargs).load()
    except (UnsafeFileError, FormatError):
        raise
    except RecursionError:
        raise FormatError(f"{what}: nested too deeply") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise FormatError(f"{what}: not a valid pickle of tensors ({type(exc).__name__}: {exc})") from None
