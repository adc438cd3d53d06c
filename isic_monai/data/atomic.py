"""The one atomic writer: a file is written under a temporary name beside its target, flushed, then renamed over it.

A process killed while writing leaves the previous file intact and at worst a hidden
``.<stem>.<random>.partial<suffix>`` file (:data:`PARTIAL_GLOB` finds them); nothing half-written ever carries the
real name, and folder scans that skip hidden files never see one. Checkpoints, thresholds, cached images
and masks, histories and exported models are all written this way.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["PARTIAL_GLOB", "PARTIAL_SUFFIX", "atomic_path", "write_atomic", "write_text_atomic"]

PARTIAL_SUFFIX = ".partial"
"""Marks a file being written until it is complete and renamed (``.<stem>.<random>.partial<suffix>``)."""
PARTIAL_GLOB = f".*{PARTIAL_SUFFIX}*"
"""A glob pattern for the partial files a killed writer left in a folder."""


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); silently not possible everywhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends without error.

    Args:
        path: the file to (re)place.
        durable: also fsync the folder after the rename (checkpoints).

    Yields:
        ``.<stem>.<random>.partial<suffix>`` beside ``path``: hidden, and with ``path``'s suffix last, so writers
        that choose a format by the suffix (Pillow) still do.

    The temporary file is removed when the block raises (anything, a KeyboardInterrupt included).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _sync_folder(path.parent)


def write_atomic(path: str | os.PathLike, write: Callable[[IO[Any]], object], mode: str = "wb",
                 durable: bool = False, **open_kwargs: Any) -> Path:
    """Open a temporary file beside ``path``, let ``write`` fill it, flush it to disk and rename it over ``path``.

    Args:
        path: the file to (re)place.
        write: called with the open file.
        mode: ``"wb"`` or ``"w"``.
        durable: also fsync the folder after the rename.
        open_kwargs: for ``open`` (e.g. ``newline=""``).

    Returns:
        ``path``.
    """
    with atomic_path(path, durable=durable) as tmp, open(tmp, mode, **open_kwargs) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically to ``path``; returns ``path``."""
    return write_atomic(path, lambda f: f.write(text), mode="w", encoding="utf-8")
