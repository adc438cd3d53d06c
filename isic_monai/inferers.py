"""Mixed precision on the device at hand.

MONAI's engines (``SupervisedTrainer(amp=True)``, ``SupervisedEvaluator(amp=True)``) wrap the forward pass in
``torch.autocast("cuda")`` with a ``GradScaler``: on a CPU they run in float32. bfloat16 autocast on a CPU made a
training step of the bundle's network 1.4-1.75× faster on the project's machine, and bfloat16 needs no loss scaling,
so :class:`AutocastInferer` wraps any MONAI inferer in ``torch.autocast`` for the device the tensors are on and hands
back float32 predictions (the loss, metrics and post-processing stay in float32). The bundle uses it for training on
a CPU; on CUDA it keeps MONAI's own AMP, with the dtype chosen by :func:`autocast_dtype`.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["AMP_DTYPES", "AutocastInferer", "autocast_dtype"]

AMP_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16}
"""The reduced-precision types a config may name (``amp_dtype``)."""


def autocast_dtype(name: str | None, device: str | torch.device) -> torch.dtype:
    """The autocast dtype for a config's ``amp_dtype``: ``"auto"`` (or ``None``) is bfloat16 on a CPU and float16 on
    CUDA; ``"bfloat16"`` / ``"float16"`` name one.

    Raises:
        ValueError: an unknown name, or float16 on a CPU (PyTorch's CPU autocast computes in bfloat16).
    """
    kind = torch.device(device).type
    if name in (None, "auto"):
        return torch.bfloat16 if kind == "cpu" else torch.float16
    if name not in AMP_DTYPES:
        raise ValueError(f"--amp_dtype {name!r}: must be one of auto, {', '.join(AMP_DTYPES)}")
    if kind == "cpu" and name == "float16":
        raise ValueError("--amp_dtype float16: CPU autocast computes in bfloat16; use auto or bfloat16")
    return AMP_DTYPES[name]


class AutocastInferer(Inferer):
    """Run another inferer under ``torch.autocast`` and return float32 predictions.

    Args:
        inferer: the wrapped inferer (e.g. ``SimpleInferer``).
        dtype: the autocast dtype (bfloat16 on a CPU).
        enabled: ``False`` runs the wrapped inferer unchanged.
    """

    def __init__(self, inferer: Inferer, dtype: torch.dtype = torch.bfloat16, enabled: bool = True) -> None:
        super().__init__()
        self.inferer = inferer
        self.dtype = dtype
        self.enabled = enabled

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast(inputs.device.type, dtype=self.dtype):
            pred = self.inferer(inputs, network, *args, **kwargs)
        return pred.float() if isinstance(pred, torch.Tensor) else pred
