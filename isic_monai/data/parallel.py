"""One process-pool map with a progress bar, used by validation, the resized cache, statistics and synth.

The functions mapped here follow the data package's rule: they return their problems instead of raising, so one bad
file never stops a batch (an exception inside ``fn`` still propagates and ends the map).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["chunk_size", "default_num_workers", "pool_size", "progress_map"]

T = TypeVar("T")
R = TypeVar("R")


def pool_size(workers: int | None) -> int:
    """Number of processes for ``workers``: None means every CPU; anything below 1 means 1."""
    return (os.cpu_count() or 1) if workers is None else max(1, int(workers))


def default_num_workers(cpus: int | None = None) -> int:
    """DataLoader workers for the bundle's ``num_workers`` default: every CPU beyond two, at most four.

    Training threads and DataLoader worker processes share the CPUs. On the project's 2-core machine a worker
    competes with the two training threads (0 workers is fastest there), while machines with more cores, or a GPU
    doing the training, gain from workers decoding and augmenting in parallel.

    Args:
        cpus: the CPU count (default: ``os.cpu_count()``).
    """
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    return max(0, min(4, cpus - 2))


def chunk_size(n_items: int, n_workers: int) -> int:
    """Items sent to a worker at a time: about four chunks per worker, between 1 and 32."""
    return max(1, min(32, n_items // (4 * n_workers)))


def progress_map(fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = 1, progress: bool = False,
                 desc: str | None = None, unit: str = "it", min_pool_items: int = 2) -> list[R]:
    """``[fn(item) for item in items]``, in a process pool when asked, with an optional tqdm progress bar.

    Args:
        fn: a picklable function of one item (module level, or a ``functools.partial`` of one).
        items: the inputs (picklable when a pool is used).
        workers: processes; 1 runs in this process, None uses every CPU.
        progress: show a tqdm progress bar.
        desc: label of the progress bar.
        unit: unit of the progress bar.
        min_pool_items: fewer items than this run in this process even when ``workers > 1`` (starting a pool
            costs more than a few quick items).

    Returns:
        The results, in the order of ``items`` (whatever the number of workers).
    """
    n_workers = pool_size(workers)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=desc, unit=unit)
    results: list[R] = []
    try:
        if n_workers > 1 and len(items) >= max(2, min_pool_items):
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                for res in pool.map(fn, items, chunksize=chunk_size(len(items), n_workers)):
                    results.append(res)
                    if bar is not None:
                        bar.update()
        else:
            for item in items:
                results.append(fn(item))
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    return results
