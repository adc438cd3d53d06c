"""Downloads against an HTTP server on 127.0.0.1 started by the test (no test touches the internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isic_monai.cli import main
from isic_monai.data import DATASETS, build_datalist, detect_layout, download
from isic_monai.data.download import archives_for


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files; honours ``Range: bytes=N-`` when ``ranges`` is on (http.server itself ignores ranges)."""

    requests: list[str] = []
    ranges_seen: list[str] = []
    ranges = True
    content_range = True

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        type(self).requests.append(self.path)
        wanted = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if wanted and type(self).ranges and path.is_file():
            type(self).ranges_seen.append(wanted)
            data = path.read_bytes()
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                if type(self).content_range:  # RFC 9110: the size of the file, with the 416
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    _Handler.requests = []
    _Handler.ranges_seen = []
    _Handler.ranges = True
    _Handler.content_range = True
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def _zip(path: Path, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return hashlib.md5(path.read_bytes()).hexdigest()


def _png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _isic2018_files(ids: list[str]) -> dict[str, dict[str, bytes]]:
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:20] = 255
    return {
        "ISIC2018_Task1-2_Training_Input": {f"ISIC2018_Task1-2_Training_Input/{i}.jpg": _png(rgb, "JPEG")
                                            for i in ids},
        "ISIC2018_Task1_Training_GroundTruth": {
            f"ISIC2018_Task1_Training_GroundTruth/{i}_segmentation.png": _png(mask) for i in ids},
        "ISIC2018_Task2_Training_GroundTruth_v3": {
            f"ISIC2018_Task2_Training_GroundTruth_v3/{i}_attribute_{n}.png": _png(mask) for i in ids
            for n in ("pigment_network", "negative_network", "streaks", "milia_like_cyst", "globules")},
    }


def test_custom_url_checksum_resume(server: tuple[str, Path], tmp_path: Path) -> None:
    base, served = server
    files = _isic2018_files(["ISIC_0000000", "ISIC_0000001"])
    md5 = _zip(served / "isic.zip", {k: v for group in files.values() for k, v in group.items()})
    dest = tmp_path / "dest"
    first = download(dest, url=f"{base}/isic.zip", md5=md5, progress=False)
    assert first == [{"archive": str(dest / "isic.zip"), "downloaded": True, "extracted": True}]
    assert detect_layout(dest) == "isic2018"
    assert len(build_datalist(dest, split="ratio", ratios=(1, 0))["training"]) == 2
    again = download(dest, url=f"{base}/isic.zip", md5=md5, progress=False)
    assert again[0]["downloaded"] is False and again[0]["extracted"] is False
    assert _Handler.requests == ["/isic.zip"]  # the second call did not hit the server
    (dest / "isic.zip").write_bytes(b"damaged")  # a damaged archive is fetched again
    assert download(dest, url=f"{base}/isic.zip", md5=md5, progress=False)[0]["downloaded"] is True


def test_wrong_checksum_and_missing_file(server: tuple[str, Path], tmp_path: Path) -> None:
    from monai.apps.utils import HashCheckError

    base, served = server
    _zip(served / "a.zip", {"images/x.txt": b"x"})
    with pytest.raises(HashCheckError):
        download(tmp_path / "d", url=f"{base}/a.zip", md5="0" * 32, progress=False)
    assert not (tmp_path / "d" / "a.zip").exists()
    assert main(["download", "--url", f"{base}/missing.zip", "--dest", str(tmp_path / "e"), "-q"]) == 1


def test_registry_through_a_mirror(server: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base, served = server
    for archive, files in _isic2018_files(["ISIC_0000003", "ISIC_0000004", "ISIC_0000005"]).items():
        _zip(served / f"{archive}.zip", files)
    names = [a.name for a in archives_for("isic2018-train", mirror=base)]
    assert names == [f"{k}.zip" for k in _isic2018_files(["x"])]
    dest = tmp_path / "isic2018"
    assert main(["download", "--dataset", "isic2018-train", "--mirror", base, "--dest", str(dest), "-q"]) == 0
    assert "extracted" in capsys.readouterr().out
    dl = build_datalist(dest)
    assert len(dl["training"]) + len(dl["validation"]) == 3 and dl["metadata"]["problems"] == []
    assert all(a.url.startswith("https://isic-challenge-data.s3.amazonaws.com/") for a in DATASETS["isic2017"])
    assert main(["download", "--list"]) == 0
    with pytest.raises(ValueError):
        archives_for("isic2099")


@pytest.mark.parametrize("server_ranges", [True, False])
def test_interrupted_download_resumes(server: tuple[str, Path], tmp_path: Path, server_ranges: bool) -> None:
    """A partial ``.part`` file continues with a Range request; a server without ranges resends the whole file."""
    base, served = server
    _Handler.ranges = server_ranges
    files = _isic2018_files(["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"])
    md5 = _zip(served / "big.zip", {k: v for group in files.values() for k, v in group.items()})
    full = (served / "big.zip").read_bytes()
    dest = tmp_path / "dest"
    dest.mkdir()
    half = len(full) // 2
    (dest / "big.zip.part").write_bytes(full[:half])  # what an interrupted transfer left behind
    result = download(dest, url=f"{base}/big.zip", md5=md5, progress=False)
    assert result[0]["downloaded"] is True
    assert (dest / "big.zip").read_bytes() == full
    assert not (dest / "big.zip.part").exists()
    assert _Handler.ranges_seen == ([f"bytes={half}-"] if server_ranges else [])
    assert len(build_datalist(dest, split="ratio", ratios=(1, 0))["training"]) == 3


def test_corrupt_partial_download_fails_checksum_and_is_dropped(server: tuple[str, Path], tmp_path: Path) -> None:
    from monai.apps.utils import HashCheckError

    base, served = server
    md5 = _zip(served / "c.zip", {"images/x.txt": b"x" * 5000})
    full = (served / "c.zip").read_bytes()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "c.zip.part").write_bytes(b"\0" * (len(full) // 2))  # wrong bytes before the resume point
    with pytest.raises(HashCheckError, match="c.zip"):
        download(dest, url=f"{base}/c.zip", md5=md5, progress=False)
    assert not (dest / "c.zip.part").exists() and not (dest / "c.zip").exists()
    assert download(dest, url=f"{base}/c.zip", md5=md5, progress=False)[0]["downloaded"] is True  # clean retry


@pytest.mark.parametrize(("content_range", "md5"), [(True, False), (True, True), (False, True)])
def test_oversized_stale_part_is_downloaded_again(server: tuple[str, Path], tmp_path: Path, content_range: bool,
                                                  md5: bool) -> None:
    """A ``.part`` longer than the server's file gets HTTP 416: it is stale, never renamed into place; the file is
    fetched again from byte 0 (the server's size, or else the checksum, tells)."""
    base, served = server
    _Handler.content_range = content_range
    checksum = _zip(served / "s.zip", {"images/x.txt": b"x" * 5000})
    full = (served / "s.zip").read_bytes()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "s.zip.part").write_bytes(full + b"stale tail of an older, longer file")
    download(dest, url=f"{base}/s.zip", md5=checksum if md5 else None, extract=False, progress=False)
    assert (dest / "s.zip").read_bytes() == full and not (dest / "s.zip.part").exists()
    assert _Handler.requests == ["/s.zip", "/s.zip"] and _Handler.ranges_seen == [f"bytes={len(full) + 35}-"]


def test_complete_part_with_416_is_kept(server: tuple[str, Path], tmp_path: Path) -> None:
    """A ``.part`` exactly as long as the server's file (a transfer killed before its rename) is complete: HTTP 416
    with ``bytes */SIZE`` finishes it without fetching it again."""
    base, served = server
    _zip(served / "k.zip", {"images/x.txt": b"x" * 5000})
    full = (served / "k.zip").read_bytes()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "k.zip.part").write_bytes(full)
    download(dest, url=f"{base}/k.zip", extract=False, progress=False)
    assert (dest / "k.zip").read_bytes() == full and _Handler.requests == ["/k.zip"]


def test_extracting_never_deletes_a_folder_named_like_an_archive_file(server: tuple[str, Path],
                                                                       tmp_path: Path) -> None:
    """An archive file with the name of an existing folder (or the other way round) stops the extraction, naming
    it; the folder and its contents are kept, and nothing of the archive is moved in."""
    base, served = server
    checksum = _zip(served / "m.zip", {"data": b"a file named data", "other/new.txt": b"new"})
    dest = tmp_path / "dest"
    (dest / "data").mkdir(parents=True)
    (dest / "data" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"dest/data \(a folder here, a file in the archive\)"):
        download(dest, url=f"{base}/m.zip", md5=checksum, progress=False)
    assert (dest / "data" / "keep.txt").read_text() == "mine"
    assert not (dest / "other").exists() and not list(dest.glob(".extracting-*"))
