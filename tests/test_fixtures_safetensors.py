"""Files written by the reference safetensors library: metadata, info and lazy reads (values: tests/test_fixtures.py)."""

from __future__ import annotations

import pytest

import tensorfile
from conftest import FIXTURES, assert_matches, expected, fixture_path

SAFETENSORS = expected("safetensors")


@pytest.mark.parametrize("name", [k for k in SAFETENSORS if k.endswith(".safetensors")])
def test_reference_file_metadata_and_info(name):
    spec = SAFETENSORS[name]
    with tensorfile.open(fixture_path(name)) as f:
        assert f.metadata == (spec.get("metadata") or {})
        assert not f.has_record
        for key, tensor in spec["value"]["items"].items():
            info = f.info(key)
            assert info.dtype == tensor["dtype"] and list(info.shape) == tensor["shape"]
            assert_matches(f[key], tensor, key)


def test_every_shard_loads_and_together_they_hold_the_index():
    spec = SAFETENSORS["safetensors/sharded/model.safetensors.index.json"]["value"]
    merged = {}
    shards = sorted((FIXTURES / "safetensors" / "sharded").glob("*.safetensors"))
    assert len(shards) == 3
    for shard in shards:
        part = tensorfile.load(shard)
        assert not set(part) & set(merged)
        merged.update(part)
    assert_matches(merged, spec)
