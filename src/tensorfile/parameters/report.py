"""What a parameter load did: :class:`LoadReport` and :class:`Mismatch` (``load_parameters``, ``restore``)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LoadReport", "Mismatch"]


@dataclass(frozen=True)
class Mismatch:
    """A parameter whose shape or dtype differs between the file and the model."""

    name: str
    file_shape: tuple[int, ...]
    file_dtype: str
    model_shape: tuple[int | None, ...]
    model_dtype: str

    def __str__(self) -> str:
        return (
            f"{self.name}: shape {self.file_shape} {self.file_dtype} in the file, "
            f"{self.model_shape} {self.model_dtype} in the model"
        )


@dataclass
class LoadReport:
    """What :func:`load_parameters` did.

    Attributes:
        missing_keys: model parameters the file does not provide (after select/rename).
        unexpected_keys: file parameters the model does not have.
        mismatched: parameters present in both whose shape or dtype differ (never loaded).
        loaded: parameters loaded into the model.
        skipped: file parameters with no counterpart in the model's framework
            (torch's ``num_batches_tracked`` going to Keras), not counted as problems.
        notes: hints about the problems (e.g. a file without layer information).
    """

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected or mismatched."""
        return not (self.missing_keys or self.unexpected_keys or self.mismatched)

    def problems(self) -> list[str]:
        """One line per kind of problem, in the spirit of torch's load_state_dict message."""
        lines = []
        if self.missing_keys:
            lines.append("Missing key(s) in the file: " + ", ".join(f'"{k}"' for k in self.missing_keys) + ".")
        if self.unexpected_keys:
            lines.append("Unexpected key(s) in the file: " + ", ".join(f'"{k}"' for k in self.unexpected_keys) + ".")
        lines += [f"size or dtype mismatch for {m}." for m in self.mismatched]
        return lines + (self.notes if lines else [])

    def merged(self, prefix: str, other: "LoadReport") -> None:
        """Add ``other``'s entries to this report, each name under ``prefix`` (``"model."``)."""
        self.missing_keys += [prefix + k for k in other.missing_keys]
        self.unexpected_keys += [prefix + k for k in other.unexpected_keys]
        self.mismatched += [Mismatch(prefix + m.name, m.file_shape, m.file_dtype, m.model_shape, m.model_dtype)
                            for m in other.mismatched]  # fmt: skip
        self.loaded += [prefix + k for k in other.loaded]
        self.skipped += [prefix + k for k in other.skipped]
        self.notes += [f"{prefix.rstrip('.')}: {n}" for n in other.notes]

    def __str__(self) -> str:
        head = f"loaded {len(self.loaded)} parameter(s)"
        if self.skipped:
            head += f", skipped {len(self.skipped)} with no counterpart ({', '.join(self.skipped)})"
        return "\n".join([head, *(self.problems() or self.notes)])
