"""Models the benchmarks (and a few tests) build: GPT-2-small's parameter shapes, with its tied head.

No Hugging Face ``transformers`` here: the module tree below has GPT-2-small's names and shapes
(openai-community/gpt2: 12 blocks, width 768, 50257 tokens, 1024 positions, 124,439,808 parameters),
``lm_head.weight`` tied to ``transformer.wte.weight`` as ``GPT2LMHeadModel`` ties them. Attention
projections are ``nn.Linear`` (GPT-2 uses a transposed Conv1D of the same sizes).
"""

from __future__ import annotations


def gpt2_small(layers: int = 12, width: int = 768, vocab: int = 50257, positions: int = 1024):
    """A torch module with GPT-2-small's parameter names and shapes (float32), the head tied to the embedding."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln_1 = nn.LayerNorm(width)
            self.attn = nn.Module()
            self.attn.c_attn = nn.Linear(width, 3 * width)
            self.attn.c_proj = nn.Linear(width, width)
            self.ln_2 = nn.LayerNorm(width)
            self.mlp = nn.Module()
            self.mlp.c_fc = nn.Linear(width, 4 * width)
            self.mlp.c_proj = nn.Linear(4 * width, width)

    class GPT2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = nn.Module()
            self.transformer.wte = nn.Embedding(vocab, width)
            self.transformer.wpe = nn.Embedding(positions, width)
            self.transformer.h = nn.ModuleList(Block() for _ in range(layers))
            self.transformer.ln_f = nn.LayerNorm(width)
            self.lm_head = nn.Linear(width, vocab, bias=False)
            self.lm_head.weight = self.transformer.wte.weight  # tied, as GPT2LMHeadModel.tie_weights does

    torch.manual_seed(0)
    return GPT2()
