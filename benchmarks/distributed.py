"""tensorfile.distributed against torch.distributed.checkpoint (DCP) on the same state, in the same run.

A 2-rank FSDP2 model (``fully_shard`` per layer, gloo on the CPU) with AdamW state from one step, taken with
``get_state_dict``: ``--size full`` is 8 Linear(2048, 2048) layers, about 400 MB of parameters and moments
(``small``: 8 Linear(512, 512), about 25 MB). Measured, each ``--repeat`` times, alternating which library
goes first:

* save: ``tensorfile.distributed.save`` against ``dcp.save`` (both fsync their files), wall time on rank 0
  from a barrier to the return (both end only when the checkpoint is committed on every rank); before each
  measurement ``os.sync()`` writes back what the previous one left dirty;
* async stall: the time until ``tensorfile.distributed.async_save`` / ``dcp.async_save`` return (each with a
  gloo group of its own for the background collectives, as DCP recommends), then the future is waited for
  outside the stall; the first call of each (it allocates the staging memory) is reported apart;
* resharded loads 2 -> 1 and 2 -> 3: a fresh FSDP2 model and optimizer on 1 and on 3 ranks, ``get_state_dict``,
  then ``tensorfile.distributed.load`` against ``dcp.load`` of the checkpoints just written (both from the
  page cache), then ``set_state_dict``; the two loaded states are compared bit for bit.

Printed: medians, the ratio tensorfile / DCP (< 1: tensorfile takes less time), and the save throughput in
MB/s. Targets (issue 14): save throughput >= DCP's and async stall <= DCP's; exit status 3 when one is missed.

Usage: python benchmarks/distributed.py [--size small|full] [--repeat 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.abspath(__file__)
SIZES = {"small": 512, "full": 2048}
LAYERS = 8


def _setup(size: str, seed: int = 0):
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    width = SIZES[size]
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(LAYERS)])
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if seed == 0:  # the saved run: one step, so that AdamW has its moments
        model(torch.randn(4, width)).sum().backward()
        optimizer.step()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return model, optimizer, {"model": model_sd, "optim": optim_sd}


def _nbytes(state) -> int:
    from torch.distributed.tensor import DTensor

    total = 0
    stack = [state]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, DTensor):
            total += value.numel() * value.element_size()
    return total


def _quiet() -> None:
    """Write back everything dirty (the previous save's pages) and line the ranks up, before a measurement."""
    import torch.distributed as dist

    os.sync()
    dist.barrier()


def _timed(fn) -> float:
    import torch.distributed as dist

    _quiet()
    start = time.perf_counter()
    fn()
    dist.barrier()
    return time.perf_counter() - start


def worker_save(size: str, repeat: int, folder: str) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    import tensorfile.distributed as tfd

    _, _, state = _setup(size)
    rank = dist.get_rank()
    dcp_group = dist.new_group(backend="gloo")
    out: dict = {"nbytes": _nbytes(state), "save": {"tensorfile": [], "dcp": []}, "stall": {"tensorfile": [], "dcp": []},
                 "async_total": {"tensorfile": [], "dcp": []}}  # fmt: skip

    def clear(name: str) -> None:
        if rank == 0:
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        dist.barrier()

    def save(lib: str) -> float:
        clear(lib)
        where = os.path.join(folder, lib)
        if lib == "tensorfile":
            return _timed(lambda: tfd.save(state, where))
        return _timed(lambda: dcp.save(state, checkpoint_id=where))

    def stall(lib: str) -> tuple[float, float]:
        clear(f"{lib}_async")
        where = os.path.join(folder, f"{lib}_async")
        _quiet()
        start = time.perf_counter()
        if lib == "tensorfile":
            future = tfd.async_save(state, where)
        else:
            future = dcp.async_save(state, checkpoint_id=where, process_group=dcp_group)
        returned = time.perf_counter() - start
        future.result()
        dist.barrier()
        return returned, time.perf_counter() - start

    for lib in ("tensorfile", "dcp"):  # first calls: staging memory allocated, groups made
        out.setdefault("first_stall", {})[lib] = stall(lib)[0]
    for i in range(repeat):
        order = ("tensorfile", "dcp") if i % 2 == 0 else ("dcp", "tensorfile")
        for lib in order:
            out["save"][lib].append(save(lib))
        for lib in order:
            returned, total = stall(lib)
            out["stall"][lib].append(returned)
            out["async_total"][lib].append(total)
    if rank == 0:
        with open(os.path.join(folder, "save.json"), "w") as f:
            json.dump(out, f)


def worker_load(size: str, repeat: int, folder: str) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.tensor import DTensor

    import tensorfile.distributed as tfd

    model, optimizer, state = _setup(size, seed=1)
    times: dict = {"tensorfile": [], "dcp": []}
    loaded: dict = {}
    for i in range(repeat):
        order = ("tensorfile", "dcp") if i % 2 == 0 else ("dcp", "tensorfile")
        for lib in order:
            where = os.path.join(folder, lib)
            if lib == "tensorfile":
                times[lib].append(_timed(lambda: tfd.load(state, where)))
            else:
                times[lib].append(_timed(lambda: dcp.load(state, checkpoint_id=where)))
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
            model_sd, _ = get_state_dict(model, optimizer)
            loaded[lib] = {k: v.to_local().clone() if isinstance(v, DTensor) else v for k, v in model_sd.items()}
    same = all(torch.equal(loaded["tensorfile"][k], loaded["dcp"][k]) for k in loaded["dcp"])
    if dist.get_rank() == 0:
        with open(os.path.join(folder, f"load{dist.get_world_size()}.json"), "w") as f:
            json.dump({"load": times, "same": same}, f)


def _torchrun(ranks: int, phase: str, size: str, repeat: int, folder: str) -> None:
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "TORCH_CPP_LOG_LEVEL": "ERROR"}
    done = subprocess.run([torchrun, "--standalone", f"--nproc-per-node={ranks}", HERE, "--worker", phase, "--size", size,
                           "--repeat", str(repeat), "--folder", folder], capture_output=True, text=True, env=env)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{phase} on {ranks} ranks failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        {"save": worker_save, "load": worker_load}[args.worker](args.size, args.repeat, args.folder)
        dist.destroy_process_group()
        return 0
    with tempfile.TemporaryDirectory(prefix="tensorfile-distributed-", dir=os.environ.get("BENCH_DIR")) as folder:
        _torchrun(2, "save", args.size, args.repeat, folder)
        _torchrun(1, "load", args.size, args.repeat, folder)
        _torchrun(3, "load", args.size, args.repeat, folder)
        with open(os.path.join(folder, "save.json")) as f:
            saved = json.load(f)
        loads = {}
        for ranks in (1, 3):
            with open(os.path.join(folder, f"load{ranks}.json")) as f:
                loads[ranks] = json.load(f)
    mb = saved["nbytes"] / 1e6
    print(f"# Distributed checkpoints: 2-rank FSDP2 + AdamW, {mb:.0f} MB of state ({args.size}), {args.repeat} "
          f"repeats; {dt.date.today()}")  # fmt: skip
    print()
    print("| measure | tensorfile s (median) | DCP s (median) | tensorfile / DCP |")
    print("| --- | ---: | ---: | ---: |")
    rows = [("save (2 ranks)", saved["save"]), ("async save: stall until it returns", saved["stall"]),
            ("async save: until committed", saved["async_total"]),
            ("load 2 -> 1 rank", loads[1]["load"]), ("load 2 -> 3 ranks", loads[3]["load"])]  # fmt: skip
    medians = {}
    for label, values in rows:
        t, d = statistics.median(values["tensorfile"]), statistics.median(values["dcp"])
        medians[label] = (t, d)
        print(f"| {label} | {t:.3f} | {d:.3f} | {t / d:.2f} |")
    first = saved["first_stall"]
    print(f"| first async save's stall (allocates) | {first['tensorfile']:.3f} | {first['dcp']:.3f} | "
          f"{first['tensorfile'] / first['dcp']:.2f} |")  # fmt: skip
    print()
    t, d = medians["save (2 ranks)"]
    print(f"save throughput: tensorfile {mb / t:.0f} MB/s, DCP {mb / d:.0f} MB/s; loaded states equal: "
          f"{loads[1]['same'] and loads[3]['same']}")  # fmt: skip
    missed = [name for name, ok in (("save throughput >= DCP", t <= d),
                                    ("async stall <= DCP", medians["async save: stall until it returns"][0]
                                     <= medians["async save: stall until it returns"][1])) if not ok]  # fmt: skip
    print(f"targets: {'met' if not missed else 'missed: ' + ', '.join(missed)}")
    if not (loads[1]["same"] and loads[3]["same"]):
        raise SystemExit("the states loaded by tensorfile and DCP differ")
    return 3 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
