"""Hand-written model graphs (issue 13) shared by the JAX and MXNet build tests (imported from tests/mxnet too).

Each function gives ``(graph dict, tensors, example input)``: the graph in one framework's layouts, its
tensors (random, float32), an input batch. Files written from them are loaded with
``tensorfile.load_model`` into a framework and compared with the NumPy reference interpreter.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _random(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def torch_layout() -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """Channels-first convolution (``out_in_spatial``, asymmetric padding), BatchNorm on axis 1, both
    poolings, flatten, ``out_in`` linear, exact GELU, LayerNorm, a scalar, softmax; two outputs."""
    rng = np.random.default_rng(13)
    tensors = {
        "conv.weight": _random(rng, 4, 3, 3, 3), "conv.bias": _random(rng, 4),
        "bn.weight": _random(rng, 4), "bn.bias": _random(rng, 4), "bn.running_mean": _random(rng, 4),
        "bn.running_var": rng.uniform(0.5, 2.0, 4).astype(np.float32),
        "fc.weight": _random(rng, 10, 64) * 0.2, "fc.bias": _random(rng, 10),
        "ln.weight": _random(rng, 10), "ln.bias": _random(rng, 10),
    }  # fmt: skip
    nodes = [
        {"name": "conv", "op": "conv2d", "inputs": ["x"], "params": {"weight": "conv.weight", "bias": "conv.bias"},
         "attrs": {"padding": [[1, 0], [2, 1]], "stride": [1, 1]}},
        {"name": "bn", "op": "batch_norm", "inputs": ["conv"], "params": {"scale": "bn.weight", "offset": "bn.bias",
         "mean": "bn.running_mean", "var": "bn.running_var"}, "attrs": {"eps": 1e-5, "axis": 1}},
        {"name": "relu", "op": "relu", "inputs": ["bn"]},
        {"name": "pool", "op": "max_pool2d", "inputs": ["relu"], "attrs": {"kernel": [2, 2]}},
        {"name": "avg", "op": "avg_pool2d", "inputs": ["pool"],
         "attrs": {"kernel": [2, 2], "stride": [1, 1], "padding": [[0, 1], [0, 1]]}},
        {"name": "flat", "op": "flatten", "inputs": ["avg"]},
        {"name": "fc", "op": "linear", "inputs": ["flat"], "params": {"weight": "fc.weight", "bias": "fc.bias"}},
        {"name": "gelu", "op": "gelu", "inputs": ["fc"]},
        {"name": "ln", "op": "layer_norm", "inputs": ["gelu"], "params": {"scale": "ln.weight", "offset": "ln.bias"}},
        {"name": "half", "op": "constant", "attrs": {"value": 0.5}},
        {"name": "scaled", "op": "mul", "inputs": ["ln", "half"]},
        {"name": "soft", "op": "softmax", "inputs": ["scaled"], "attrs": {"axis": -1}},
    ]  # fmt: skip
    graph = {"framework": "torch", "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 3, 9, 7]}],
             "nodes": nodes, "outputs": ["soft", "fc"], "modules": {"": "Net", "conv": "Conv2d", "fc": "Linear"}}  # fmt: skip
    return graph, tensors, _random(rng, 2, 3, 9, 7)


def keras_layout() -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """Channels-last convolution (``spatial_in_out``, stride 2, explicit padding), tanh-approximate GELU,
    average pooling not counting padding, reshape with ``"$0"``, ``in_out`` linear, mean, split, concat."""
    rng = np.random.default_rng(31)
    tensors = {"conv.kernel": _random(rng, 3, 3, 2, 6), "conv.bias": _random(rng, 6),
               "dense.kernel": _random(rng, 54, 5) * 0.3, "dense.bias": _random(rng, 5)}  # fmt: skip
    nodes = [
        {"name": "conv", "op": "conv2d", "inputs": ["x"], "params": {"weight": "conv.kernel", "bias": "conv.bias"},
         "attrs": {"stride": [2, 2], "padding": [[0, 1], [1, 1]], "data_format": "channels_last",
                   "kernel_layout": "spatial_in_out"}},
        {"name": "gelu", "op": "gelu", "inputs": ["conv"], "attrs": {"approximate": "tanh"}},
        {"name": "avg", "op": "avg_pool2d", "inputs": ["gelu"],
         "attrs": {"kernel": [2, 2], "stride": [2, 2], "padding": [[1, 1], [1, 1]], "data_format": "channels_last",
                   "count_include_pad": False}},
        {"name": "flat", "op": "reshape", "inputs": ["avg"], "attrs": {"shape": ["$0", -1]}},
        {"name": "dense", "op": "linear", "inputs": ["flat"], "params": {"weight": "dense.kernel", "bias": "dense.bias"},
         "attrs": {"weight_layout": "in_out"}},
        {"name": "parts", "op": "split", "inputs": ["dense"], "attrs": {"axis": 1, "sizes": [2, 3]}},
        {"name": "mean", "op": "mean", "inputs": ["parts:1"], "attrs": {"axes": [1], "keepdims": True}},
        {"name": "sig", "op": "sigmoid", "inputs": ["parts:0"]},
        {"name": "out", "op": "concat", "inputs": ["sig", "mean", "parts:1"], "attrs": {"axis": -1}},
    ]  # fmt: skip
    graph = {"framework": "keras", "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 11, 10, 2]}],
             "nodes": nodes, "outputs": ["out"]}  # fmt: skip
    return graph, tensors, _random(rng, 3, 11, 10, 2)


def attention_layout() -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """Token ids through an embedding, torch's packed multi-head attention, residual adds, layer norms (one without
    offset), a GELU feed-forward, plain and causal scaled dot-product attention (head size from the shape),
    unsqueeze / permute / transpose / squeeze, an adaptive average pooling, flatten, a final linear."""
    rng = np.random.default_rng(7)
    e, heads = 16, 4
    tensors = {
        "emb.weight": _random(rng, 30, e), "attn.in_proj_weight": _random(rng, 3 * e, e) * 0.3,
        "attn.in_proj_bias": _random(rng, 3 * e), "attn.out_proj.weight": _random(rng, e, e) * 0.3,
        "attn.out_proj.bias": _random(rng, e), "norm1.weight": _random(rng, e), "norm1.bias": _random(rng, e),
        "ff.weight": _random(rng, 24, e) * 0.3, "ff.bias": _random(rng, 24), "ff2.weight": _random(rng, e, 24) * 0.3,
        "norm2.weight": _random(rng, e), "head.weight": _random(rng, 3, 8) * 0.3, "head.bias": _random(rng, 3),
    }  # fmt: skip
    nodes = [
        {"name": "emb", "op": "embedding", "inputs": ["ids"], "params": {"weight": "emb.weight"}},
        {"name": "attn", "op": "multi_head_attention", "inputs": ["emb", "emb", "emb"], "attrs": {"num_heads": heads},
         "params": {"in_proj_weight": "attn.in_proj_weight", "in_proj_bias": "attn.in_proj_bias",
                    "out_proj_weight": "attn.out_proj.weight", "out_proj_bias": "attn.out_proj.bias"}},
        {"name": "res1", "op": "add", "inputs": ["emb", "attn"]},
        {"name": "norm1", "op": "layer_norm", "inputs": ["res1"], "params": {"scale": "norm1.weight", "offset": "norm1.bias"}},
        {"name": "ff", "op": "linear", "inputs": ["norm1"], "params": {"weight": "ff.weight", "bias": "ff.bias"}},
        {"name": "act", "op": "gelu", "inputs": ["ff"]},
        {"name": "ff2", "op": "linear", "inputs": ["act"], "params": {"weight": "ff2.weight"}},
        {"name": "res2", "op": "add", "inputs": ["norm1", "ff2"]},
        {"name": "norm2", "op": "layer_norm", "inputs": ["res2"], "params": {"scale": "norm2.weight"}, "attrs": {"eps": 1e-6}},
        {"name": "q", "op": "unsqueeze", "inputs": ["norm2"], "attrs": {"axis": 1}},
        {"name": "self", "op": "scaled_dot_product_attention", "inputs": ["q", "q", "q"]},
        {"name": "causal", "op": "scaled_dot_product_attention", "inputs": ["self", "q", "q"],
         "attrs": {"causal": True, "scale": 0.5}},
        {"name": "nchw", "op": "permute", "inputs": ["causal"], "attrs": {"dims": [0, 1, 3, 2]}},
        {"name": "back", "op": "transpose", "inputs": ["nchw"], "attrs": {"dim0": -1, "dim1": 2}},
        {"name": "pool", "op": "adaptive_avg_pool2d", "inputs": ["back"], "attrs": {"output_size": [2, 4]}},
        {"name": "one", "op": "squeeze", "inputs": ["pool"], "attrs": {"axis": 1}},
        {"name": "flat", "op": "flatten", "inputs": ["one"]},
        {"name": "head", "op": "linear", "inputs": ["flat"], "params": {"weight": "head.weight", "bias": "head.bias"}},
    ]  # fmt: skip
    graph = {"framework": "torch", "inputs": [{"name": "ids", "dtype": "int64", "shape": ["batch", 5]}],
             "nodes": nodes, "outputs": ["head"]}  # fmt: skip
    return graph, tensors, rng.integers(0, 30, (2, 5))


def write(path: Any, graph: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """A model file of ``graph`` over ``tensors``, as ``save_model`` writes one."""
    import tensorfile
    from tensorfile.model import MODEL_KEY
    from tensorfile.model.graph import dump_graph

    tensorfile.save(tensors, path, metadata={MODEL_KEY: dump_graph(graph)})
