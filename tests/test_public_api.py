"""The public face: `__all__` leaves the built-in `open` alone, the package docstring is current, the licence."""

from __future__ import annotations

import builtins
import re

import tensorfile
from conftest import ROOT


def test_star_import_does_not_shadow_open():
    assert "open" not in tensorfile.__all__ and callable(tensorfile.open)
    namespace: dict = {}
    exec("from tensorfile import *", namespace)
    assert "open" not in namespace and "save" in namespace and "CheckpointManager" in namespace
    assert set(tensorfile.__all__) <= set(dir(tensorfile)) and builtins.open is open


def test_the_package_docstring_names_every_framework_and_entry_point():
    doc = tensorfile.__doc__
    for word in ("NumPy", "PyTorch", "TensorFlow", "JAX", "MXNet", "save_parameters", "save_model", "CheckpointManager"):
        assert word in doc, word
    assert "more to come" not in doc


def test_licence_and_classifiers():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Copyright 2026 the tensorfile authors" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = (ROOT / "pyproject.toml").read_text()  # (tomllib is 3.11+; the project supports 3.10)
    assert 'license = "Apache-2.0"' in project and 'requires-python = ">=3.10"' in project
    versions = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', project)
    assert versions == ["3.10", "3.11", "3.12", "3.13"]
