"""Where the project's non-Python files are: the ``configs/`` layers and the shipped ``bundle/``.

In a source checkout (and an editable install) they are the repository's own folders. A wheel carries them as data
files under ``<prefix>/share/isic-monai/`` (``[tool.setuptools.data-files]`` in pyproject.toml), found through the
installed distribution's file list, so ``isic-monai export-bundle`` works from an installed package too.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

__all__ = ["BUNDLE_DIR", "CONFIG_DIR", "project_dir"]

DATA_FOLDER = ("share", "isic-monai")
"""Where the wheel's data files land, relative to the installation prefix."""


def _installed_data_root() -> Path | None:
    """``<prefix>/share/isic-monai`` of the installed distribution, or ``None`` when it ships no data files."""
    try:
        dist = metadata.distribution("isic-monai")
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        parts = Path(file).parts
        for i in range(len(parts) - 1):
            if parts[i : i + 2] == DATA_FOLDER:
                return Path(str(dist.locate_file(Path(*parts[: i + 2])))).resolve()
    return None


def project_dir(name: str) -> Path:
    """The project folder ``name`` (``"configs"`` or ``"bundle"``): the checkout's, else the installed data files'.

    Returns the checkout's path (which may not exist) when neither is found, so messages name where it was looked for.
    """
    checkout = Path(__file__).resolve().parents[1] / name
    if checkout.is_dir():
        return checkout
    installed = _installed_data_root()
    return installed / name if installed is not None and (installed / name).is_dir() else checkout


CONFIG_DIR: Path = project_dir("configs")
BUNDLE_DIR: Path = project_dir("bundle")
