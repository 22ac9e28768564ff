"""Run inside .venv-mxnet by the main environment's tests: write MXNet files, check others' files.

Usage:
    exchange.py save DIR    write DIR/from-mxnet (the matrix reference as mx.np arrays),
                            DIR/gluon_mlp.params, DIR/gluon_mlp.model (save_model) and DIR/gluon_io
                            (X, Y of that MLP)
    exchange.py check DIR   load every DIR/from-* with framework="mxnet"; print problems, exit 1 if any
"""

from __future__ import annotations

import glob
import os
import sys

import mxnet as mx
from mxnet import np, npx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tensorfile  # noqa: E402
from tensorfile.model import save_model  # noqa: E402
from matrix_data import check, reference  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gluon_mlp import MLP  # noqa: E402



def save(folder: str) -> None:
    npx.set_np()
    tensorfile.save({k: np.array(v, dtype=v.dtype) for k, v in reference().items()}, os.path.join(folder, "from-mxnet"))
    mx.random.seed(0)
    net = MLP()
    net.initialize()
    X = np.random.uniform(size=(3, 20))
    Y = net(X)
    tensorfile.save_parameters(net, os.path.join(folder, "gluon_mlp.params"))
    save_model(net, os.path.join(folder, "gluon_mlp.model"), X)  # architecture too (issue 13)
    tensorfile.save({"X": X, "Y": Y}, os.path.join(folder, "gluon_io"))


def check_all(folder: str) -> int:
    problems = []
    for path in sorted(glob.glob(os.path.join(folder, "from-*"))):
        loaded = tensorfile.load(path, framework="mxnet")
        kinds = {type(v).__module__.partition(".")[0] for v in loaded.values()}
        if kinds != {"mxnet"}:
            problems.append(f"{path}: loaded as {kinds}")
        problems += check(loaded, f"{os.path.basename(path)} -> mxnet")
        print(f"checked {os.path.basename(path)} -> mxnet")
    print("\n".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    command, folder = sys.argv[1], sys.argv[2]
    if command == "save":
        save(folder)
    else:
        sys.exit(check_all(folder))
