"""The GPU path against its peers, in one run: loads onto a CUDA device, and the async-checkpoint stall of CUDA state.

Loads (each in a fresh process, ``--repeat`` shuffled rounds, medians; :mod:`fresh`): a GPT-2-shaped float32
state dict (``--size full``: 1.32 GiB; ``small``: 178 MiB; ``tiny``: a few MiB, for checking the script)
saved by each library, then loaded onto the device:

* ``tensorfile.load(map_location=DEVICE)``: pinned host buffers, the read overlapped with the copies
  (``tensorfile.frameworks.torch_device``); the bytes it streamed are checked to be the whole state;
* ``torch.load(map_location=DEVICE, weights_only=True)``;
* safetensors ``load_file(device=DEVICE)``;
* ``tensorfile.load_parameters`` into a model whose parameters are on the device, against
  ``model.load_state_dict(torch.load(map_location=DEVICE))``.

Each child creates the CUDA context and loads a tiny file of the same format in its imports (reported apart), and
ends its timed part with ``torch.cuda.synchronize()``.

Stall (one fresh process per mode): the same state on the device is saved ``--repeat`` + 1 times by
``CheckpointManager(async_save=True)`` and by DCP's ``torch.distributed.checkpoint.async_save`` (one process,
``no_dist=True``; its default stager, and a ``DefaultStager`` kept across saves with pinned memory), with
``--train`` seconds of "training" (a sleep, then every tensor changed in place) between saves. The stall is the
time ``save`` / ``async_save`` blocks (for DCP's asynchronous staging, until its staging completes). The floor is
a device-to-host copy of the same bytes into pinned buffers already allocated.

No GPU numbers exist yet (docs/PERFORMANCE.md). Without CUDA the script exits with status 2 and says so;
``--device cpu`` runs every code path on the CPU instead (tensorfile's device path forced on for the CPU), to
check the script: its numbers mean nothing; ``--in-process`` runs each step once in this process (tests/ does,
``--device cpu --size tiny``).

Usage: python benchmarks/gpu.py [--size tiny|small|full] [--repeat 5] [--train 1.0] [--device cuda|cuda:N|cpu]
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
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fresh import Op, Table, machine_line, rounds, warm  # noqa: E402

#: In a child on ``--device cpu``: tensorfile's device path taken for CPU tensors too.
FORCE_CPU = "from tensorfile.frameworks import torch_device as _td\n_td.STREAM_DEVICE_TYPES.add('cpu')\n"

#: A module whose parameters have the state's names and shapes, on the device (setup of load_parameters).
MODEL = """
def _model(shapes, device):
    root = torch.nn.Module()
    for name, shape in shapes.items():
        *path, leaf = name.split(".")
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, torch.nn.Module())
            node = node._modules[part]
        node.register_parameter(leaf, torch.nn.Parameter(torch.empty(shape, device=device)))
    return root
"""

STALL_MODES = ("tensorfile async_save", "DCP async_save", "DCP async_save, pinned stager kept")


def state_for(size: str) -> dict:
    """The state to load and save (float32 tensors on the host)."""
    import torch

    if size == "tiny":
        g = torch.Generator().manual_seed(0)
        return {f"h.{i}.{k}": torch.randn(*s, generator=g) for i in range(2)
                for k, s in {"w": (256, 1024), "b": (1024,), "ln.weight": (256,)}.items()}  # fmt: skip
    from states import gpt2_state_dict

    return gpt2_state_dict(size)


def write_files(size: str, folder: str) -> tuple[dict[str, str], int]:
    """The state saved by each library, and beside each a tiny file of the same format (``NAME.tiny``)."""
    import torch
    from safetensors.torch import save_file

    import tensorfile

    names = {"tf": "state.tensorfile", "pt": "state.pt", "st": "state.safetensors"}
    tiny = {"a": torch.arange(16.0), "b": torch.ones(16)}
    for sd, suffix in ((state_for(size), ""), (tiny, ".tiny")):
        p = {k: os.path.join(folder, v + suffix) for k, v in names.items()}
        tensorfile.save(sd, p["tf"])
        torch.save(sd, p["pt"])
        save_file(sd, p["st"])
        if not suffix:
            nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    return {k: os.path.join(folder, v) for k, v in names.items()}, nbytes


def load_ops(p: dict[str, str], nbytes: int, device: str) -> list[Op]:
    t = {k: v + ".tiny" for k, v in p.items()}
    cuda = device.startswith("cuda")
    sync = "torch.cuda.synchronize()\n" if cuda else ""
    pre = f"import torch\n{'' if cuda else FORCE_CPU}torch.empty(1, device={device!r})\n{sync}"  # the CUDA context
    tf = (f"import tensorfile\n{pre}from tensorfile.frameworks import torch_device\n"
          f"tensorfile.load({t['tf']!r}, map_location={device!r})\n")  # fmt: skip
    streamed = "_extra = {'streamed': sum(s.bytes for s in torch_device.LAST_STATS)}\n"
    shapes = "import tensorfile\nwith tensorfile.open({!r}) as _f:\n    _shapes = {{k: _f.info(k).shape for k in _f.keys()}}\n"
    return [
        Op(f"tensorfile.load(map_location={device!r})", f"out = tensorfile.load({p['tf']!r}, map_location={device!r})\n"
           + sync + streamed, tf, nbytes=nbytes),
        Op(f"torch.load(map_location={device!r})", f"out = torch.load({p['pt']!r}, map_location={device!r}, "
           f"weights_only=True)\n{sync}", pre + f"torch.load({t['pt']!r}, map_location={device!r}, weights_only=True)\n",
           nbytes=nbytes),
        Op(f"safetensors load_file(device={device!r})", f"out = load_file({p['st']!r}, device={device!r})\n{sync}",
           pre + f"from safetensors.torch import load_file\nload_file({t['st']!r}, device={device!r})\n", nbytes=nbytes),
        Op("tensorfile.load_parameters into the model on the device",
           f"report = tensorfile.load_parameters(model, {p['tf']!r})\n{sync}" + streamed
           + "assert len(report.loaded) == len(_shapes)\n",
           tf, MODEL + shapes.format(p["tf"]) + f"model = _model(_shapes, {device!r})\n{sync}", nbytes=nbytes),
        Op("model.load_state_dict(torch.load(map_location))",
           f"model.load_state_dict(torch.load({p['pt']!r}, map_location={device!r}, weights_only=True))\n{sync}",
           pre + f"torch.load({t['pt']!r}, map_location={device!r}, weights_only=True)\n",
           MODEL + shapes.format(p["tf"]) + f"model = _model(_shapes, {device!r})\n{sync}", nbytes=nbytes),
    ]  # fmt: skip


RATIOS = [
    ("tensorfile.load vs torch.load", "torch.load", "tensorfile.load"),
    ("tensorfile.load vs safetensors load_file", "safetensors", "tensorfile.load"),
    ("load_parameters vs load_state_dict(torch.load)", "model.load_state_dict", "tensorfile.load_parameters"),
]


def _named(results: dict, prefix: str) -> str:
    return next(name for name in results if name.startswith(prefix))


def stall_child(mode: str, size: str, device: str, repeat: int, train: float, folder: str) -> dict:
    """Runs in its own process: ``repeat`` + 1 async saves of the device state in one mode."""
    import torch
    import torch.distributed.tensor  # noqa: F401  (tensorfile and DCP both import it on their first save)

    import tensorfile

    cuda = device.startswith("cuda")
    if not cuda:
        from tensorfile.frameworks import torch_device

        torch_device.STREAM_DEVICE_TYPES.add("cpu")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    state = {k: v.to(device) for k, v in state_for(size).items()}
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    pinned = [torch.empty(v.shape, dtype=v.dtype, pin_memory=cuda) for v in state.values()]
    floors = []
    for _ in range(3):
        sync()
        start = time.perf_counter()
        for buffer, value in zip(pinned, state.values()):
            buffer.copy_(value, non_blocking=cuda)
        sync()
        floors.append(time.perf_counter() - start)
    del pinned

    def training() -> None:
        time.sleep(train)
        with torch.no_grad():
            for value in state.values():
                value.add_(1.0)
        sync()

    stalls, left = [], []
    expected: dict = {}

    def saved() -> None:  # what the last save must restore
        expected.update({k: v.cpu().clone() for k, v in state.items()})

    if mode == "tensorfile async_save":
        with tensorfile.CheckpointManager(folder, max_to_keep=2, async_save=True) as manager:
            for step in range(repeat + 1):
                sync()
                start = time.perf_counter()
                manager.save(step, {"model": state})
                stalls.append(time.perf_counter() - start)
                saved()
                training()
                start = time.perf_counter()
                manager.wait()
                left.append(time.perf_counter() - start)
            restored = manager.restore(repeat)["model"]
            checked = all(torch.equal(restored[k].cpu(), v) for k, v in expected.items())
    else:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

        stager = DefaultStager(StagingOptions(cuda, False, False, False)) if mode.endswith("kept") else None
        for step in range(repeat + 1):
            sync()
            start = time.perf_counter()
            done = dcp.async_save({"model": state}, checkpoint_id=os.path.join(folder, str(step)), no_dist=True,
                                  async_stager=stager)  # fmt: skip
            staging = getattr(done, "staging_completion", None)
            if staging is not None:  # asynchronous staging: training may change the state only after it
                staging.result()
            stalls.append(time.perf_counter() - start)
            saved()
            training()
            start = time.perf_counter()
            getattr(done, "upload_completion", done).result()
            left.append(time.perf_counter() - start)
            shutil.rmtree(os.path.join(folder, str(step - 2)), ignore_errors=True)
        if stager is not None:
            stager.close()
        out = {"model": {k: torch.empty_like(v) for k, v in state.items()}}
        dcp.load(out, checkpoint_id=os.path.join(folder, str(repeat)), no_dist=True)
        checked = all(torch.equal(out["model"][k].cpu(), v) for k, v in expected.items())
    return {"stalls": stalls, "left": left, "floor": min(floors), "nbytes": nbytes, "checked": checked}


def run_here(ops: list[Op]) -> dict[str, list[dict[str, float]]]:
    """Each op's statements once, in this process (``--in-process``: a quick check of the script; no timings)."""
    out = {}
    for op in ops:
        namespace: dict = {}
        exec(compile("\n".join(textwrap.dedent(part) for part in (op.imports, op.setup, op.code)), op.name, "exec"),
             namespace)  # fmt: skip
        out[op.name] = [{"import_s": 0.0, "op_s": 1e-9, "probe_s": 1e-9, **namespace.get("_extra", {})}]
    return out


def run_stalls(size: str, device: str, repeat: int, train: float, folder: str,
               here: bool = False) -> dict[str, dict]:  # fmt: skip
    out = {}
    for mode in STALL_MODES:
        where = os.path.join(folder, "stall-" + str(STALL_MODES.index(mode)))
        if here:
            os.makedirs(where)
            out[mode] = stall_child(mode, size, device, repeat, train, where)
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--stall-child", mode, "--size", size, "--device", device,
               "--repeat", str(repeat), "--train", str(train), "--dir", where]  # fmt: skip
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        lines = [line for line in done.stdout.splitlines() if line.startswith("@@RESULT ")]
        if done.returncode or not lines:
            raise RuntimeError(f"stall child {mode!r} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        out[mode] = json.loads(lines[-1][len("@@RESULT ") :])
        print(f"  {mode} done", file=sys.stderr, flush=True)
    return out


def print_stalls(stalls: dict[str, dict]) -> None:
    ours = stalls["tensorfile async_save"]
    floor = min(s["floor"] for s in stalls.values())
    gib = ours["nbytes"] / 2**30
    print(f"| async save of {gib:.3f} GiB of device state | first stall s | median stall s (later saves) | "
          "/ floor | write left after training s | restored bit-identical |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for mode, s in stalls.items():
        later = statistics.median(s["stalls"][1:]) if len(s["stalls"]) > 1 else s["stalls"][0]
        print(f"| {mode} | {s['stalls'][0]:.3f} | {later:.3f} | {later / floor:.2f} | "
              f"{statistics.median(s['left']):.3f} | {'yes' if s['checked'] else '**NO**'} |")  # fmt: skip
    print(f"floor: device-to-host copy into pinned buffers already allocated: {floor:.4f} s "
          f"({gib / floor:.2f} GiB/s)" if floor > 0 else "floor: 0")  # fmt: skip
    mine = statistics.median(ours["stalls"][1:] or ours["stalls"])
    for mode in STALL_MODES[1:]:
        theirs = statistics.median(stalls[mode]["stalls"][1:] or stalls[mode]["stalls"])
        print(f"stall ratio {mode} / tensorfile (> 1 = ours stalls less): {theirs / mine:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "small", "full"], default="full")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--train", type=float, default=1.0, help="seconds of 'training' between two saves")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a dry run of the script)")
    parser.add_argument("--dir", default=None, help="folder for the files (default: a temporary folder)")
    parser.add_argument("--in-process", action="store_true",
                        help="run each step once in this process (a quick check of the script, no timings)")
    parser.add_argument("--stall-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stall_child:
        os.makedirs(args.dir, exist_ok=True)
        result = stall_child(args.stall_child, args.size, args.device, args.repeat, args.train, args.dir)
        print("@@RESULT " + json.dumps(result))
        return 0
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"benchmarks/gpu.py: no CUDA device here (torch {torch.__version__}, torch.cuda.is_available() is "
              "False): run it on a machine with a GPU, or with --device cpu to check the script", file=sys.stderr)
        return 2
    if not args.device.startswith(("cuda", "cpu")):
        print(f"benchmarks/gpu.py: --device must be cuda, cuda:N or cpu, not {args.device!r}", file=sys.stderr)
        return 2
    folder = tempfile.mkdtemp(prefix="tensorfile-gpu-", dir=args.dir)
    try:
        paths, nbytes = write_files(args.size, folder)
        ops = load_ops(paths, nbytes, args.device)
        warm([folder])
        what = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else (
            "the CPU: a DRY RUN of the script, numbers mean nothing")  # fmt: skip
        print(f"# GPU path: {nbytes / 2**30:.3f} GiB float32 state ({args.size}) onto {args.device} ({what}), "
              f"{args.repeat} shuffled rounds")  # fmt: skip
        print(f"machine: {machine_line()}; {dt.date.today()}")
        print("cache: warm page cache (each file read once before the rounds)")
        results = run_here(ops) if args.in_process else rounds(ops, args.repeat)
        for name in results:
            for r in results[name]:
                if "streamed" in r and r["streamed"] != nbytes:
                    raise RuntimeError(f"{name}: {r['streamed']} of {nbytes} bytes went through the pinned path")
        print()
        if args.in_process:
            print("loads: each ran once in this process (no timings); the pinned path moved every byte: "
                  + ", ".join(results))  # fmt: skip
        else:
            table = Table(results, ops)
            table.print()
            print()
            table.print_ratios([(label, _named(results, peer), _named(results, ours), None)
                                for label, peer, ours in RATIOS])  # fmt: skip
        print()
        print_stalls(run_stalls(args.size, args.device, args.repeat, args.train, folder, args.in_process))
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
