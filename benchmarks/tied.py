"""Tied weights: what storing every name of a tied state_dict costs, on GPT-2-small (124 M parameters).

tensorfile writes a tied tensor under each of its names (docs/FORMAT.md, "Tied tensors"), so that
``model.load_state_dict(safetensors.torch.load_file(path), strict=True)`` works. Compared in the same
run: safetensors ``save_model`` (keeps one name, drops the other; ``load_model`` re-ties), ``torch.save``
(one storage) and a plain ``safetensors.torch.save_file`` of the state_dict (refuses shared tensors).
Prints file sizes, median save and load times (seconds) and whether a plain safetensors reader gets a
state_dict that loads with ``strict=True``.

Usage: python benchmarks/tied.py [--repeat 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import gpt2_small  # noqa: E402


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args(argv)

    import safetensors.torch as st
    import torch

    import tensorfile

    model = gpt2_small()
    sd = model.state_dict()
    unique = sum(p.numel() * p.element_size() for p in model.parameters())  # parameters() lists a tied one once
    named = sum(t.numel() * t.element_size() for t in sd.values())
    folder = tempfile.mkdtemp(dir=args.dir)
    paths = {k: os.path.join(folder, k) for k in ("tensorfile", "save_model", "torch")}
    try:
        rows = [
            ("tensorfile.save(state_dict)", lambda: tensorfile.save(sd, paths["tensorfile"]),
             lambda: tensorfile.load(paths["tensorfile"]), paths["tensorfile"]),
            ("safetensors save_model (one name)", lambda: st.save_model(model, paths["save_model"]),
             lambda: st.load_file(paths["save_model"]), paths["save_model"]),
            ("torch.save(state_dict)", lambda: torch.save(sd, paths["torch"]),
             lambda: torch.load(paths["torch"], weights_only=True), paths["torch"]),
        ]  # fmt: skip
        print(f"GPT-2-small: {sum(p.numel() for p in model.parameters()):,} parameters; unique bytes {unique:,}; "
              f"bytes of every state_dict name {named:,} ({named / unique:.2f}x)")  # fmt: skip
        print("| writer | file bytes | / unique bytes | save s (median) | load s (median) | plain load_file + strict load_state_dict |")
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        for title, save, load, path in rows:
            save_s = _median(save, args.repeat)
            load_s = _median(load, args.repeat)
            size = os.path.getsize(path)
            try:
                plain = st.load_file(path)
                gpt2_small().load_state_dict(plain, strict=True)
                verdict = "works"
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                verdict = f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:60]}"
            print(f"| {title} | {size:,} | {size / unique:.3f} | {save_s:.3f} | {load_s:.3f} | {verdict} |")
        try:
            st.save_file(sd, os.path.join(folder, "plain"))
            print("safetensors save_file(state_dict): written")
        except Exception as exc:  # noqa: BLE001
            print(f"safetensors save_file(state_dict): refused ({type(exc).__name__})")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
