"""Exercise 3 of the chapter: "How would you save the network architecture and parameters? What restrictions
would you impose?" One answer, run end to end.

1. The chapter's MLP (a custom ``forward``) is saved with ``tensorfile.save_model``: the parameters under their
   state_dict names, plus a declarative graph of the forward pass over a closed vocabulary of ops.
2. A second process that has never seen the ``MLP`` class rebuilds it in PyTorch, Keras and NumPy from the
   file alone and gets the same outputs. Nothing in the file is code: an op is a word of the vocabulary.
3. The restrictions: a forward that branches on a tensor's value is refused, naming the node and the op.

Run: python examples/save_architecture.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import tensorfile


class MLP(nn.Module):
    """The chapter's MLP: 20 inputs, a hidden layer of 256 with ReLU, 10 outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(20, 256)
        self.output = nn.Linear(256, 10)

    def forward(self, X):
        return self.output(F.relu(self.hidden(X)))


class Moody(nn.Module):
    """A forward whose path depends on the data: no fixed graph describes it."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(20, 10)

    def forward(self, X):
        return self.hidden(X) if X.sum() > 0 else -self.hidden(X)


REBUILD = """
import sys, numpy as np, tensorfile
path, x = sys.argv[1], np.load(sys.argv[2])
for framework in ("torch", "keras", "numpy"):
    model = tensorfile.load_model(path, framework)
    y = model(x) if framework != "torch" else model(__import__("torch").from_numpy(x)).detach()
    y = np.asarray(y)
    print(f"  rebuilt in {framework:<6} -> output[0, :3] = {[round(float(v), 4) for v in y[0, :3]]}, max |diff| "
          f"{float(np.abs(y - np.load(sys.argv[3])).max()):.1e}")
print("  the MLP class was never defined here:", "MLP" not in dir(sys.modules["__main__"]))
"""


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tensorfile-arch-") as folder:
        run(folder)


def run(folder: str) -> None:
    torch.manual_seed(0)
    net = MLP().eval()
    X = torch.rand(2, 20)
    path = os.path.join(folder, "mlp.tensorfile")
    tensorfile.save_model(net, path, X)
    print(f"saved mlp.tensorfile: parameters {sorted(tensorfile.open(path, framework='numpy').keys())}")
    graph = tensorfile.model.read_graph(path)
    print("the graph:", " -> ".join(f"{n.name}({n.op})" for n in graph.nodes))
    with torch.no_grad():
        Y = net(X).numpy()
    np.save(os.path.join(folder, "x.npy"), X.numpy())
    np.save(os.path.join(folder, "y.npy"), Y)
    print("a fresh process rebuilds it from the file alone:")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", REBUILD, path, os.path.join(folder, "x.npy"), os.path.join(folder, "y.npy")],
                         capture_output=True, text=True, env=env, check=True)  # fmt: skip
    print(out.stdout, end="")
    print("restriction: a forward that branches on the data is refused:")
    try:
        tensorfile.save_model(Moody(), os.path.join(folder, "moody.tensorfile"), X)
    except tensorfile.UnsupportedArchitectureError as exc:
        print(f"  UnsupportedArchitectureError: {str(exc)[:150]}")


if __name__ == "__main__":
    main()
