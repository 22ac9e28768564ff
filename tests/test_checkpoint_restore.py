"""CheckpointManager.restore: all or nothing, strict=False with a report, every LR scheduler, wrappers (issue 11)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import tensorfile
from tensorfile import CheckpointManager, ParameterMismatchError

torch = pytest.importorskip("torch")
nn = torch.nn


def _mlp(hidden: int = 3, out: int = 2, seed: int = 0) -> "nn.Module":
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, out))


def _trained(seed: int = 0):
    model = _mlp(seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
    return model, opt


def _plain_names(state: dict) -> dict:
    return {k.replace("_orig_mod.", "").removeprefix("module."): v for k, v in state.items()}


def _same(a: "nn.Module", b: "nn.Module") -> bool:
    sa, sb = _plain_names(a.state_dict()), _plain_names(b.state_dict())
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_mismatch_fills_nothing_and_lists_every_problem(tmp_path):
    model, opt = _trained()
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"model": model, "optimizer": opt})
        other = _mlp(out=5, seed=1)  # the head differs; the first layer fits
        other_opt = torch.optim.Adam(other.parameters(), lr=0.01)
        before, opt_before = copy.deepcopy(other.state_dict()), copy.deepcopy(other_opt.state_dict())
        with pytest.raises(ParameterMismatchError) as info:
            m.restore(state={"model": other, "optimizer": other_opt})
        text = str(info.value)
        assert "nothing was restored" in text and "model.2.weight" in text and "model.2.bias" in text
        assert "optimizer.state" in text  # Adam's moments have the old head's shapes
        assert {x.name for x in info.value.report.mismatched} >= {"model.2.weight", "model.2.bias"}
        after = other.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # the fitting first layer too
        assert other_opt.state_dict()["state"] == opt_before["state"] == {}


def test_strict_false_fills_what_fits_and_reports_the_rest(tmp_path):
    model, opt = _trained()
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"model": model, "optimizer": opt, "epoch": 4})
        other = _mlp(out=5, seed=1)
        other_opt = torch.optim.Adam(other.parameters(), lr=0.01)
        head = other[2].weight.detach().clone()
        out = m.restore(state={"model": other, "optimizer": other_opt}, strict=False)
    assert out["epoch"] == 4 and out.step == 1 and out["model"] is other
    assert torch.equal(other[0].weight, model[0].weight) and torch.equal(other[2].weight, head)
    report = out.report
    assert not report.ok and sorted(m.name for m in report.mismatched)[:2] == ["model.2.bias", "model.2.weight"]
    assert "model.0.weight" in report.loaded and "model.2.weight" not in report.loaded
    assert out.reports["optimizer"].mismatched and other_opt.state_dict()["state"] == {}  # left as it was
    assert "optimizer: left as it was: its state cannot be taken in part" in report.notes


def test_a_fitting_restore_reports_everything_loaded(tmp_path):
    model, opt = _trained()
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"model": model, "optimizer": opt})
        fresh = _mlp(seed=3)
        fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.01)
        out = m.restore(state={"model": fresh, "optimizer": fresh_opt})
    assert out.report.ok and _same(fresh, model)
    assert sorted(out.reports["model"].loaded) == sorted(model.state_dict())
    assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_a_missing_name_is_a_key_error_or_reported(tmp_path):
    model, _ = _trained()
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"model": model})
        with pytest.raises(KeyError, match="'ema'"):
            m.restore(state={"model": _mlp(), "ema": _mlp()})
        out = m.restore(state={"model": _mlp(), "ema": _mlp()}, strict=False)
    assert out.report.missing_keys == ["ema"]


def _schedulers(opt):
    S = torch.optim.lr_scheduler
    yield "StepLR", S.StepLR(opt, 2, 0.5)
    yield "MultiStepLR", S.MultiStepLR(opt, [2, 4, 4], 0.5)
    yield "ExponentialLR", S.ExponentialLR(opt, 0.9)
    yield "CosineAnnealingLR", S.CosineAnnealingLR(opt, 10)
    yield "CosineAnnealingWarmRestarts", S.CosineAnnealingWarmRestarts(opt, 3, 2)
    yield "CyclicLR", S.CyclicLR(opt, 0.001, 0.1, step_size_up=3)
    yield "OneCycleLR", S.OneCycleLR(opt, 0.1, total_steps=20)
    yield "LambdaLR", S.LambdaLR(opt, lambda e: 0.9**e)
    yield "MultiplicativeLR", S.MultiplicativeLR(opt, lambda e: 0.95)
    yield "LinearLR", S.LinearLR(opt, 0.2, 1.0, 4)
    yield "ConstantLR", S.ConstantLR(opt, 0.5, 3)
    yield "PolynomialLR", S.PolynomialLR(opt, 8, 2.0)
    yield "SequentialLR", S.SequentialLR(opt, [S.ConstantLR(opt, 0.5, 2), S.ExponentialLR(opt, 0.9)], [2])
    yield "ChainedScheduler", S.ChainedScheduler([S.ConstantLR(opt, 0.5, 2), S.ExponentialLR(opt, 0.9)])
    yield "ReduceLROnPlateau", S.ReduceLROnPlateau(opt, patience=1)


SCHEDULERS = [name for name, _ in _schedulers(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9))]


@pytest.mark.parametrize("which", SCHEDULERS)
def test_every_lr_scheduler_round_trips(tmp_path, which):
    def build():
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return model, opt, dict(_schedulers(opt))[which]

    def advance(opt, sched, n):
        lrs = []
        for i in range(n):
            opt.step()
            sched.step(1.0 / (i + 1)) if which == "ReduceLROnPlateau" else sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        return lrs

    model, opt, sched = build()
    advance(opt, sched, 5)
    with CheckpointManager(tmp_path) as m:
        m.save(5, {"model": model, "optimizer": opt, "scheduler": sched})
        model2, opt2, sched2 = build()
        m.restore(state={"model": model2, "optimizer": opt2, "scheduler": sched2})
    assert type(sched2.state_dict().get("milestones", {})) is type(sched.state_dict().get("milestones", {}))
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert advance(opt2, sched2, 6) == advance(opt, sched, 6)


class _Named(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group on a file store (nothing outside the machine), for DistributedDataParallel."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("wrap", ["DataParallel", "DistributedDataParallel", "compile", "compiled submodule",
                                  "DataParallel of compile"])  # fmt: skip
@pytest.mark.parametrize("direction", ["wrapped to plain", "plain to wrapped"])
def test_wrapped_and_plain_models_restore_into_each_other(tmp_path, wrap, direction, request):
    if wrap == "DistributedDataParallel":
        request.getfixturevalue("process_group")

    def wrapped(model):
        if wrap == "DataParallel":
            return nn.DataParallel(model)
        if wrap == "DistributedDataParallel":
            return nn.parallel.DistributedDataParallel(model)
        if wrap == "compile":
            return torch.compile(model)
        if wrap == "compiled submodule":
            model.encoder = torch.compile(model.encoder)
            return model
        return nn.DataParallel(torch.compile(model))

    torch.manual_seed(0)
    source = _Named()
    torch.manual_seed(1)
    target = _Named()
    plain_source, plain_target = copy.deepcopy(source), target
    if direction == "wrapped to plain":
        source = wrapped(source)
    else:
        target = wrapped(target)
    opt = torch.optim.SGD(source.parameters(), lr=0.1)
    with CheckpointManager(tmp_path / "ckpt") as m:
        m.save(1, {"model": source, "optimizer": opt})
        out = m.restore(state={"model": target, "optimizer": torch.optim.SGD(target.parameters(), lr=0.1)})
    assert out.report.ok and _same(plain_target, plain_source)
    assert set(tensorfile.load(tmp_path / "ckpt" / "step_00000001" / "state.tensorfile")["model"]) == {
        "encoder.weight", "encoder.bias", "head.weight", "head.bias"}  # fmt: skip

    # save_parameters / load_parameters: plain names in the file, either way
    torch.manual_seed(2)
    fresh = _Named()
    tensorfile.save_parameters(source, tmp_path / "p.tensorfile")
    assert sorted(tensorfile.load(tmp_path / "p.tensorfile")) == ["encoder.bias", "encoder.weight", "head.bias", "head.weight"]
    report = tensorfile.load_parameters(wrapped(fresh) if direction == "plain to wrapped" else fresh, tmp_path / "p.tensorfile")
    assert report.ok and _same(fresh, plain_source)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_a_plain_torch_file_with_wrapper_prefixes_loads_with_a_note(tmp_path, prefix):
    torch.manual_seed(0)
    source = _Named()
    torch.save({prefix + k: v for k, v in source.state_dict().items()}, tmp_path / "ddp.pt")
    target = _Named()
    report = tensorfile.load_parameters(target, tmp_path / "ddp.pt")
    assert report.ok and _same(target, source)
    assert any("wrapper" in n and prefix.split(".")[0] in n for n in report.notes) and "wrapper" in str(report)


def test_a_real_submodule_called_module_keeps_its_name(tmp_path):
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Linear(2, 2)

    torch.manual_seed(0)
    a, b = Holder(), Holder()
    tensorfile.save_parameters(a, tmp_path / "h.tensorfile")
    assert sorted(tensorfile.load(tmp_path / "h.tensorfile")) == ["module.bias", "module.weight"]
    assert tensorfile.load_parameters(b, tmp_path / "h.tensorfile").ok and _same(a, b)


def test_numpy_state_round_trips_beside_live_objects(tmp_path):
    model, opt = _trained()
    with CheckpointManager(tmp_path) as m:
        m.save(2, {"model": model, "optimizer": opt, "ema": {"w": np.arange(3.0)}})
        out = m.restore(state={"model": _mlp(seed=9), "optimizer": torch.optim.Adam(_mlp().parameters())}, strict=False)
    np.testing.assert_array_equal(out["ema"]["w"], np.arange(3.0))
    assert out.reports["model"].ok


def test_a_checkpoint_with_wrapper_prefixes_restores_into_a_plain_model(tmp_path, monkeypatch):
    """Checkpoints written before wrappers were unwrapped (tensorfile 0.1 stored torch.compile's names)."""
    from tensorfile.checkpoint import live

    torch.manual_seed(0)
    source = _Named()
    real = live.capture
    monkeypatch.setattr(live, "capture", lambda kind, value: {"module._orig_mod." + k: v for k, v in real(kind, value).items()}
                        if kind == "torch.module" else real(kind, value))  # fmt: skip
    from tensorfile.checkpoint import manager as manager_module

    monkeypatch.setattr(manager_module, "capture", live.capture)
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"model": source})
        monkeypatch.undo()
        target = _Named()
        out = m.restore(state={"model": target})
    assert out.report.ok and _same(target, source)
    assert any("wrapper" in n for n in out.report.notes)


def test_a_keras_time_distributed_wrapper_is_named_as_its_layer(tmp_path):
    keras = pytest.importorskip("keras")

    def model(wrapped: bool, seed: int):
        keras.utils.set_random_seed(seed)
        dense = keras.layers.Dense(3, name="d")
        layer = keras.layers.TimeDistributed(dense) if wrapped else dense  # named as its Dense
        return keras.Sequential([keras.layers.Input((5, 4)), layer])

    wrapped, plain = model(True, 0), model(False, 1)
    tensorfile.save_parameters(wrapped, tmp_path / "w.tensorfile")
    assert sorted(tensorfile.load(tmp_path / "w.tensorfile")) == ["d.bias", "d.kernel"]
    assert tensorfile.load_parameters(plain, tmp_path / "w.tensorfile").ok
    np.testing.assert_array_equal(plain.weights[0].numpy(), wrapped.weights[0].numpy())
    with CheckpointManager(tmp_path / "ckpt") as m:  # and back, through the manager
        m.save(1, {"model": plain})
        target = model(True, 2)
        assert m.restore(state={"model": target}).report.ok
    np.testing.assert_array_equal(target.weights[0].numpy(), plain.weights[0].numpy())
    old = {"layers.0.layer.kernel": wrapped.weights[0].numpy(), "layers.0.layer.bias": wrapped.weights[1].numpy()}
    tensorfile.save(old, tmp_path / "old.tensorfile")  # a 0.1 file of the wrapped model
    report = tensorfile.load_parameters(model(False, 3), tmp_path / "old.tensorfile")
    assert report.ok and any("TimeDistributed" in n for n in report.notes)


def test_another_optimizer_or_scheduler_class_is_refused_before_anything_is_filled(tmp_path):
    model, _ = _trained()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = torch.optim.lr_scheduler.StepLR(sgd, 2)
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"model": model, "optimizer": sgd, "scheduler": step})
        fresh = _mlp(seed=5)
        before = copy.deepcopy(fresh.state_dict())
        adam = torch.optim.Adam(fresh.parameters(), lr=0.001)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(adam, 10)
        with pytest.raises(ParameterMismatchError) as info:
            m.restore(state={"model": fresh, "optimizer": adam, "scheduler": cosine})
    assert "torch.optim.sgd.SGD" in str(info.value) and "CosineAnnealingLR" in str(info.value)
    assert _same(fresh, _mlp(seed=5)) and all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    assert adam.param_groups[0]["lr"] == 0.001 and "momentum" not in adam.param_groups[0]
    assert not hasattr(cosine, "step_size")


def test_an_object_that_refuses_its_state_late_puts_back_what_was_filled(tmp_path):
    """GradScaler's own load_state_dict refuses a disabled scaler's state: the scheduler filled before it
    comes back, and the model (filled last) is never touched."""
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model, opt = _trained()
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    opt.step()
    sched.step()
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"model": model, "scheduler": sched, "scaler": scaler})
        fresh = _mlp(seed=5)
        fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.01)
        fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, 1)
        kept = copy.deepcopy(fresh_sched.state_dict())
        with pytest.raises(ParameterMismatchError, match="put back"):
            m.restore(state={"model": fresh, "scheduler": fresh_sched, "scaler": torch.amp.GradScaler("cpu")})
    assert fresh_sched.state_dict() == kept and _same(fresh, _mlp(seed=5))


def test_a_data_parallel_file_of_a_model_with_a_module_attribute_loads_each_tensor_in_its_place(tmp_path):
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.full((2,), 1.0))
            self.module = nn.Linear(2, 2, bias=False)
            with torch.no_grad():
                self.module.weight.fill_(2.0)

    source = Odd()
    torch.save(nn.DataParallel(source).state_dict(), tmp_path / "dp.pt")  # module.weight, module.module.weight
    target = Odd()
    with torch.no_grad():
        target.weight.zero_(), target.module.weight.zero_()
    assert tensorfile.load_parameters(target, tmp_path / "dp.pt").ok
    assert torch.equal(target.weight, source.weight) and torch.equal(target.module.weight, source.module.weight)
    nested = nn.DataParallel(nn.DataParallel(Holder := nn.Sequential(nn.Linear(2, 2))))  # noqa: F841
    torch.save(nested.state_dict(), tmp_path / "dp2.pt")  # module.module.0.weight
    fresh = nn.Sequential(nn.Linear(2, 2))
    assert tensorfile.load_parameters(fresh, tmp_path / "dp2.pt").ok and torch.equal(fresh[0].weight, Holder[0].weight)


def test_a_name_with_layer_in_a_torch_file_is_not_renamed(tmp_path):
    class Inner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(2))

    tensorfile.save({"layer.weight": torch.ones(2)}, tmp_path / "f.tensorfile")
    report = tensorfile.load_parameters(Inner(), tmp_path / "f.tensorfile", strict=False)
    assert report.missing_keys == ["weight"] and report.unexpected_keys == ["layer.weight"]
