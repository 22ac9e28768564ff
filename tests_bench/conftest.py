"""The benchmark scripts' smoke runs (`make test-bench`, run by CI after `make test`): each runs a script of
benchmarks/ at its smallest size in fresh processes, which takes minutes, so they live outside `make test`."""

from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
