"""isic_monai.data.parallel: the pool and DataLoader worker counts chosen for the machine."""

from __future__ import annotations

import os

import pytest

from isic_monai.data.parallel import chunk_size, default_num_workers, pool_size


@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 0), (3, 1), (4, 2), (6, 4), (64, 4)])
def test_default_num_workers_leaves_two_cpus_to_training(cpus: int, workers: int) -> None:
    assert default_num_workers(cpus) == workers


def test_default_num_workers_reads_this_machine() -> None:
    assert default_num_workers() == default_num_workers(os.cpu_count() or 1)


def test_pool_and_chunk_sizes() -> None:
    assert pool_size(None) == (os.cpu_count() or 1) and pool_size(0) == 1 and pool_size(3) == 3
    assert chunk_size(10, 4) == 1 and chunk_size(10_000, 2) == 32 and chunk_size(400, 2) == 32
