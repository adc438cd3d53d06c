"""One process-pool map with a progress bar, used by validation, the resized cache, statistics and synth, and the
one progress display of the package (:func:`progress_bar`: a tqdm bar on a terminal, a line per 10 % elsewhere).

The functions mapped here follow the data package's rule: they return their problems instead of raising, so one bad
file never stops a batch (an exception inside ``fn`` still propagates and ends the map).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TextIO, TypeVar

__all__ = ["LineProgress", "chunk_size", "default_num_workers", "is_terminal", "pool_size", "progress_bar",
           "progress_map"]

T = TypeVar("T")
R = TypeVar("R")


class LineProgress:
    """A progress display for logs and pipes: one line each time another tenth of ``total`` is done, and at the end.

    tqdm redraws its bar many times a second; written to a file, every redraw stays (a 600-photo folder inference
    logged 60 KB of them). This writes at most 11 lines whatever the total.

    Args:
        total: the number of units (``None`` or 0: only the final line, with the count).
        desc: the label starting each line.
        unit: the unit's name.
        stream: where the lines go (default: ``sys.stderr``).
        steps: lines before the end (10: every 10 %).
    """

    def __init__(self, total: int | None, desc: str | None = None, unit: str = "it", stream: TextIO | None = None,
                 initial: int = 0, steps: int = 10) -> None:
        self.total = int(total) if total else 0
        self.desc = desc or "progress"
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.n = int(initial)
        self.steps = max(1, int(steps))
        self._shown = self._step()
        self._start = time.monotonic()
        self._closed = False

    def _step(self) -> int:
        return self.n * self.steps // self.total if self.total else 0

    def _line(self) -> None:
        elapsed = time.monotonic() - self._start
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        percent = f" ({100 * self.n // self.total}%)" if self.total else ""
        print(f"{self.desc}: {count} {self.unit}{percent} in {elapsed:.1f} s", file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; write a line when another tenth is done."""
        self.n += n
        step = self._step()
        if step > self._shown and self.n < self.total:
            self._shown = step
            self._line()

    def close(self) -> None:
        """Write the final line (once)."""
        if not self._closed:
            self._closed = True
            self._line()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (where a redrawn bar belongs); ``False`` for files, pipes and non-streams."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def progress_bar(total: int | None, desc: str | None = None, unit: str = "it", *, enabled: bool = True,
                 stream: TextIO | None = None, **tqdm_kwargs: Any) -> Any:
    """The package's progress display: a tqdm bar on a terminal, :class:`LineProgress` in a file or a pipe.

    Args:
        total: the number of units.
        desc: the label.
        unit: the unit's name.
        enabled: ``False`` returns a display that shows nothing (same interface).
        stream: where it writes (default: ``sys.stderr``); whether it is a terminal chooses the display.
        tqdm_kwargs: passed to tqdm on a terminal (e.g. ``unit_scale``, ``initial``).

    Returns:
        An object with ``update(n)``, ``close()`` and the context-manager protocol.
    """
    stream = stream if stream is not None else sys.stderr
    if not enabled or is_terminal(stream):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not enabled, **tqdm_kwargs)
    return LineProgress(total, desc, unit, stream, initial=int(tqdm_kwargs.get("initial", 0)))


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
    """``[fn(item) for item in items]``, in a process pool when asked, with an optional progress display.

    Args:
        fn: a picklable function of one item (module level, or a ``functools.partial`` of one).
        items: the inputs (picklable when a pool is used).
        workers: processes; 1 runs in this process, None uses every CPU.
        progress: show progress (:func:`progress_bar`).
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
        bar = progress_bar(len(items), desc, unit)
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
