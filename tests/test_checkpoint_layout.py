"""The cached layout of incremental saves, sync and async (tensorfile.checkpoint.layout): a save of the previous
save's structure skips the flatten, and every change of structure or tensor identity is seen (each step restores
bit-identically, with the types of its plain values)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from tensorfile import CheckpointManager
from tensorfile.checkpoint.layout import Layout

torch = pytest.importorskip("torch")


def _flat(tree, prefix=""):
    """Every value of a state by path: tensors as host arrays, plain values as (type, value)."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k!r}."))
    elif isinstance(tree, (list, tuple)):
        out[prefix + "#"] = (type(tree), len(tree))
        for i, v in enumerate(tree):
            out.update(_flat(v, f"{prefix}{i}."))
    elif isinstance(tree, torch.Tensor):
        out[prefix] = tree.detach().resolve_neg().resolve_conj().numpy().copy()
    else:
        out[prefix] = (type(tree), repr(tree))  # repr: -0.0 is not 0.0, nan is nan
    return out


def _same(a, b) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def _plain(state):
    return {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in state.items()}


class _Spy:
    """Records, per save, whether the cached layout matched."""

    def __init__(self, monkeypatch):
        self.hits: list[bool] = []
        real = Layout.match

        def match(layout, state):
            found = real(layout, state)
            self.hits.append(found is not None)
            return found

        monkeypatch.setattr(Layout, "match", match)


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_structure_and_identity_changes_are_seen_and_every_step_restores(tmp_path, monkeypatch, async_save):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    model[0].requires_grad_(False)
    opt = torch.optim.Adam(model[1].parameters(), lr=1e-2)
    cplx = torch.randn(3, dtype=torch.complex64)
    tied = torch.randn(5)
    extra = {"epoch": 0, "history": [1.0], "scale": 0.0, "resized": torch.zeros(3), "tied": [tied, tied],
             "imag": cplx.imag}  # fmt: skip

    def train():
        model(torch.randn(2, 8)).square().mean().backward()
        opt.step()
        opt.zero_grad()

    changes = [
        ("first save: flattened", lambda: None, None),
        ("same structure", lambda: None, None),  # optimizer state still empty: hit
        ("optimizer state appears", train, False),
        ("trained: same structure", train, True),
        ("parameter replaced, same shape", lambda: setattr(model[1], "weight", torch.nn.Parameter(torch.randn(4, 8))),
         False),
        ("trained again", train, True),
        ("bias .data = a tensor of the same shape", lambda: setattr(model[1].bias, "data", torch.randn(4)), False),
        ("a tensor resized through .data", lambda: setattr(extra["resized"], "data", torch.ones(5)), False),
        ("a param group added", lambda: opt.add_param_group({"params": [model[0].bias], "lr": 0.5}), False),
        ("an epoch counter", lambda: extra.update(epoch=1), True),
        ("an int becomes a bool equal to it", lambda: extra.update(epoch=True), True),
        ("0.0 becomes -0.0", lambda: extra.update(scale=-0.0), True),
        ("a float becomes nan", lambda: extra.update(scale=float("nan")), True),
        ("a list grows", lambda: extra["history"].append(2.0), False),
        ("a list item changes", lambda: extra["history"].__setitem__(0, 3.0), True),
        ("a learning rate changes", lambda: opt.param_groups[0].update(lr=5e-3), True),
        ("tied weights untied", lambda: extra["tied"].__setitem__(1, tied.clone()), False),
        ("a key added", lambda: extra.update(new=torch.ones(2)), False),
        ("a tensor becomes a dict", lambda: extra.update(new={1: 2}), False),
        ("same structure again", lambda: extra.update(new={1: 3}), True),
        ("a key of another type equal to it", lambda: extra.update(new={True: 3}), False),
        # last: a neg view has no storage view, so no layout is kept after it
        ("a neg view of the same memory", lambda: extra.update(imag=cplx.conj().imag), False),
    ]
    spy = _Spy(monkeypatch)
    saved = {}
    with CheckpointManager(tmp_path, incremental=True, async_save=async_save) as m:
        for step, (what, change, hit) in enumerate(changes):
            change()
            state = {"model": model, "opt": opt, "extra": extra}
            before = len(spy.hits)
            m.save(step, state)
            saved[step] = _flat(_plain(state))
            m.wait()
            if step:  # the first save has no layout to match; after a state outside the layout, none is kept
                assert (spy.hits[before:] == [True]) is (True if hit is None else hit), what
        assert m.steps == list(range(len(changes)))
        for step in m.steps:
            back = m.restore(step)
            _same(_flat({k: back[k] for k in ("model", "opt", "extra")}), saved[step])
    assert saved[len(changes) - 1]["'extra'.'epoch'."] == (bool, "True")


def test_a_change_behind_the_counter_is_found_on_the_cached_layout_sync(tmp_path, monkeypatch):
    """Sync: the shared tensors are hashed while the blob and manifest are written; the one changed behind its
    counter is found before the commit, and the step is written again with it (no step skipped)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 4)
    spy = _Spy(monkeypatch)
    with CheckpointManager(tmp_path, incremental=True) as m:
        for step in range(3):
            with torch.no_grad():
                head.bias.add_(1.0)  # counted
            m.save(step, {"model": head})
        head.weight.data.add_(1.0)  # behind the counter
        m.save(3, {"model": head})
        assert spy.hits == [True, True, True] and m.steps == [0, 1, 2, 3]
        assert m._incremental.written_bytes == 16 * 4 * 4  # the weight only: the bias did not move
        assert sorted(os.listdir(tmp_path)) == [".lock", "step_00000000", "step_00000001", "step_00000002", "step_00000003"]
        back = m.restore(3)["model"]
        assert torch.equal(back["weight"], head.weight) and torch.equal(back["bias"], head.bias)
        assert not torch.equal(m.restore(2)["model"]["weight"], head.weight)


def test_a_change_behind_the_counter_is_found_on_the_cached_layout(tmp_path, monkeypatch):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 4)
    spy = _Spy(monkeypatch)
    with CheckpointManager(tmp_path, incremental=True, async_save=True) as m:
        for step in range(3):
            with torch.no_grad():
                head.bias.add_(1.0)  # counted
            m.save(step, {"model": head})
            m.wait()
        head.weight.data.add_(1.0)  # behind the counter: .data has a counter of its own
        with pytest.warns(RuntimeWarning, match="0.weight|weight"):
            m.save(3, {"model": head})
            m.wait()
        assert spy.hits == [True, True, True] and m.steps == [0, 1, 2]  # matched, yet not committed
        m.save(4, {"model": head})  # flattened again (the tracker was reset: no layout), the weight copied
        m.wait()
        assert m.steps == [0, 1, 2, 4] and spy.hits == [True, True, True]
        back = m.restore(4)["model"]
        assert torch.equal(back["weight"], head.weight) and torch.equal(back["bias"], head.bias)


def test_a_state_outside_the_layout_is_flattened_each_save(tmp_path, monkeypatch):
    """NumPy arrays (no version counter) and empty tensors: no layout is kept; the steps stay exact."""
    spy = _Spy(monkeypatch)
    a = np.zeros(4, np.float32)
    with CheckpointManager(tmp_path, incremental=True, async_save=True) as m:
        for step in range(3):
            a[step] = step + 1
            m.save(step, {"a": a, "empty": torch.zeros(0), "t": torch.ones(2)})
            m.wait()
        assert spy.hits == [] and m._incremental._layout is None
        assert m.restore(2)["a"].tolist() == [1, 2, 3, 0] and m.restore(1)["a"].tolist() == [1, 2, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with CheckpointManager(tmp_path, incremental=True, async_save=True) as m:
            t = torch.ones(2)
            m.save(3, {"t": t})
            m.save(4, {"t": t})
            m.save(5, {"t": torch.ones(2)})  # another tensor of the same shape and bytes (other memory)
            m.wait()
            assert spy.hits == [True, False] and m.restore(4)["t"].tolist() == [1.0, 1.0]


def test_the_writer_thread_is_reused_ends_when_idle_and_starts_again(tmp_path, monkeypatch):
    import time

    from tensorfile.checkpoint import writer

    monkeypatch.setattr(writer, "IDLE_SECONDS", 0.2)
    with CheckpointManager(tmp_path, incremental=True, async_save=True) as m:
        t = torch.ones(3)
        m.save(0, {"t": t})
        first = m._writer._thread
        m.save(1, {"t": t})
        assert m._writer._thread is first and first.is_alive()
        m.wait()
        deadline = time.monotonic() + 10
        while first.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not first.is_alive() and m._writer._thread is None
        t.add_(1)
        m.save(2, {"t": t})
        second = m._writer._thread
        m.wait()
        assert second is not first and m.steps == [0, 1, 2] and m.restore(2)["t"].tolist() == [2.0] * 3
    second.join(10)
    assert not second.is_alive()  # close() ended it
