"""Names numbered by a framework's process-wide counters, aligned between a file and a model.

Gluon (MXNet 1.x) names each parameter after a count of the blocks built so far in the process
(``dense0_weight``, ``hybridsequential0_batchnorm1_gamma``); Keras 3 names layers the same way
(``dense``, ``dense_1``, ``dense_2``...). The same architecture built again, in another process or
after other blocks, gets other numbers (``dense3_weight``), so the names of a file and of a fresh
model differ only in their numbers.

:func:`align` pairs such names: names are grouped by their pattern (the numbers abstracted:
``dense#_weight``), each group is ordered by its numbers (the order the layers were built in, the
same for the same code), and the n-th file name of a group goes with the n-th model name of it.
A group whose two sides have different sizes, or whose shapes fit only another pairing, is not
aligned: :attr:`Alignment.conflicts` names both sides.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

__all__ = ["Alignment", "align", "few", "gluon_key", "keras_key"]

Shape = Sequence[int | None] | None
Key = Callable[[str], tuple[str, tuple[int, ...]]]

_DIGITS = re.compile(r"\d+")


def gluon_key(name: str) -> tuple[str, tuple[int, ...]]:
    """A Gluon global name's pattern and numbers: ``hybridsequential2_dense10_weight`` ->
    ``("hybridsequential#_dense#_weight", (2, 10))``."""
    return _DIGITS.sub("#", name), tuple(int(d) for d in _DIGITS.findall(name))


def keras_key(name: str) -> tuple[str, tuple[int, ...]]:
    """A dotted name of Keras layer names' pattern and numbers: each part's ``_<n>`` suffix, which Keras
    adds to make an automatic name unique (none for the first: ``dense`` is 0): ``dense_3.kernel`` ->
    ``("dense.kernel", (3, 0))``."""
    bases, numbers = [], []
    for part in name.split("."):
        base, _, digits = part.rpartition("_")
        numbered = bool(base) and digits.isascii() and digits.isdigit()
        bases.append(base if numbered else part)
        numbers.append(int(digits) if numbered else 0)
    return ".".join(bases), tuple(numbers)


@dataclass
class Alignment:
    """What :func:`align` found.

    Attributes:
        renames: file name -> model name, for the names that differ.
        conflicts: one line per group that could not be aligned, naming the file's and the model's names.
    """

    renames: dict[str, str] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)


def _fits(shape: Shape, model: Shape) -> bool:
    if shape is None or model is None:
        return True
    return len(shape) == len(model) and all(m is None or m == d for d, m in zip(shape, model))


def few(names: Sequence[str]) -> str:
    """Up to four names, then how many more (for messages)."""
    shown = ", ".join(names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _groups(names: Mapping[str, Shape], key: Key) -> dict[str, list[str]]:
    groups: dict[str, list[tuple[tuple[int, ...], str]]] = {}
    for name in names:
        pattern, numbers = key(name)
        groups.setdefault(pattern, []).append((numbers, name))
    return {pattern: [name for _, name in sorted(items)] for pattern, items in groups.items()}


def align(file: Mapping[str, Shape], model: Mapping[str, Shape], key: Key) -> Alignment:
    """Pair the file's names with the model's where they differ only in counters' numbers.

    Args:
        file: the file's names -> array shapes.
        model: the model's names -> shapes (None, or None in it, where not known yet).
        key: a name -> (pattern, numbers): :func:`gluon_key` or :func:`keras_key`.

    Returns:
        :class:`Alignment`; nothing to rename when every file name is a model name already (the
        same model, or a part of it), though a group whose shapes fit only another pairing is
        still a conflict.
    """
    out = Alignment()
    part = all(name in model for name in file)  # the same names (or some of them): kept, only checked
    theirs = _groups(model, key)
    conflicts: dict[tuple[Any, ...], list[str]] = {}  # the same layers' other parameters share one line
    for pattern, names in _groups(file, key).items():
        mine = theirs.get(pattern)
        if mine is None or (part and mine != names):
            continue
        numbers = (tuple(key(n)[1] for n in names), tuple(key(m)[1] for m in mine))
        if len(mine) != len(names):
            conflicts.setdefault(numbers, []).append(
                f"{len(names)} in the file ({few(names)}), {len(mine)} in the model ({few(mine)})")
            continue
        pairs = list(zip(names, mine))
        shapes = [model[m] for m in mine]
        known = all(s is not None and None not in s for s in shapes)
        other_order = known and Counter(tuple(file[f] or ()) for f in names) == Counter(tuple(s or ()) for s in shapes)
        if other_order and not all(_fits(file[f], model[m]) for f, m in pairs):
            conflicts.setdefault(numbers, []).append(
                f"the numbers pair {few([f'{f} with {m}' for f, m in pairs])}, but the shapes fit another pairing "
                "(were the layers built in another order?)")  # fmt: skip
            continue
        out.renames.update((f, m) for f, m in pairs if f != m)
    for lines in conflicts.values():
        more = f" (and {len(lines) - 1} more parameter(s) of these layers)" if lines[1:] else ""
        out.conflicts.append(lines[0] + more)
    return out
