"""`make docs`: the API reference, generated from the docstrings with pdoc, into build/api (git-ignored).

Fails (exit 1, each warning printed) on any warning pdoc or an imported module gives, so that a docstring pdoc
cannot read, or a name in ``__all__`` that does not resolve, is fixed rather than published.

Run: .venv/bin/python tools/api_docs.py [OUTPUT_FOLDER]
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path

#: The public modules, in the order the reference lists them.
MODULES = [
    "tensorfile",
    "tensorfile.lazy",  # tensorfile.open (left out of tensorfile.__all__: it would shadow the built-in)
    "tensorfile.errors",
    "tensorfile.limits",
    "tensorfile.parameters",
    "tensorfile.model",
    "tensorfile.checkpoint",
    "tensorfile.checkpoint.keras",
    "tensorfile.checkpoint.torch_data",
    "tensorfile.distributed",
]


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "build/api")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import pdoc
        import pdoc.render

        for name in MODULES:  # resolve names imported on first use (PEP 562), so that pdoc sees them
            module = importlib.import_module(name)
            for attr in getattr(module, "__all__", ()):
                getattr(module, attr, None)  # a name that does not resolve: pdoc warns
        pdoc.render.configure(docformat="google", footer_text="tensorfile")
        pdoc.pdoc(*MODULES, output_directory=out)
    for warning in caught:
        print(f"{warning.filename}:{warning.lineno}: {warning.category.__name__}: {warning.message}", file=sys.stderr)
    if caught:
        print(f"make docs: {len(caught)} warning(s); fix them", file=sys.stderr)
        return 1
    print(f"API reference: {out / 'index.html'} ({len(MODULES)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
