"""Synthetic dermoscopy images written in the folder layout of a real ISIC-style dataset.

The generator is the embedded default data of the project: the demo recipe and every test run on it, so nothing
has to be downloaded. Each case is a skin-toned field with an illumination gradient, an optional dark circular
dermoscope vignette and a few dark hairs, plus one irregular pigmented lesion (the Task 1 mask). Inside the lesion
the five ISIC 2018 Task 2 dermoscopic attributes are drawn with imbalanced frequencies close to the real release;
each attribute mask is the region where its pattern was drawn (clipped to the lesion), like the superpixel-based
ISIC annotations.

Everything is vectorised NumPy plus Pillow for hairs, filtering and file writing. Case ``i`` of a run is drawn
from ``numpy.random.SeedSequence(seed, spawn_key=(i,))``, so a run is byte-for-byte reproducible and independent
of the number of worker processes.

Typical use::

    from isic_monai.data import synth
    summary = synth.generate("/tmp/isic_synth", layout="isic2018", n=200, seed=0)

or from the shell: ``python -m isic_monai.data.synth /tmp/isic_synth --layout isic2018 --n 200 --seed 0``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from isic_monai import ATTRIBUTES
from isic_monai.data.layouts import LAYOUTS
from isic_monai.data.parallel import progress_map

__all__ = [
    "ATTRIBUTE_FREQUENCIES",
    "CHALLENGE_SPLITS",
    "DEFAULT_SIZE_RANGE",
    "LAYOUTS",
    "SPLIT_ID_OFFSETS",
    "add_arguments",
    "case_ids",
    "generate",
    "main",
    "render_case",
    "run",
]

# LAYOUTS (imported from isic_monai.data.layouts, where it is defined): the layouts generate() can write, with the
# same folder and file names as the real archives.

CHALLENGE_SPLITS: dict[str, tuple[str, ...]] = {
    "isic2016": ("Training", "Test"),
    "isic2017": ("Training", "Validation", "Test"),
    "isic2018": ("Training", "Validation", "Test"),
    "ham10000": ("Training",),
    "ph2": ("Training",),
    "plain": ("Training",),
}
"""Challenge split words (as in the archives' folder names) each layout can write; layouts with a single release
accept only ``"Training"``. Not the datalist keys (``training``/``validation``/``testing``,
:data:`isic_monai.data.records.DATALIST_KEYS`) that ``isic-monai datalist`` later sorts the cases into."""

ATTRIBUTE_FREQUENCIES: dict[str, float] = {
    "pigment_network": 0.57,
    "negative_network": 0.07,
    "streaks": 0.04,
    "milia_like_cyst": 0.25,
    "globules": 0.22,
}
"""Probability that a case shows each attribute (close to the ISIC 2018 Task 2 training set)."""

DEFAULT_SIZE_RANGE: tuple[tuple[int, int], tuple[int, int]] = ((240, 360), (320, 480))
"""Default ``((H min, H max), (W min, W max))`` of generated images."""

JPEG_QUALITY = 90
_MIN_LESION_FRACTION = 0.03
_MAX_LESION_FRACTION = 0.60

# HAM10000 metadata vocabularies, with frequencies roughly as in the real HAM10000_metadata.csv.
_HAM_DX = (("nv", 0.67), ("mel", 0.11), ("bkl", 0.11), ("bcc", 0.05), ("akiec", 0.03), ("vasc", 0.015),
           ("df", 0.015))
_HAM_DX_TYPE = {"nv": ("follow_up", "histo", "consensus", "confocal"), "default": ("histo", "consensus")}
_HAM_SITES = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "foot",
              "neck", "scalp", "hand", "ear", "genital", "acral", "unknown")


# --------------------------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid upsampled bicubically to ``(height, width)``."""
    gh = max(2, round(cells * height / max(height, width)) + 1)
    gw = max(2, round(cells * width / max(height, width)) + 1)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def _blur(field: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a float field in [0, 1] (via an 8-bit Pillow image, enough for soft masks)."""
    img = Image.fromarray(np.clip(field * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


def _dilate(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary dilation with a ``size`` x ``size`` square (odd ``size``), via Pillow's max filter."""
    if size < 3:
        return mask.copy()
    size += 1 - size % 2
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.filter(ImageFilter.MaxFilter(size))) > 127


def _harmonic_radius(rng: np.random.Generator, theta: np.ndarray, n_harmonics: int, amplitude: float) -> np.ndarray:
    """Random smooth radial profile ``1 + sum_k a_k cos(k theta + phi_k)``, k = 2..n+1 (always >= 0.5)."""
    profile = np.ones_like(theta)
    total = 0.0
    for k in range(2, n_harmonics + 2):
        a = amplitude * rng.uniform(0.2, 1.0) / (k - 1) ** 0.9
        total += a
        profile += a * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if total > 0.5:  # keep the shape star-convex and free of pinches
        profile = 1.0 + (profile - 1.0) * (0.5 / total)
    return profile


def _blob_field(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float,
                n_harmonics: int = 5, amplitude: float = 0.35, elongation: float = 1.0,
                angle: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polar field of an irregular star-shaped blob centred at (cy, cx).

    Returns:
        ``(q, theta, d)``: ``q`` is the distance from the centre divided by the boundary profile (the blob of
        radius ``r`` is ``q < r``), ``theta`` the polar angle and ``d`` the Euclidean distance (image space).
    """
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(angle), math.sin(angle)
    u = dx * c + dy * s
    v = (-dx * s + dy * c) / elongation
    theta_local = np.arctan2(v, u)
    profile = _harmonic_radius(rng, theta_local, n_harmonics, amplitude)
    # a little high-frequency boundary roughness
    profile = profile + 0.025 * np.cos(rng.integers(9, 17) * theta_local + rng.uniform(0, 2 * np.pi))
    q = np.sqrt(u * u + v * v) / profile
    return q.astype(np.float32), np.arctan2(dy, dx).astype(np.float32), np.hypot(dy, dx).astype(np.float32)


def _voronoi_lines(rng: np.random.Generator, height: int, width: int, cell: float, line_width: float) -> np.ndarray:
    """Honeycomb-like reticular pattern in [0, 1]: 1 on the edges of a jittered-grid Voronoi diagram."""
    gh, gw = int(height / cell) + 3, int(width / cell) + 3
    py = (np.arange(gh)[:, None] - 1 + rng.uniform(0.1, 0.9, (gh, gw))) * cell
    px = (np.arange(gw)[None, :] - 1 + rng.uniform(0.1, 0.9, (gh, gw))) * cell
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    iy = np.broadcast_to((yy // cell).astype(np.int64) + 1, (height, width))
    ix = np.broadcast_to((xx // cell).astype(np.int64) + 1, (height, width))
    d1 = np.full((height, width), np.inf, np.float32)  # nearest and second-nearest squared distances
    d2 = np.full((height, width), np.inf, np.float32)
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            jy, jx = iy + oy, ix + ox
            d = ((py[jy, jx] - yy) ** 2 + (px[jy, jx] - xx) ** 2).astype(np.float32)
            np.minimum(d2, np.maximum(d1, d), out=d2)
            np.minimum(d1, d, out=d1)
    return np.clip(1.0 - (np.sqrt(d2) - np.sqrt(d1)) / line_width, 0.0, 1.0).astype(np.float32)


def _soft_discs(height: int, width: int, centres: np.ndarray, radii: np.ndarray, soft: float = 1.0) -> np.ndarray:
    """Union (max) of anti-aliased discs in [0, 1]; ``centres`` is (N, 2) as (y, x)."""
    out = np.zeros((height, width), np.float32)
    for (cy, cx), r in zip(centres, radii, strict=True):
        y0, y1 = max(0, int(cy - r - soft - 1)), min(height, int(cy + r + soft + 2))
        x0, x1 = max(0, int(cx - r - soft - 1)), min(width, int(cx + r + soft + 2))
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        disc = np.clip((r - np.hypot(yy - cy, xx - cx)) / soft + 0.5, 0.0, 1.0)
        np.maximum(out[y0:y1, x0:x1], disc, out=out[y0:y1, x0:x1])
    return out


def _sample_points(rng: np.random.Generator, mask: np.ndarray, k: int) -> np.ndarray:
    """``k`` random (y, x) pixel positions inside ``mask`` (with replacement), as float (k, 2)."""
    idx = np.flatnonzero(mask)
    pick = idx[rng.integers(0, idx.size, k)]
    return np.stack(np.unravel_index(pick, mask.shape), axis=1).astype(np.float32)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Linear interpolation ``a + (b - a) * t`` with broadcasting (``t`` may be a HxWx1 field)."""
    return a + (b - a) * t


# --------------------------------------------------------------------------------------------------------------
# Rendering stages
# --------------------------------------------------------------------------------------------------------------


def _skin(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Skin background (HxWx3 float in 0..255) and its mean colour."""
    tone = rng.uniform(0.0, 1.0)
    base = _lerp(np.array([236.0, 196.0, 182.0]), np.array([178.0, 122.0, 92.0]), tone)
    base = base + rng.uniform(-6.0, 18.0) * np.array([1.0, -0.4, -0.3])  # redness (erythema / dermoscope light)
    base = base * (1.0 + rng.normal(0.0, 0.035, 3))  # white-balance cast
    texture = 1.0 + rng.uniform(0.02, 0.07) * _smooth_noise(rng, height, width, int(rng.integers(4, 9)))
    skin = base[None, None, :] * texture[..., None]
    if rng.random() < 0.3:  # faint freckles / pores: small darker spots that are not the lesion
        k = int(rng.integers(3, 25))
        scale = min(height, width) / 300.0
        centres = np.stack([rng.uniform(0, height, k), rng.uniform(0, width, k)], axis=1)
        spots = _blur(_soft_discs(height, width, centres, rng.uniform(1.0, 4.0, k) * scale), 1.0)
        skin *= (1.0 - rng.uniform(0.08, 0.2) * spots)[..., None]
    return skin.astype(np.float32), base


def _lesion(rng: np.random.Generator, height: int, width: int,
            yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Irregular lesion: returns (soft alpha in [0, 1], normalised radius rho (=1 on the border), geometry)."""
    frac = math.exp(rng.uniform(math.log(_MIN_LESION_FRACTION), math.log(_MAX_LESION_FRACTION)))
    off = 0.22 * (1.0 - math.sqrt(frac))  # large lesions stay roughly centred
    cy = height * (0.5 + rng.uniform(-off, off))
    cx = width * (0.5 + rng.uniform(-off, off))
    q, theta, d = _blob_field(rng, yy, xx, cy, cx, n_harmonics=int(rng.integers(3, 8)),
                              amplitude=rng.uniform(0.1, 0.45), elongation=rng.uniform(0.65, 1.0),
                              angle=rng.uniform(0, np.pi))
    r0 = float(np.quantile(q, frac))  # radius giving exactly the target area fraction
    rho = q / r0
    edge = rng.uniform(0.01, 0.08)  # soft, fuzzy border width (relative)
    alpha = np.clip((1.0 - rho) / edge + 0.5, 0.0, 1.0)
    geom = {"cy": cy, "cx": cx, "r0": r0, "theta": theta, "d": d, "fraction": frac}
    return alpha.astype(np.float32), rho.astype(np.float32), geom


def _lesion_colour(rng: np.random.Generator, skin_base: np.ndarray, rho: np.ndarray,
                   height: int, width: int) -> np.ndarray:
    """Pigmented lesion colour field (HxWx3) with darker core, blotches and an optional blue-grey veil."""
    k = rng.uniform(0.32, 0.78)  # overall darkness relative to the skin: always a visible contrast
    brown = skin_base * k * np.array([1.0, rng.uniform(0.72, 0.88), rng.uniform(0.62, 0.85)])
    core = rng.uniform(0.0, 0.4) * np.clip(1.0 - rho, 0.0, 1.0) ** rng.uniform(0.5, 2.0)
    blotch = rng.uniform(0.05, 0.2) * _smooth_noise(rng, height, width, int(rng.integers(5, 12)))
    blotch += rng.uniform(0.03, 0.1) * _smooth_noise(rng, height, width, int(rng.integers(25, 45)))
    shade = np.clip(1.0 - core + blotch, 0.35, 1.3)
    colour = brown[None, None, :] * shade[..., None]
    if rng.random() < 0.2:  # blue-white / grey veil over part of the lesion
        veil_col = np.array([105.0, 110.0, 135.0]) * rng.uniform(0.7, 1.1)
        veil = np.clip(_smooth_noise(rng, height, width, 6) * 1.5 - 0.3, 0.0, 1.0) * rng.uniform(0.3, 0.7)
        colour = _lerp(colour, veil_col[None, None, :], veil[..., None])
    return colour.astype(np.float32)


def _region(rng: np.random.Generator, lesion: np.ndarray, yy: np.ndarray, xx: np.ndarray, r0: float,
            scale: tuple[float, float]) -> np.ndarray:
    """Random irregular sub-region of the lesion (boolean), centred on a lesion pixel."""
    cy, cx = _sample_points(rng, lesion, 1)[0]
    q, _, _ = _blob_field(rng, yy, xx, float(cy), float(cx), n_harmonics=4, amplitude=0.4,
                          elongation=rng.uniform(0.6, 1.0), angle=rng.uniform(0, np.pi))
    region = (q < r0 * rng.uniform(*scale)) & lesion
    if region.sum() < 16:  # degenerate draw: fall back to the whole lesion
        region = lesion.copy()
    return region


def _draw_network(rng: np.random.Generator, img: np.ndarray, region: np.ndarray, negative: bool,
                  px_scale: float) -> None:
    """Pigment network (dark reticular lines) or negative network (light lines around dark holes), in place."""
    ys, xs = np.nonzero(region)
    pad = int(4 + 6 * px_scale)  # only the region's bounding box (plus its blurred rim) is drawn
    y0, y1 = max(0, ys.min() - pad), min(region.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(region.shape[1], xs.max() + pad + 1)
    img = img[y0:y1, x0:x1]  # a view: drawing into it draws into the image
    height, width = y1 - y0, x1 - x0
    cell = rng.uniform(7.0, 14.0) * px_scale * (1.4 if negative else 1.0)
    lines = _voronoi_lines(rng, height, width, max(cell, 3.0), max(rng.uniform(1.6, 3.2) * px_scale, 0.8))
    lines = _blur(lines, max(0.5, 0.6 * px_scale))
    fade = np.clip(0.75 + 0.4 * _smooth_noise(rng, height, width, 6), 0.3, 1.0)
    weight = _blur(region[y0:y1, x0:x1].astype(np.float32), max(1.0, 2.0 * px_scale)) * fade
    if negative:
        light = np.array([225.0, 190.0, 170.0]) * rng.uniform(0.9, 1.05)
        strength = rng.uniform(0.45, 0.75)
        holes = 1.0 - rng.uniform(0.1, 0.25) * (1.0 - lines)
        target = _lerp(img * holes[..., None], light[None, None, :], (strength * lines)[..., None])
    else:
        target = img * (1.0 - rng.uniform(0.35, 0.6) * lines)[..., None]
    img[:] = _lerp(img, target, weight[..., None])


def _draw_streaks(rng: np.random.Generator, img: np.ndarray, lesion: np.ndarray, rho: np.ndarray,
                  geom: dict[str, Any], px_scale: float) -> np.ndarray:
    """Radial dark streaks in a peripheral sector of the lesion, in place; returns the attribute mask."""
    theta, d = geom["theta"], geom["d"]
    centre = rng.uniform(-np.pi, np.pi)
    half = rng.uniform(0.35, 1.0)
    rel = np.angle(np.exp(1j * (theta - centre)))  # wrapped angle to the sector centre
    n = int(rng.integers(4, 11))
    angles = np.sort(rng.uniform(-half, half, n))
    rho_in = rng.uniform(0.5, 0.7)
    width = max(rng.uniform(1.0, 2.0) * px_scale, 0.8)
    lines = np.zeros_like(rho)
    for a in angles:
        perp = d * np.abs(np.sin(rel - a))
        lines = np.maximum(lines, np.clip(1.0 - perp / width, 0.0, 1.0) * (np.abs(rel - a) < np.pi / 2))
    radial = np.clip((rho - rho_in) / 0.1, 0.0, 1.0) * np.clip((0.98 - rho) / 0.04, 0.0, 1.0)
    lines *= radial
    img *= (1.0 - rng.uniform(0.45, 0.7) * lines)[..., None]
    region = (np.abs(rel) < half + 0.12) & (rho > rho_in - 0.08) & lesion
    return _dilate(region | (lines > 0.2), 3) & lesion


def _draw_dots(rng: np.random.Generator, img: np.ndarray, lesion: np.ndarray, rho: np.ndarray,
               yy: np.ndarray, xx: np.ndarray, r0: float, px_scale: float, bright: bool) -> np.ndarray:
    """Globules (dark brown dots) or milia-like cysts (bright white-yellow spots), in place; returns the mask."""
    height, width = lesion.shape
    inner = lesion & (rho < 0.85)
    if inner.sum() < 4:
        inner = lesion
    if bright:
        k = int(rng.integers(1, 8))
        radii = rng.uniform(1.2, 3.2, k) * px_scale
        centres = _sample_points(rng, inner, k)
    else:
        area = _region(rng, inner, yy, xx, r0, (0.3, 0.7))
        k = int(rng.integers(5, 22))
        radii = rng.uniform(1.5, 3.8, k) * px_scale
        centres = _sample_points(rng, area, k)
    radii = np.maximum(radii, 1.0)
    dots = _soft_discs(height, width, centres, radii)
    if bright:
        colour = np.array([242.0, 234.0, 196.0]) * rng.uniform(0.9, 1.05)
        halo = _blur(dots, max(1.0, px_scale))
        img[:] = _lerp(img, colour[None, None, :], np.maximum(dots * 0.9, halo * 0.5)[..., None])
    else:
        img *= (1.0 - rng.uniform(0.4, 0.6) * dots)[..., None]
    # ISIC-like annotation: a generous region around the dots, within the lesion
    grown = _soft_discs(height, width, centres, radii * 2.0 + 3.0 * px_scale) > 0.5
    return grown & lesion


def _draw_hairs(rng: np.random.Generator, img: np.ndarray, px_scale: float) -> None:
    """A few thin dark curved hairs crossing the image (not part of the lesion), in place."""
    height, width = img.shape[:2]
    if rng.random() > 0.55:
        return
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    t = np.linspace(0.0, 1.0, 40)[:, None]
    for _ in range(int(rng.integers(1, 9))):
        p0 = np.array([rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 1.1) * height])
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.4, 1.3) * max(height, width)
        p2 = p0 + length * np.array([math.cos(angle), math.sin(angle)])
        p1 = (p0 + p2) / 2 + rng.normal(0.0, 0.15 * length, 2)
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        w = max(1, round(rng.uniform(0.8, 2.6) * px_scale))
        draw.line([tuple(p) for p in pts.tolist()], fill=255, width=w, joint="curve")
    hair = np.asarray(layer.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32) / 255.0
    colour = np.array([45.0, 32.0, 26.0]) * rng.uniform(0.4, 1.3)
    img[:] = _lerp(img, colour[None, None, :], (hair * rng.uniform(0.7, 0.95))[..., None])


def _optics(rng: np.random.Generator, img: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> None:
    """Global brightness, a smooth illumination gradient and the dermoscope vignette, in place."""
    height, width = img.shape[:2]
    a = rng.uniform(0, 2 * np.pi)
    grad = ((yy - height / 2) * math.sin(a) + (xx - width / 2) * math.cos(a)) / max(height, width)
    gain = rng.uniform(0.85, 1.1) * (1.0 + rng.uniform(0.0, 0.35) * grad)
    cy = height / 2 + rng.uniform(-0.05, 0.05) * height
    cx = width / 2 + rng.uniform(-0.05, 0.05) * width
    d = np.hypot(yy - cy, xx - cx)
    diag = math.hypot(height, width)
    if rng.random() < 0.55:  # black corners of a round dermoscope field
        radius = rng.uniform(0.40, 0.52) * diag
        soft = rng.uniform(0.01, 0.06) * diag
        t = np.clip((d - radius) / soft + 0.5, 0.0, 1.0)
        gain = gain * (1.0 - 0.94 * t * t * (3 - 2 * t))
    else:  # mild radial fall-off only
        gain = gain * (1.0 - rng.uniform(0.0, 0.3) * (2.0 * d / diag) ** 2)
    img *= gain[..., None].astype(np.float32)


def render_case(rng: np.random.Generator, height: int, width: int,
                pattern_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray,
                                                                             dict[str, np.ndarray]]:
    """Render one synthetic dermoscopy case.

    Args:
        rng: random generator; the output is a pure function of its state, ``height`` and ``width``.
        height: image height in pixels (>= 32 recommended).
        width: image width in pixels.
        pattern_scale: multiplies the size of hairs and attribute patterns (network cells, lines, dots); values
            above 1 keep the attributes visible when images are small or are trained at a reduced size.

    Returns:
        ``(rgb, lesion, attributes)``: ``rgb`` is uint8 ``(height, width, 3)``, ``lesion`` the bool Task 1 mask
        ``(height, width)``, ``attributes`` maps every name in :data:`isic_monai.ATTRIBUTES` to a bool mask of the
        same size (all False when the attribute is absent), each within the lesion mask.
    """
    height, width = int(height), int(width)
    px_scale = pattern_scale * min(height, width) / 300.0  # pattern sizes scale with the image
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    present = {name: bool(rng.random() < ATTRIBUTE_FREQUENCIES[name]) for name in ATTRIBUTES}

    img, skin_base = _skin(rng, height, width)
    alpha, rho, geom = _lesion(rng, height, width, yy, xx)
    lesion = rho < 1.0
    colour = _lesion_colour(rng, skin_base, rho, height, width)
    img = _lerp(img, colour, alpha[..., None]).astype(np.float32)

    attrs = {name: np.zeros((height, width), bool) for name in ATTRIBUTES}
    if present["pigment_network"]:
        region = _region(rng, lesion, yy, xx, geom["r0"], (0.5, 1.2))
        _draw_network(rng, img, region, negative=False, px_scale=px_scale)
        attrs["pigment_network"] = region
    if present["negative_network"]:
        region = _region(rng, lesion, yy, xx, geom["r0"], (0.35, 0.8))
        _draw_network(rng, img, region, negative=True, px_scale=px_scale)
        attrs["negative_network"] = region
    if present["streaks"]:
        attrs["streaks"] = _draw_streaks(rng, img, lesion, rho, geom, px_scale)
    if present["globules"]:
        attrs["globules"] = _draw_dots(rng, img, lesion, rho, yy, xx, geom["r0"], px_scale, bright=False)
    if present["milia_like_cyst"]:
        attrs["milia_like_cyst"] = _draw_dots(rng, img, lesion, rho, yy, xx, geom["r0"], px_scale, bright=True)

    _draw_hairs(rng, img, px_scale)
    _optics(rng, img, yy, xx)
    img += rng.normal(0.0, rng.uniform(1.0, 3.5), img.shape).astype(np.float32)
    rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return rgb, lesion, attrs


# --------------------------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------------------------


SPLIT_ID_OFFSETS: dict[str, int] = {"Training": 0, "Validation": 1_000_000, "Test": 2_000_000}
"""First ISIC id number of each challenge split word (every word of :data:`CHALLENGE_SPLITS` has one), so splits
written into one root never share an id (as in the real sets)."""


def case_ids(layout: str, n: int, split: str = "Training") -> list[str]:
    """Case ids of a run: ``ISIC_0000000``, ``ISIC_0000001``, ... (``IMD001``, ... for PH2).

    Validation and test ids start at ``ISIC_1000000`` and ``ISIC_2000000``.
    """
    if layout == "ph2":
        return [f"IMD{i + 1:03d}" for i in range(n)]
    offset = SPLIT_ID_OFFSETS.get(split, 0)
    return [f"ISIC_{offset + i:07d}" for i in range(n)]


def _case_paths(root: Path, layout: str, split: str, case_id: str, index: int, n: int) -> dict[str, Any]:
    """File paths of one case: ``image``, ``label`` (or None) and ``attributes`` ({name: path} or {})."""
    label: Path | None = None
    attributes: dict[str, Path] = {}
    if layout == "isic2016":
        image = root / f"ISBI2016_ISIC_Part1_{split}_Data" / f"{case_id}.jpg"
        label = root / f"ISBI2016_ISIC_Part1_{split}_GroundTruth" / f"{case_id}_Segmentation.png"
    elif layout == "isic2017":
        tag = "Test_v2" if split == "Test" else split  # the real test archives are ISIC-2017_Test_v2_*
        image = root / f"ISIC-2017_{tag}_Data" / f"{case_id}.jpg"
        label = root / f"ISIC-2017_{tag}_Part1_GroundTruth" / f"{case_id}_segmentation.png"
    elif layout == "isic2018":
        image = root / f"ISIC2018_Task1-2_{split}_Input" / f"{case_id}.jpg"
        if split == "Training":
            label = root / "ISIC2018_Task1_Training_GroundTruth" / f"{case_id}_segmentation.png"
            task2 = root / "ISIC2018_Task2_Training_GroundTruth_v3"
            attributes = {name: task2 / f"{case_id}_attribute_{name}.png" for name in ATTRIBUTES}
    elif layout == "ham10000":
        part = 1 if index < (n + 1) // 2 else 2
        image = root / f"HAM10000_images_part_{part}" / f"{case_id}.jpg"
        label = root / "HAM10000_segmentations_lesion_tschandl" / f"{case_id}_segmentation.png"
    elif layout == "ph2":
        case_dir = root / "PH2 Dataset images" / case_id
        image = case_dir / f"{case_id}_Dermoscopic_Image" / f"{case_id}.bmp"
        label = case_dir / f"{case_id}_lesion" / f"{case_id}_lesion.bmp"
    elif layout == "plain":
        image = root / "images" / f"{case_id}.jpg"
        label = root / "masks" / f"{case_id}_segmentation.png"
    else:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return {"image": image, "label": label, "attributes": attributes}


def _layout_dirs(root: Path, layout: str, split: str, n: int) -> dict[str, Any]:
    """Top-level folders (and files) a run writes, for the summary."""
    probe = _case_paths(root, layout, split, case_ids(layout, 1, split)[0], 0, max(n, 1))
    if layout == "ham10000":
        parts = [root / "HAM10000_images_part_1"] + ([root / "HAM10000_images_part_2"] if n > 1 else [])
        return {"images": [str(p) for p in parts], "masks": str(probe["label"].parent), "attributes": None,
                "metadata": str(root / "HAM10000_metadata.csv")}
    if layout == "ph2":
        return {"images": str(root / "PH2 Dataset images"), "masks": str(root / "PH2 Dataset images"),
                "attributes": None, "metadata": None}
    attrs = next(iter(probe["attributes"].values()), None)
    return {"images": str(probe["image"].parent), "masks": str(probe["label"].parent) if probe["label"] else None,
            "attributes": str(attrs.parent) if attrs else None, "metadata": None}


def _draw_size(rng: np.random.Generator, size_range: tuple[tuple[int, int], tuple[int, int]]) -> tuple[int, int]:
    """Random (H, W) within ``size_range``, never square when the ranges allow it."""
    (h0, h1), (w0, w1) = size_range
    h = int(rng.integers(h0, h1 + 1))
    w = int(rng.integers(w0, w1 + 1))
    if h == w:
        w = w + 1 if w < w1 else (w - 1 if w > w0 else w)
    return h, w


def _save_mask(mask: np.ndarray, path: Path, mode_1: bool = False) -> None:
    """Write a bool mask: 8-bit {0, 255} PNG, or a Pillow mode "1" image (PH2 BMP)."""
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    if mode_1:
        img = img.convert("1", dither=Image.Dither.NONE)
    img.save(path)


def _make_case(job: tuple[Any, ...]) -> dict[str, Any]:
    """Render and write one case (runs in a worker process when ``workers > 1``)."""
    root_s, layout, split, seed, index, n, size_range, pattern_scale = job
    root = Path(root_s)
    case_id = case_ids(layout, index + 1, split)[index]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    height, width = _draw_size(rng, size_range)
    rgb, lesion, attrs = render_case(rng, height, width, pattern_scale)
    paths = _case_paths(root, layout, split, case_id, index, n)
    paths["image"].parent.mkdir(parents=True, exist_ok=True)
    if layout == "ph2":
        Image.fromarray(rgb).save(paths["image"])
    else:
        Image.fromarray(rgb).save(paths["image"], quality=JPEG_QUALITY)
    if paths["label"] is not None:
        paths["label"].parent.mkdir(parents=True, exist_ok=True)
        _save_mask(lesion, paths["label"], mode_1=layout == "ph2")
    for name, path in paths["attributes"].items():
        path.parent.mkdir(parents=True, exist_ok=True)
        _save_mask(attrs[name], path)
    return {
        "id": case_id,
        "image": str(paths["image"]),
        "label": str(paths["label"]) if paths["label"] is not None else None,
        "size": [height, width],
        "lesion_fraction": float(lesion.mean()),
        "attributes": [name for name in ATTRIBUTES if attrs[name].any()],
    }


def _write_ham_metadata(path: Path, ids: Sequence[str], seed: int) -> None:
    """Write a plausible ``HAM10000_metadata.csv`` (some lesions have several images, as in the real file)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31 - 1,)))
    dx_names = [d for d, _ in _HAM_DX]
    dx_p = np.array([p for _, p in _HAM_DX])
    rows = []
    lesion_no = int(rng.integers(0, 5000))
    i = 0
    while i < len(ids):
        lesion_no += int(rng.integers(1, 4))
        n_img = min(int(rng.choice([1, 1, 1, 2, 2, 3])), len(ids) - i)
        dx = str(rng.choice(dx_names, p=dx_p / dx_p.sum()))
        dx_type = str(rng.choice(_HAM_DX_TYPE["nv" if dx == "nv" else "default"]))
        age = "" if rng.random() < 0.005 else f"{float(rng.integers(1, 18) * 5):.1f}"
        sex = str(rng.choice(["male", "female", "unknown"], p=[0.53, 0.46, 0.01]))
        site = str(rng.choice(_HAM_SITES))
        for _ in range(n_img):
            rows.append([f"HAM_{lesion_no:07d}", ids[i], dx, dx_type, age, sex, site])
            i += 1
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
        writer.writerows(rows)


def generate(out: str | Path, layout: str = "isic2018", n: int = 200, seed: int = 0,
             size_range: tuple[tuple[int, int], tuple[int, int]] = DEFAULT_SIZE_RANGE,
             split: str = "Training", workers: int = 1, pattern_scale: float = 1.0) -> dict:
    """Generate ``n`` synthetic cases under ``out`` in the folder layout of a real dataset.

    Existing files with the same names are overwritten; other files are left alone.

    Args:
        out: root folder (created when missing); the layout's top-level folders are written inside it.
        layout: one of :data:`LAYOUTS`.
        n: number of cases.
        seed: base seed; the same seed gives identical files (case ``i`` does not depend on ``n``).
        size_range: ``((H min, H max), (W min, W max))``, inclusive; images are never square when avoidable.
        split: ``"Training"``, ``"Validation"`` or ``"Test"`` (see :data:`CHALLENGE_SPLITS`). ISIC 2018
            Validation/Test write inputs only, like the real challenge; ISIC 2017 ``"Test"`` uses the real
            ``Test_v2`` names.
        workers: processes used for rendering and writing (1 = in this process).
        pattern_scale: size multiplier of hairs and attribute patterns (see :func:`render_case`).

    Returns:
        A JSON-serialisable summary: ``layout``, ``split``, ``root``, ``seed``, ``n``, ``images``, ``masks``,
        ``attribute_files``, ``attributes`` (cases showing each attribute), ``sizes`` (min/max H and W),
        ``lesion_fraction`` (min/mean/max), ``paths`` (folders written), ``cases`` (per-case id, paths, size,
        lesion fraction and attribute names) and ``seconds``.

    Raises:
        ValueError: on an unknown layout or split, ``n < 1`` or an empty size range.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if split not in CHALLENGE_SPLITS[layout]:
        raise ValueError(f"layout {layout!r} has no split {split!r}; expected one of {CHALLENGE_SPLITS[layout]}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    (h0, h1), (w0, w1) = size_range
    if not (0 < h0 <= h1 and 0 < w0 <= w1):
        raise ValueError(f"invalid size_range {size_range!r}")
    size_range = ((int(h0), int(h1)), (int(w0), int(w1)))
    start = time.perf_counter()
    root = Path(out).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), layout, split, int(seed), i, n, size_range, float(pattern_scale)) for i in range(n)]
    cases = progress_map(_make_case, jobs, workers=workers)
    paths = _layout_dirs(root, layout, split, n)
    if layout == "ham10000":
        _write_ham_metadata(Path(paths["metadata"]), [c["id"] for c in cases], seed)
    n_masks = sum(c["label"] is not None for c in cases)
    has_attr_files = layout == "isic2018" and split == "Training"
    sizes = np.array([c["size"] for c in cases])
    fractions = np.array([c["lesion_fraction"] for c in cases])
    return {
        "layout": layout,
        "split": split,
        "root": str(root),
        "seed": int(seed),
        "n": n,
        "images": n,
        "masks": n_masks,
        "attribute_files": n * len(ATTRIBUTES) if has_attr_files else 0,
        "attributes": {name: sum(name in c["attributes"] for c in cases) for name in ATTRIBUTES},
        "sizes": {"min": sizes.min(axis=0).tolist(), "max": sizes.max(axis=0).tolist(),
                  "square": int((sizes[:, 0] == sizes[:, 1]).sum())},
        "lesion_fraction": {"min": float(fractions.min()), "mean": float(fractions.mean()),
                            "max": float(fractions.max())},
        "paths": paths,
        "cases": cases,
        "seconds": round(time.perf_counter() - start, 3),
    }


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``synth`` options to ``parser`` (used by ``isic-monai synth`` and :func:`main`).

    Args:
        parser: an argparse parser or sub-parser.

    Returns:
        The same parser.
    """
    (h0, h1), (w0, w1) = DEFAULT_SIZE_RANGE
    parser.add_argument("out", type=Path, help="output root folder")
    parser.add_argument("--layout", choices=LAYOUTS, default="isic2018", help="dataset layout (default: isic2018)")
    parser.add_argument("--n", type=int, default=200, help="number of cases (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--min-size", type=int, nargs=2, metavar=("H", "W"), default=[h0, w0],
                        help=f"smallest image height and width (default: {h0} {w0})")
    parser.add_argument("--max-size", type=int, nargs=2, metavar=("H", "W"), default=[h1, w1],
                        help=f"largest image height and width (default: {h1} {w1})")
    parser.add_argument("--split", default="Training", choices=tuple(SPLIT_ID_OFFSETS),
                        help="challenge split for the ISIC layouts (default: Training)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("--pattern-scale", type=float, default=1.0,
                        help="size multiplier of hairs and attribute patterns (default: 1.0; >1 for small images)")
    parser.add_argument("--json", action="store_true", help="print the full summary as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``synth`` with parsed arguments (see :func:`add_arguments`) and print a summary.

    Args:
        args: namespace from a parser prepared by :func:`add_arguments`.

    Returns:
        Process exit code (0 on success, 2 on invalid options).
    """
    size_range = ((args.min_size[0], args.max_size[0]), (args.min_size[1], args.max_size[1]))
    try:
        summary = generate(args.out, layout=args.layout, n=args.n, seed=args.seed, size_range=size_range,
                           split=args.split, workers=args.workers, pattern_scale=args.pattern_scale)
    except ValueError as err:
        print(f"error: {err}")
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"wrote {summary['images']} images and {summary['masks']} masks ({summary['layout']}, "
          f"{summary['split']}) to {summary['root']} in {summary['seconds']:.1f} s")
    print("sizes: H {}..{}, W {}..{}; lesion fraction {:.2f}..{:.2f} (mean {:.2f})".format(
        summary["sizes"]["min"][0], summary["sizes"]["max"][0], summary["sizes"]["min"][1],
        summary["sizes"]["max"][1], summary["lesion_fraction"]["min"], summary["lesion_fraction"]["max"],
        summary["lesion_fraction"]["mean"]))
    print("attributes: " + ", ".join(f"{k} {v}" for k, v in summary["attributes"].items()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m isic_monai.data.synth OUT --layout isic2018 --n 200 --seed 0``.

    Args:
        argv: arguments without the program name (``None``: ``sys.argv[1:]``).

    Returns:
        Process exit code.
    """
    parser = argparse.ArgumentParser(prog="isic-monai synth", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
