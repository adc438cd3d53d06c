"""The exported bundle served by a real MONAI Label 0.8.5 server (its ``monaibundle`` sample app) on 127.0.0.1.

Runs only with ``--monailabel-venv DIR`` (``make monailabel-test`` builds that virtual environment: MONAI Label needs
numpy<2, so it cannot share the project's). The test exports the default bundle (the shipped model when present),
starts ``monailabel start_server`` with a studies folder of ISIC photos (real ISIC 2017 validation photos from
``../shared/data`` when present, else synthetic ones), calls ``/infer`` on every photo and finds each returned mask
equal, pixel for pixel, to the one the bundle's CLI folder inference writes for the same photo (with the same
confidence and flag), runs ``/train`` for two epochs, and stops the server. Timings are written to
``runs/monailabel/timings.json``. The second test serves ``monailabel_app`` and sends it hostile uploads and paths.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, SHARED_DATA, run_command
from PIL import Image

MODEL = "isic_lesion"
MODEL_TASK2 = "isic_attributes"
N_STUDIES = 6


@pytest.fixture(scope="module")
def venv(request: pytest.FixtureRequest) -> Path:
    value = request.config.getoption("--monailabel-venv")
    if not value:
        pytest.skip("MONAI Label test: run `make monailabel-test` (needs --monailabel-venv)")
    path = Path(value).resolve()
    if not (path / "bin" / "monailabel").is_file():
        pytest.fail(f"{path}: no MONAI Label virtual environment (make monailabel-test builds it)")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _studies(dest: Path) -> list[tuple[str, Path]]:
    """Photos (JPG) with their masks as MONAI Label's final labels; returns ``(id, truth mask)`` pairs."""
    dest.mkdir(parents=True)
    (dest / "labels" / "final").mkdir(parents=True)
    real = SHARED_DATA / "isic2017_256x192" / "val"
    if real.is_dir():
        photos = sorted((real / "images").glob("*.jpg"))[:N_STUDIES]
        pairs = [(p, real / "masks" / f"{p.stem}_segmentation.png") for p in photos]
    else:
        from isic_monai.data.synth import generate

        generate(dest.parent / "synth", layout="isic2018", n=N_STUDIES, seed=4, size_range=((150, 200), (200, 260)))
        photos = sorted((dest.parent / "synth" / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))
        gt = dest.parent / "synth" / "ISIC2018_Task1_Training_GroundTruth"
        pairs = [(p, gt / f"{p.stem}_segmentation.png") for p in photos]
    out = []
    for photo, mask in pairs:
        shutil.copyfile(photo, dest / photo.name)
        shutil.copyfile(mask, dest / "labels" / "final" / f"{photo.stem}.png")
        out.append((photo.stem, mask))
    return out


def _request(url: str, method: str = "GET", body: dict | None = None, timeout: float = 120) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def _wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the MONAI Label server stopped ({server.returncode}):\n{log.read_text()[-4000:]}")
        try:
            return json.loads(_request(url, timeout=5))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    pytest.fail(f"the MONAI Label server did not answer {url} in {timeout} s:\n{log.read_text()[-4000:]}")


def _cli_predictions(bundle_dir: Path, photos: Path, out: Path) -> tuple[dict[str, np.ndarray],
                                                                           dict[str, dict[str, str]]]:
    """The bundle CLI's folder inference of ``photos`` inside ``bundle_dir`` (the bundle MONAI Label serves):
    ``({id: mask (H, W), 0/255}, {id: predictions.csv row})``."""
    import csv

    proc = run_command([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml",
                        "--dataset_dir", str(photos), "--output_dir", str(out), "--num_workers", "0",
                        "--save_overlays", "false"], cwd=bundle_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    masks = {p.name[: -len("_segmentation.png")]: np.asarray(Image.open(p)) for p in out.glob("*_segmentation.png")}
    with (out.parent / f"{out.name}_report" / "predictions.csv").open(newline="") as f:
        rows = {row["id"]: row for row in csv.DictReader(f)}
    return masks, rows


@pytest.mark.slow
def test_monailabel_serves_and_trains_the_bundle(venv: Path, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    app = tmp_path / "apps" / "monaibundle"
    shutil.copytree(venv / "monailabel" / "sample-apps" / "monaibundle", app)
    started = time.monotonic()
    export = subprocess.run([str(Path(sys.executable).with_name("isic-monai")), "export-bundle",
                             str(app / "model" / MODEL)], capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    timings["export_s"] = time.monotonic() - started
    export2 = subprocess.run([str(Path(sys.executable).with_name("isic-monai")), "export-bundle",
                              str(app / "model" / MODEL_TASK2), "--task", "task2", "--no-torchscript"],
                             capture_output=True, text=True, timeout=600)  # an untrained template: served, not scored
    assert export2.returncode == 0, export2.stderr[-3000:]
    studies = tmp_path / "studies"
    pairs = _studies(studies)
    started = time.monotonic()
    cli_masks, cli_rows = _cli_predictions(app / "model" / MODEL, studies, tmp_path / "cli")
    timings["cli_inference_s"] = time.monotonic() - started

    port = _free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "BUNDLE_DOWNLOAD_SRC": "github",
           "OMP_NUM_THREADS": "2", "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false"}
    cmd = [str(venv / "bin" / "monailabel"), "start_server", "--app", str(app), "--studies", str(studies),
           "--conf", "models", f"{MODEL},{MODEL_TASK2}", "--conf", "zoo_source", "github", "--conf", "sam2", "false",
           "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log.open("w") as log_file:
        server = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                  start_new_session=True)
    try:
        info = _wait_for(f"{base}/info/", server, log, timeout=180)
        timings["start_server_s"] = time.monotonic() - started
        model_info = info["models"][MODEL]
        seen = {k: model_info.get(k) for k in ("type", "dimension", "labels", "description")}
        assert model_info["dimension"] == 2
        assert model_info["labels"] == {"lesion": 1}

        image_id, truth_path = pairs[0]
        started = time.monotonic()
        mask_bytes = _request(f"{base}/infer/{MODEL}?image={image_id}&output=image", method="POST", body={})
        timings["first_infer_s"] = time.monotonic() - started
        served = {image_id: mask_bytes}
        started = time.monotonic()
        for other_id, _ in pairs[1:]:
            served[other_id] = _request(f"{base}/infer/{MODEL}?image={other_id}&output=image", method="POST", body={})
        timings["infer_s_per_image_after_first"] = (time.monotonic() - started) / (len(pairs) - 1)
        # MONAI Label serves what the CLI predicts: every photo's label map (1 lesion) is the CLI's mask (255 lesion)
        for study, data in served.items():
            label = np.asarray(Image.open(io.BytesIO(data)))
            assert set(np.unique(label)) <= {0, 1}, (study, np.unique(label))
            assert label.shape == cli_masks[study].shape, (study, label.shape, cli_masks[study].shape)
            differ = int(((label == 1) != (cli_masks[study] == 255)).sum())
            assert differ == 0, f"{study}: the served mask differs from the CLI's in {differ} pixels"
            params = json.loads(_request(f"{base}/infer/{MODEL}?image={study}&output=json", method="POST", body={}))
            row = cli_rows[study]
            assert params["confidence"] == pytest.approx(float(row["confidence"]), abs=1e-6), (study, params, row)
            assert str(params["flagged"]).lower() == row["flagged"], (study, params, row)
        timings["served_masks_equal_to_cli"] = len(served)
        result = tmp_path / "result.png"
        result.write_bytes(mask_bytes)
        photo = Image.open(studies / f"{image_id}.jpg")
        mask = Image.open(result)
        assert mask.size == photo.size, "the mask must have the photo's size and orientation"
        pred = np.asarray(mask) > 0
        truth = np.asarray(Image.open(truth_path).convert("L")) > 127
        dice = 2 * (pred & truth).sum() / max(1, pred.sum() + truth.sum())
        timings["infer_dice"] = float(dice)
        assert dice > 0.6, f"the lesion is not where the lesion is (Dice {dice:.3f})"
        # the infer response's parameters carry the prediction's confidence and flag (isic_monai.metrics.confidence)
        params = json.loads(_request(f"{base}/infer/{MODEL}?image={image_id}&output=json", method="POST", body={}))
        assert 0.0 < params["confidence"] <= 1.0 and isinstance(params["flagged"], bool), params
        assert params["lesion_fraction"] == pytest.approx(pred.mean(), abs=1e-3), params
        timings["infer_confidence"] = params["confidence"]

        # Task 2: one label map, 0 background and 1..5 the attributes (channel_def), at the photo's size
        assert info["models"][MODEL_TASK2]["labels"] == {"pigment_network": 1, "negative_network": 2, "streaks": 3,
                                                         "milia_like_cyst": 4, "globules": 5}
        attributes = tmp_path / "attributes.png"
        attributes.write_bytes(_request(f"{base}/infer/{MODEL_TASK2}?image={image_id}&output=image", method="POST",
                                        body={}))
        values = np.asarray(Image.open(attributes))
        assert Image.open(attributes).size == photo.size and values.ndim == 2 and values.max() <= 5

        model_pt = app / "model" / MODEL / "models" / "model.pt"
        before = model_pt.stat().st_mtime
        started = time.monotonic()
        _request(f"{base}/train/{MODEL}", method="POST", body={"max_epochs": 2, "val_split": 0.34})
        deadline = time.monotonic() + 300
        status: dict = {}
        while time.monotonic() < deadline:
            status = json.loads(_request(f"{base}/train/?all=false"))
            if status.get("status") in ("DONE", "ERROR"):
                break
            time.sleep(2)
        timings["train_2_epochs_s"] = time.monotonic() - started
        assert status.get("status") == "DONE", f"training did not finish: {status}\n{log.read_text()[-4000:]}"
        assert model_pt.stat().st_mtime > before, "training wrote no model"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.poll() is not None
    record = REPO_ROOT / "runs" / "monailabel"
    record.mkdir(parents=True, exist_ok=True)
    (record / "timings.json").write_text(json.dumps({"studies": "real" if SHARED_DATA.is_dir() else "synthetic",
                                                     **{k: round(v, 3) for k, v in timings.items()},
                                                     "info": seen, "train_status": status.get("status")}, indent=2))


# ------------------------------------------------------------------ the checked app: hostile uploads, load, restart

APP = REPO_ROOT / "monailabel_app"
N_LOAD, LOAD_CONCURRENCY = 200, 4


def _start(venv: Path, app: Path, studies: Path, log: Path, cwd: Path) -> tuple[subprocess.Popen, str]:
    """``monailabel start_server`` of ``app`` on a free 127.0.0.1 port, serving ``MODEL``; waits for ``/info/``."""
    port = _free_port()
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "BUNDLE_DOWNLOAD_SRC": "github",
           "OMP_NUM_THREADS": "2", "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false"}
    cmd = [str(venv / "bin" / "monailabel"), "start_server", "--app", str(app), "--studies", str(studies),
           "--conf", "models", MODEL, "--conf", "zoo_source", "github", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("a") as log_file:
        server = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    _wait_for(f"{base}/info/", server, log, timeout=180)
    return server, base


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _rss_mb(group: int) -> float:
    """The resident memory of every process in the server's process group, in MB (Linux ``/proc``)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp
            total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # rss, in pages
    return total / 2**20


def _send(url: str, files: dict[str, tuple[str, bytes]], method: str = "POST", timeout: float = 120,
          fields: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A multipart/form-data request (``files`` and plain ``fields``); returns ``(status, body)``, HTTP errors
    included."""
    import uuid

    boundary = uuid.uuid4().hex
    body = b""
    for field, value in (fields or {}).items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n{value}\r\n').encode()
    for field, (filename, data) in files.items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _hostile_photos(photo: Path) -> dict[str, tuple[str, bytes, int, str]]:
    """``name: (file name, bytes, expected status, text the error must hold)``."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    huge = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 256)) + chunk(b"IEND", b""))
    good = photo.read_bytes()
    sixteen = io.BytesIO()
    Image.fromarray(np.full((40, 50), 40000, dtype=np.uint16)).save(sixteen, "PNG")
    rgba = _png(Image.open(photo).convert("RGBA"))
    grey = _png(Image.open(photo).convert("L"))
    return {"corrupt": ("corrupt.jpg", bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)), 422,
                        "cannot be read as an image"),
            "truncated": ("truncated.jpg", good[: len(good) // 3], 422, "cannot be read as an image"),
            "zero_bytes": ("empty.jpg", b"", 422, "cannot be read as an image"),
            "huge_header": ("huge.png", huge, 422, "cannot be read as an image"),
            "16_bit": ("deep.png", sixteen.getvalue(), 422, "unsupported image mode"),
            "rgba": ("rgba.png", rgba, 200, ""),
            "greyscale": ("grey.png", grey, 200, "")}


@pytest.mark.slow
def test_checked_app_refuses_bad_uploads_survives_load_and_keeps_labels(venv: Path, tmp_path: Path) -> None:
    """monailabel_app on 127.0.0.1: each bad photo or label upload, server path, id or tag that is not a plain name,
    and corrupt datastore image gets an HTTP 4xx that says what is wrong and the server keeps answering (nothing is
    read or written outside the datastore: :func:`_hostile_paths`); 200 infer requests, 4 at a time (latency and
    memory recorded); a label saved through the datastore is still there after a restart."""
    from concurrent.futures import ThreadPoolExecutor

    app = tmp_path / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__", "model"))
    export = subprocess.run([str(Path(sys.executable).with_name("isic-monai")), "export-bundle",
                             str(app / "model" / MODEL), "--no-torchscript"], capture_output=True, text=True,
                            timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    studies = tmp_path / "studies"
    pairs = _studies(studies)
    (studies / f"{BROKEN}.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 8)  # picked up by the reload
    image_id, truth_path = pairs[0]
    photo = studies / f"{image_id}.jpg"
    log = tmp_path / "server.log"
    figures: dict[str, object] = {"studies": "real" if SHARED_DATA.is_dir() else "synthetic"}
    server, base = _start(venv, app, studies, log, tmp_path)
    try:
        infer = f"{base}/infer/{MODEL}?output=image"
        for name, (filename, data, expected, text) in _hostile_photos(photo).items():
            status, body = _send(infer, {"file": (filename, data)})
            assert status == expected, f"{name}: {status} {body[:300]!r}"
            if expected != 200:
                assert text in json.loads(body)["detail"], f"{name}: {body[:300]!r}"
            else:
                assert Image.open(io.BytesIO(body)).size == Image.open(photo).size, name
            status, body = _send(f"{base}/datastore/image?image=up_{name}", {"file": (filename, data)}, method="PUT")
            assert status == expected, f"datastore {name}: {status} {body[:300]!r}"
            good, _ = _send(infer, {"file": ("good.jpg", photo.read_bytes())})
            assert good == 200, f"the server stopped answering good requests after {name}"
        status, body = _request_status(f"{base}/infer/{MODEL}?image=no_such_image&output=image")
        assert status == 404 and "no_such_image" in json.loads(body)["detail"]
        _hostile_paths(base, image_id, photo, tmp_path)

        truth = Image.open(truth_path).convert("L")
        bad_labels = {"corrupt": (b"\x89PNG\r\n\x1a\nnot really", 422, "cannot read label"),
                      "wrong_size": (_png(truth.resize((10, 10))), 422, "but its image is"),
                      "zero_bytes": (b"", 422, "cannot read label")}
        for name, (data, expected, text) in bad_labels.items():
            status, body = _send(f"{base}/datastore/label?image={image_id}&tag=final", {"label": ("l.png", data)},
                                 method="PUT")
            assert status == expected and text in json.loads(body)["detail"], f"label {name}: {status} {body[:300]!r}"
        status, body = _send(f"{base}/datastore/label?image=no_such_image&tag=final",
                             {"label": ("l.png", _png(truth))}, method="PUT")
        assert status == 404, body[:300]

        before = _rss_mb(server.pid)
        ids = [pairs[i % len(pairs)][0] for i in range(N_LOAD)]

        def one(study: str) -> tuple[int, float]:
            started = time.monotonic()
            status, _ = _request_status(f"{base}/infer/{MODEL}?image={study}&output=image", timeout=300)
            return status, time.monotonic() - started

        started = time.monotonic()
        with ThreadPoolExecutor(LOAD_CONCURRENCY) as pool:
            results = list(pool.map(one, ids))
        wall = time.monotonic() - started
        after = _rss_mb(server.pid)
        assert [s for s, _ in results] == [200] * N_LOAD
        latency = np.asarray([t for _, t in results])
        figures["load"] = {"requests": N_LOAD, "concurrency": LOAD_CONCURRENCY, "wall_s": round(wall, 1),
                           "p50_s": round(float(np.percentile(latency, 50)), 3),
                           "p95_s": round(float(np.percentile(latency, 95)), 3),
                           "max_s": round(float(latency.max()), 3), "requests_per_s": round(N_LOAD / wall, 2),
                           "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1)}
        assert after < 1.5 * before, figures["load"]  # no memory that grows with the requests served

        label = _png(Image.fromarray(np.asarray(truth)[:, ::-1].copy()))  # an annotator's edit: mirrored
        status, body = _send(f"{base}/datastore/label?image={image_id}&tag=final", {"label": ("edit.png", label)},
                             method="PUT")
        assert status == 200, body[:300]
    finally:
        _stop(server)
    server, base = _start(venv, app, studies, log, tmp_path)  # a restart: the saved label is still there
    try:
        status, body = _request_status(f"{base}/datastore/label?label={image_id}&tag=final", method="GET")
        assert status == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(body))),
                                                np.asarray(Image.open(io.BytesIO(label)))), status
    finally:
        _stop(server)
    record = REPO_ROOT / "runs" / "monailabel"
    record.mkdir(parents=True, exist_ok=True)
    (record / "load.json").write_text(json.dumps(figures, indent=2))


BROKEN = "broken_study"
"""A corrupt JPEG written into the studies folder before the server starts: in the datastore by its reload."""


def _detail(status: int, body: bytes, expected: int, text: str, what: str) -> str:
    """The error's ``detail`` after checking the status and that it holds ``text``."""
    assert status == expected, f"{what}: {status} {body[:300]!r}"
    detail = json.loads(body)["detail"]
    assert text in detail, f"{what}: {detail!r}"
    return detail


def _hostile_paths(base: str, image_id: str, photo: Path, tmp_path: Path) -> None:
    """Server paths, ``..`` and other non-names as image ids and label tags, and a corrupt datastore image: each gets
    a 4xx with a reason, nothing is read or written outside the datastore, and the server keeps answering."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(photo, outside / "secret.jpg")  # a good photo the server can read, not in the datastore
    (outside / "secret_corrupt.jpg").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    infer = f"{base}/infer/{MODEL}?output=image"
    answers = {}
    for name, image in {"existing photo": outside / "secret.jpg", "existing corrupt": outside / "secret_corrupt.jpg",
                        "missing": outside / "nothing_here.jpg", "relative": Path("..") / "outside" / "secret"}.items():
        status, body = _request_status(f"{infer}&image={urllib.parse.quote(str(image))}")
        detail = _detail(status, body, 422, "not a valid name", f"/infer image={name}")
        assert "PNG" not in detail and "identify" not in detail, detail  # nothing of the decoder's message
        answers[name] = (status, detail.rsplit(": ", 1)[-1])  # the reason, after the (client's own) value
    assert len(set(answers.values())) == 1, f"an existing server path must answer as a missing one: {answers}"
    status, body = _send(infer, {"file": ("good.jpg", photo.read_bytes())},
                         fields={"params": json.dumps({"image": str(outside / "secret.jpg")})})
    _detail(status, body, 422, "not a valid name", "/infer with params image=<server path>")
    status, body = _request_status(f"{infer}&image={BROKEN}")
    detail = _detail(status, body, 422, "cannot be read as an image", "/infer of a corrupt datastore image")
    assert detail == f"image {BROKEN}: cannot be read as an image", detail  # nothing of the decoder's message
    status, body = _send(f"{base}/datastore/label?image={BROKEN}&tag=final",
                         {"label": ("l.png", _png(Image.new("L", (8, 8))))}, method="PUT")
    _detail(status, body, 422, "cannot be read as an image", "a label for a corrupt datastore image")

    escape = tmp_path / "escaped"
    label = _png(Image.new("L", Image.open(photo).size))
    for tag in ("../../escaped", str(escape), "final/../../../escaped", ".", ".."):
        status, body = _send(f"{base}/datastore/label?image={image_id}&tag={urllib.parse.quote(tag)}",
                             {"label": ("l.png", label)}, method="PUT")
        _detail(status, body, 422, "not a valid name", f"label tag {tag!r}")
        status, body = _send(f"{base}/infer/{MODEL}?image={image_id}&output=json", {}, fields={
            "params": json.dumps({"save_label": True, "label_tag": tag})})
        _detail(status, body, 422, "not a valid name", f"/infer label_tag {tag!r}")
    for image in ("../escaped", "..", ".datastore_v2", "sub/dir", "..\\escaped"):
        status, body = _send(f"{base}/datastore/image?image={urllib.parse.quote(image)}",
                             {"file": ("x.jpg", photo.read_bytes())}, method="PUT")
        _detail(status, body, 422, "not a valid name", f"PUT image id {image!r}")
        status, body = _request_status(f"{base}/datastore/image?id={urllib.parse.quote(image)}", method="DELETE")
        _detail(status, body, 422, "not a valid name", f"DELETE image id {image!r}")
    status, body = _send(f"{base}/datastore/image?image=json_in_disguise", {"file": ("x.json", photo.read_bytes())},
                         method="PUT")
    _detail(status, body, 422, "must end in one of", "an image upload named .json")
    status, body = _request_status(f"{base}/datastore/image?id=no_such_image", method="DELETE")
    _detail(status, body, 404, "not in the datastore", "DELETE an unknown image")
    assert not any(p.name.startswith("escaped") for p in tmp_path.rglob("*")), "a file was written outside"
    status, _ = _request_status(f"{infer}&image={image_id}")
    assert status == 200, "the server stopped answering good requests after the hostile paths"


def _request_status(url: str, method: str = "POST", timeout: float = 120) -> tuple[int, bytes]:
    """A request without a body; ``(status, body)``, HTTP errors included."""
    data, headers = (b"{}", {"Content-Type": "application/json"}) if method == "POST" else (None, {})
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
