"""How long a training step stalls on a checkpoint: asynchronous vs synchronous save.

Saves a GPT-2-shaped float32 state dict (``--size small``: ~175 MiB, the default;
``full``: ~1.3 GiB) with ``CheckpointManager(async_save=False)`` and with
``async_save=True``, several times each, and prints the medians of the time
``save()`` blocks the caller, and their ratio (target: async <= 0.2 x sync). The
async stall is the snapshot into host buffers; the write runs behind it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from save_load import gpt2_state_dict

import tensorfile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full"], default="small")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    state = gpt2_state_dict(args.size)
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    results = {}
    with tempfile.TemporaryDirectory(prefix="tensorfile-stall-") as folder:
        for mode in ("sync", "async"):
            stalls = []
            with tensorfile.CheckpointManager(os.path.join(folder, mode), max_to_keep=2, async_save=mode == "async") as m:
                for step in range(args.repeat + 1):
                    os.sync()
                    start = time.perf_counter()
                    m.save(step, {"model": state, "step": step})
                    stalls.append(time.perf_counter() - start)
                    time.sleep(0.5 if mode == "async" else 0)  # "training" between saves
                    m.wait()
            results[mode] = statistics.median(stalls[1:])  # the first async save also allocates its buffers
    ratio = results["async"] / results["sync"]
    print(f"state: {nbytes / 2**20:.0f} MiB; median stall of save() over {args.repeat} saves")
    print(f"sync save:  {results['sync']:.3f} s")
    print(f"async save: {results['async']:.3f} s (snapshot to host memory; the write continues in the background)")
    print(f"ratio async/sync: {ratio:.2f} (target <= 0.20: {'met' if ratio <= 0.2 else 'missed'})")


if __name__ == "__main__":
    main()
