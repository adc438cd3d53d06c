"""Challenge archives by URL, with checksum, resume and extraction (MONAI ``check_hash`` / ``extractall``).

``DATASETS`` maps a dataset name to its official archives. Checksums are recorded only where known; without one
the archive is size-checked against the server's ``Content-Length`` and its zip directory is read during
extraction. Resume works at two levels:

- inside an archive: bytes go to ``dest/<archive>.part``; an interrupted download continues from where it stopped
  with an HTTP ``Range`` request (a server that ignores ranges sends the whole file, which replaces the part).
  MONAI's ``download_url`` downloads into a temporary folder and restarts from zero after an interruption, which
  for the multi-GB ISIC archives costs hours, so the transfer itself is written here;
- per archive: an archive already in ``dest`` (and passing its checksum) is not downloaded again, and an archive
  extracted before (marker ``dest/.<archive>.extracted``) is not extracted again.

Archives are extracted into an empty staging folder and then merged into ``dest`` (several archives can share one
destination; a half-finished extraction is redone). An existing archive that fails its checksum is deleted and
downloaded again once.

``mirror`` replaces everything before the file name of each URL (for a local or institutional copy).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from isic_monai.data.parallel import progress_bar

__all__ = ["DATASETS", "Archive", "archives_for", "download", "download_archive", "fetch"]

_S3 = "https://isic-challenge-data.s3.amazonaws.com"


@dataclass(frozen=True)
class Archive:
    """One downloadable archive.

    Attributes:
        url: download URL.
        md5: expected MD5 hex digest, or None when unknown.
        filename: local file name (default: last URL path component).
    """

    url: str
    md5: str | None = None
    filename: str | None = None

    @property
    def name(self) -> str:
        """Local file name."""
        return self.filename or os.path.basename(urlparse(self.url).path)


def _isic(year: int, *names: str) -> list[Archive]:
    return [Archive(f"{_S3}/{year}/{n}.zip") for n in names]


DATASETS: dict[str, list[Archive]] = {
    "isic2016": _isic(2016, "ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth",
                      "ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"),
    "isic2017": _isic(2017, "ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth",
                      "ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth",
                      "ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
    "isic2018": _isic(2018, "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth",
                      "ISIC2018_Task2_Training_GroundTruth_v3", "ISIC2018_Task1-2_Validation_Input",
                      "ISIC2018_Task1-2_Test_Input"),
    "isic2018-task1": _isic(2018, "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth",
                            "ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1-2_Test_Input"),
    "isic2018-train": _isic(2018, "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth",
                            "ISIC2018_Task2_Training_GroundTruth_v3"),
}
"""Known dataset names and their archives (HAM10000 and PH2 need a login/licence page: use ``--url``)."""


def archives_for(dataset: str | None = None, url: str | None = None, md5: str | None = None,
                 mirror: str | None = None) -> list[Archive]:
    """The archives to fetch for a dataset name or a custom URL.

    Args:
        dataset: a key of :data:`DATASETS`.
        url: custom archive URL (instead of ``dataset``).
        md5: checksum of the custom archive.
        mirror: base URL replacing everything before each file name.

    Returns:
        The archives.

    Raises:
        ValueError: neither or both of ``dataset``/``url``, or an unknown dataset name.
    """
    if (dataset is None) == (url is None):
        raise ValueError("give exactly one of a dataset name or a URL")
    if url is not None:
        archives = [Archive(url, md5)]
    elif dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    else:
        archives = list(DATASETS[dataset])
    if mirror:
        base = mirror.rstrip("/")
        archives = [Archive(f"{base}/{a.name}", a.md5, a.filename) for a in archives]
    return archives


def _archive_type(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar.gz", ".tgz", ".tar")):
        return "tar"
    return ""


def _merge_conflicts(src: Path, dst: Path) -> list[str]:
    """The paths under ``dst`` where ``src`` has a file and ``dst`` a folder, or the other way round."""
    out = []
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            out += _merge_conflicts(entry, target)
        elif target.exists() and entry.is_dir() != target.is_dir():
            out.append(f"{target} ({'a folder' if target.is_dir() else 'a file'} here, "
                       f"{'a folder' if entry.is_dir() else 'a file'} in the archive)")
    return out


def _merge(src: Path, dst: Path) -> None:
    """Move the contents of ``src`` into ``dst``, merging folders that exist in both; a file replaces a file.

    Raises:
        FileExistsError: an archive file has the name of a folder in ``dst`` or the other way round (each named);
            nothing is moved, and nothing of ``dst`` is deleted.
    """
    conflicts = _merge_conflicts(src, dst) if dst.is_dir() else []
    if conflicts:
        raise FileExistsError(f"{dst}: cannot extract over what is there, a file and a folder of the same name: "
                              + "; ".join(conflicts) + ". Nothing was extracted; move these aside and run again")
    _move_into(src, dst)


def _move_into(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _move_into(entry, target)
        else:
            os.replace(entry, target)


CHUNK = 1 << 20


def fetch(url: str, file: str | os.PathLike, *, md5: str | None = None, progress: bool = True,
          timeout: float = 60.0) -> Path:
    """Download ``url`` to ``file``, resuming a previous partial download (``<file>.part``).

    Args:
        url: the archive URL (http, https or file).
        file: the final path; the file appears only when complete and verified.
        md5: expected checksum (``None``: not checked).
        progress: show a tqdm progress bar.
        timeout: socket timeout in seconds.

    Returns:
        ``file``.

    Raises:
        monai.apps.utils.HashCheckError: the completed file does not match ``md5`` (the partial file is deleted).
        OSError: the download is shorter than the server announced (the partial file is kept for a resume).
            A partial file longer than the server's file (HTTP 416 and ``Content-Range: bytes */SIZE``, or no size
            and a checksum that does not match) is stale: it is deleted and the download starts again.
        urllib.error.URLError: the URL cannot be reached.
    """
    import urllib.error
    import urllib.request

    from monai.apps.utils import HashCheckError, check_hash

    file = Path(file)
    part = file.with_name(file.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - URLs come from the user/registry
    except urllib.error.HTTPError as err:
        if err.code != 416 or not start:
            raise
        # 416: nothing at or after byte `start`. The part is complete only if the file is exactly that long (the
        # server's `Content-Range: bytes */SIZE`, or the checksum); a longer part is stale (the file changed on the
        # server, or bytes were appended): start again from byte 0
        if not _part_is_complete(part, start, err.headers.get("Content-Range"), md5):
            part.unlink()
            return fetch(url, file, md5=md5, progress=progress, timeout=timeout)
        response = None
    if response is not None:
        with response:
            resumed = start > 0 and response.status == 206
            total = response.headers.get("Content-Length")
            expected = (int(total) + (start if resumed else 0)) if total is not None else None
            _stream(response, part, append=resumed, total=expected, initial=start if resumed else 0,
                    progress=progress, desc=file.name)
        size = part.stat().st_size
        if expected is not None and size < expected:
            raise OSError(f"{url}: download stopped at {size} of {expected} bytes; run again to resume")
    if md5 and not check_hash(part, md5, "md5"):
        part.unlink()
        raise HashCheckError(f"{file.name}: md5 does not match {md5}; the download was deleted")
    os.replace(part, file)
    return file


def _part_is_complete(part: Path, size: int, content_range: str | None, md5: str | None) -> bool:
    """Whether a ``.part`` file a server answered 416 for is the whole file: its size is the one the server gives
    (``bytes */SIZE``), or, when the server gives none, its checksum matches (no checksum: not known, so not)."""
    from monai.apps.utils import check_hash

    total = None
    if content_range and content_range.strip().startswith("bytes */"):
        try:
            total = int(content_range.strip().removeprefix("bytes */"))
        except ValueError:
            total = None
    if total is not None:
        return size == total and (not md5 or check_hash(part, md5, "md5"))
    return bool(md5) and check_hash(part, md5, "md5")


def _stream(response, part: Path, *, append: bool, total: int | None, initial: int, progress: bool,
            desc: str) -> None:
    """Copy an HTTP response body into ``part`` in chunks, with an optional progress bar."""
    with part.open("ab" if append else "wb") as out, progress_bar(total, desc, "B", enabled=progress, initial=initial,
                                                                  unit_scale=True) as bar:
        while chunk := response.read(CHUNK):
            out.write(chunk)
            bar.update(len(chunk))


def download_archive(archive: Archive, dest: str | os.PathLike, *, extract: bool = True, progress: bool = True
                     ) -> dict[str, object]:
    """Download (or reuse) one archive into ``dest`` and extract it there.

    Args:
        archive: what to fetch.
        dest: destination folder (created).
        extract: extract zip/tar archives into ``dest``.
        progress: show MONAI's download progress bar.

    Returns:
        ``{"archive": path, "downloaded": bool, "extracted": bool}`` (False = reused from an earlier run).

    Raises:
        monai.apps.utils.HashCheckError: the downloaded file does not match ``md5``.
        FileExistsError: the archive holds a file where ``dest`` has a folder of that name, or the other way round
            (nothing is extracted and nothing of ``dest`` deleted; the message names each).
        urllib.error.URLError: the URL cannot be reached.
    """
    from monai.apps.utils import check_hash, extractall

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    file = dest / archive.name
    marker = dest / f".{archive.name}.extracted"
    downloaded = False
    if file.exists() and not check_hash(file, archive.md5, "md5"):
        file.unlink()
        marker.unlink(missing_ok=True)
    if not file.exists():
        fetch(archive.url, file, md5=archive.md5, progress=progress)
        downloaded = True
        marker.unlink(missing_ok=True)
    extracted = False
    kind = _archive_type(archive.name)
    if extract and kind and not marker.exists():
        staging = dest / f".extracting-{archive.name}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            extractall(file, staging, hash_val=None, file_type=kind, has_base=False)
            _merge(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        marker.write_text(archive.url + "\n")
        extracted = True
    return {"archive": str(file), "downloaded": downloaded, "extracted": extracted}


def download(dest: str | os.PathLike, dataset: str | None = None, *, url: str | None = None, md5: str | None = None,
             mirror: str | None = None, extract: bool = True, progress: bool = True) -> list[dict[str, object]]:
    """Download and extract a known dataset (or one custom archive) into ``dest``.

    Args:
        dest: destination folder; after extraction it is a dataset root for ``isic-monai datalist``.
        dataset: a key of :data:`DATASETS`.
        url: custom archive URL instead of ``dataset``.
        md5: checksum of the custom archive.
        mirror: base URL replacing the official host and path.
        extract: extract the archives.
        progress: show progress bars.

    Returns:
        One result per archive (see :func:`download_archive`).
    """
    return [download_archive(a, dest, extract=extract, progress=progress)
            for a in archives_for(dataset, url, md5, mirror)]
