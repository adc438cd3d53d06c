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
  gets ``422`` naming the image and the problem; an unknown image gets ``404``.

The server keeps answering good requests after each refusal. Start it as the sample app (docs/monailabel.md)::

    monailabel start_server --app monailabel_app --studies studies --conf models isic_lesion --host 127.0.0.1

with the bundle exported into ``monailabel_app/model/isic_lesion`` (``isic-monai export-bundle``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import monailabel
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import get_bundle_models, strtobool
from PIL import Image

from isic_monai.data.records import errors
from isic_monai.data.validate import check_mask
from isic_monai.engines.folder_inference import check_readable

logger = logging.getLogger(__name__)


def refuse_photo(path: str | os.PathLike, name: str) -> None:
    """Raise ``422`` when ``path`` is not a usable photo, naming it ``name`` and the problem."""
    if not Path(path).is_file():
        raise HTTPException(status_code=404, detail=f"{name}: no such image")
    problem = check_readable(Path(path))
    if problem is not None:
        logger.warning("refused %s: %s", name, problem)
        raise HTTPException(status_code=422, detail=f"{name}: {problem}")


class CheckedDatastore(LocalDatastore):
    """MONAI Label's local datastore, refusing images and labels that training or inference could not read."""

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        refuse_photo(image_filename, f"image {image_id}")
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        image = self.get_image_uri(image_id)
        if not image or not os.path.isfile(image):
            raise HTTPException(status_code=404, detail=f"label for {image_id}: no such image in the datastore")
        with Image.open(image) as photo:
            hw = (photo.size[1], photo.size[0])
        _, problems = check_mask(label_filename, hw, "label")
        bad = list(errors(problems))
        if bad:
            detail = f"label for {image_id}: " + "; ".join(p.message for p in bad)
            logger.warning("refused %s", detail)
            raise HTTPException(status_code=422, detail=detail)
        return super().save_label(image_id, label_filename, label_tag, label_info)


class IsicApp(MONAILabelApp):
    """The bundles of ``model/`` served for inference and training, uploads checked (see the module docstring)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
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

    def infer(self, request: dict[str, Any], datastore: Any = None) -> Any:
        """Check the image first (an upload, or a datastore image), then run MONAI Label's inference."""
        image = request.get("image")
        if isinstance(image, str) and image:
            if os.path.exists(image):
                refuse_photo(image, "uploaded image")
            else:
                uri = (datastore or self.datastore()).get_image_uri(image)
                if not uri:
                    raise HTTPException(status_code=404, detail=f"image {image}: not in the datastore")
                refuse_photo(uri, f"image {image}")
        return super().infer(request, datastore)
