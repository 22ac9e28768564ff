"""`make demo`: the "File I/O" chapter through tensorfile in every framework, then one file across all.

Each framework's cells run in a fresh temporary folder (MXNet's in its side
environment, .venv-mxnet, since MXNet 1.9.1 needs NumPy < 1.24). Then the
PyTorch parameter file is listed as `tensorfile ls` shows it, opened with the
reference safetensors library, and loaded into TensorFlow, JAX and MXNet; `tensorfile convert`
turns it into a torch.save file, an .npz and an MXNet file that torch, NumPy and Gluon load with
their own loaders. Last, the
chapter's MLP trains on scikit-learn's digits with a checkpoint every step, is killed
with SIGKILL at random instants, resumes, and ends bit-identical to an uninterrupted run.

`python examples/chapter.py TensorFlow JAX` runs only those frameworks' cells. TensorFlow's start-up log
lines are left out of the output (examples/quiet_logs.py).
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from quiet_logs import in_child, run_filtered  # noqa: E402  # examples/ is on sys.path: this script's folder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MXNET_PYTHON = ROOT / ".venv-mxnet" / "bin" / "python"
SECTIONS = [("NumPy", "file_io_numpy.py"), ("PyTorch", "file_io_torch.py"), ("TensorFlow", "file_io_tensorflow.py"),
            ("JAX", "file_io_jax.py"), ("MXNet", "file_io_mxnet.py")]  # fmt: skip

ACROSS = """
import sys, tensorfile
for framework in sys.argv[2:]:
    params = tensorfile.load(sys.argv[1], framework=framework)
    w = params["hidden.weight"]
    first = [round(float(w[0, i]), 4) for i in range(3)]
    print(f"{framework:>10}: hidden.weight is a {type(w).__module__}.{type(w).__name__}, "
          f"dtype {w.dtype}, shape {tuple(w.shape)}, w[0, :3] = {first}")
"""


BACK_IN_TORCH_AND_NUMPY = """
import sys, numpy as np, torch
from torch import nn
root = sys.argv[1]
net = nn.Sequential()
net.add_module("hidden", nn.Linear(20, 256)); net.add_module("relu", nn.ReLU()); net.add_module("output", nn.Linear(256, 10))
net.load_state_dict(torch.load(f"{root}/mlp.pt", weights_only=True))  # torch's own safe loader
X = torch.linspace(-1, 1, 40).reshape(2, 20)
print(f"     torch.load(weights_only=True) -> MLP(X).sum() = {net(X).sum().item():.6f}")
with np.load(f"{root}/mlp.npz", allow_pickle=False) as z:
    print(f"     np.load, pickles not allowed  -> {sorted(z.files)}")
"""

BACK_IN_GLUON = """
import sys, numpy as onp, mxnet as mx
from mxnet.gluon import nn
class MLP(nn.Block):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Dense(256, activation="relu")
        self.output = nn.Dense(10)
    def forward(self, x):
        return self.output(self.hidden(x))
net = MLP()
net.load_parameters(sys.argv[1] + "/mlp-gluon.params")  # MXNet's own loader; Dense weight is (out, in) like torch
X = mx.nd.array(onp.linspace(-1, 1, 40, dtype=onp.float32).reshape(2, 20))
print(f"Gluon load_parameters (MXNet 1.9.1) -> MLP(X).sum() = {net(X).sum().asscalar():.6f}")
"""


def banner(title: str) -> None:
    print(f"\n{'=' * 20} {title} {'=' * (56 - len(title))}", flush=True)


def main(only: list[str]) -> None:
    unknown = set(only) - {title for title, _ in SECTIONS}
    if unknown:
        sys.exit(f"unknown section(s) {sorted(unknown)}; expected some of {[title for title, _ in SECTIONS]}")
    with tempfile.TemporaryDirectory(prefix="tensorfile-demo-") as root:
        for title, script in SECTIONS:
            if only and title not in only:
                continue
            banner(f"File I/O in {title}")
            folder = Path(root) / title.lower()
            folder.mkdir()
            if title == "MXNet":
                subprocess.run([str(MXNET_PYTHON), str(HERE / script)], cwd=folder, check=True)
                continue
            os.chdir(folder)
            runpy.run_path(str(HERE / script), run_name="__main__")
        if only:
            os.chdir(HERE)
            return
        torch_file = Path(root) / "pytorch" / "mlp.params"
        banner("tensorfile ls mlp.params (PyTorch)")
        exe = Path(sys.executable).with_name("tensorfile")
        subprocess.run([str(exe), "ls", str(torch_file)], check=True)
        banner("Any safetensors tool opens the same file")
        from safetensors import safe_open

        with safe_open(str(torch_file), "pt") as f:
            for name in sorted(f.keys()):
                t = f.get_tensor(name)
                print(f"safetensors sees {name}: {t.dtype} {tuple(t.shape)}")
        banner("One file saved in PyTorch, loaded in every framework")
        sys.stdout.flush()
        subprocess.run([sys.executable, "-c", ACROSS, str(torch_file), "torch", "tensorflow", "jax", "numpy"], check=True)
        subprocess.run([str(MXNET_PYTHON), "-c", ACROSS, str(torch_file), "mxnet"], check=True)
        banner("Back to each tool's own format: tensorfile convert")
        sys.stdout.flush()
        for target, fmt in (("mlp.pt", []), ("mlp.npz", []), ("mlp-gluon.params", ["--format", "mxnet"])):
            subprocess.run([str(exe), "convert", str(torch_file), str(Path(root) / target), *fmt], check=True)  # suffix, or --format
        subprocess.run([sys.executable, "-c", BACK_IN_TORCH_AND_NUMPY, root], check=True)
        subprocess.run([str(MXNET_PYTHON), "-c", BACK_IN_GLUON, root], check=True)
        banner("Training with checkpoints: SIGKILL, resume, compare")
        train_and_kill(Path(root) / "training")
        os.chdir(HERE)


def train_and_kill(folder: Path) -> None:
    """The chapter's MLP on scikit-learn's digits, killed with SIGKILL at random steps, resumed each time."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import crash_harness

    folder.mkdir()
    print("training examples/train_with_checkpoints.py (MLP, Adam, LR schedule, dropout; a checkpoint every step)")
    print("once uninterrupted, then again while killing it with SIGKILL at random instants...", flush=True)
    result = crash_harness.run(kills=3, steps=200, async_save=False, seed=7, folder=folder, log=lambda line: print(" ", line),
                               fork=True)  # the runs to be killed are forks of a process that imported torch once
    resumed = ", ".join(str(s) for s in result["resumed_from"][1:])
    print(f"killed {result['kills']} times; the runs resumed at steps {resumed} and finished")
    print(f"final weights bit-identical to the uninterrupted run: {result['identical']}")
    assert result["identical"]


if __name__ == "__main__":
    if not in_child():
        sys.exit(run_filtered([__file__, *sys.argv[1:]]))
    main(sys.argv[1:])
