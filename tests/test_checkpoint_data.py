"""Exact mid-epoch resume of PyTorch data: ResumableLoader, torch.Generator, StatefulDataLoader (issue 11)."""

from __future__ import annotations

import pytest

from tensorfile import CheckpointManager

torch = pytest.importorskip("torch")
from torch.utils.data import DistributedSampler, TensorDataset  # noqa: E402

from tensorfile.checkpoint import ResumableLoader  # noqa: E402


def _data(n: int = 64) -> TensorDataset:
    return TensorDataset(torch.arange(n))


def _seen(loader, batches: int) -> list[list[int]]:
    out = []
    it = iter(loader)
    for _ in range(batches):
        out.append(next(it)[0].tolist())
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_a_mid_epoch_resume_sees_every_sample_once(tmp_path, workers):
    straight = ResumableLoader(_data(), 8, seed=3, num_workers=workers)
    reference = [b[0].tolist() for epoch in range(2) for b in straight]
    loader = ResumableLoader(_data(), 8, seed=3, num_workers=workers)
    first = _seen(loader, 3)  # killed after 3 of 8 batches, a checkpoint saved after the third
    with CheckpointManager(tmp_path) as m:
        m.save(3, {"data": loader})
        resumed = ResumableLoader(_data(), 8, seed=3, num_workers=workers)
        m.restore(state={"data": resumed})
    assert (resumed.epoch, resumed.batches) == (0, 3)
    rest = [b[0].tolist() for epoch in range(2) for b in resumed]
    assert first + rest == reference
    epoch0 = [i for batch in (first + rest)[:8] for i in batch]
    assert sorted(epoch0) == list(range(64)) and epoch0 != list(range(64))  # shuffled, each once
    assert [i for b in reference[8:] for i in b] != epoch0  # a new order each epoch


def test_the_loader_draws_nothing_from_the_global_generator():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    loader = ResumableLoader(_data(), 8, seed=1)
    list(loader)
    assert torch.equal(torch.get_rng_state(), before)


def test_ranks_split_an_epoch_as_distributed_sampler_does():
    data = _data(10)
    for rank in range(3):
        ours = [i for b in ResumableLoader(data, 2, seed=5, num_replicas=3, rank=rank) for i in b[0].tolist()]
        theirs = DistributedSampler(data, num_replicas=3, rank=rank, shuffle=True, seed=5)
        theirs.set_epoch(0)
        assert ours == list(theirs)


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="sampler"):
        ResumableLoader(_data(), 8, sampler=None)
    loader = ResumableLoader(_data(), 8, seed=1)
    good = loader.state_dict()
    for change in ({"seed": 2}, {"samples": 63}, {"batch_size": 4}, {"shuffle": False}, {"num_replicas": 2},
                   {"seed": True}):  # fmt: skip
        with pytest.raises(ValueError, match="another loader layout"):
            loader.load_state_dict({**good, **change})
    for change in ({"batches": 9}, {"batches": -1}, {"epoch": 1.9}, {"batches": "2"}, {"epoch": 10**30}):
        with pytest.raises(ValueError, match="epoch must be"):
            loader.load_state_dict({**good, **change})
    with pytest.raises(ValueError, match="not a ResumableLoader state"):
        loader.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="seed"):
        ResumableLoader(_data(), 8, seed=2**64)
    loader.load_state_dict({**good, "epoch": 3, "batches": 8})  # the end of an epoch is a valid position
    assert (loader.epoch, loader.batches) == (3, 8) and list(loader) == [] and loader.epoch == 4
    assert len(loader) == 8 and len(ResumableLoader(_data(63), 8, drop_last=True)) == 7


def test_a_torch_generator_is_a_live_object(tmp_path):
    g = torch.Generator().manual_seed(7)
    torch.randn(5, generator=g)
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"g": g})
        fresh = torch.Generator().manual_seed(0)
        m.restore(state={"g": fresh})
    assert torch.equal(torch.randn(4, generator=fresh), torch.randn(4, generator=g))


def test_torchdata_stateful_dataloader_resumes_mid_epoch(tmp_path):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")

    def make():
        g = torch.Generator().manual_seed(11)
        return stateful.StatefulDataLoader(_data(), batch_size=8, shuffle=True, generator=g)

    reference = [b[0].tolist() for b in make()]
    loader = make()
    it = iter(loader)
    first = [next(it)[0].tolist() for _ in range(3)]
    with CheckpointManager(tmp_path) as m:
        m.save(3, {"data": loader})
        resumed = make()
        m.restore(state={"data": resumed})
    rest = [b[0].tolist() for b in resumed]
    assert first + rest == reference
