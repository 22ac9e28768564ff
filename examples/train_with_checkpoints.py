"""Train the chapter's MLP on scikit-learn's digits with crash-safe checkpoints; resume exactly.

    python examples/train_with_checkpoints.py torch DIR [--steps N] [--async]
    python examples/train_with_checkpoints.py torch-epochs DIR [--epochs N] [--async]
    python examples/train_with_checkpoints.py nnx-epochs DIR [--epochs N] [--async]
    python examples/train_with_checkpoints.py keras DIR [--epochs N]
    python examples/train_with_checkpoints.py keras-epochs DIR [--epochs N]

Run it, kill it at any instant (even with SIGKILL, even mid-save), run it again
with the same DIR: it resumes from the latest valid step, and the final weights
are bit for bit those of a run that was never interrupted. The final weights go
to DIR/final.tensorfile.

PyTorch: model + Adam + LR scheduler + every RNG + the data order are in each checkpoint.
``torch-epochs``: epochs over the shuffled data set through ``ResumableLoader``, a
checkpoint after every batch: a kill in mid-epoch resumes at the next batch.
``nnx-epochs``: the same with Flax NNX (dropout RNG streams, ``nnx.Optimizer``), the
data position kept as two ints.
Keras: tensorfile's callback does what ModelCheckpoint plus BackupAndRestore do.
``keras-epochs``: dropout, shuffled epochs through ``checkpoint.keras.batches``, a
checkpoint every 5 batches: a kill in mid-epoch resumes at the next batch.
``--incremental``: incremental checkpoints (each step writes only what changed); the torch modes then
freeze the first layer (a fine-tuning run), so its tensors are shared by every step's blobs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tensorfile  # noqa: E402

DATA: str | None = None  # --data: a tensorfile file of {"X", "y"} to use instead of scikit-learn's digits
INCREMENTAL = False  # --incremental: CheckpointManager(incremental=True), torch's first layer frozen


def _manager(directory: str, **options: Any) -> Any:
    return tensorfile.CheckpointManager(directory, max_to_keep=3, incremental=INCREMENTAL, **options)


def digits() -> tuple[np.ndarray, np.ndarray]:
    if DATA is not None:  # the crash harness saves the digits once: every restart skips importing scikit-learn
        data = tensorfile.load(DATA, framework="numpy")
        return data["X"], data["y"]
    from sklearn.datasets import load_digits

    loaded = load_digits()
    return (loaded.data / 16.0).astype(np.float32), loaded.target.astype(np.int64)


def _torch_mlp() -> tuple[Any, Any, Any, Any]:
    """The digits as tensors, the chapter's MLP (with dropout) and its Adam optimizer, seeded."""
    import torch
    from torch import nn

    torch.set_num_threads(1)
    X, y = (torch.from_numpy(a) for a in digits())
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 10))
    if INCREMENTAL:  # fine-tuning: the first layer frozen, its tensors written once and shared by later steps
        net[0].requires_grad_(False)
    return X, y, net, torch.optim.Adam(net.parameters(), lr=1e-3)


def _torch_step(net: Any, opt: Any, sched: Any, xb: Any, yb: Any) -> Any:
    """One training step; returns the loss."""
    from torch import nn

    loss = nn.functional.cross_entropy(net(xb), yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    return loss


def train_torch(directory: str, steps: int, async_save: bool) -> None:
    import torch

    X, y, net, opt = _torch_mlp()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.5)
    order = torch.Generator().manual_seed(1)  # which examples each batch takes: the data position
    start = 0
    with _manager(directory, async_save=async_save) as manager:
        if manager.latest_step is not None:
            state = manager.restore(state={"model": net, "optimizer": opt, "scheduler": sched})
            order.set_state(state["data_order"])
            tensorfile.set_rng_state(state["rng"])
            start = state["step"] + 1
        print(f"ready: starting at step {start}", flush=True)
        for step in range(start, steps):
            batch = torch.randint(0, len(X), (64,), generator=order)
            loss = _torch_step(net, opt, sched, X[batch], y[batch])
            manager.save(step, {"model": net, "optimizer": opt, "scheduler": sched, "data_order": order.get_state(),
                                "rng": tensorfile.rng_state(), "step": step}, metrics={"loss": loss.item()})  # fmt: skip
    tensorfile.save(net.state_dict(), os.path.join(directory, "final.tensorfile"))
    print(f"done: {steps} steps, last loss {loss.item():.4f}" if start < steps else "done", flush=True)


def train_torch_epochs(directory: str, epochs: int, async_save: bool) -> None:
    import torch
    from torch.utils.data import TensorDataset

    from tensorfile.checkpoint import ResumableLoader

    X, y, net, opt = _torch_mlp()
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[40, 80], gamma=0.5)
    loader = ResumableLoader(TensorDataset(X, y), 64, shuffle=True, seed=0)
    step = 0
    with _manager(directory, async_save=async_save) as manager:
        if manager.latest_step is not None:
            state = manager.restore(state={"model": net, "optimizer": opt, "scheduler": sched, "data": loader})
            tensorfile.set_rng_state(state["rng"])
            step = state["step"] + 1
        print(f"ready: starting at step {step}", flush=True)
        while loader.epoch < epochs:
            for xb, yb in loader:
                _torch_step(net, opt, sched, xb, yb)
                manager.save(step, {"model": net, "optimizer": opt, "scheduler": sched, "data": loader,
                                    "rng": tensorfile.rng_state(), "step": step})  # fmt: skip
                step += 1
    tensorfile.save(net.state_dict(), os.path.join(directory, "final.tensorfile"))
    print(f"done: {epochs} epochs, {step} steps", flush=True)


def train_nnx_epochs(directory: str, epochs: int, async_save: bool) -> None:
    import jax.numpy as jnp
    import optax
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.hidden = nnx.Linear(64, 256, rngs=rngs)
            self.drop = nnx.Dropout(0.1, rngs=rngs)
            self.out = nnx.Linear(256, 10, rngs=rngs)

        def __call__(self, x):  # type: ignore[no-untyped-def]
            return self.out(self.drop(nnx.relu(self.hidden(x))))

    def loss_fn(model, xb, yb):  # type: ignore[no-untyped-def]
        return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

    @nnx.jit
    def train_step(model, opt, xb, yb):  # type: ignore[no-untyped-def]
        opt.update(model, nnx.grad(loss_fn)(model, xb, yb))

    X, y = digits()
    model = MLP(nnx.Rngs(params=0, dropout=1))
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    epoch, batch, step, size = 0, 0, 0, 64
    with _manager(directory, async_save=async_save) as manager:
        if manager.latest_step is not None:
            state = manager.restore(state={"model": model, "optimizer": opt})
            epoch, batch, step = state["epoch"], state["batch"], state["step"] + 1
        print(f"ready: starting at step {step}", flush=True)
        batches = -(-len(X) // size)
        compiled = False
        while epoch < epochs:
            order = np.random.default_rng(epoch).permutation(len(X))  # the epoch's order: from the epoch alone
            while batch < batches:
                take = order[batch * size : (batch + 1) * size]
                train_step(model, opt, jnp.asarray(X[take]), jnp.asarray(y[take]))
                batch += 1
                done = batch == batches
                manager.save(step, {"model": model, "optimizer": opt, "epoch": epoch + done,
                                    "batch": 0 if done else batch, "step": step})  # fmt: skip
                if not compiled:  # the first step compiled train_step: the crash harness times its kills from here
                    print("training", flush=True)
                    compiled = True
                step += 1
            epoch, batch = epoch + 1, 0
    tensorfile.save_parameters(model, os.path.join(directory, "final.tensorfile"))
    print(f"done: {epochs} epochs, {step} steps", flush=True)


def train_keras(directory: str, epochs: int) -> None:
    import keras

    from tensorfile.checkpoint.keras import CheckpointCallback

    keras.utils.set_random_seed(0)
    X, y = digits()
    model = keras.Sequential([keras.layers.Input((64,)), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(10)])  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with _manager(directory) as manager:
        model.fit(X, y, epochs=epochs, batch_size=64, shuffle=False, verbose=0, callbacks=[CheckpointCallback(manager)])
    tensorfile.save_parameters(model, os.path.join(directory, "final.tensorfile"))
    print(f"done: {epochs} epochs", flush=True)


def train_keras_epochs(directory: str, epochs: int) -> None:
    import keras

    from tensorfile.checkpoint.keras import CheckpointCallback, batches, steps_per_epoch

    keras.utils.set_random_seed(0)
    X, y = digits()
    model = keras.Sequential([keras.layers.Input((64,)), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(10)])  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    per_epoch = steps_per_epoch(len(X), 64)
    with _manager(directory) as manager:
        callback = CheckpointCallback(manager, every_n_batches=5)
        done = callback.resume(model)
        print(f"ready: starting at step {done}", flush=True)
        if done < epochs * per_epoch:
            model.fit(batches(X, y, 64, seed=0, start=done), steps_per_epoch=per_epoch, epochs=epochs,
                      initial_epoch=done // per_epoch, shuffle=False, verbose=0, callbacks=[callback])  # fmt: skip
    tensorfile.save_parameters(model, os.path.join(directory, "final.tensorfile"))
    print(f"done: {epochs} epochs", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("framework", choices=["torch", "torch-epochs", "nnx-epochs", "keras", "keras-epochs"])
    parser.add_argument("directory")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--async", dest="async_save", action="store_true")
    parser.add_argument("--incremental", action="store_true", help="incremental checkpoints (torch: first layer frozen)")
    parser.add_argument("--data", help="a tensorfile file of X and y, saved from digits() (default: scikit-learn's)")
    args = parser.parse_args(argv)
    global DATA, INCREMENTAL
    DATA, INCREMENTAL = args.data, args.incremental
    if args.framework == "torch":
        train_torch(args.directory, args.steps, args.async_save)
    elif args.framework == "torch-epochs":
        train_torch_epochs(args.directory, args.epochs, args.async_save)
    elif args.framework == "nnx-epochs":
        train_nnx_epochs(args.directory, args.epochs, args.async_save)
    elif args.framework == "keras-epochs":
        train_keras_epochs(args.directory, args.epochs)
    else:
        train_keras(args.directory, args.epochs)


if __name__ == "__main__":
    main(sys.argv[1:])
