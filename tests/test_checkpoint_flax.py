"""Flax and optax state: save/load of FrozenDict, TrainState, nnx.State, optax states and typed PRNG keys;
exact resume of NNX models with nnx.Optimizer and nnx.Rngs, and of linen TrainState (issue 11)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tensorfile
from tensorfile import CheckpointManager, FormatError, ParameterMismatchError
from tensorfile.format.record import RECORD_KEY

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
nnx = pytest.importorskip("flax.nnx")
import jax.numpy as jnp  # noqa: E402
from flax.core import FrozenDict  # noqa: E402
from flax.training import train_state  # noqa: E402


def _equal_trees(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_flax_and_optax_containers_save_as_plain_dicts(tmp_path):
    params = FrozenDict({"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3)}})
    opt_state = optax.adam(1e-3).init(params)
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    tensorfile.save({"params": params, "opt": opt_state, "state": nnx.state(model)}, tmp_path / "f.tensorfile")
    back = tensorfile.load(tmp_path / "f.tensorfile")
    assert isinstance(back["params"], dict) and np.array_equal(back["params"]["dense"]["kernel"], np.arange(6.0).reshape(2, 3))
    adam = back["opt"][0]  # (ScaleByAdamState(count, mu, nu), EmptyState()) -> [{count, mu, nu}, {}]
    assert set(adam) == {"count", "mu", "nu"} and int(adam["count"]) == 0 and back["opt"][1] == {}
    assert np.array_equal(back["state"]["kernel"], np.asarray(model.kernel.get_value()))
    names = tensorfile.open(tmp_path / "f.tensorfile").keys()
    assert "params.dense.kernel" in names and "opt.0.mu.dense.bias" in names and "state.kernel" in names


def test_typed_prng_keys_round_trip(tmp_path):
    key = jax.random.key(42)
    keys = jax.random.split(jax.random.key(1), 3)
    tensorfile.save({"key": key, "keys": keys}, tmp_path / "k.tensorfile")
    back = tensorfile.load(tmp_path / "k.tensorfile", framework="jax")
    assert jax.dtypes.issubdtype(back["key"].dtype, jax.dtypes.prng_key)
    assert np.array_equal(jax.random.key_data(back["key"]), jax.random.key_data(key))
    assert np.array_equal(jax.random.normal(back["keys"][2], (3,)), jax.random.normal(keys[2], (3,)))
    plain = tensorfile.load(tmp_path / "k.tensorfile", framework="numpy")
    assert plain["key"].dtype == np.uint32 and plain["key"].shape == (2,)
    raw = (tmp_path / "k.tensorfile").read_bytes()  # the record, read from the header's bytes
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    record = json.loads(header["__metadata__"][RECORD_KEY])
    assert record["tensors"]["key"]["prng_impl"] == "threefry2x32" and header["key"]["dtype"] == "U32"


def test_a_prng_record_is_checked():
    from tensorfile.format.header import TensorEntry
    from tensorfile.format.record import _check_tensor

    entry = TensorEntry(name="k", code="F32", shape=(2,), begin=0, end=8)
    base = {"checksum": "0" * 16, "framework": "jax"}
    with pytest.raises(FormatError, match="prng_impl"):
        _check_tensor("f", "k", {**base, "prng_impl": "threefry2x32"}, entry)  # not U32 data
    u32 = TensorEntry(name="k", code="U32", shape=(2,), begin=0, end=8)
    with pytest.raises(FormatError, match="prng_impl"):
        _check_tensor("f", "k", {**base, "prng_impl": "os.system"}, u32)
    with pytest.raises(FormatError, match="prng_impl"):
        _check_tensor("f", "k", {**base, "prng_impl": ["threefry2x32"]}, u32)
    with pytest.raises(FormatError, match="prng_impl"):  # rbg keys are 4 words
        _check_tensor("f", "k", {**base, "prng_impl": "rbg"}, u32)
    _check_tensor("f", "k", {**base, "prng_impl": "threefry2x32"}, u32)
    three = TensorEntry(name="k", code="U32", shape=(5, 3), begin=0, end=60)
    with pytest.raises(FormatError, match="prng_impl"):
        _check_tensor("f", "k", {**base, "prng_impl": "threefry2x32"}, three)
    four = TensorEntry(name="k", code="U32", shape=(5, 4), begin=0, end=80)
    _check_tensor("f", "k", {**base, "prng_impl": "unsafe_rbg"}, four)


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(4, 8, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.lin(x))))


def _nnx_step(model, optimizer, x):
    def loss(m):
        return (m(x) ** 2).mean()

    grads = nnx.grad(loss)(model)
    optimizer.update(model, grads)


def test_nnx_optimizer_and_rng_streams_resume_exactly(tmp_path):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 4)), jnp.float32)

    def build(seed):
        model = _Net(nnx.Rngs(params=seed, dropout=seed + 100))
        return model, nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    straight, s_opt = build(0)
    for _ in range(6):
        _nnx_step(straight, s_opt, x)

    model, opt = build(0)
    for _ in range(3):
        _nnx_step(model, opt, x)
    with CheckpointManager(tmp_path) as m:
        m.save(3, {"model": model, "optimizer": opt})
        names = set(tensorfile.open(tmp_path / "step_00000003" / "state.tensorfile").keys())
        assert {"optimizer.step", "optimizer.opt_state.0.mu.lin.kernel", "optimizer.opt_state.0.nu.out.bias",
                "model.drop.rngs.key", "model.drop.rngs.count", "model.lin.kernel"} <= names  # fmt: skip
        fresh, fresh_opt = build(7)
        out = m.restore(state={"model": fresh, "optimizer": fresh_opt})
    assert out.report.ok
    assert int(fresh_opt.step.get_value()) == 3
    for _ in range(3):
        _nnx_step(fresh, fresh_opt, x)
    assert _equal_trees(nnx.state(fresh, nnx.Param), nnx.state(straight, nnx.Param))
    assert _equal_trees(nnx.state(fresh_opt), nnx.state(s_opt))


def test_nnx_rngs_alone_resume_their_streams(tmp_path):
    rngs = nnx.Rngs(0, dropout=5)
    rngs.dropout(), rngs.default()
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"rngs": rngs})
        fresh = nnx.Rngs(9, dropout=9)
        m.restore(state={"rngs": fresh})
    assert np.array_equal(jax.random.key_data(fresh.dropout()), jax.random.key_data(rngs.dropout()))
    assert np.array_equal(jax.random.key_data(fresh.default()), jax.random.key_data(rngs.default()))


def test_linen_train_state_resumes_exactly(tmp_path):
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.relu(nn.Dense(8)(x)))

    x = jnp.asarray(np.random.default_rng(1).standard_normal((16, 4)), jnp.float32)
    net = MLP()

    def build(seed):
        params = net.init(jax.random.PRNGKey(seed), x)["params"]
        return train_state.TrainState.create(apply_fn=net.apply, params=FrozenDict(params), tx=optax.adam(1e-2))

    @jax.jit
    def step(state):
        grads = jax.grad(lambda p: (state.apply_fn({"params": p}, x) ** 2).mean())(state.params)
        return state.apply_gradients(grads=grads)

    straight = build(0)
    for _ in range(6):
        straight = step(straight)
    state = build(0)
    for _ in range(3):
        state = step(state)
    with CheckpointManager(tmp_path) as m:
        m.save(3, {"train": state, "frozen": FrozenDict({"a": jnp.ones(2)})})
        out = m.restore(state={"train": build(5), "frozen": FrozenDict({"a": jnp.zeros(2)})})
    resumed = out["train"]
    assert isinstance(resumed, train_state.TrainState) and int(resumed.step) == 3
    assert isinstance(out["frozen"], FrozenDict) and np.array_equal(out["frozen"]["a"], np.ones(2))
    for _ in range(3):
        resumed = step(resumed)
    assert _equal_trees(resumed.params, straight.params) and _equal_trees(resumed.opt_state, straight.opt_state)


def test_a_pytree_that_does_not_fit_is_refused_whole(tmp_path):
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    opt_state = optax.adam(1e-3).init(params)
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"opt": opt_state})
        other = optax.adam(1e-3).init({"w": jnp.ones((4, 3)), "b": jnp.zeros(3)})
        with pytest.raises(ParameterMismatchError, match="opt.0.mu.w"):
            m.restore(state={"opt": other})
        out = m.restore(state={"opt": other}, strict=False)
    assert {x.name for x in out.report.mismatched} == {"opt.0.mu.w", "opt.0.nu.w"}
    assert out["opt"][0].mu["w"] is other[0].mu["w"]  # what does not fit keeps its live value...
    assert out["opt"][0].mu["b"] is not other[0].mu["b"] and np.array_equal(out["opt"][0].mu["b"], opt_state[0].mu["b"])


def test_async_snapshots_of_flax_state(tmp_path):
    params = FrozenDict({"w": jnp.ones(3)})
    with CheckpointManager(tmp_path, async_save=True) as m:
        m.save(1, {"params": params, "key": jax.random.key(3)})
    back = tensorfile.load(tmp_path / "step_00000001" / "state.tensorfile", framework="jax")
    assert np.array_equal(back["params"]["w"], np.ones(3))
    assert np.array_equal(jax.random.key_data(back["key"]), jax.random.key_data(jax.random.key(3)))


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_every_prng_implementation_keeps_its_name(tmp_path, impl):
    key = jax.random.key(5, impl=impl)
    tensorfile.save({"k": key}, tmp_path / "k.tensorfile")
    back = tensorfile.load(tmp_path / "k.tensorfile", framework="jax")["k"]
    assert str(jax.random.key_impl(back)) == impl
    assert np.array_equal(jax.random.normal(jax.random.fold_in(back, 3), (2,)), jax.random.normal(jax.random.fold_in(key, 3), (2,)))


def test_pytrees_holding_typed_keys_restore(tmp_path):
    frozen = FrozenDict({"key": jax.random.key(1), "w": jnp.ones(2)})
    model = nnx.Dropout(0.5, rngs=nnx.Rngs(3))
    model.rngs()  # move the stream on
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"frozen": frozen, "state": nnx.state(model)})
        out = m.restore(state={"frozen": FrozenDict({"key": jax.random.key(9), "w": jnp.zeros(2)}),
                               "state": nnx.state(nnx.Dropout(0.5, rngs=nnx.Rngs(0)))})  # fmt: skip
    assert out.report.ok
    assert np.array_equal(jax.random.key_data(out["frozen"]["key"]), jax.random.key_data(frozen["key"]))
    assert _equal_trees(jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key) else x, out["state"]), jax.tree_util.tree_map(lambda x: jax.random.key_data(x)
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, nnx.state(model)))  # fmt: skip


def test_a_pytree_restore_checks_unexpected_fields_and_python_numbers(tmp_path):
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"s": FrozenDict({"step": 3, "w": jnp.ones(2), "extra": jnp.ones(4)})})
        m.save(2, {"s": FrozenDict({"step": "three", "w": jnp.ones(2)})})
        with pytest.raises(ParameterMismatchError, match="s.extra"):
            m.restore(1, state={"s": FrozenDict({"step": 0, "w": jnp.zeros(2)})})
        with pytest.raises(ParameterMismatchError, match="s.step"):
            m.restore(2, state={"s": FrozenDict({"step": 0, "w": jnp.zeros(2)})})
        out = m.restore(2, state={"s": FrozenDict({"step": 0, "w": jnp.zeros(2), "new": jnp.zeros(1)})}, strict=False)
    restored = out["s"]  # what fits is filled, the rest keeps its live value
    assert restored["step"] == 0 and np.array_equal(restored["w"], np.ones(2)) and np.array_equal(restored["new"], np.zeros(1))
    assert out.report.missing_keys == ["s.new"] and [x.name for x in out.report.mismatched] == ["s.step"]


def test_an_nnx_variable_holding_a_python_number_round_trips(tmp_path):
    class Counter(nnx.Module):
        def __init__(self):
            self.count = nnx.Variable(3)
            self.lin = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    source = Counter()
    source.count.set_value(7)
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"m": source})
        target = Counter()
        m.restore(state={"m": target})
    assert target.count.get_value() == 7 and type(target.count.get_value()) is int
