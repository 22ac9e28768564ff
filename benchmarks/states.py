"""The states the benchmarks save and load."""

from __future__ import annotations

import torch


def gpt2_state_dict(size: str) -> dict[str, torch.Tensor]:
    """GPT-2 medium (24 layers, d=1024, vocab 50257: 292 float32 tensors, 1.32 GiB); for ``"small"``, a cousin
    with 2 layers and a vocabulary of 20000 (178 MiB); for ``"tiny"`` (the tests' smoke runs), 2 layers of width
    256 and a vocabulary of 2000 (8.5 MiB). Seeded: the same values every run."""
    layers, d, vocab, ctx = {"full": (24, 1024, 50257, 1024), "small": (2, 1024, 20000, 1024),
                             "tiny": (2, 256, 2000, 256)}[size]  # fmt: skip
    g = torch.Generator().manual_seed(0)
    sd = {"wte.weight": torch.randn(vocab, d, generator=g), "wpe.weight": torch.randn(ctx, d, generator=g)}
    for i in range(layers):
        p = f"h.{i}."
        shapes = {
            "ln_1.weight": (d,), "ln_1.bias": (d,),
            "attn.c_attn.weight": (d, 3 * d), "attn.c_attn.bias": (3 * d,),
            "attn.c_proj.weight": (d, d), "attn.c_proj.bias": (d,),
            "ln_2.weight": (d,), "ln_2.bias": (d,),
            "mlp.c_fc.weight": (d, 4 * d), "mlp.c_fc.bias": (4 * d,),
            "mlp.c_proj.weight": (4 * d, d), "mlp.c_proj.bias": (d,),
        }  # fmt: skip
        for k, shape in shapes.items():
            sd[p + k] = torch.randn(*shape, generator=g)
    sd["ln_f.weight"], sd["ln_f.bias"] = torch.ones(d), torch.zeros(d)
    return sd
