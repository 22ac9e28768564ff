"""Model graphs from torch (issue 13): capture with torch.fx, rebuild in torch and NumPy, refusals, and the
reference interpreter checked against torch op by op (it is the oracle of the other frameworks)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from tensorfile.model import load_model, read_graph, save_model
from tensorfile.model.graph import UnsupportedArchitectureError, dump_graph, parse_graph
from tensorfile.model.reference import OPS_NUMPY, run
from tensorfile.model.vocabulary import OPS

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional
build_torch = pytest.importorskip("tensorfile.model.build_torch")

# ------------------------------------------------------------------------------------------------ models


class MLP(nn.Module):
    """The chapter's MLP: a custom forward."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(20, 256)
        self.output = nn.Linear(256, 10)

    def forward(self, X):
        return self.output(F.relu(self.hidden(X)))


def lenet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10),
    )  # fmt: skip


class Residual(nn.Module):
    """The chapter's ResNet block with a 1x1-conv shortcut."""

    def __init__(self, c_in: int, channels: int, strides: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(c_in, channels, kernel_size=1, stride=strides)
        self.bn1 = nn.BatchNorm2d(channels)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 32)
        self.encoder = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 7)

    def forward(self, tokens):
        return self.head(self.norm(self.encoder(self.embedding(tokens))))


def _models() -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """name -> (model in eval mode, example input of batch 2, another input of batch 3)."""
    torch.manual_seed(0)
    block = Residual(3, 8)
    with torch.no_grad():  # running statistics far from (0, 1), affine parameters not (1, 0)
        block.train()
        for _ in range(4):
            block(torch.randn(6, 3, 12, 12) * 3 + 2)
        for bn in (block.bn1, block.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    models = {
        "mlp": (MLP(), torch.randn(2, 20), torch.randn(3, 20)),
        "lenet": (lenet(), torch.randn(2, 1, 28, 28), torch.randn(3, 1, 28, 28)),
        "resnet_block": (block, torch.randn(2, 3, 12, 12), torch.randn(3, 3, 12, 12)),
        "encoder": (Encoder(), torch.randint(0, 50, (2, 9)), torch.randint(0, 50, (3, 9))),
    }
    for model, _, _ in models.values():
        model.eval()
    return models


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The four models saved, and their outputs on other-batch inputs in ``io.npz``."""
    folder = tmp_path_factory.mktemp("models")
    models, io = _models(), {}
    for name, (model, example, other) in models.items():
        save_model(model, folder / f"{name}.tf", example)
        with torch.no_grad():
            io[f"{name}.x"], io[f"{name}.y"] = other.numpy(), model(other).numpy()
    np.savez(folder / "io.npz", **io)
    return folder, models


_CHILD = r"""
import json, sys
import numpy as np, torch
from tensorfile.model import load_model
folder, names = sys.argv[1], json.loads(sys.argv[2])
io = np.load(f"{folder}/io.npz", allow_pickle=False)
report = {}
for name in names:
    x, expected = io[name + ".x"], io[name + ".y"]
    model = load_model(f"{folder}/{name}.tf", "torch")
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    ref = load_model(f"{folder}/{name}.tf", "numpy")(x)
    report[name] = {"torch": float(np.abs(got - expected).max()), "numpy": float(np.abs(ref - expected).max()),
                    "shape": list(got.shape) == list(expected.shape) == list(ref.shape), "training": model.training}
report["imported"] = sorted(m for m in sys.modules if m.startswith(("test_", "conftest", "tests")))
print(json.dumps(report))
"""


def test_four_models_rebuilt_in_a_fresh_process(saved):
    folder, models = saved
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(folder), json.dumps(list(models))], capture_output=True,
                         text=True, timeout=300, env=env, cwd=folder, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report.pop("imported") == []  # the child never imported this file (nor any test module)
    for name in models:
        assert report[name]["shape"] and not report[name]["training"], name
        assert report[name]["torch"] <= 1e-5, (name, report[name])
        assert report[name]["numpy"] <= 1e-5, (name, report[name])


def test_parameters_are_the_state_dict_bit_for_bit(saved):
    from safetensors import safe_open

    folder, models = saved
    for name, (model, _, _) in models.items():
        state = model.state_dict()
        with safe_open(str(folder / f"{name}.tf"), framework="pt") as f:
            assert sorted(f.keys()) == sorted(state), name
            for key, value in state.items():
                stored = f.get_tensor(key)
                assert stored.dtype == value.dtype and stored.shape == value.shape, key
                assert stored.numpy().tobytes() == value.numpy().tobytes(), key
        rebuilt = load_model(folder / f"{name}.tf", "torch").state_dict()
        assert list(rebuilt) == list(state)
        assert all(torch.equal(rebuilt[k], state[k]) and rebuilt[k].dtype == state[k].dtype for k in state)
    batch_norm = models["resnet_block"][0].bn1
    assert not torch.allclose(batch_norm.running_var, torch.ones_like(batch_norm.running_var))  # non-trivial stats


def test_graph_names_stay_structural(saved):
    folder, _ = saved
    graph = read_graph(folder / "encoder.tf")
    by_name = {node.name: node for node in graph.nodes}
    assert graph.inputs == (("tokens", "int64", ("batch", 9)),)
    assert by_name["encoder.self_attn"].op == "multi_head_attention"
    assert by_name["encoder.self_attn"].params["in_proj_weight"] == "encoder.self_attn.in_proj_weight"
    assert by_name["encoder.self_attn"].params["out_proj_weight"] == "encoder.self_attn.out_proj.weight"
    assert by_name["encoder.linear1"].params == {"weight": "encoder.linear1.weight", "bias": "encoder.linear1.bias"}
    assert by_name["encoder.norm2"].op == "layer_norm" and by_name["encoder.norm2"].attrs["eps"] == 1e-5
    assert graph.modules[""] == "Encoder" and graph.modules["encoder.self_attn"] == "MultiheadAttention"
    assert [n.op for n in read_graph(folder / "mlp.tf").nodes] == ["linear", "relu", "linear"]
    block = read_graph(folder / "resnet_block.tf")
    assert {n.name: n.params for n in block.nodes}["bn1"] == {
        "scale": "bn1.weight", "offset": "bn1.bias", "mean": "bn1.running_mean", "var": "bn1.running_var"}  # fmt: skip


# ----------------------------------------------------------------------------------- capture coverage


class Everything(nn.Module):
    """Functions, methods, slicing, shapes from sizes, parameters read directly, nested encoders."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 6))
        self.b = nn.Parameter(torch.randn(8))
        self.register_buffer("shift", torch.randn(8), persistent=False)
        self.attn = nn.MultiheadAttention(8, 2)  # sequence first
        layer = nn.TransformerEncoderLayer(8, 2, 16, activation="gelu", norm_first=True, batch_first=True)
        self.stack = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.pool = nn.AdaptiveAvgPool2d((2, None))

    def forward(self, x, y):
        h = F.linear(x, self.w, self.b) + self.shift
        h = -(h / math.sqrt(h.shape[-1]) * 2 - 1)
        a, b = h.chunk(2, dim=-1)
        c = torch.cat([b, a], dim=2)
        q = c.view(c.size(0), c.size(1), 2, 4).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, q, q, is_causal=True)
        o = o.permute(0, 2, 1, 3).reshape(x.shape[0], -1, 8)
        s, _ = self.attn(o.transpose(0, 1), o.transpose(0, 1), o.transpose(0, 1))
        e = self.stack(s.transpose(0, 1))
        z = e[:, 1:, None, :].squeeze(2)[..., ::2]
        parts = torch.split(y, [1, 2], dim=1)
        return ((z - z.mean(dim=1, keepdim=True)).flatten(1), self.pool(e.unsqueeze(1)).flatten(1), e[:, 0] @ self.w,
                parts[1] * y.shape[-1], torch.softmax(e, -1).mean())  # fmt: skip


def test_capture_functions_methods_and_batch_sizes(tmp_path):
    torch.manual_seed(1)
    model = Everything().train()
    save_model(model, tmp_path / "m.tf", (torch.randn(3, 5, 6), torch.randn(3, 3)))
    assert model.training  # the mode is restored
    model.eval()
    graph = read_graph(tmp_path / "m.tf")
    assert {n.op for n in graph.nodes} >= {"split", "concat", "reshape", "scaled_dot_product_attention", "slice",
                                          "squeeze", "unsqueeze", "mean", "constant", "multi_head_attention",
                                          "adaptive_avg_pool2d", "gelu", "softmax"}  # fmt: skip
    assert [n.attrs["shape"] for n in graph.nodes if n.op == "reshape"] == [["$0", 5, 2, 4], ["$0", 5, 8]]
    rebuilt, reference = load_model(tmp_path / "m.tf", "torch"), load_model(tmp_path / "m.tf", "numpy")
    for batch in (1, 4):
        x, y = torch.randn(batch, 5, 6), torch.randn(batch, 3)
        with torch.no_grad():
            want, got = model(x, y), rebuilt(x, y)
        for w, g, r in zip(want, got, reference(x.numpy(), y.numpy())):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(r, w.numpy(), rtol=1e-5, atol=1e-5)
    assert "shift" in load_model(tmp_path / "m.tf", "torch").state_dict()  # a non-persistent buffer the graph reads


class WithDefaults(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.decoder = nn.TransformerDecoderLayer(8, 2, 16, batch_first=True)

    def forward(self, x, memory, mask=None, scale=0.5):
        return self.decoder(x, memory, tgt_mask=mask) * scale


def test_defaults_fixed_and_a_registered_composite_traced_through(tmp_path):
    """Arguments left at their defaults are fixed while tracing; a torch.nn module outside the vocabulary
    is refused until registered as a composite, then written as the vocabulary ops its forward runs."""
    from tensorfile.model import COMPOSITES, register_composite

    torch.manual_seed(2)
    model = WithDefaults().eval()
    x, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    with pytest.raises(UnsupportedArchitectureError, match=r"node 'decoder' \(torch.nn.TransformerDecoderLayer\)"):
        save_model(model, tmp_path / "m.tf", (x, memory))
    register_composite("decoder_layer", nn.TransformerDecoderLayer)
    try:
        save_model(model, tmp_path / "m.tf", (x, memory))
    finally:
        COMPOSITES.pop("decoder_layer")
    graph = read_graph(tmp_path / "m.tf")
    assert [name for name, _, _ in graph.inputs] == ["x", "memory"]
    assert [n.op for n in graph.nodes].count("multi_head_attention") == 2
    x, memory = torch.randn(4, 3, 8), torch.randn(4, 5, 8)
    with torch.no_grad():
        want, got = model(x, memory), load_model(tmp_path / "m.tf", "torch")(x, memory)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        load_model(tmp_path / "m.tf")(x.numpy(), memory.numpy()), want.numpy(), rtol=1e-5, atol=1e-5
    )


# ------------------------------------------------------------------------------------------- refusals


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


class Printing(nn.Module):
    def forward(self, x):
        y = torch.tanh(x)
        print("y =", y)
        return y


class Spectral(nn.Module):
    def forward(self, x):
        return torch.fft.fft(x).real


class _Twice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


class CustomAutograd(nn.Module):
    def forward(self, x):
        return _Twice.apply(x)


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x + 1


class ReadsValues(nn.Module):
    def forward(self, x):
        return x / x.max().item()


@pytest.mark.parametrize(
    "model, node, op, why",
    [
        (Branchy(), "'gt'", "operator.gt", "data-dependent control flow"),
        (Printing(), "'tanh'", "torch.tanh", "Python side effect"),
        (Counting(), "'calls'", "setattr", "Python side effect"),
        (Spectral(), "'fft_fft'", "fft", "outside the vocabulary"),
        (CustomAutograd(), "'mul'", "_Twice.forward", "custom autograd function"),
        (ReadsValues(), "'max_1'", "Tensor.max", "outside the vocabulary"),
        (nn.Sequential(nn.ConvTranspose2d(1, 1, 3)), "'_0'", "torch.nn.ConvTranspose2d", "outside the vocabulary"),
        (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), "'_0'", "torch.nn.MaxPool2d", "ceil_mode"),
    ],
    ids=["control-flow", "print", "setattr", "fft", "autograd-function", "item", "conv-transpose", "ceil-mode"],
)
def test_refused_with_node_and_op(tmp_path, capsys, model, node, op, why):
    with pytest.raises(UnsupportedArchitectureError) as info:
        save_model(model, tmp_path / "m.tf", torch.randn(2, 1, 6, 6))
    message = str(info.value)
    assert f"node {node}" in message and op in message and why in message, message
    assert not (tmp_path / "m.tf").exists()
    assert "y = Proxy" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- reference vs torch, op by op


def _attrs(op: str, **given):
    return {k: given.get(k, a.default) for k, a in OPS[op].attrs.items()}


def _rand(*shape, seed=[0]):  # noqa: B006  (a counter shared by the calls)
    seed[0] += 1
    return np.random.default_rng(seed[0]).standard_normal(shape).astype(np.float32)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _cases():
    """(id, op, operands, params, attrs, torch oracle) with NumPy data; the oracle is plain torch."""
    x4, w = _rand(2, 4, 9, 8), _rand(6, 2, 3, 2)
    b6 = _rand(6)
    cl, wk = _rand(2, 9, 8, 3), _rand(3, 3, 3, 5)  # channels_last input, Keras (kh, kw, in, out) kernel
    x3, w1 = _rand(2, 4, 11), _rand(5, 4, 3)
    p = _rand(2, 3, 7, 7)
    bn = [_rand(3), np.abs(_rand(3)) + 0.5, _rand(3), _rand(3)]
    q, k, v = _rand(2, 2, 5, 4), _rand(2, 2, 5, 4), _rand(2, 2, 5, 4)
    kl, vl = _rand(2, 2, 7, 4), _rand(2, 2, 7, 4)
    mask = np.random.default_rng(7).random((5, 5)) > 0.3
    np.fill_diagonal(mask, True)
    fmask = _rand(2, 1, 5, 5)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    mparams = {"in_proj_weight": mha.in_proj_weight.detach().numpy(), "in_proj_bias": _rand(24),
               "out_proj_weight": mha.out_proj.weight.detach().numpy(), "out_proj_bias": _rand(8)}  # fmt: skip
    with torch.no_grad():
        mha.in_proj_bias.copy_(_t(mparams["in_proj_bias"]))
        mha.out_proj.bias.copy_(_t(mparams["out_proj_bias"]))
    s8 = _rand(2, 5, 8)
    c = [
        ("conv2d-stride-pad-dilation-groups", "conv2d", [x4], {"weight": w, "bias": b6},
         _attrs("conv2d", stride=[2, 1], padding=[[1, 1], [0, 2]], dilation=[1, 2], groups=2),
         lambda: F.conv2d(F.pad(_t(x4), (0, 2, 1, 1)), _t(w), _t(b6), (2, 1), 0, (1, 2), 2)),
        ("conv1d-same-dilation", "conv1d", [x3], {"weight": w1}, _attrs("conv1d", padding="same", dilation=[2]),
         lambda: F.conv1d(_t(x3), _t(w1), None, 1, "same", 2)),
        # Keras "same" with stride 2: TF pads (out - 1) * stride + k - size, the odd one after: [1, 1] and [0, 1]
        ("conv2d-channels-last-same-stride2", "conv2d", [cl], {"weight": wk},
         _attrs("conv2d", stride=[2, 2], padding="same", data_format="channels_last", kernel_layout="spatial_in_out"),
         lambda: F.conv2d(F.pad(_t(cl).permute(0, 3, 1, 2), (0, 1, 1, 1)), _t(wk).permute(3, 2, 0, 1), None, 2)
         .permute(0, 2, 3, 1)),
        ("max_pool2d-padding", "max_pool2d", [p], {}, _attrs("max_pool2d", kernel=[3, 3], stride=[2, 2], padding=[[1, 1]] * 2),
         lambda: F.max_pool2d(_t(p), 3, 2, 1)),
        ("max_pool1d-channels-last-same", "max_pool1d", [x3.transpose(0, 2, 1)], {},
         _attrs("max_pool1d", kernel=[2], stride=[1], padding="same", data_format="channels_last"),
         lambda: F.max_pool1d(F.pad(_t(x3), (0, 1), value=-math.inf), 2, 1).permute(0, 2, 1)),
        ("avg_pool2d-count-include-pad", "avg_pool2d", [p], {},
         _attrs("avg_pool2d", kernel=[3, 3], stride=[2, 2], padding=[[1, 1]] * 2, count_include_pad=True),
         lambda: F.avg_pool2d(_t(p), 3, 2, 1, count_include_pad=True)),
        ("avg_pool2d-exclude-pad", "avg_pool2d", [p], {},
         _attrs("avg_pool2d", kernel=[3, 3], stride=[2, 2], padding=[[1, 1]] * 2, count_include_pad=False),
         lambda: F.avg_pool2d(_t(p), 3, 2, 1, count_include_pad=False)),
        ("avg_pool1d-default-stride", "avg_pool1d", [x3], {}, _attrs("avg_pool1d", kernel=[2]),
         lambda: F.avg_pool1d(_t(x3), 2)),
        # Keras AveragePooling2D "same" (size 7, k 2, stride 2: pads [0, 1]) averages the real elements only
        ("avg_pool2d-channels-last-same-exclude", "avg_pool2d", [p.transpose(0, 2, 3, 1)], {},
         _attrs("avg_pool2d", kernel=[2, 2], stride=[2, 2], padding="same", count_include_pad=False,
                data_format="channels_last"),
         lambda: (F.avg_pool2d(F.pad(_t(p), (0, 1, 0, 1)), 2, 2) * 4
                  / torch.tensor([[4.0] * 3 + [2.0]] * 3 + [[2.0] * 3 + [1.0]])).permute(0, 2, 3, 1)),
        ("adaptive_avg_pool2d", "adaptive_avg_pool2d", [p[:, :, :, :5]], {}, _attrs("adaptive_avg_pool2d", output_size=[3, 2]),
         lambda: F.adaptive_avg_pool2d(_t(p[:, :, :, :5]), (3, 2))),
        ("batch_norm", "batch_norm", [p], dict(zip(("scale", "var", "offset", "mean"), bn)), _attrs("batch_norm", eps=1e-3),
         lambda: F.batch_norm(_t(p), _t(bn[3]), _t(bn[1]), _t(bn[0]), _t(bn[2]), False, 0.0, 1e-3)),
        ("batch_norm-channels-last", "batch_norm", [p.transpose(0, 2, 3, 1)], {"mean": bn[3], "var": bn[1]},
         _attrs("batch_norm", axis=-1),
         lambda: F.batch_norm(_t(p), _t(bn[3]), _t(bn[1]), None, None, False, 0.0, 1e-5).permute(0, 2, 3, 1)),
        ("layer_norm-two-axes", "layer_norm", [p], {"scale": bn[1][0] * np.ones((7, 7), np.float32), "offset": _rand(7, 7)},
         _attrs("layer_norm", axes=2, eps=1e-3), None),
        ("gelu-exact", "gelu", [p], {}, _attrs("gelu"), lambda: F.gelu(_t(p))),
        ("gelu-tanh", "gelu", [p * 3], {}, _attrs("gelu", approximate="tanh"), lambda: F.gelu(_t(p * 3), approximate="tanh")),
        ("softmax-axis1", "softmax", [p * 4], {}, _attrs("softmax", axis=1), lambda: torch.softmax(_t(p * 4), 1)),
        ("sdpa", "scaled_dot_product_attention", [q, k, v], {}, _attrs("scaled_dot_product_attention"),
         lambda: F.scaled_dot_product_attention(_t(q), _t(k), _t(v))),
        ("sdpa-causal-longer-keys", "scaled_dot_product_attention", [q, kl, vl], {},
         _attrs("scaled_dot_product_attention", causal=True),
         lambda: F.scaled_dot_product_attention(_t(q), _t(kl), _t(vl), is_causal=True)),
        ("sdpa-bool-mask", "scaled_dot_product_attention", [q, k, v, mask], {}, _attrs("scaled_dot_product_attention"),
         lambda: F.scaled_dot_product_attention(_t(q), _t(k), _t(v), attn_mask=_t(mask))),
        ("sdpa-float-mask-scale", "scaled_dot_product_attention", [q, k, v, fmask], {},
         _attrs("scaled_dot_product_attention", scale=0.3),
         lambda: F.scaled_dot_product_attention(_t(q), _t(k), _t(v), attn_mask=_t(fmask), scale=0.3)),
        ("sdpa-causal-and-mask", "scaled_dot_product_attention", [q, k, v, mask], {},
         _attrs("scaled_dot_product_attention", causal=True),
         lambda: F.scaled_dot_product_attention(_t(q), _t(k), _t(v), attn_mask=_t(mask & np.tril(np.ones((5, 5), bool))))),
        ("multi_head_attention", "multi_head_attention", [s8, s8[:, ::-1], s8 * 2], mparams,
         _attrs("multi_head_attention", num_heads=2),
         lambda: mha(_t(s8), _t(s8[:, ::-1]), _t(s8 * 2), need_weights=False)[0]),
        ("linear-in-out", "linear", [s8], {"weight": _rand(8, 6), "bias": b6}, _attrs("linear", weight_layout="in_out"),
         None),
        ("embedding", "embedding", [np.array([[3, 0], [5, 5]])], {"weight": _rand(6, 4)}, {},
         None),
        ("slice-step", "slice", [p], {}, _attrs("slice", axis=2, start=1, stop=-1, step=2), lambda: _t(p)[:, :, 1:-1:2]),
        ("split", "split", [p], {}, _attrs("split", axis=-1, sizes=[1, 4, 2]), lambda: torch.split(_t(p), [1, 4, 2], -1)),
        ("split-one-piece", "split", [p], {}, _attrs("split", axis=1, sizes=[3]), lambda: torch.split(_t(p), 3, 1)),
        ("reshape-symbolic", "reshape", [p], {}, _attrs("reshape", shape=["$0", -1, 7]), lambda: _t(p).reshape(2, -1, 7)),
        ("flatten-middle", "flatten", [p], {}, _attrs("flatten", start=1, end=2), lambda: torch.flatten(_t(p), 1, 2)),
        ("mean-keepdims", "mean", [p], {}, _attrs("mean", axes=[1, 3], keepdims=True), lambda: _t(p).mean((1, 3), True)),
    ]  # fmt: skip
    oracles = {
        "layer_norm-two-axes": lambda ops, prm: F.layer_norm(
            _t(ops[0]), (7, 7), _t(prm["scale"]), _t(prm["offset"]), 1e-3
        ),
        "linear-in-out": lambda ops, prm: _t(ops[0]) @ _t(prm["weight"]) + _t(prm["bias"]),
        "embedding": lambda ops, prm: F.embedding(_t(ops[0]), _t(prm["weight"])),
    }
    return [
        (i, op, ops, prm, at, oracle or (lambda ops, prm, f=oracles[i]: f(ops, prm)))
        for i, op, ops, prm, at, oracle in c
    ]


_CASES = _cases()


def _compare(got, want, what):
    got = got if isinstance(got, (list, tuple)) else [got]
    want = want if isinstance(want, (list, tuple)) else [want]
    assert len(got) == len(want), what
    for g, w in zip(got, want):
        w = w.detach().numpy() if isinstance(w, torch.Tensor) else w
        g = g.detach().numpy() if isinstance(g, torch.Tensor) else g
        assert g.shape == w.shape and g.dtype == w.dtype, (what, g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=what)


@pytest.mark.parametrize("case", _CASES, ids=[c[0] for c in _CASES])
def test_reference_and_torch_build_agree_with_torch(case):
    """The NumPy reference (the meaning of every op) and the torch rebuild's op, against torch itself."""
    name, op, ops, params, attrs, oracle = case
    with torch.no_grad():
        want = oracle() if oracle.__code__.co_argcount == 0 else oracle(ops, params)
        built = build_torch.OPS_TORCH[op]([_t(o) for o in ops], {r: _t(v) for r, v in params.items()}, attrs)
    _compare(OPS_NUMPY[op](ops, params, attrs), want, f"reference {name}")
    _compare(built, want, f"build_torch {name}")


def test_keras_layout_graph_runs_in_torch():
    """A graph in Keras's layouts (channels_last, spatial_in_out kernels, in_out dense) built in torch
    gives the reference's outputs, including a batch size other than the one written."""
    kernel, dense = _rand(3, 3, 2, 4), _rand(4 * 4 * 4, 5)
    tensors = {"conv/kernel": kernel, "conv/bias": _rand(4), "bn/gamma": _rand(4), "bn/beta": _rand(4),
               "bn/moving_mean": _rand(4), "bn/moving_variance": np.abs(_rand(4)) + 0.1, "dense/kernel": dense}  # fmt: skip
    nodes = [
        {"name": "conv", "op": "conv2d", "inputs": ["x"], "params": {"weight": "conv/kernel", "bias": "conv/bias"},
         "attrs": {"stride": [2, 2], "padding": "same", "data_format": "channels_last", "kernel_layout": "spatial_in_out"}},
        {"name": "bn", "op": "batch_norm", "inputs": ["conv"], "attrs": {"axis": -1, "eps": 1e-3},
         "params": {"scale": "bn/gamma", "offset": "bn/beta", "mean": "bn/moving_mean", "var": "bn/moving_variance"}},
        {"name": "pool", "op": "avg_pool2d", "inputs": ["bn"],
         "attrs": {"kernel": [2, 2], "stride": [1, 1], "padding": "same", "count_include_pad": False, "data_format": "channels_last"}},
        {"name": "flat", "op": "reshape", "inputs": ["pool"], "attrs": {"shape": ["$0", -1]}},
        {"name": "dense", "op": "linear", "inputs": ["flat"], "params": {"weight": "dense/kernel"}, "attrs": {"weight_layout": "in_out"}},
        {"name": "probs", "op": "softmax", "inputs": ["dense"]},
    ]  # fmt: skip
    doc = {"framework": "keras", "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 7, 8, 2]}],
           "nodes": nodes, "outputs": ["probs", "flat"]}  # fmt: skip
    graph = parse_graph(dump_graph(doc), {k: v.shape for k, v in tensors.items()}, "keras-layout")
    model = build_torch.build(graph, tensors)
    assert sorted(model.state_dict()) == sorted(tensors)  # names with "/" are kept whole
    for batch in (2, 5):
        x = _rand(batch, 7, 8, 2)
        with torch.no_grad():
            got = model(_t(x))
        _compare(list(got), run(graph, tensors, x), f"keras layout, batch {batch}")


def test_torch_build_registers_parameters_and_buffers(saved):
    folder, _ = saved
    model = load_model(folder / "resnet_block.tf", "torch")
    assert not model.training
    assert dict(model.named_buffers()).keys() == {"bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
                                                  "bn2.running_mean", "bn2.running_var", "bn2.num_batches_tracked"}  # fmt: skip
    assert all(p.requires_grad for p in model.parameters())
    assert isinstance(model.conv1, nn.Module) and model.conv1.weight.shape == (8, 3, 3, 3)


@pytest.mark.parametrize("names", [["forward"], ["a", "a.b"], ["a.b", "a"], ["a..b"], ["_tf_graph"], ["__dict__"]])
def test_torch_build_refuses_tensor_names_that_are_not_module_paths(names):
    from tensorfile.errors import FormatError

    doc = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 2]}],
           "nodes": [{"name": "y", "op": "relu", "inputs": ["x"]}], "outputs": ["y"]}  # fmt: skip
    tensors = {name: np.ones(2, np.float32) for name in names}
    graph = parse_graph(dump_graph(doc), {k: v.shape for k, v in tensors.items()}, "names")
    with pytest.raises(FormatError, match=f"tensor '{names[-1]}': cannot be placed in a torch module"):
        build_torch.build(graph, tensors)
