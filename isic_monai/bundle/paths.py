"""Where the project's non-Python files are: the ``configs/`` layers and the shipped ``bundle/``.

In a source checkout (and an editable install) they are the repository's own folders. A wheel carries them as data
files under ``<prefix>/share/isic-monai/`` (``[tool.setuptools.data-files]`` in pyproject.toml), found through the
installed distribution's file list, so ``isic-monai export-bundle`` works from an installed package too.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

__all__ = [
    "BUNDLE_DIR", "CONFIG_DIR", "NETWORK_CONFIG_DIR", "network_config_names", "network_config_path", "project_dir",
]

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
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.is_dir():
        return checkout
    installed = _installed_data_root()
    return installed / name if installed is not None and (installed / name).is_dir() else checkout


CONFIG_DIR: Path = project_dir("configs")
BUNDLE_DIR: Path = project_dir("bundle")
NETWORK_CONFIG_DIR: Path = CONFIG_DIR / "networks"
"""``configs/networks`` (of the checkout, or the installed data files)."""


def network_config_names(config_dir: str | Path | None = None) -> list[str]:
    """Names (file stems) of the network override files, sorted.

    Args:
        config_dir: folder to list; ``configs/networks`` of the checkout by default.

    Returns:
        e.g. ``["attention_unet", "convnext_unet", ...]``; empty when the folder does not exist.
    """
    folder = Path(config_dir) if config_dir is not None else NETWORK_CONFIG_DIR
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def network_config_path(name: str, config_dir: str | Path | None = None) -> Path:
    """Path of ``configs/networks/<name>.yaml``.

    Args:
        name: network config name, e.g. ``"attention_unet"``.
        config_dir: folder holding the files; ``configs/networks`` of the checkout by default.

    Returns:
        The file path.

    Raises:
        FileNotFoundError: naming the available configs when the file does not exist.
    """
    folder = Path(config_dir) if config_dir is not None else NETWORK_CONFIG_DIR
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no network config {path}; available: {network_config_names(folder)}")
    return path
