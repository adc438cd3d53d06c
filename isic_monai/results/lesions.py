"""Lesion measurements from binary masks: size, shape, asymmetry, border irregularity and Task 2 attribute shares.

Every measure is taken on the whole foreground of a ``(H, W)`` mask (all its pixels, whatever the number of
connected parts), in pixels, and in millimetres when a pixel spacing (mm per pixel) is given:

- ``area``: the number of foreground pixels (mm²: times the spacing squared).
- ``perimeter``: the length of the border, measured on the iso-line 0.5 (marching squares, ``contourpy``, which
  matplotlib installs) of the mask smoothed by a Gaussian of :data:`CONTOUR_SIGMA` pixels. Smoothing removes the
  staircase of the pixel grid, which would otherwise lengthen a circle's border by about 6 %; holes count.
- ``max_diameter``: the maximum Feret diameter, the largest distance between two points of that border (found on its
  convex hull).
- ``equivalent_diameter``: the diameter of the disc of the same area, ``sqrt(4 · area / π)``.
- ``asymmetry_major_axis`` / ``asymmetry_minor_axis``: the principal axes are the eigenvectors of the covariance of
  the foreground pixels' coordinates, through their centroid; folding the lesion across an axis, the asymmetry is the
  fraction of its area that does not overlap its mirror image (``|M \\ mirror(M)| / |M|``: 0 for a shape symmetric
  about that axis, at most 1). The mirror is sampled bilinearly.
- ``compactness``: border irregularity, ``perimeter² / (4π · area)``: 1 for a disc, 4/π ≈ 1.27 for a square, higher
  for irregular borders.
- ``<attribute>_share`` (Task 2): the fraction of the lesion's pixels that the attribute's mask covers.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from isic_monai.data.imageio import MASK_EXTENSIONS, is_image_file
from isic_monai.data.masks import read_mask
from isic_monai.data.records import Problem

__all__ = [
    "CONTOUR_SIGMA",
    "LENGTH_FIELDS",
    "SHAPE_FIELDS",
    "LesionMeasurements",
    "asymmetry",
    "border_lines",
    "compactness",
    "convex_hull",
    "equivalent_diameter",
    "find_masks",
    "max_feret_diameter",
    "measure_file",
    "measure_folder",
    "measure_mask",
    "measurement_row",
    "mirror_asymmetry",
    "perimeter",
    "principal_axes",
    "write_measurements_csv",
]

CONTOUR_SIGMA = 1.0
"""Standard deviation (pixels) of the Gaussian that smooths a mask before its border is traced."""

LENGTH_FIELDS: tuple[str, ...] = ("perimeter", "max_diameter", "equivalent_diameter")
"""Measurements that are lengths: written as ``<name>_px`` and, with a pixel spacing, ``<name>_mm``."""

SHAPE_FIELDS: tuple[str, ...] = ("asymmetry_major_axis", "asymmetry_minor_axis", "compactness")
"""Measurements without a unit."""

_ATTRIBUTE_FILE = re.compile(r"(.+)_attribute_([a-z_]+)")
_MASK_SUFFIXES = ("_segmentation", "_Segmentation", "_lesion", "_mask")
_SKIPPED_SUFFIXES = ("_overlay", "_superpixels")


@dataclass(frozen=True)
class LesionMeasurements:
    """The measurements of one mask, in pixels (see the module docstring).

    Attributes:
        area: foreground pixels.
        perimeter: border length.
        max_diameter: maximum Feret diameter.
        equivalent_diameter: diameter of the disc of the same area.
        asymmetry_major_axis: area fraction not overlapping the mirror image across the major axis.
        asymmetry_minor_axis: the same across the minor axis.
        compactness: ``perimeter² / (4π · area)``.
    """

    area: int
    perimeter: float
    max_diameter: float
    equivalent_diameter: float
    asymmetry_major_axis: float
    asymmetry_minor_axis: float
    compactness: float


def _crop(mask: np.ndarray, margin: int) -> np.ndarray:
    """The mask cropped to its foreground's bounding box, padded with ``margin`` background pixels on each side."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return np.pad(box, margin)


def border_lines(mask: np.ndarray, sigma: float = CONTOUR_SIGMA) -> list[np.ndarray]:
    """The border of a mask as closed polylines ``(K, 2)`` of ``(x, y)`` points (in the cropped mask's frame).

    The mask is smoothed by a Gaussian of ``sigma`` pixels (Pillow) and traced at half its range (contourpy's
    marching squares), so the line runs half-way between foreground and background pixel centres.

    Args:
        mask: ``(H, W)`` boolean mask.
        sigma: smoothing in pixels (0: trace the pixel grid itself).

    Returns:
        The polylines (empty for an empty mask).
    """
    import contourpy

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {mask.shape}.")
    if not mask.any():
        return []
    z = Image.fromarray(_crop(mask, int(math.ceil(4 * sigma)) + 2).astype(np.uint8) * 255, mode="L")
    if sigma > 0:
        z = z.filter(ImageFilter.GaussianBlur(sigma))
    generator = contourpy.contour_generator(z=np.asarray(z, dtype=np.float64), line_type="Separate")
    return [np.asarray(line, dtype=np.float64) for line in generator.lines(127.5)]


def _length(lines: Sequence[np.ndarray]) -> float:
    return float(sum(np.linalg.norm(np.diff(line, axis=0), axis=1).sum() for line in lines))


def _feret(lines: Sequence[np.ndarray]) -> float:
    if not lines:
        return 0.0
    hull = convex_hull(np.concatenate(lines))
    diff = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((diff**2).sum(-1).max()))


def perimeter(mask: np.ndarray, sigma: float = CONTOUR_SIGMA) -> float:
    """Total length (pixels) of the mask's border lines (:func:`border_lines`), holes included."""
    return _length(border_lines(mask, sigma))


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of 2-D points, counter-clockwise, by Andrew's monotone chain.

    Args:
        points: ``(N, 2)`` coordinates.

    Returns:
        ``(M, 2)`` hull vertices (the distinct points themselves when fewer than three).
    """
    pts = np.unique(np.asarray(points, dtype=np.float64), axis=0)  # sorted by x, then y
    if len(pts) < 3:
        return pts

    def half(seq: np.ndarray) -> list[np.ndarray]:
        chain: list[np.ndarray] = []
        for p in seq:
            while len(chain) >= 2:
                (ax, ay), (bx, by) = chain[-2], chain[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) > 0:
                    break
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(pts), half(pts[::-1])
    return np.asarray(lower[:-1] + upper[:-1])


def max_feret_diameter(mask: np.ndarray, sigma: float = CONTOUR_SIGMA) -> float:
    """Maximum Feret diameter (pixels): the largest distance between two points of the border, 0 when empty."""
    return _feret(border_lines(mask, sigma))


def equivalent_diameter(area: float) -> float:
    """Diameter of the disc of area ``area``: ``sqrt(4 · area / π)``."""
    return math.sqrt(4.0 * float(area) / math.pi)


def compactness(perimeter_px: float, area: float) -> float:
    """Border irregularity ``perimeter² / (4π · area)`` (1 for a disc); NaN for an empty mask."""
    return perimeter_px**2 / (4.0 * math.pi * area) if area > 0 else float("nan")


def principal_axes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid and principal axes of the foreground pixels.

    Returns:
        ``(centroid, axes, variances)``: the ``(y, x)`` centroid, a ``(2, 2)`` array whose rows are the unit ``(y, x)``
        directions of the major and the minor axis, and the coordinate variances along them (major first).

    Raises:
        ValueError: for an empty mask.
    """
    coords = np.argwhere(np.asarray(mask, dtype=bool)).astype(np.float64)
    if not len(coords):
        raise ValueError("an empty mask has no principal axes.")
    centroid = coords.mean(axis=0)
    cov = np.atleast_2d(np.cov(coords - centroid, rowvar=False, bias=True))
    variances, vectors = np.linalg.eigh(cov)  # ascending
    order = [1, 0]
    return centroid, vectors[:, order].T, variances[order]


def _bilinear(mask: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Values of a 0/1 mask at real-valued ``(y, x)`` (bilinear; 0 outside the image)."""
    m = np.pad(np.asarray(mask, dtype=np.float64), 1)
    y, x = y + 1, x + 1  # the padded frame
    inside = (y >= 0) & (y <= m.shape[0] - 1) & (x >= 0) & (x <= m.shape[1] - 1)
    y, x = np.clip(y, 0, m.shape[0] - 1), np.clip(x, 0, m.shape[1] - 1)
    y0, x0 = np.minimum(np.floor(y).astype(np.int64), m.shape[0] - 2), np.minimum(np.floor(x).astype(np.int64),
                                                                                   m.shape[1] - 2)
    dy, dx = y - y0, x - x0
    v = (m[y0, x0] * (1 - dy) * (1 - dx) + m[y0 + 1, x0] * dy * (1 - dx) + m[y0, x0 + 1] * (1 - dy) * dx
         + m[y0 + 1, x0 + 1] * dy * dx)
    return np.where(inside, v, 0.0)


def mirror_asymmetry(mask: np.ndarray, centroid: np.ndarray, direction: np.ndarray) -> float:
    """Fraction of the mask's area that does not overlap its mirror image across a line.

    Args:
        mask: ``(H, W)`` boolean mask (not empty).
        centroid: a ``(y, x)`` point of the line.
        direction: the line's ``(y, x)`` direction.

    Returns:
        ``|M \\ mirror(M)| / |M|`` in ``[0, 1]``.
    """
    mask = np.asarray(mask, dtype=bool)
    coords = np.argwhere(mask).astype(np.float64)
    u = np.asarray(direction, dtype=np.float64)
    u = u / np.linalg.norm(u)
    d = coords - centroid
    mirrored = centroid + 2.0 * (d @ u)[:, None] * u[None, :] - d
    return float(np.mean(1.0 - _bilinear(mask, mirrored[:, 0], mirrored[:, 1])))


def asymmetry(mask: np.ndarray) -> tuple[float, float]:
    """Asymmetry across the major and the minor principal axis (:func:`mirror_asymmetry`); NaN for an empty mask."""
    if not np.asarray(mask, dtype=bool).any():
        return float("nan"), float("nan")
    centroid, axes, _ = principal_axes(mask)
    return mirror_asymmetry(mask, centroid, axes[0]), mirror_asymmetry(mask, centroid, axes[1])


def measure_mask(mask: np.ndarray, sigma: float = CONTOUR_SIGMA) -> LesionMeasurements:
    """Every measurement of one ``(H, W)`` mask, in pixels (an empty mask: zeros and NaN)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {mask.shape}.")
    area = int(mask.sum())
    lines = border_lines(mask, sigma)
    length = _length(lines)
    asym_major, asym_minor = asymmetry(mask)
    return LesionMeasurements(area, length, _feret(lines), equivalent_diameter(area), asym_major, asym_minor,
                              compactness(length, area))


def measurement_row(m: LesionMeasurements, pixel_spacing: float | None = None) -> dict[str, float]:
    """CSV fields of a :class:`LesionMeasurements`: pixels, and millimetres when ``pixel_spacing`` (mm) is given."""
    row: dict[str, float] = {"area_px": m.area}
    if pixel_spacing is not None:
        row["area_mm2"] = m.area * pixel_spacing**2
    for name in LENGTH_FIELDS:
        row[f"{name}_px"] = getattr(m, name)
        if pixel_spacing is not None:
            row[f"{name}_mm"] = getattr(m, name) * pixel_spacing
    row.update({name: getattr(m, name) for name in SHAPE_FIELDS})
    return row


def attribute_shares(lesion: np.ndarray, attributes: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Fraction of the lesion's pixels each attribute covers (NaN for an empty lesion).

    Raises:
        ValueError: an attribute mask whose size differs from the lesion mask's.
    """
    lesion = np.asarray(lesion, dtype=bool)
    area = int(lesion.sum())
    out = {}
    for name, attr in attributes.items():
        attr = np.asarray(attr, dtype=bool)
        if attr.shape != lesion.shape:
            raise ValueError(f"attribute {name}: size (H, W) = {attr.shape}, the lesion mask's is {lesion.shape}")
        out[name] = float((attr & lesion).sum() / area) if area else float("nan")
    return out


def _image_id(stem: str) -> str:
    from isic_monai.results.scoring import ID_PATTERN

    match = ID_PATTERN.search(stem)
    if match:
        return match.group(0)
    for suffix in _MASK_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def find_masks(masks_dir: str | Path, attributes_dir: str | Path | None = None
               ) -> tuple[dict[str, Path], dict[str, dict[str, Path]], list[Problem]]:
    """Lesion masks and ``<id>_attribute_<name>`` masks of a folder, by image id.

    Args:
        masks_dir: the lesion masks (``<id>_segmentation.png``, ``IMDxxx_lesion.bmp``, ``<id>.png``, ...), and
            the attribute masks unless ``attributes_dir`` is given.
        attributes_dir: another folder holding the attribute masks (e.g. ISIC 2018's Task 2 ground truth).

    Returns:
        ``(lesions, attributes, problems)``: ``{id: file}``, ``{id: {attribute: file}}`` and warnings.
    """
    problems: list[Problem] = []
    lesions: dict[str, Path] = {}
    attributes: dict[str, dict[str, Path]] = {}
    folders = [Path(masks_dir)] + ([Path(attributes_dir)] if attributes_dir is not None else [])
    for folder_index, folder in enumerate(folders):
        for f in sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p, MASK_EXTENSIONS)):
            match = _ATTRIBUTE_FILE.fullmatch(f.stem)
            if match:
                attributes.setdefault(_image_id(match.group(1)), {})[match.group(2)] = f
            elif folder_index == 0 and not f.stem.endswith(_SKIPPED_SUFFIXES):
                image_id = _image_id(f.stem)
                if image_id in lesions:
                    problems.append(Problem(str(f), "duplicate_id", f"second lesion mask for {image_id} (already "
                                            f"{lesions[image_id].name}); not measured", "warning"))
                    continue
                lesions[image_id] = f
    for image_id in sorted(set(attributes) - set(lesions)):
        first = next(iter(attributes[image_id].values()))
        problems.append(Problem(str(first), "missing_mask", f"attribute masks of {image_id} without its lesion mask "
                                "(<id>_segmentation.png); their shares are not measured", "warning"))
    return lesions, attributes, problems


def measure_file(item: tuple[str, str, dict[str, str], float | None]) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Measure one lesion mask file and its attribute files (picklable, for :func:`progress_map`).

    Args:
        item: ``(image id, lesion mask file, {attribute: file}, pixel spacing in mm or None)``.

    Returns:
        ``(CSV row or None, problems)``.
    """
    image_id, path, attribute_files, spacing = item
    try:
        lesion = read_mask(path)
    except (OSError, ValueError) as err:
        return None, [Problem(path, "corrupt", f"cannot be read as a mask ({err})")]
    row: dict[str, Any] = {"image": image_id, "file": path, "height": lesion.shape[0], "width": lesion.shape[1]}
    row.update(measurement_row(measure_mask(lesion), spacing))
    problems: list[Problem] = []
    masks = {}
    for name, f in sorted(attribute_files.items()):
        try:
            masks[name] = read_mask(f)
        except (OSError, ValueError) as err:
            problems.append(Problem(f, "corrupt", f"cannot be read as a mask ({err})"))
            continue
        if masks[name].shape != lesion.shape:
            problems.append(Problem(f, "size_mismatch", f"size (H, W) = {masks[name].shape} but the lesion mask "
                                    f"{path} is {lesion.shape}; not measured"))
            del masks[name]
    row.update({f"{name}_share": share for name, share in attribute_shares(lesion, masks).items()})
    return row, problems


def measure_folder(masks_dir: str | Path, attributes_dir: str | Path | None = None,
                   pixel_spacing: float | None = None, workers: int | None = 1, progress: bool = False
                   ) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Measure every lesion mask of a folder (with its Task 2 attribute shares).

    Args:
        masks_dir: the lesion masks (and attribute masks).
        attributes_dir: a separate folder of attribute masks.
        pixel_spacing: millimetres per pixel; adds the ``_mm`` / ``_mm2`` columns.
        workers: processes (1: this one; None: every CPU).
        progress: show a progress bar.

    Returns:
        ``(rows, problems)``: one row per lesion mask, sorted by id, and every problem (unreadable files and size
        mismatches are errors, their rows or shares are left out).
    """
    from isic_monai.data.parallel import progress_map

    if pixel_spacing is not None and not pixel_spacing > 0:
        raise ValueError(f"pixel spacing must be a positive number of millimetres, got {pixel_spacing}")
    lesions, attributes, problems = find_masks(masks_dir, attributes_dir)
    items = [(i, str(p), {n: str(f) for n, f in attributes.get(i, {}).items()}, pixel_spacing)
             for i, p in sorted(lesions.items())]
    rows = []
    for row, found in progress_map(measure_file, items, workers=workers, progress=progress, desc="measure",
                                   unit="mask"):
        problems += found
        if row is not None:
            rows.append(row)
    return rows, problems


def write_measurements_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write measurement rows to a CSV (columns: the union of the rows' keys, in first-seen order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields or ["image"], restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path
