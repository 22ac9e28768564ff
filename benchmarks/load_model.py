"""``tensorfile.load_model`` against ``torch.export.load`` and ``keras.saving.load_model``: the chapter's MLP
(20 -> 256 -> relu -> 10) rebuilt from its file in a fresh process each time (``fresh.py``: shuffled
rounds, imports timed apart from the load).

torch: the MLP saved with ``tensorfile.save_model`` and with ``torch.export.export`` + ``torch.export.save``
(.pt2); each load also runs the model once on a batch. Imports (timed apart) include the modules
each load needs, as ``import keras`` / ``import torch`` import theirs. Keras: a Sequential MLP of the same sizes (Keras
loads a subclassed model only with its class registered in the loading process) saved with
``save_model`` and ``model.save("mlp.keras")``; ours rebuilt with ``framework="keras"``.

Target (issue 13): load_model faster than both (ratio = peer median / ours >= 1). Exit 3 when missed.

Usage: python benchmarks/load_model.py [--repeat 7] [--dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fresh import Op, Table, cache_mode, machine_line, rounds, warm  # noqa: E402

WRITE = """
import os, sys, numpy as np, torch, keras, tensorfile
folder = sys.argv[1]
torch.manual_seed(0)
class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(20, 256)
        self.output = torch.nn.Linear(256, 10)
    def forward(self, X):
        return self.output(torch.relu(self.hidden(X)))
net, x = MLP().eval(), torch.rand(2, 20)
tensorfile.save_model(net, os.path.join(folder, "mlp.tensorfile"), x)
torch.export.save(torch.export.export(net, (x,)), os.path.join(folder, "mlp.pt2"))
k = keras.Sequential([keras.Input((20,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
tensorfile.save_model(k, os.path.join(folder, "kmlp.tensorfile"), np.random.rand(2, 20).astype("float32"))
k.save(os.path.join(folder, "kmlp.keras"))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args(argv)
    import subprocess

    folder = tempfile.mkdtemp(prefix="tensorfile-load-model-", dir=args.dir)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    try:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run([sys.executable, "-c", WRITE, folder], check=True, env=env, capture_output=True)
        x = "x = np.random.rand(2, 20).astype('float32')"
        ops = [
            Op("tensorfile.load_model(torch)", f"m = tensorfile.load_model({p('mlp.tensorfile')!r}, 'torch')\n"
               "with torch.no_grad(): m(torch.from_numpy(x))", "import numpy as np, torch, tensorfile.model.build_torch", x),
            Op("torch.export.load", f"m = torch.export.load({p('mlp.pt2')!r}).module()\n"
               "with torch.no_grad(): m(torch.from_numpy(x))", "import numpy as np, torch", x),
            Op("tensorfile.load_model(keras)", f"m = tensorfile.load_model({p('kmlp.tensorfile')!r}, 'keras')\nm(x)",
               "import numpy as np, keras, tensorfile.model.build_keras", x),
            Op("keras.saving.load_model", f"m = keras.saving.load_model({p('kmlp.keras')!r})\nm(x)",
               "import numpy as np, keras", x),
        ]  # fmt: skip
        warm([folder])
        print(f"# load_model: the chapter MLP rebuilt from its file, fresh process; {args.repeat} rounds")
        print(f"machine: {machine_line()}; {dt.date.today()}; {cache_mode(False)}")
        table = Table(rounds(ops, args.repeat), ops)
        print()
        table.print()
        print()
        missed = table.print_ratios([
            ("load_model vs torch.export.load", "torch.export.load", "tensorfile.load_model(torch)", 1.0),
            ("load_model vs keras.saving.load_model", "keras.saving.load_model", "tensorfile.load_model(keras)", 1.0),
        ])  # fmt: skip
        return 3 if missed else 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
