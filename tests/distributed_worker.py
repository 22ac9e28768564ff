"""One rank of the multi-process checks of tests/test_distributed.py, run by ``torchrun`` (gloo, CPU).

    torchrun --standalone --nproc-per-node N tests/distributed_worker.py PHASE FOLDER

Phases:

* ``train`` (2 ranks): save a rich state (FSDP2 model + AdamW state through ``get_state_dict``, a tensor
  parallel DTensor sharded by columns, an unevenly row-sharded DTensor, a replicated tensor, plain values)
  with ``save``; check that a save fails on every rank, committing nothing, when one rank cannot store its
  state or the ranks disagree; save with ``async_save`` (changing the tensors before the future is waited for), and write the
  gathered state with ``tensorfile.save`` as the reference; then train with a ``CheckpointManager`` (a save
  per step, ``max_to_keep=2``, best-1 by loss), check that a second manager on the folder is refused on every
  rank, and at step ``KILL_AT`` rank 1 kills itself (SIGKILL) after writing its file of the step, before the
  commit: torchrun fails.
* ``resume`` (2 ranks): restore the latest committed step into a fresh model and optimizer (async manager),
  train to ``STEPS``; train a fresh model from scratch without checkpoints; the weights and optimizer state
  of both must be bit-identical.
* ``load`` (4 ranks): load the rich state with 4 ranks (other placements), with 3 (a sub-mesh of ranks 0-2)
  and with 1 (rank 0 alone), FSDP2 model and AdamW through ``set_state_dict``: every tensor equal to the
  reference, optimizer state included.

Each rank writes ``FOLDER/<phase>-ok-<rank>`` when every check passed.
"""

from __future__ import annotations

import os
import signal
import sys

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

import tensorfile
import tensorfile.distributed as tfd
import tensorfile.distributed.saving as tfd_save

STEPS = 8
KILL_AT = 5


def model_on(mesh: DeviceMesh, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 33), torch.nn.ReLU(), torch.nn.Linear(33, 5))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> float:
    """One step on this rank's batch of ``step`` (the same batches on every run)."""
    g = torch.Generator().manual_seed(1000 * dist.get_rank() + step)
    x, y = torch.randn(8, 16, generator=g), torch.randn(8, 5, generator=g)
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def full(value):
    """The gathered value of a state (a collective on each DTensor's mesh)."""
    if isinstance(value, DTensor):
        return value.full_tensor()
    if isinstance(value, dict):
        return {k: full(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(full(v) for v in value)
    return value


def rich_state(mesh: DeviceMesh, model, optimizer) -> dict:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    columns = distribute_tensor(torch.arange(60, dtype=torch.float32).reshape(6, 10), mesh, [Shard(1)])
    rows = distribute_tensor(torch.arange(15, dtype=torch.bfloat16).reshape(5, 3), mesh, [Shard(0)])
    return {"model": model_sd, "optim": optim_sd, "tp": {"columns": columns, "rows": rows},
            "replicated": torch.arange(7, dtype=torch.int64), "epoch": 3, "run": "fsdp2",
            "betas": (0.9, 0.99), "nothing": None}


def assert_equal(got, want, where: str = "state") -> None:
    if isinstance(want, torch.Tensor):
        got = got.full_tensor() if isinstance(got, DTensor) else got
        assert isinstance(got, torch.Tensor), (where, type(got))
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), where
    elif isinstance(want, dict):
        assert set(got) == set(want), (where, sorted(got), sorted(want))
        for k in want:
            assert_equal(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            assert_equal(a, b, f"{where}[{i}]")
    else:
        assert got == want, (where, got, want)


def passed(folder: str, phase: str) -> None:
    with open(os.path.join(folder, f"{phase}-ok-{dist.get_rank()}"), "w") as f:
        f.write("ok\n")


def kill_rank_one_before_commit() -> None:
    """From now on rank 1 kills itself right after writing its file of a save (before the commit)."""
    original = tfd_save.write_shard

    def write_then_die(*args, **kwargs):
        name = original(*args, **kwargs)
        if dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return name

    tfd_save.write_shard = write_then_die


def failing(folder: str) -> None:
    """A rank whose state cannot be saved, and ranks that disagree: every rank raises, nothing is committed."""
    rank = dist.get_rank()
    where = os.path.join(folder, "rich")
    before = sorted(os.listdir(where))
    try:
        tfd.save({"x": 1 if rank == 0 else object()}, where)
        raise AssertionError("saved a state that rank 1 cannot store")
    except tensorfile.UnsupportedTypeError:
        assert rank == 1  # its own error
    except tensorfile.CheckpointCommitError as exc:
        assert rank == 0 and "rank 1 failed: UnsupportedTypeError" in str(exc), exc
    try:
        tfd.save({"x": torch.zeros(3 + rank)}, where)  # plain tensors must be the same on every rank
        raise AssertionError("saved states that disagree")
    except tensorfile.CheckpointCommitError as exc:
        assert "rank 1 holds other tensors" in str(exc), exc
    dist.barrier()
    assert sorted(os.listdir(where)) == before  # the checkpoint there is untouched, no file left behind


def phase_train(folder: str) -> None:
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = model_on(mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in (1, 2):
        train_step(model, optimizer, step)
    state = rich_state(mesh, model, optimizer)
    tfd.save(state, os.path.join(folder, "rich"))
    reference = full(state)  # every rank takes part in the gathers
    if dist.get_rank() == 0:
        tensorfile.save(reference, os.path.join(folder, "reference.tensorfile"))
    failing(folder)
    future = tfd.async_save(state, os.path.join(folder, "rich_async"))
    with torch.no_grad():  # the staged copy is what gets written, not what the tensors become
        for p in model.parameters():
            p.add_(100.0)
        state["replicated"].add_(100)
    assert future.result() is None
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(100.0)
        state["replicated"].sub_(100)

    model = model_on(mesh)  # a fresh run for the manager, from the same start as phase_resume's reference
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    manager = tensorfile.CheckpointManager(os.path.join(folder, "run"), max_to_keep=2, keep_best=1, best_metric="loss")
    try:
        tensorfile.CheckpointManager(os.path.join(folder, "run"))
        raise AssertionError("a second manager on the folder was not refused")
    except tensorfile.CheckpointLockedError:
        pass  # on every rank: rank 0 failed to lock and told the others
    for step in range(1, STEPS + 1):
        train_step(model, optimizer, step)
        if step == KILL_AT:
            passed(folder, "train")
            kill_rank_one_before_commit()
        manager.save(step, {"model": model, "optim": optimizer, "data": {"step": step}}, metrics={"loss": -step})


def phase_resume(folder: str) -> None:
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = model_on(mesh, seed=123)  # other weights: only the restore can make them right
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    manager = tensorfile.CheckpointManager(os.path.join(folder, "run"), max_to_keep=2, keep_best=1, best_metric="loss",
                                           async_save=True)  # fmt: skip
    assert manager.steps == [KILL_AT - 2, KILL_AT - 1], manager.steps  # the killed step was never committed
    assert manager.best_step == KILL_AT - 1
    restored = manager.restore(state={"model": model, "optim": optimizer})
    assert restored.step == KILL_AT - 1 and restored["data"] == {"step": KILL_AT - 1}, (restored.step, restored["data"])
    for step in range(restored.step + 1, STEPS + 1):
        loss = train_step(model, optimizer, step)
        manager.save(step, {"model": model, "optim": optimizer, "data": {"step": step}}, metrics={"loss": loss})
    manager.close()
    assert manager.steps[-1] == STEPS and len(manager.steps) <= 3, manager.steps

    reference = model_on(mesh)
    reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    for step in range(1, STEPS + 1):
        train_step(reference, reference_optimizer, step)
    got, want = get_state_dict(model, optimizer), get_state_dict(reference, reference_optimizer)
    for a, b in zip(got, want):  # the local shards, bit for bit
        assert_equal({k: v.to_local() if isinstance(v, DTensor) else v for k, v in _flat(a).items()},
                     {k: v.to_local() if isinstance(v, DTensor) else v for k, v in _flat(b).items()})
    passed(folder, "resume")


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list):
        return _flat(dict(enumerate(value)), prefix)
    return {prefix: value}


def load_on(mesh: DeviceMesh, folder: str, reference: dict) -> None:
    """Load the rich state onto ``mesh`` (other placements than saved) and compare it with the reference."""
    model = model_on(mesh, seed=7)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5.0)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd,
             "tp": {"columns": distribute_tensor(torch.zeros(6, 10), mesh, [Shard(0)]),
                    "rows": distribute_tensor(torch.zeros(5, 3, dtype=torch.bfloat16), mesh, [Shard(1)])},
             "replicated": torch.zeros(7, dtype=torch.int64), "epoch": 0, "run": "", "betas": (0.0, 0.0),
             "nothing": 1}  # fmt: skip
    tfd.load(state, os.path.join(folder, "rich"))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    model_sd, optim_sd = get_state_dict(model, optimizer)  # what the model and optimizer now hold
    assert optimizer.param_groups[0]["lr"] == 1e-2
    assert_equal(full({**state, "model": model_sd, "optim": optim_sd}), reference)


def phase_load(folder: str) -> None:
    reference = tensorfile.load(os.path.join(folder, "reference.tensorfile"))
    rank = dist.get_rank()
    load_on(init_device_mesh("cpu", (dist.get_world_size(),)), folder, reference)
    three = DeviceMesh("cpu", [0, 1, 2])  # every rank makes the sub-meshes (new_group is collective)
    one = DeviceMesh("cpu", [0])
    if rank < 3:
        load_on(three, folder, reference)
    if rank == 0:
        load_on(one, folder, reference)
    dist.barrier()
    passed(folder, "load")


if __name__ == "__main__":
    dist.init_process_group("gloo")
    phase, where = sys.argv[1], sys.argv[2]
    {"train": phase_train, "resume": phase_resume, "load": phase_load}[phase](where)
    dist.destroy_process_group()
