"""Fuzzing the image and mask readers and folder inference with hypothesis (docs/reliability.md, "Fuzzed inputs").

Inputs: random bytes, zero-byte files, truncated or byte-flipped JPEG/PNG/BMP/TIFF, odd modes (1, L, P, LA, RGBA,
CMYK, I;16, I, F), odd sizes (1x1, 1xN, Nx1, very wide) and headers that declare huge dimensions in a small file.
Properties: a reader returns an array of the right shape or raises an error whose message names the file; the checks
(:func:`check_image`, :func:`check_mask`, :func:`scan_inputs`) never raise and name the file in every problem; a
file that folder inference accepts is one that MONAI's ``LoadImage`` then reads; nothing hangs (each call is timed,
and a watchdog ends the test process with its tracebacks if one call ever blocks) and nothing allocates the pixels
a header merely declares (the huge-dimension cases run again in a process limited to 3 GiB of address space).
"""

from __future__ import annotations

import faulthandler
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO_ROOT, bundle
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from monai.transforms import LoadImage
from PIL import Image

from isic_monai.data.imageio import ImageTooLargeError, open_rgb
from isic_monai.data.masks import read_mask, read_mask_resized
from isic_monai.data.validate import check_image, check_mask
from isic_monai.engines.folder_inference import check_readable, scan_inputs
from isic_monai.transforms import mask_reader, rgb_reader

EXAMPLES = sorted((REPO_ROOT / "docs" / "examples" / "isic2017_val").glob("*.jpg"))
CALL_LIMIT_S = 10.0
"""One reader or check call on a fuzzed file of at most a few kilobytes (or a 2500-pixel-wide strip) takes
milliseconds; 10 s is far beyond that even on a loaded machine."""
WATCHDOG_S = 300
"""A test that blocks this long (a hang inside Pillow's C code, which no Python-level timeout interrupts) ends the
test process with every thread's traceback: a hang fails loudly instead of blocking the run."""

MODES_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "PNG": ("1", "L", "P", "LA", "RGB", "RGBA", "I;16"),
    "JPEG": ("L", "RGB", "CMYK"),
    "BMP": ("1", "L", "P", "RGB"),
    "TIFF": ("1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"),
}
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}
HIGH_DEPTH = ("I;16", "I", "F")
"""Modes that :func:`check_image` refuses (``bit_depth``): folder inference reports them instead of guessing a scale."""
ODD_SIZES = [(1, 1), (1, 9), (9, 1), (1, 2500), (2500, 1), (3, 1200), (2, 2)]
"""(H, W): single pixels, one-pixel rows and columns, very wide and very tall strips."""


@dataclass(frozen=True)
class FuzzFile:
    """One fuzzed input file.

    Attributes:
        suffix: its extension (which need not match its content).
        data: its bytes.
        expect: ``"good"`` (a complete 8-bit image: must be accepted and read), ``"bad"`` (must be refused, with
            the file named) or ``"any"`` (damaged at random: either, but consistently).
        hw: ``(H, W)`` of a complete image, else None.
        what: a short description, shown when hypothesis reports a failing example.
    """

    suffix: str
    data: bytes
    expect: str
    hw: tuple[int, int] | None = None
    what: str = ""


def encode(fmt: str, mode: str, hw: tuple[int, int], seed: int = 0) -> bytes:
    """A random-pixel image of ``mode`` and ``(H, W)`` encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    h, w = hw
    if mode in HIGH_DEPTH:
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        img = Image.fromarray(rng.integers(0, 60000, (h, w)).astype(dtype))
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_header(fmt: str, w: int, h: int) -> bytes:
    """A small, well-formed file whose header declares a ``w`` x ``h`` image (a decompression bomb's header).

    PNG and BMP take any size up to 2**31; JPEG and GIF at most 65535 per side.
    """
    if fmt == "PNG":
        idat = zlib.compress(b"\0" * 256)
        return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    if fmt == "BMP":
        pixels = b"\0" * 64
        info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
        return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info)) + info + pixels
    if fmt == "JPEG":
        data = bytearray(encode("JPEG", "RGB", (8, 8)))
        sof = data.index(b"\xff\xc0")  # baseline start-of-frame: length (2), precision (1), height (2), width (2)
        data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
        return bytes(data)
    if fmt == "GIF":
        return (b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0) + b"," + struct.pack("<HHHHB", 0, 0, w, h, 0)
                + b"\x02\x02\x44\x01\x00;")
    raise ValueError(fmt)


def compressible_png(w: int, h: int) -> bytes:
    """A complete, valid 1-bit PNG of ``w`` x ``h`` black pixels: a few kilobytes however many pixels it holds."""
    idat = zlib.compress(b"\0" * ((1 + (w + 7) // 8) * h), 9)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


# ---------------------------------------------------------------- strategies

sizes = st.one_of(st.sampled_from(ODD_SIZES), st.tuples(st.integers(1, 40), st.integers(1, 40)))
formats_and_modes = st.sampled_from([(f, m) for f, modes in MODES_BY_FORMAT.items() for m in modes])


@st.composite
def valid_images(draw: st.DrawFn) -> FuzzFile:
    """A complete image: accepted when 8-bit, refused (``bit_depth``) when 16-bit or float."""
    (fmt, mode), hw = draw(formats_and_modes), draw(sizes)
    data = encode(fmt, mode, hw, draw(st.integers(0, 2**16)))
    expect = "bad" if mode in HIGH_DEPTH else "good"
    return FuzzFile(SUFFIX[fmt], data, expect, hw, f"{fmt} {mode} {hw}")


@st.composite
def damaged_images(draw: st.DrawFn) -> FuzzFile:
    """An image cut short, or with some bytes overwritten: refused or read, consistently."""
    (fmt, mode), hw = draw(formats_and_modes), draw(sizes)
    data = bytearray(encode(fmt, mode, hw, draw(st.integers(0, 2**16))))
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data) - 1))
        return FuzzFile(SUFFIX[fmt], bytes(data[:cut]), "any", None, f"{fmt} {mode} {hw} cut at {cut}/{len(data)}")
    flips = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)), min_size=1, max_size=8))
    for pos, xor in flips:
        data[pos] ^= xor
    return FuzzFile(SUFFIX[fmt], bytes(data), "any", None, f"{fmt} {mode} {hw} bytes changed {flips}")


@st.composite
def huge_images(draw: st.DrawFn) -> FuzzFile:
    """A header declaring more pixels than Pillow's decompression-bomb limit (2 x 89 million) in under 1 KiB."""
    fmt = draw(st.sampled_from(["PNG", "BMP", "JPEG", "GIF"]))
    top = 65535 if fmt in ("JPEG", "GIF") else 100_000
    w, h = draw(st.integers(20_000, top)), draw(st.integers(20_000, top))
    suffix = draw(st.sampled_from([".png", ".jpg", ".bmp", ".tif"]))
    return FuzzFile(suffix, huge_header(fmt, w, h), "bad", None, f"{fmt} header {w}x{h}")


random_files = st.builds(FuzzFile, st.sampled_from([".jpg", ".png", ".bmp", ".tif", ".jpeg"]),
                         st.binary(max_size=600), st.just("any"), st.none(), st.just("random bytes"))
empty_files = st.builds(FuzzFile, st.sampled_from([".jpg", ".png", ".bmp", ".tif"]), st.just(b""), st.just("bad"),
                        st.none(), st.just("zero bytes"))
fuzz_files = st.one_of(valid_images(), damaged_images(), huge_images(), random_files, empty_files)

# regression examples: what the fuzzing found (docs/reliability.md, "Fuzzed inputs")
_PNG = encode("PNG", "RGB", (20, 30))
TRUNCATED_PNG = FuzzFile(".png", _PNG[:100], "bad", None, "PNG cut in its pixel data")
"""``LoadImage(reader=rgb_reader())`` raised Pillow's bare ``OSError: image file is truncated``, naming no file: the
converter failed in ``read``, ``LoadImage`` fell back to MONAI's default ``PILReader``, which failed in ``get_data``."""
HUGE_PNG = FuzzFile(".png", huge_header("PNG", 100_000, 100_000), "bad", None, "PNG header 100000x100000")
"""``read_mask``, ``open_rgb`` and ``read_mask_resized`` raised Pillow's ``DecompressionBombError``, which is not an
``OSError``: ``isic-monai measure``, ``report`` and ``stats`` catch ``(OSError, ValueError)`` and stopped."""
BROKEN_PNG_CRC = FuzzFile(".png", _PNG[:40] + bytes([_PNG[40] ^ 0xFF]) + _PNG[41:], "any", None, "PNG chunk damaged")
WARNING_BAND_PNG = FuzzFile(".png", compressible_png(10_000, 10_000), "bad", None, "complete 1-bit PNG 10000x10000")
"""100 million pixels: between Pillow's decompression-bomb warning (89 million) and its error (179 million), so
Pillow only warned, and every reader decoded it and expanded it into several full-size float maps."""
WARNING_BAND_JPEG = FuzzFile(".jpg", huge_header("JPEG", 12_000, 9_000), "bad", None, "JPEG header 12000x9000")


# ---------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """End the process with every thread's traceback if a test blocks for :data:`WATCHDOG_S` seconds."""
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def timed(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """``(result, None)`` or ``(None, error)`` of ``fn()``, failing the test when it takes over :data:`CALL_LIMIT_S`."""
    start = time.monotonic()
    try:
        result, error = fn(), None
    except Exception as err:  # noqa: BLE001 - the test inspects every error
        result, error = None, err
    elapsed = time.monotonic() - start
    assert elapsed < CALL_LIMIT_S, f"{elapsed:.1f} s for one call"
    return result, error


def assert_clear_error(error: BaseException, path: Path) -> None:
    """A clear error: an ordinary exception (not an out-of-memory) whose message names the file."""
    assert not isinstance(error, MemoryError), f"{path.name}: {error!r}"
    assert path.name in str(error), f"the error does not name {path.name}: {type(error).__name__}: {error}"


def load_rgb(path: Path) -> np.ndarray:
    """``LoadImage`` with the bundle's photo reader, as ``image_transforms`` in the configs use it."""
    return np.asarray(LoadImage(reader=rgb_reader(), image_only=True)(str(path)))


def load_grey(path: Path) -> np.ndarray:
    """``LoadImage`` with the bundle's mask reader, as the training config's label loading uses it."""
    return np.asarray(LoadImage(reader=mask_reader(), image_only=True)(str(path)))


READERS: dict[str, tuple[Callable[[Path], Any], int]] = {
    "LoadImage(rgb_reader)": (load_rgb, 3),
    "LoadImage(mask_reader)": (load_grey, 2),
    "open_rgb": (lambda p: np.asarray(open_rgb(p)), 3),
    "open_rgb(draft)": (lambda p: np.asarray(open_rgb(p, draft_hw=(8, 8))), 3),
    "read_mask": (read_mask, 2),
    "read_mask_resized": (lambda p: np.asarray(read_mask_resized(p, (7, 5))), 2),
}
"""name: (reader, dimensions of the array it returns)."""
IMAGEIO_READERS = ("open_rgb", "open_rgb(draft)", "read_mask", "read_mask_resized")
"""Readers whose errors must be ``OSError``s: their callers (prepare, measure, report, stats) catch ``OSError``."""


def write(case: FuzzFile, folder: Path, stem: str = "fuzzed") -> Path:
    """Write ``case`` into ``folder`` as ``<stem><suffix>``."""
    path = folder / f"{stem}{case.suffix}"
    path.write_bytes(case.data)
    return path


FUZZ_SETTINGS = settings(max_examples=60, deadline=None, derandomize=False, database=None,
                         suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- properties


@FUZZ_SETTINGS
@given(case=fuzz_files)
@example(case=TRUNCATED_PNG)
@example(case=HUGE_PNG)
@example(case=BROKEN_PNG_CRC)
def test_readers_return_the_image_or_an_error_naming_the_file(case: FuzzFile) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(case, Path(tmp))
        for name, (reader, ndim) in READERS.items():
            result, error = timed(lambda reader=reader: reader(path))
            if error is not None:
                assert_clear_error(error, path)
                if name in IMAGEIO_READERS:
                    assert isinstance(error, OSError), f"{name}: {type(error).__name__} is not an OSError"
                assert case.hw is None, f"{name} failed on a complete {case.what} image: {error!r}"
                continue
            # complete 16-bit and float images are read (check_image refuses them); unreadable files never are
            assert not (case.expect == "bad" and case.hw is None), f"{name} read {case.what}"
            assert result.ndim == ndim, name
            if name.endswith("_resized"):
                assert result.shape == (7, 5)
            elif name.endswith("(draft)") and case.hw is not None:  # JPEGs decode at 1/2..1/8 scale, at least 8x8
                assert all(min(8, n) <= m <= n for m, n in zip(result.shape[:2], case.hw, strict=True)), name
            elif case.hw is not None:
                assert result.shape[:2] == case.hw, name
            if ndim == 3:
                assert result.shape[2] == 3, name


@FUZZ_SETTINGS
@given(case=fuzz_files)
@example(case=TRUNCATED_PNG)
@example(case=HUGE_PNG)
def test_checks_never_raise_and_name_the_file(case: FuzzFile) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(case, Path(tmp))
        for verify in ("quick", "full"):
            (hw, problems), error = timed(lambda verify=verify: check_image(path, verify, draft=True))
            assert error is None, f"check_image({verify}) raised {error!r}"
            assert all(p.path == str(path) and p.message for p in problems)
            if hw is None:
                assert any(p.severity == "error" for p in problems)
            if case.hw is not None:
                assert hw == case.hw
        (hw, problems), error = timed(lambda: check_mask(path, case.hw))
        assert error is None, f"check_mask raised {error!r}"
        assert all(p.path == str(path) and p.message for p in problems)
        if hw is None:
            assert any(p.severity == "error" for p in problems)


@FUZZ_SETTINGS
@given(case=fuzz_files)
@example(case=TRUNCATED_PNG)
@example(case=BROKEN_PNG_CRC)
def test_what_folder_inference_accepts_loads(case: FuzzFile) -> None:
    """``check_readable`` decides what inference's ``Dataset`` sees: a file it accepts must then load."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write(case, Path(tmp))
        problem, error = timed(lambda: check_readable(path))
        assert error is None, f"check_readable raised {error!r}"
        if case.expect == "good":
            assert problem is None, f"{case.what}: {problem}"
        elif case.expect == "bad":
            assert problem, case.what
        if problem is None:
            image, error = timed(lambda: load_rgb(path))
            assert error is None, f"{case.what}: accepted by the check, then LoadImage failed: {error!r}"
            assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.float32
            assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 255


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(fuzz_files, min_size=1, max_size=6))
def test_scan_inputs_sets_aside_each_bad_file_and_keeps_every_good_one(cases: list[FuzzFile]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(EXAMPLES[0], folder / EXAMPLES[0].name)
        paths = {write(case, folder, f"case{i}").name: case for i, case in enumerate(cases)}
        (good, bad), error = timed(lambda: scan_inputs(folder))
        assert error is None, f"scan_inputs raised {error!r}"
        good_names = {Path(g["image"]).name for g in good}
        bad_names = [Path(f.path).name for f in bad]
        assert len(bad_names) == len(set(bad_names)) and not good_names & set(bad_names)  # each file once
        assert good_names | set(bad_names) == set(paths) | {EXAMPLES[0].name}
        assert EXAMPLES[0].name in good_names
        for name, case in paths.items():
            if case.expect == "good":
                assert name in good_names, case.what
            elif case.expect == "bad":
                assert name in bad_names, case.what
        assert all(f.problem and Path(f.path).parent == folder for f in bad)


def test_the_warning_band_is_refused_by_every_reader_before_decoding(tmp_path: Path) -> None:
    """100 and 108 million pixels (Pillow's warning band): every reader and check refuses them at the pixel cap
    (50 million), from the header, naming the file and its size; Pillow's warning is not raised."""
    for stem, case in {"band_png": WARNING_BAND_PNG, "band_jpeg": WARNING_BAND_JPEG}.items():
        path = write(case, tmp_path, stem)
        size = "10000x10000" if stem == "band_png" else "12000x9000"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            for name, (reader, _) in READERS.items():
                _, error = timed(lambda reader=reader, path=path: reader(path))
                assert isinstance(error, ImageTooLargeError), f"{name}: {error!r}"
                assert_clear_error(error, path)
                assert f"{size} pixels" in str(error) and "exceeds limit of 50 Mpx" in str(error), str(error)
            for verify in ("quick", "full"):
                hw, problems = check_image(path, verify, draft=True)
                assert hw is None and [p.kind for p in problems] == ["too_large"], problems
            assert [p.kind for p in check_mask(path, None)[1]] == ["too_large"]
            problem = check_readable(path)
        assert problem.startswith("cannot be read as an image") and size in problem, problem


BOMB_SCRIPT = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
sys.path.insert(0, sys.argv[2])
from test_fuzz import READERS, check_image, check_mask, check_readable
from pathlib import Path
out = {}
for path in sorted(Path(sys.argv[1]).iterdir()):
    rows = {}
    for name, (reader, _) in READERS.items():
        try:
            reader(path)
            rows[name] = "read"
        except Exception as err:
            rows[name] = f"{type(err).__name__}: {err}"
    rows["check_image"] = [p.message for p in check_image(path, "full", draft=True)[1]]
    rows["check_mask"] = [p.message for p in check_mask(path, None)[1]]
    rows["check_readable"] = check_readable(path)
    out[path.name] = rows
print(json.dumps(out))
"""


def test_huge_declared_dimensions_fail_fast_within_3_gib(tmp_path: Path) -> None:
    """A 100000 x 100000 (PNG, BMP) or 65535 x 65535 (JPEG, GIF) header in a small file: Pillow's
    decompression-bomb check, named, in a process that could not even allocate the declared pixels."""
    files = tmp_path / "files"
    files.mkdir()
    for fmt, side, suffix in (("PNG", 100_000, ".png"), ("BMP", 100_000, ".bmp"), ("JPEG", 65535, ".jpg"),
                              ("GIF", 65535, ".png")):
        (files / f"huge_{fmt.lower()}{suffix}").write_bytes(huge_header(fmt, side, side))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, str(files), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 4
    for name, rows in results.items():
        for reader in READERS:
            assert rows[reader] != "read" and name in rows[reader], (name, reader, rows[reader])
            assert "MemoryError" not in rows[reader] and "exceeds limit" in rows[reader], (name, rows[reader])
        assert any("exceeds limit" in m for m in rows["check_image"]), rows["check_image"]
        assert any("exceeds limit" in m for m in rows["check_mask"]), rows["check_mask"]
        assert rows["check_readable"].startswith("cannot be read as an image")


# ---------------------------------------------------------------- the real CLI, once

BATCH: dict[str, FuzzFile] = {
    "empty.jpg": FuzzFile(".jpg", b"", "bad"),
    "random_bytes.png": FuzzFile(".png", np.random.default_rng(1).bytes(400), "bad"),
    "truncated.jpg": FuzzFile(".jpg", encode("JPEG", "RGB", (60, 80))[:300], "bad"),
    "truncated.png": TRUNCATED_PNG,
    "huge_header.png": HUGE_PNG,
    "warning_band.png": WARNING_BAND_PNG,
    "sixteen_bit.png": FuzzFile(".png", encode("PNG", "I;16", (30, 40)), "bad"),
    "float.tif": FuzzFile(".tif", encode("TIFF", "F", (30, 40)), "bad"),
    "cmyk.jpg": FuzzFile(".jpg", encode("JPEG", "CMYK", (50, 70)), "good", (50, 70)),
    "palette.bmp": FuzzFile(".bmp", encode("BMP", "P", (33, 47)), "good", (33, 47)),
    "grey_alpha.png": FuzzFile(".png", encode("PNG", "LA", (40, 30)), "good", (40, 30)),
    "one_pixel.png": FuzzFile(".png", encode("PNG", "RGB", (1, 1)), "good", (1, 1)),
    "one_row.png": FuzzFile(".png", encode("PNG", "1", (1, 900)), "good", (1, 900)),
}
"""The fuzzed files of the end-to-end batch, by name (one of each kind the properties above cover)."""


@pytest.mark.slow
def test_folder_inference_cli_writes_every_good_file_and_names_every_bad_one(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = {}
    for src in EXAMPLES[:2]:
        shutil.copy(src, photos / src.name)
        sizes[src.stem] = Image.open(src).size
    for name, case in BATCH.items():
        (photos / name).write_bytes(case.data)
        if case.expect == "good":
            sizes[Path(name).stem] = (case.hw[1], case.hw[0])  # (W, H), as Pillow reports it
    # a phone dermatoscope's JPEG: stored a quarter turn, tagged with EXIF orientation 6, displayed as EXAMPLES[0]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(EXAMPLES[0]).transpose(Image.Transpose.ROTATE_90).save(photos / "turned.jpg", exif=exif, quality=95)
    sizes["turned"] = sizes[EXAMPLES[0].stem]
    bad = sorted(name for name, case in BATCH.items() if case.expect == "bad")
    out = tmp_path / "out"
    proc = bundle("run", "--config_file", "bundle/configs/inference.yaml", "--bundle_root", "bundle",
                  "--dataset_dir", str(photos), "--output_dir", str(out), "--num_workers", "0", "--progress", "false",
                  check=False, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-4000:]
    report = json.loads((tmp_path / "out_report" / "failures.json").read_text())  # written: the batch finished
    assert sorted(Path(f["path"]).name for f in report["failed"]) == bad, log[-4000:]
    assert report["n_failed"] == len(bad) and report["n_written"] == len(sizes)
    for failure in report["failed"]:
        assert failure["problem"] and Path(failure["path"]).name in log
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{stem}_segmentation.png" for stem in sizes)
    for stem, size in sizes.items():
        mask = Image.open(out / f"{stem}_segmentation.png")
        assert mask.size == size, stem
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}, stem
    # the turned photo's mask is in the orientation the user sees: the upright photo's mask, up to JPEG re-encoding
    turned, upright = (np.asarray(Image.open(out / f"{stem}_segmentation.png")) > 0
                       for stem in ("turned", EXAMPLES[0].stem))
    assert upright.any() and (turned & upright).sum() / (turned | upright).sum() > 0.9
