"""init() options as Ray accepts them."""

from __future__ import annotations

import pytest

import rtml


@pytest.mark.parametrize("local_mode", [False, True])
def test_object_store_memory_accepts_a_float(runtime, local_mode):
    rtml.init(num_cpus=1, object_store_memory=2e8, local_mode=local_mode)
    assert rtml.get(rtml.put(1), timeout=30) == 1
    rtml.shutdown()
    with pytest.raises(ValueError, match="object_store_memory"):
        rtml.init(num_cpus=1, object_store_memory=float("nan"), local_mode=local_mode)
