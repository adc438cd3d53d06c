"""isic-monai's MONAI Label app: the ``monaibundle`` sample app's bundle serving, with every upload checked first.

MONAI Label's sample app serves the bundles in ``model/`` (``--conf models NAME[,NAME]``) as they are, and a corrupt
or truncated upload then fails deep inside the transforms: the client gets ``500 Internal Server Error`` and no
reason. This app serves the same bundles (``BundleInferTask``, ``BundleTrainTask``) and checks what arrives before
any work, with the project's own dataset checks (:func:`isic_monai.engines.folder_inference.check_readable`,
:func:`isic_monai.data.validate.check_mask`):

- ``/infer`` (a datastore image or an uploaded file) and ``PUT /datastore/image``: a file that is not a usable
  photo (corrupt, truncated, zero bytes, a header declaring more pixels than Pillow allows, 16-bit or float) gets
  ``422`` with the problem, e.g. ``{"detail": "uploaded image: cannot be read as an image (truncated ...)"}``;
  RGBA, greyscale and palette photos are converted, as in training;
- ``PUT /datastore/label``: a label that does not decode, is not single-channel, or has another size than its image
  gets ``422`` naming the image and the problem; an unknown image gets ``404``; an image of the datastore that does
  not decode (a file copied into the studies folder and picked up by a reload) gets ``422``, not a server error.

It also trusts no path a client sends (MONAI Label 0.8.5 runs ``/infer`` on any file the server can read when
``image`` names one, and joins image ids and label tags into datastore paths unchecked):

- ``/infer`` runs on an upload (a file MONAI Label itself wrote, for this request, into the app's private upload
  folder, or a session's image) or on a datastore image, given by its id; any other ``image`` (a server path, an id
  with a folder, ``..``) gets ``422`` whether or not such a file exists, and an unknown id ``404``. A datastore
  image that does not decode gets ``422`` without the decoder's message (which would name server files); an
  upload's message names the upload, not its temporary path;
- image ids and label tags (``/infer``'s ``label_tag``, ``PUT /datastore/image``, ``PUT /datastore/label``, the
  deletes) must be plain names: no ``/`` or ``\\``, not ``.``/``..``, not starting with ``.`` (the datastore's own
  files), no control characters; otherwise ``422`` before any path is joined. An uploaded image must carry an image
  suffix (``.jpg``, ``.png``, ...).

The server keeps answering good requests after each refusal. Start it as the sample app (docs/monailabel.md)::

    monailabel start_server --app monailabel_app --studies studies --conf models isic_lesion --host 127.0.0.1

with the bundle exported into ``monailabel_app/model/isic_lesion`` (``isic-monai export-bundle``).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import monailabel
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import get_bundle_models, strtobool
from PIL import Image

from isic_monai.data.imageio import IMAGE_EXTENSIONS, is_image_file
from isic_monai.data.records import errors
from isic_monai.data.validate import check_mask
from isic_monai.engines.folder_inference import check_readable

logger = logging.getLogger(__name__)


def refuse_photo(path: str | os.PathLike, name: str, upload: bool = True) -> None:
    """Raise ``422`` when ``path`` is not a usable photo, naming it ``name`` and the problem.

    The full problem goes to the server's log. The client gets it with the file's path replaced by ``name`` for an
    upload (``upload``: the client's own file), and only its kind (``cannot be read as an image`` or ``unsupported
    image mode``) for a file of the server (a datastore image): the decoder's message names server paths.
    """
    if not Path(path).is_file():
        raise HTTPException(status_code=404, detail=f"{name}: no such image")
    problem = check_readable(Path(path))
    if problem is not None:
        logger.warning("refused %s (%s): %s", name, path, problem)
        if upload:
            for text in sorted({str(path), os.path.realpath(path), Path(path).name}, key=len, reverse=True):
                problem = problem.replace(text, "the upload")
        else:
            problem = problem.split(" (", 1)[0]
        raise HTTPException(status_code=422, detail=f"{name}: {problem}")


def check_name(value: Any, what: str) -> str:
    """Return ``value`` when it is a plain file name (an image id, a label id or a label tag); else raise ``422``.

    MONAI Label's datastore joins ids and tags into paths (``<studies>/<id><ext>``, ``<studies>/labels/<tag>/``):
    a name with a folder separator, ``..``, an absolute path, a leading ``.`` (the datastore's own
    ``.datastore_v2.json`` and ``.lock``) or a control character would reach files outside the datastore.
    """
    if not isinstance(value, str) or not value:
        raise HTTPException(status_code=422,
                            detail=f"{what}: missing or not a name (give a datastore image id or upload a file)")
    shown = value if len(value) <= 80 else value[:77] + "..."
    if (value.startswith(".") or any(sep in value for sep in ("/", "\\", os.sep, os.altsep or "/"))
            or any(ord(c) < 32 or ord(c) == 127 for c in value) or len(value) > 200 or os.path.isabs(value)):
        raise HTTPException(status_code=422, detail=f"{what} {shown!r}: not a valid name (a file name without "
                                                    "folders: no '/' or '\\', not '..', not starting with '.')")
    return value


def private_upload_dir() -> Path:
    """A folder only this server's user can read, made this process's temporary folder (``tempfile.tempdir``).

    MONAI Label writes each uploaded file to ``tempfile.NamedTemporaryFile(...).name`` before it calls the app, so
    after this call an upload is a file in this folder: :meth:`IsicApp.infer` accepts a path there (and only there)
    as an upload. The folder is removed when the server exits.
    """
    folder = Path(tempfile.mkdtemp(prefix="isic-monai-uploads-"))  # mode 0700
    tempfile.tempdir = str(folder)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder.resolve()


def inside(path: str | os.PathLike, roots: list[Path]) -> bool:
    """Whether ``path`` (its real path, links followed) lies inside one of ``roots``."""
    real = Path(os.path.realpath(path))
    return any(real != root and real.is_relative_to(root) for root in roots)


class CheckedDatastore(LocalDatastore):
    """MONAI Label's local datastore, refusing images and labels that training or inference could not read, and ids
    or tags that are not plain names (:func:`check_name`), before any path is joined."""

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        derived, ext = self._to_id(os.path.basename(image_filename))
        image_id = check_name(image_id or derived, "image")
        if not is_image_file(f"{image_id}{ext}"):
            raise HTTPException(status_code=422, detail=f"image {image_id}: the upload's name must end in one of "
                                                        f"{', '.join(IMAGE_EXTENSIONS)} (got {ext[:20]!r})")
        refuse_photo(image_filename, f"image {image_id}")
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        check_name(image_id, "image")
        check_name(label_tag, "label tag")
        image = self.get_image_uri(image_id)
        if not image or not os.path.isfile(image):
            raise HTTPException(status_code=404, detail=f"label for {image_id}: no such image in the datastore")
        refuse_photo(image, f"label for {image_id}: its image", upload=False)  # a corrupt file picked up by a reload
        with Image.open(image) as photo:
            hw = (photo.size[1], photo.size[0])
        _, problems = check_mask(label_filename, hw, "label")
        bad = list(errors(problems))
        if bad:
            detail = "; ".join(p.message for p in bad)
            logger.warning("refused the label for %s (%s): %s", image_id, label_filename, detail)
            for text in sorted({str(label_filename), os.path.realpath(label_filename)}, key=len, reverse=True):
                detail = detail.replace(text, "the upload")
            raise HTTPException(status_code=422, detail=f"label for {image_id}: {detail}")
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_image(self, image_id: str) -> None:
        check_name(image_id, "image")
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"image {image_id}: not in the datastore")
        super().remove_image(image_id)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        check_name(label_id, "label")
        check_name(label_tag, "label tag")
        if not self.get_label_uri(label_id, label_tag):
            raise HTTPException(status_code=404, detail=f"label {label_id} (tag {label_tag}): not in the datastore")
        super().remove_label(label_id, label_tag)


class IsicApp(MONAILabelApp):
    """The bundles of ``model/`` served for inference and training, uploads checked (see the module docstring)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.upload_dir = private_upload_dir()
        self.model_dir = os.path.join(app_dir, "model")
        self.models = get_bundle_models(app_dir, conf)
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="isic-monai (MONAI Label)",
                         description="ISIC lesion segmentation bundles, uploads checked",
                         version=monailabel.__version__)

    def init_datastore(self) -> CheckedDatastore:
        return CheckedDatastore(self.studies, extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                                auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def init_infers(self) -> dict[str, InferTask]:
        return {name: BundleInferTask(path, self.conf) for name, path in self.models.items()}

    def init_trainers(self) -> dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        tasks = {name: BundleTrainTask(path, self.conf) for name, path in self.models.items()}
        return {name: t for name, t in tasks.items() if t and t.is_valid()}

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def upload_roots(self) -> list[Path]:
        """The folders whose files are uploads: the private upload folder and, when sessions are on, their store."""
        roots = [self.upload_dir]
        sessions = self.sessions()
        if sessions is not None and getattr(sessions, "store_path", ""):
            roots.append(Path(os.path.realpath(sessions.store_path)))
        return roots

    def infer(self, request: dict[str, Any], datastore: Any = None) -> Any:
        """Check the image first (an upload, or a datastore image given by its id), then run MONAI Label's inference.

        A datastore image reaches MONAI Label as its own path, so that an id that also names a file in the server's
        working folder cannot make MONAI Label (which tries ``os.path.exists(id)`` first) read that file; a requested
        ``save_label`` is done here, as MONAI Label would, through the checked datastore.
        """
        image = request.get("image")
        if request.get("label_tag") is not None:
            check_name(request["label_tag"], "label_tag")
        if isinstance(image, str) and image and inside(image, self.upload_roots()):
            refuse_photo(image, "uploaded image")
            return super().infer(request, datastore)
        image_id = check_name(image, "image")
        store = datastore or self.datastore()
        uri = store.get_image_uri(image_id)
        if not uri:
            raise HTTPException(status_code=404, detail=f"image {image_id}: not in the datastore")
        refuse_photo(uri, f"image {image_id}", upload=False)
        result = super().infer({**request, "image": uri}, store)
        if request.get("save_label") and result.get("file") and os.path.exists(result["file"]):
            tag = request.get("label_tag") or DefaultLabelTag.ORIGINAL.value
            result["label"] = store.save_label(image_id, result["file"], tag,
                                               {"model": request.get("model"), "params": result.get("params")})
        return result
