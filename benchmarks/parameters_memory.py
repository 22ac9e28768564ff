"""Peak memory of loading a model's parameters: ``tensorfile.load_parameters`` against its peers.

A 256 MiB torch MLP (8 Linear layers of 4096 x 2048 float32, 32 MiB each) is built in a fresh
process; the process's peak resident memory is then reset (``/proc/self/clear_refs`` 5, Linux) and
one way of loading a saved copy into it runs. Printed: the peak above the built model (VmHWM after
minus VmRSS before), in MiB and as a multiple of the model's bytes, medians over ``--repeat`` runs.

Targets (issue 12): ``load_parameters`` of a tensorfile file peaks at most at the largest tensor
(32 MiB) above the model, plus 16 MiB of slack; and at most 1.1x ``torch.load`` + ``load_state_dict``.
Exit status 3 when one is missed.

Usage: python benchmarks/parameters_memory.py [--layers 8] [--repeat 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

BUILD = """
import torch, resource, re
torch.manual_seed(0)
layers = {layers}
model = torch.nn.Sequential(*[torch.nn.Linear(2048, 4096) if i % 2 == 0 else torch.nn.Linear(4096, 2048)
                              for i in range(layers)])
for p in model.parameters():
    p.data.mul_(1.0)  # every page of the model touched
def rss(field):
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\\s+(\\d+) kB", f.read()).group(1)) * 1024
"""

MEASURE = """
import gc
gc.collect()
before = rss("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current RSS
{op}
print(rss("VmHWM") - before)
"""

OPS = {
    "torch.load + load_state_dict": "import torch\nmodel.load_state_dict(torch.load({pt!r}, weights_only=True))",
    "torch.load(mmap=True) + load_state_dict":
        "import torch\nmodel.load_state_dict(torch.load({pt!r}, weights_only=True, mmap=True))",
    "safetensors load_file + load_state_dict":
        "from safetensors.torch import load_file\nmodel.load_state_dict(load_file({tf!r}))",
    "tensorfile.load_parameters (tensorfile file)": "import tensorfile\ntensorfile.load_parameters(model, {tf!r})",
    "tensorfile.load_parameters (.pt file)": "import tensorfile\ntensorfile.load_parameters(model, {pt!r})",
}


def measure(op: str, layers: int, paths: dict[str, str]) -> int:
    code = BUILD.format(layers=layers) + MEASURE.format(op=op.format(**paths))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args(argv)

    import torch

    import tensorfile

    torch.manual_seed(1)
    model = torch.nn.Sequential(*[torch.nn.Linear(2048, 4096) if i % 2 == 0 else torch.nn.Linear(4096, 2048)
                                  for i in range(args.layers)])  # fmt: skip
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    largest = max(t.numel() * t.element_size() for t in model.state_dict().values())
    folder = tempfile.mkdtemp(dir=args.dir)
    paths = {"pt": os.path.join(folder, "model.pt"), "tf": os.path.join(folder, "model.tensorfile")}
    try:
        torch.save(model.state_dict(), paths["pt"])
        tensorfile.save_parameters(model, paths["tf"])
        del model
        mib = 2**20
        print(f"model: {size / mib:.1f} MiB in {2 * args.layers} tensors; largest tensor {largest / mib:.1f} MiB; "
              f"median of {args.repeat} fresh processes each")  # fmt: skip
        print("| load | peak above the built model, MiB | / model bytes |")
        print("| --- | ---: | ---: |")
        peaks = {}
        for title, op in OPS.items():
            peaks[title] = statistics.median(measure(op, args.layers, paths) for _ in range(args.repeat))
            print(f"| {title} | {peaks[title] / mib:.1f} | {peaks[title] / size:.2f} |")
        ours, torch_peak = peaks["tensorfile.load_parameters (tensorfile file)"], peaks["torch.load + load_state_dict"]
        bound = largest + 16 * mib
        missed = []
        if ours > bound:
            missed.append(f"load_parameters peaks {ours / mib:.1f} MiB above the model, over the largest tensor + 16 MiB")
        if ours > 1.1 * torch_peak:
            missed.append(f"load_parameters peaks {ours / torch_peak:.2f}x torch.load + load_state_dict (goal <= 1.1x)")
        print(f"load_parameters / torch.load + load_state_dict: {ours / torch_peak:.2f}x (goal <= 1.1x); "
              f"above the model: {ours / mib:.1f} MiB (goal <= {bound / mib:.0f} MiB)")  # fmt: skip
        for line in missed:
            print("MISSED:", line)
        return 3 if missed else 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
