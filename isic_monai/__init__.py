"""isic-monai: MONAI bundle and tools for ISIC dermoscopic lesion segmentation."""

from __future__ import annotations

__version__ = "0.1.0"

ATTRIBUTES: tuple[str, ...] = ("pigment_network", "negative_network", "streaks", "milia_like_cyst", "globules")
"""ISIC 2018 Task 2 attribute names, in the channel order used everywhere in the project."""
