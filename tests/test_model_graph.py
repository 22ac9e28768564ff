"""Model graphs (docs/FORMAT.md, "Model graphs"): the reference interpreter on hand-written graphs, and
hostile graphs refused before anything is allocated."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tensorfile
from tensorfile.model import MODEL_KEY, UnsupportedArchitectureError, load_model, read_graph
from tensorfile.model.graph import MAX_NODES

RNG = np.random.default_rng(0)
W1, B1 = RNG.standard_normal((8, 4)).astype(np.float32), RNG.standard_normal(8).astype(np.float32)
W2, B2 = RNG.standard_normal((3, 8)).astype(np.float32), RNG.standard_normal(3).astype(np.float32)
PARAMS = {"hidden.weight": W1, "hidden.bias": B1, "output.weight": W2, "output.bias": B2}


def mlp_graph(**changes):
    graph = {
        "ir_version": 1, "framework": "torch",
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}],
        "nodes": [
            {"name": "hidden", "op": "linear", "inputs": ["x"], "params": {"weight": "hidden.weight", "bias": "hidden.bias"}},
            {"name": "relu", "op": "relu", "inputs": ["hidden"]},
            {"name": "output", "op": "linear", "inputs": ["relu"], "params": {"weight": "output.weight", "bias": "output.bias"}},
        ],
        "outputs": ["output"], "modules": {"": "MLP", "hidden": "Linear", "output": "Linear"},
    }  # fmt: skip
    graph.update(changes)
    return graph


def write(path, graph, params=PARAMS):
    text = graph if isinstance(graph, str) else json.dumps(graph)
    tensorfile.save(params, path, metadata={MODEL_KEY: text})
    return path


def test_a_hand_written_mlp_runs_in_the_reference_interpreter(tmp_path):
    model = load_model(write(tmp_path / "mlp", mlp_graph()), "numpy")
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    expected = np.maximum(x @ W1.T + B1, 0) @ W2.T + B2
    np.testing.assert_allclose(model(x), expected, rtol=1e-6)
    assert model(x).dtype == np.float32


def test_split_results_and_symbolic_reshape(tmp_path):
    graph = mlp_graph(nodes=[
        {"name": "parts", "op": "split", "inputs": ["x"], "attrs": {"axis": 1, "sizes": [1, 3]}},
        {"name": "r", "op": "reshape", "inputs": ["parts:1"], "attrs": {"shape": ["$0", 3, 1]}},
        {"name": "s", "op": "squeeze", "inputs": ["r"], "attrs": {"axis": 2}},
        {"name": "both", "op": "concat", "inputs": ["s", "parts:0"], "attrs": {"axis": 1}},
    ], outputs=["both", "parts:0"])  # fmt: skip
    model = load_model(write(tmp_path / "g", graph), "numpy")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    both, first = model(x)
    np.testing.assert_array_equal(both, np.concatenate([x[:, 1:], x[:, :1]], axis=1))
    np.testing.assert_array_equal(first, x[:, :1])


def _nodes(*nodes):
    return mlp_graph(nodes=list(nodes), outputs=[nodes[-1]["name"]] if nodes else ["x"])


HOSTILE = {
    "unknown op": (mlp_graph(nodes=[{"name": "a", "op": "os.system", "inputs": ["x"]}], outputs=["a"]), "not in the vocabulary"),
    "op as a dotted import path": (mlp_graph(nodes=[{"name": "a", "op": "builtins.eval", "inputs": ["x"]}], outputs=["a"]),
                                   "not in the vocabulary"),
    "op that is not a string": (mlp_graph(nodes=[{"name": "a", "op": ["relu"], "inputs": ["x"]}], outputs=["a"]), "not in the vocabulary"),
    "cycle": (mlp_graph(nodes=[{"name": "a", "op": "relu", "inputs": ["b"]}, {"name": "b", "op": "relu", "inputs": ["a"]}],
                        outputs=["b"]), "not an input or an earlier node"),
    "self loop": (mlp_graph(nodes=[{"name": "a", "op": "relu", "inputs": ["a"]}], outputs=["a"]), "not an input or an earlier node"),
    "dangling input": (mlp_graph(nodes=[{"name": "a", "op": "relu", "inputs": ["nowhere"]}], outputs=["a"]), "dangling"),
    "dangling output": (mlp_graph(outputs=["nowhere"]), "dangling"),
    "parameter the file lacks": (mlp_graph(nodes=[{"name": "a", "op": "linear", "inputs": ["x"], "params": {"weight": "ghost"}}],
                                           outputs=["a"]), "does not hold"),
    "parameter of the wrong rank": (mlp_graph(nodes=[{"name": "a", "op": "linear", "inputs": ["x"],
                                                      "params": {"weight": "hidden.bias"}}], outputs=["a"]), "must have 2 dims"),
    "bias that does not fit": (mlp_graph(nodes=[{"name": "a", "op": "linear", "inputs": ["x"],
                                                 "params": {"weight": "hidden.weight", "bias": "output.bias"}}], outputs=["a"]),
                               "does not fit"),
    "unknown attribute": (mlp_graph(nodes=[{"name": "a", "op": "relu", "inputs": ["x"], "attrs": {"code": "rm -rf /"}}],
                                    outputs=["a"]), "attributes must be among"),
    "absurd stride": (mlp_graph(nodes=[{"name": "a", "op": "max_pool1d", "inputs": ["x"], "attrs": {"kernel": [2**40]}}],
                                outputs=["a"]), "out of range"),
    "absurd symbolic dim": (mlp_graph(inputs=[{"name": "x", "dtype": "float32", "shape": ["b" * 5000, 4]}]), "a dim must be"),
    "absurd fixed dim": (mlp_graph(inputs=[{"name": "x", "dtype": "float32", "shape": [2**62, 4]}]), "a dim must be"),
    "too many dims": (mlp_graph(inputs=[{"name": "x", "dtype": "float32", "shape": [1] * 40}]), "at most 8 dims"),
    "newer version": (mlp_graph(ir_version=99), "ir_version"),
    "not JSON": ("{'nodes': ", "not valid JSON"),
    "repeated node name": (mlp_graph(nodes=[{"name": "x", "op": "relu", "inputs": ["x"]}], outputs=["x"]), "repeated name"),
    "wrong operand count": (mlp_graph(nodes=[{"name": "a", "op": "add", "inputs": ["x"]}], outputs=["a"]), "inputs"),
    "extra node field": (mlp_graph(nodes=[{"name": "a", "op": "relu", "inputs": ["x"], "import": "os"}], outputs=["a"]),
                         "unknown fields"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_graph_is_refused_before_any_tensor_is_read(tmp_path, case, monkeypatch):
    graph, message = HOSTILE[case]
    path = write(tmp_path / "bad", graph)
    import tensorfile.files

    def no_load(*args, **kwargs):
        raise AssertionError("tensors were read before the graph was checked")

    monkeypatch.setattr(tensorfile.files, "load", no_load)
    with pytest.raises(UnsupportedArchitectureError) as err:
        load_model(path, "numpy")
    assert message in str(err.value) and str(path) in str(err.value)
    assert isinstance(err.value, tensorfile.TensorFileError)
    assert len(str(err.value)) < 600


def test_a_million_nodes_is_refused_without_building_them(tmp_path):
    node = '{"name":"n%d","op":"relu","inputs":["x"]}'
    nodes = ",".join(node % i for i in range(MAX_NODES + 1))
    text = ('{"ir_version":1,"inputs":[{"name":"x","dtype":"float32","shape":[1]}],"nodes":[' + nodes
            + '],"outputs":["x"]}')  # fmt: skip
    with pytest.raises(UnsupportedArchitectureError, match="more than the 100000 allowed"):
        read_graph(write(tmp_path / "big", text))


def test_a_file_without_a_graph_says_how_to_write_one(tmp_path):
    tensorfile.save(PARAMS, tmp_path / "plain")
    with pytest.raises(tensorfile.FormatError, match="save_model"):
        load_model(tmp_path / "plain", "numpy")


def test_load_model_refuses_an_unknown_framework(tmp_path):
    with pytest.raises(ValueError, match="unknown framework"):
        load_model(write(tmp_path / "mlp", mlp_graph()), "caffe")


def test_ls_shows_the_graph_one_line_a_node(tmp_path):
    from test_cli import run

    listed = run("ls", write(tmp_path / "mlp", mlp_graph()))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    start = lines.index("model graph (torch, 3 nodes):")
    assert lines[start + 1] == "  inputs: x: float32 [batch, 4]"
    assert lines[start + 2].split()[:4] == ["hidden", "linear", "<-", "x"] and "hidden.weight" in lines[start + 2]
    assert lines[start + 3].split() == ["relu", "relu", "<-", "hidden"]
    assert lines[start + 5] == "  outputs: output"
    assert not any(line.startswith("metadata tensorfile.model") for line in lines)
    bad = run("ls", write(tmp_path / "bad", mlp_graph(nodes=[{"name": "a", "op": "os.system", "inputs": ["x"]}], outputs=["a"])))
    assert bad.returncode == 0 and "model graph: not valid:" in bad.stdout and "not in the vocabulary" in bad.stdout


@pytest.mark.parametrize("ref", ["s:00", "s:01", "s:\u0660", "s:\u00b2", "s:2"])
def test_a_result_index_is_spelled_one_way(tmp_path, ref):
    graph = mlp_graph(nodes=[{"name": "s", "op": "split", "inputs": ["x"], "attrs": {"axis": 1, "sizes": [2, 2]}},
                             {"name": "r", "op": "relu", "inputs": [ref]}], outputs=["r"])  # fmt: skip
    with pytest.raises(UnsupportedArchitectureError, match="not an input or an earlier node"):
        read_graph(write(tmp_path / "g", graph))


def test_a_node_name_cannot_look_like_a_result_index(tmp_path):
    graph = mlp_graph(nodes=[{"name": "s:0", "op": "relu", "inputs": ["x"]}], outputs=["s:0"])
    with pytest.raises(UnsupportedArchitectureError, match="bad or repeated name"):
        read_graph(write(tmp_path / "g", graph))


@pytest.mark.parametrize("node", [
    {"name": "p", "op": "max_pool2d", "inputs": ["x"], "attrs": {"kernel": [1, 1], "padding": [[65536, 65536], [0, 0]]}},
    {"name": "p", "op": "avg_pool1d", "inputs": ["x"], "attrs": {"kernel": [2], "padding": [[2, 0]]}},
])  # fmt: skip
def test_pool_padding_beyond_half_the_kernel_is_refused(tmp_path, node):
    with pytest.raises(UnsupportedArchitectureError, match="more than half of kernel"):
        read_graph(write(tmp_path / "g", mlp_graph(nodes=[node], outputs=["p"])))


def test_a_node_that_fails_at_run_time_is_named(tmp_path):
    graph = mlp_graph(nodes=[{"name": "e", "op": "embedding", "inputs": ["x"], "params": {"weight": "hidden.weight"}},
                             {"name": "a", "op": "adaptive_avg_pool2d", "inputs": ["x"], "attrs": {"output_size": [9, 9]}}],
                      outputs=["e", "a"])  # fmt: skip
    model = load_model(write(tmp_path / "g", graph), "numpy")
    with pytest.raises(ValueError, match="node 'e' \\(embedding\\)"):
        model(np.full((1, 4), 100, np.float32))  # ids past the table's 8 rows
