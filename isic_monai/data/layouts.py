"""Detect and parse the dataset layouts users arrive with.

Layouts (see ``docs/data.md``):

- ``isic2016``: ``ISBI2016_ISIC_Part1_{Training,Test}_Data`` + ``..._GroundTruth`` (``<id>_Segmentation.png``).
- ``isic2017``: ``ISIC-2017_{Training,Validation,Test_v2}_Data`` + ``..._Part1_GroundTruth``
  (``<id>_segmentation.png``); ``_superpixels.png`` files in the data folders are ignored.
- ``isic2018``: ``ISIC2018_Task1-2_{Training,Validation,Test}_Input``, ``ISIC2018_Task1_<Split>_GroundTruth``
  (``<id>_segmentation.png``), ``ISIC2018_Task2_<Split>_GroundTruth[_v3]`` (``<id>_attribute_<name>.png``).
- ``ham10000``: ``HAM10000_images_part_{1,2}`` (or ``HAM10000_images``, ``ISIC2018_Task3_Training_Input``) +
  ``HAM10000_segmentations_lesion_tschandl`` (``<id>_segmentation.png``).
- ``ph2``: ``[PH2 Dataset images/]IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp`` + ``IMDxxx_lesion/IMDxxx_lesion.bmp``.
- ``plain``: ``images/`` + ``masks/`` (or ``labels/``), or per-split folders ``train|val|test/images`` (+ masks);
  masks named ``<id>.png``, ``<id>_mask.png``, ``<id>_segmentation.png``, ``<id>_seg.png``, ``<id>_lesion.png``...

Challenge folders are found up to two levels below the given root, and a folder that an unzip nested inside a
folder of the same name (``X/X/...``) is unwrapped. Folders without ground truth become unlabelled samples.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from isic_monai import ATTRIBUTES
from isic_monai.data.imageio import IMAGE_EXTENSIONS, MASK_EXTENSIONS, is_image_file
from isic_monai.data.records import DATALIST_KEYS, DataError, ParsedDataset, Problem, Sample

__all__ = [
    "LAYOUTS",
    "detect_layout",
    "parse_dataset",
]

LAYOUTS: tuple[str, ...] = ("isic2016", "isic2017", "isic2018", "ham10000", "ph2", "plain")
"""Layout names accepted by ``--layout`` (and written by :func:`isic_monai.data.synth.generate`)."""

_SPLIT_WORDS = {"training": "training", "train": "training", "validation": "validation", "val": "validation",
                "valid": "validation", "test": "testing", "test_v2": "testing", "testing": "testing"}
_SKIP_DIRS = {"__MACOSX"}
_MAX_DEPTH = 2

_RE = {
    "isic2016_data": re.compile(r"ISBI2016_ISIC_Part1_(Training|Test)_Data"),
    "isic2016_gt": re.compile(r"ISBI2016_ISIC_Part1_(Training|Test)_GroundTruth"),
    "isic2017_data": re.compile(r"ISIC-2017_(Training|Validation|Test_v2|Test)_Data"),
    "isic2017_gt": re.compile(r"ISIC-2017_(Training|Validation|Test_v2|Test)_Part1_GroundTruth"),
    "isic2018_input": re.compile(r"ISIC2018_Task1-2_(Training|Validation|Test)_Input"),
    "isic2018_task1": re.compile(r"ISIC2018_Task1_(Training|Validation|Test)_GroundTruth"),
    "isic2018_task2": re.compile(r"ISIC2018_Task2_(Training|Validation|Test)_GroundTruth(?:_v\d+)?"),
    "ham_images": re.compile(r"HAM10000_images(?:_part_[12])?|ISIC2018_Task3_Training_Input"),
    "ham_masks": re.compile(r"HAM10000_segmentations_lesion_tschandl"),
    "ph2_case": re.compile(r"IMD\d+"),
}

_LOOKED_FOR = (
    "ISIC 2016 (ISBI2016_ISIC_Part1_{Training,Test}_Data/_GroundTruth), "
    "ISIC 2017 (ISIC-2017_{Training,Validation,Test_v2}_Data/_Part1_GroundTruth), "
    "ISIC 2018 (ISIC2018_Task1-2_{Training,Validation,Test}_Input, ISIC2018_Task1_Training_GroundTruth, "
    "ISIC2018_Task2_Training_GroundTruth_v3), "
    "HAM10000 (HAM10000_images_part_1/2, HAM10000_segmentations_lesion_tschandl), "
    "PH2 (IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp, possibly under 'PH2 Dataset images/'), "
    "plain (images/ + masks/, or train|val|test/images/)"
)

_PLAIN_MASK_DIRS = ("masks", "mask", "labels", "label", "ground_truth", "groundtruth", "gt", "segmentations")
_PLAIN_SUFFIXES = ("_segmentation", "_mask", "_lesion", "_label", "_seg", "_gt", "")


# ----------------------------------------------------------------------------------------------------------------
# File-system helpers
# ----------------------------------------------------------------------------------------------------------------


def _subdirs(path: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []
    return [Path(e.path) for e in entries
            if e.is_dir() and not e.name.startswith(".") and e.name not in _SKIP_DIRS]


def _find_dirs(root: Path, pattern: re.Pattern[str], max_depth: int = _MAX_DEPTH) -> list[Path]:
    """Folders whose name fully matches ``pattern``, from ``root`` (depth 0) down to ``max_depth``."""
    found: list[Path] = []
    if pattern.fullmatch(root.name):
        return [root]
    frontier = [root]
    for _ in range(max_depth):
        nxt: list[Path] = []
        for d in frontier:
            for sub in _subdirs(d):
                (found if pattern.fullmatch(sub.name) else nxt).append(sub)
        frontier = nxt
    return found


def _files(path: Path, extensions: tuple[str, ...]) -> list[Path]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.is_file() and is_image_file(e.name, extensions)]


def _unwrap(path: Path) -> Path:
    """``X/X/`` (an archive unzipped into a folder of its own name) -> the inner ``X``."""
    while not _files(path, IMAGE_EXTENSIONS):
        subs = _subdirs(path)
        if len(subs) == 1 and subs[0].name == path.name:
            path = subs[0]
        else:
            break
    return path


def _abs(path: Path) -> str:
    return os.path.abspath(path)


# ----------------------------------------------------------------------------------------------------------------
# Pairing images with masks
# ----------------------------------------------------------------------------------------------------------------


def _list_images(image_dirs: list[Path], problems: list[Problem], skip_suffixes: tuple[str, ...] = ("_superpixels",)
                 ) -> dict[str, Path]:
    """``{id: image}`` over several folders; duplicate ids are errors (the first path wins)."""
    images: dict[str, Path] = {}
    for d in image_dirs:
        for f in _files(d, IMAGE_EXTENSIONS):
            if any(f.stem.lower().endswith(s) for s in skip_suffixes):
                continue
            if f.stem in images:
                problems.append(Problem(_abs(f), "duplicate_id", f"id {f.stem!r} already used by "
                                        f"{_abs(images[f.stem])}; this file is not used"))
                continue
            images[f.stem] = f
    return images


def _match_masks(mask_dir: Path, ids: dict[str, Path], suffixes: tuple[str, ...], problems: list[Problem],
                 image_dirs_text: str) -> dict[str, Path]:
    """``{id: mask}`` for masks named ``<id><suffix>.<ext>`` (suffix compared case-insensitively).

    Masks whose id has no image are ``missing_image`` errors; two masks for one id are ``duplicate_id`` errors.
    """
    lower_ids = {k.lower(): k for k in ids}
    masks: dict[str, Path] = {}
    ordered = sorted(suffixes, key=len, reverse=True)
    for f in _files(mask_dir, MASK_EXTENSIONS):
        stem = f.stem
        matched: str | None = None
        guess: str | None = None
        for suf in ordered:
            if suf and not stem.lower().endswith(suf.lower()):
                continue
            cand = stem[: len(stem) - len(suf)] if suf else stem
            guess = guess or cand
            if cand.lower() in lower_ids:
                matched = lower_ids[cand.lower()]
                break
        if matched is None:
            if guess is None:
                problems.append(Problem(_abs(f), "ignored_file", "file name matches no expected mask name "
                                        f"(<id>{'|'.join(ordered)}.png); ignored", "warning"))
            else:
                problems.append(Problem(_abs(f), "missing_image", f"mask without its image: no {guess}.* in "
                                        f"{image_dirs_text}"))
            continue
        if matched in masks:
            problems.append(Problem(_abs(f), "duplicate_id", f"second mask for id {matched!r} (already "
                                    f"{_abs(masks[matched])}); this file is not used"))
            continue
        masks[matched] = f
    return masks


_ATTR_RE = re.compile(r"(.+)_attribute_([a-z_]+)")


def _match_attributes(attr_dir: Path, ids: dict[str, Path], problems: list[Problem], image_dirs_text: str
                      ) -> dict[str, dict[str, Path]]:
    found: dict[str, dict[str, Path]] = {}
    for f in _files(attr_dir, MASK_EXTENSIONS):
        m = _ATTR_RE.fullmatch(f.stem)
        if m is None or m.group(2) not in ATTRIBUTES:
            problems.append(Problem(_abs(f), "ignored_file", "not an <id>_attribute_<name>.png file with name in "
                                    f"{', '.join(ATTRIBUTES)}; ignored", "warning"))
            continue
        cid, name = m.group(1), m.group(2)
        if cid not in ids:
            problems.append(Problem(_abs(f), "missing_image", f"attribute mask without its image: no {cid}.* in "
                                    f"{image_dirs_text}"))
            continue
        found.setdefault(cid, {})[name] = f
    return found


def _pair(image_dirs: list[Path], mask_dir: Path | None, suffixes: tuple[str, ...], split: str | None,
          problems: list[Problem], attr_dir: Path | None = None, labelled: bool | None = None) -> list[Sample]:
    """Build samples from image folders and an optional mask folder (and Task 2 attribute folder)."""
    images = _list_images(image_dirs, problems)
    text = ", ".join(str(_abs(d)) for d in image_dirs) or "(no image folder)"
    labelled = (mask_dir is not None) if labelled is None else labelled
    masks = _match_masks(mask_dir, images, suffixes, problems, text) if mask_dir is not None else {}
    attrs = _match_attributes(attr_dir, images, problems, text) if attr_dir is not None else {}
    samples: list[Sample] = []
    for cid, path in images.items():
        s = Sample(cid, _abs(path), split=split if labelled else "testing", labelled=labelled)
        if labelled and mask_dir is not None:
            if cid in masks:
                s.label = _abs(masks[cid])
            else:
                names = " or ".join(f"{cid}{suf}.png" for suf in suffixes[:2])
                s.problems.append(Problem(s.image, "missing_mask", f"image without its mask: no {names} in "
                                          f"{_abs(mask_dir)}"))
        if attr_dir is not None:
            have = attrs.get(cid, {})
            s.attributes = {name: (_abs(have[name]) if name in have else None) for name in ATTRIBUTES}
            absent = [name for name in ATTRIBUTES if name not in have]
            if absent:
                s.problems.append(Problem(
                    _abs(attr_dir / f"{cid}_attribute_*.png"), "missing_attribute",
                    f"no Task 2 attribute file for {', '.join(absent)} (expected {cid}_attribute_<name>.png in "
                    f"{_abs(attr_dir)}); recorded as null = all-zero mask", "warning"))
        samples.append(s)
    return samples


# ----------------------------------------------------------------------------------------------------------------
# Layout parsers
# ----------------------------------------------------------------------------------------------------------------


def _by_split(root: Path, key: str) -> dict[str, Path]:
    """``{split word: folder}`` for the challenge folders matching ``_RE[key]``."""
    out: dict[str, Path] = {}
    for d in _find_dirs(root, _RE[key]):
        m = _RE[key].fullmatch(d.name)
        assert m is not None
        out.setdefault(_SPLIT_WORDS[m.group(1).lower()], _unwrap(d))
    return out


def _parse_challenge(root: Path, data_key: str, gt_key: str, suffixes: tuple[str, ...], problems: list[Problem],
                     task2_key: str | None = None) -> list[Sample]:
    data, gt = _by_split(root, data_key), _by_split(root, gt_key)
    task2 = _by_split(root, task2_key) if task2_key else {}
    samples: list[Sample] = []
    for split in DATALIST_KEYS:
        if split not in data and split not in gt and split not in task2:
            continue
        image_dirs = [data[split]] if split in data else []
        samples += _pair(image_dirs, gt.get(split), suffixes, split, problems, task2.get(split),
                         labelled=split in gt or split in task2)
    return samples


def _parse_isic2016(root: Path, problems: list[Problem]) -> list[Sample]:
    return _parse_challenge(root, "isic2016_data", "isic2016_gt", ("_Segmentation", "_segmentation"), problems)


def _parse_isic2017(root: Path, problems: list[Problem]) -> list[Sample]:
    return _parse_challenge(root, "isic2017_data", "isic2017_gt", ("_segmentation", "_Segmentation"), problems)


def _parse_isic2018(root: Path, problems: list[Problem]) -> list[Sample]:
    return _parse_challenge(root, "isic2018_input", "isic2018_task1", ("_segmentation", "_Segmentation"), problems,
                            "isic2018_task2")


def _parse_ham10000(root: Path, problems: list[Problem]) -> list[Sample]:
    image_dirs = [_unwrap(d) for d in _find_dirs(root, _RE["ham_images"])]
    mask_dirs = [_unwrap(d) for d in _find_dirs(root, _RE["ham_masks"])]
    return _pair(image_dirs, mask_dirs[0] if mask_dirs else None, ("_segmentation", "_Segmentation"), None, problems)


def _ph2_cases(root: Path) -> list[Path]:
    cases = [d for d in _find_dirs(root, _RE["ph2_case"], max_depth=3) if (d / f"{d.name}_Dermoscopic_Image").is_dir()
             or (d / f"{d.name}_lesion").is_dir()]
    return sorted(cases, key=lambda d: d.name)


def _parse_ph2(root: Path, problems: list[Problem]) -> list[Sample]:
    samples: list[Sample] = []
    seen: dict[str, Path] = {}
    for case in _ph2_cases(root):
        cid = case.name
        if cid in seen:
            problems.append(Problem(_abs(case), "duplicate_id", f"case {cid!r} already found at {_abs(seen[cid])}; "
                                    "this folder is not used"))
            continue
        seen[cid] = case
        images = [f for f in _files(case / f"{cid}_Dermoscopic_Image", IMAGE_EXTENSIONS) if f.stem == cid]
        lesions = [f for f in _files(case / f"{cid}_lesion", MASK_EXTENSIONS) if f.stem == f"{cid}_lesion"]
        if not images:
            if lesions:
                problems.append(Problem(_abs(lesions[0]), "missing_image", "mask without its image: no "
                                        f"{cid}_Dermoscopic_Image/{cid}.bmp in {_abs(case)}"))
            continue
        s = Sample(cid, _abs(images[0]), split=None)
        if lesions:
            s.label = _abs(lesions[0])
        else:
            s.problems.append(Problem(s.image, "missing_mask", f"image without its mask: no {cid}_lesion/"
                                      f"{cid}_lesion.bmp in {_abs(case)}"))
        samples.append(s)
    return samples


def _plain_split_dirs(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in _subdirs(root):
        split = _SPLIT_WORDS.get(d.name.lower())
        if split and (d / "images").is_dir() and split not in out:
            out[split] = d
    return out


def _plain_mask_dir(folder: Path) -> Path | None:
    for name in _PLAIN_MASK_DIRS:
        if (folder / name).is_dir():
            return folder / name
    return None


def _parse_plain(root: Path, problems: list[Problem]) -> list[Sample]:
    split_dirs = _plain_split_dirs(root)
    if not split_dirs:
        return _pair([root / "images"], _plain_mask_dir(root), _PLAIN_SUFFIXES, None, problems)
    samples: list[Sample] = []
    for split, folder in sorted(split_dirs.items(), key=lambda kv: DATALIST_KEYS.index(kv[0])):
        samples += _pair([folder / "images"], _plain_mask_dir(folder), _PLAIN_SUFFIXES, split, problems)
    return samples


_PARSERS = {
    "isic2016": _parse_isic2016,
    "isic2017": _parse_isic2017,
    "isic2018": _parse_isic2018,
    "ham10000": _parse_ham10000,
    "ph2": _parse_ph2,
    "plain": _parse_plain,
}


# ----------------------------------------------------------------------------------------------------------------
# Detection and the public entry point
# ----------------------------------------------------------------------------------------------------------------


def _candidates(root: Path) -> list[str]:
    found: list[str] = []
    checks = {
        "isic2018": ("isic2018_input", "isic2018_task1", "isic2018_task2"),
        "isic2017": ("isic2017_data", "isic2017_gt"),
        "isic2016": ("isic2016_data", "isic2016_gt"),
        "ham10000": ("ham_masks",),
    }
    for layout, keys in checks.items():
        if any(_find_dirs(root, _RE[k]) for k in keys):
            found.append(layout)
    if "ham10000" not in found and any(d.name.startswith("HAM10000") for d in _find_dirs(root, _RE["ham_images"])):
        found.append("ham10000")
    if _ph2_cases(root):
        found.append("ph2")
    if not found and ((root / "images").is_dir() or _plain_split_dirs(root)):
        found.append("plain")
    return found


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(os.path.abspath(os.path.expanduser(str(root))))
    if not path.exists():
        raise DataError([Problem(str(path), "not_found", "dataset folder does not exist")])
    if not path.is_dir():
        raise DataError([Problem(str(path), "not_found", "expected a dataset folder, got a file")])
    return path


def detect_layout(root: str | os.PathLike) -> str:
    """Name of the layout found in ``root``.

    Args:
        root: dataset folder.

    Returns:
        One of :data:`LAYOUTS`.

    Raises:
        DataError: the folder is missing or empty (``not_found``/``empty``), holds no known layout
            (``unknown_layout``, naming the folder and what was looked for) or several (``ambiguous_layout``).
    """
    path = _check_root(root)
    if next(os.scandir(path), None) is None:
        raise DataError([Problem(str(path), "empty", "dataset folder is empty")])
    found = _candidates(path)
    if not found:
        raise DataError([Problem(str(path), "unknown_layout", f"no known dataset layout in {path}; looked for: "
                                 f"{_LOOKED_FOR}. Use --layout to force one.")])
    if len(found) > 1:
        raise DataError([Problem(str(path), "ambiguous_layout", f"several layouts found in {path}: "
                                 f"{', '.join(found)}; choose one with --layout (or point at a sub-folder)")])
    return found[0]


def _check_duplicates(samples: list[Sample], problems: list[Problem]) -> list[Sample]:
    kept: dict[str, Sample] = {}
    for s in samples:
        if s.id in kept:
            problems.append(Problem(s.image, "duplicate_id", f"id {s.id!r} already used by {kept[s.id].image} "
                                    f"(split {kept[s.id].split}); this file is not used"))
            continue
        kept[s.id] = s
    return list(kept.values())


def parse_dataset(root: str | os.PathLike, layout: str | None = None) -> ParsedDataset:
    """Find every image and its ground truth under ``root``; nothing is decoded yet (see ``validate``).

    Args:
        root: dataset folder.
        layout: one of :data:`LAYOUTS`; None detects it (:func:`detect_layout`).

    Returns:
        The parsed dataset with structural problems (missing masks/images, duplicates, absent attributes).

    Raises:
        DataError: unknown/ambiguous layout, missing or empty folder, or no image at all.
        ValueError: ``layout`` is not a known name.
    """
    path = _check_root(root)
    if layout is None:
        layout = detect_layout(path)
    elif layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    problems: list[Problem] = []
    samples = _check_duplicates(_PARSERS[layout](path, problems), problems)
    if not samples:
        raise DataError(problems + [Problem(str(path), "empty", f"no images found for layout {layout!r} in {path}; "
                                            f"looked for: {_LOOKED_FOR}")])
    official = any(s.split is not None for s in samples if s.labelled)
    return ParsedDataset(layout, str(path), samples, problems, official)
