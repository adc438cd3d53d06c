"""Mixed precision on the device at hand.

MONAI's engines (``SupervisedTrainer(amp=True)``, ``SupervisedEvaluator(amp=True)``) wrap the forward pass in
``torch.autocast("cuda")`` with a ``GradScaler``: on a CPU they run in float32. bfloat16 autocast on a CPU made a
training step of the bundle's network 1.4-1.75× faster on the project's machine, and bfloat16 needs no loss scaling,
so :class:`AutocastInferer` wraps any MONAI inferer in ``torch.autocast`` for the device the tensors are on and hands
back float32 predictions (the loss, metrics and post-processing stay in float32). The bundle uses it for training on
a CPU; on CUDA it keeps MONAI's own AMP, with the dtype chosen by :func:`autocast_dtype`.

:class:`AveragingInferer` is what evaluation and inference run: the mean of the sigmoid probabilities over
test-time augmentation views (flips and 90° rotations) and over several checkpoints (an ensemble).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = [
    "AMP_DTYPES",
    "TTA_VIEWS",
    "AutocastInferer",
    "AveragingInferer",
    "apply_view",
    "autocast_dtype",
    "cpu_autocast_enabled",
    "cpu_bfloat16_is_native",
    "invert_view",
    "load_ensemble",
]

TTA_VIEWS: tuple[tuple[int, bool], ...] = ((0, False), (0, True), (2, True), (2, False),
                                           (1, False), (3, False), (1, True), (3, True))
"""The eight views of the dihedral group of a square (``k`` quarter turns, then an optional horizontal flip), in
the order ``tta_views`` takes them: identity, horizontal flip, vertical flip (half turn + horizontal flip), half
turn, then the quarter turns (square inputs only)."""

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


def cpu_bfloat16_is_native() -> bool:
    """Whether this CPU computes bfloat16 in hardware (oneDNN's own test: AVX-512 or AMX).

    On a CPU without it (AVX2 only, as the 2-core AMD EPYC this project is developed on since 2026-12-08), bfloat16
    autocast is emulated: a training step of EfficientNet-Lite1 at 64×64 took 7× longer than in float32
    (docs/performance.md, "bfloat16 on a CPU without it in hardware").
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_autocast_enabled(setting: Any, amp: bool, device: str | torch.device) -> bool:
    """Whether the training forward pass runs under bfloat16 autocast on a CPU (``cpu_autocast``).

    Args:
        setting: ``auto`` (on where the CPU has bfloat16 in hardware, :func:`cpu_bfloat16_is_native`), or a boolean
            setting (``true`` forces it on, ``false`` off).
        amp: the bundle's ``amp`` (off: never).
        device: the training device (CUDA uses MONAI's own AMP instead: never).
    """
    from isic_monai.bundle.settings import as_bool

    if not amp or torch.device(device).type != "cpu":
        return False
    if str(setting).strip().lower() == "auto":
        return cpu_bfloat16_is_native()
    return as_bool(setting, "cpu_autocast")


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


def apply_view(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Rotate the last two (spatial) axes by ``k`` quarter turns, then flip horizontally."""
    x = torch.rot90(x, k, dims=(-2, -1)) if k else x
    return torch.flip(x, dims=(-1,)) if flip else x


def invert_view(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Undo :func:`apply_view`."""
    x = torch.flip(x, dims=(-1,)) if flip else x
    return torch.rot90(x, -k, dims=(-2, -1)) if k else x


class AveragingInferer(Inferer):
    """Average sigmoid probabilities over test-time augmentation views and several networks, return logits.

    MONAI's ``TestTimeAugmentation`` draws random transforms for uncertainty estimates and inverts them through
    the transform stack; a segmentation model's flips and quarter turns are exact and cheap on the tensor, so this
    inferer applies them itself. The result is ``logit(mean probability)``, so the sigmoid that follows in the
    bundle's post-processing yields the averaged probability, and with one view and one network it is the wrapped
    inferer's output unchanged.

    A quarter turn of a non-square input swaps H and W: the network then sees a portrait canvas it never trained on,
    and each such view lost about 0.02 Jaccard on the ISIC 2017 validation set (128x160 input: 0.716 against 0.740
    for the identity view), pulling the 8-view mean below the plain prediction (0.736). Non-square inputs therefore
    average the four views that keep their shape (identity, the two flips, the half turn): 0.744 there.

    Args:
        inferer: the inferer each view and network runs through (``SimpleInferer``, a sliding window, ...).
        tta: average the eight flip/rotation views (:data:`TTA_VIEWS`; the four shape-keeping ones for a non-square
            input); ``False`` runs the identity view only.
        networks: further networks (an ensemble's other members) averaged with the one the engine passes.
        ensemble: further ``model.pt`` files, loaded at the first call into copies of the network the engine passes
            (:func:`load_ensemble`, checked against ``record``): the config then never builds a network of its own for
            the inferer, which MONAI Label parses again for every request.
        record: the configuration's :class:`~isic_monai.bundle.checkpoint.CheckpointInfo`, for ``ensemble``.
        eps: probabilities are clamped to ``[eps, 1 - eps]`` before the logit.
        views: with ``tta``, how many views of :data:`TTA_VIEWS` to average, of those the input's shape allows
            (1..8; a non-square input allows 4).
        batch_views: run the views of one shape as one batch (one forward instead of one per view: the same
            values, faster on a CPU for single photos).

    Raises:
        ValueError: when ``views`` is not in 1..8.
    """

    def __init__(self, inferer: Inferer, tta: bool = False, networks: Sequence[torch.nn.Module] = (),
                 eps: float = 1e-6, views: int = 8, batch_views: bool = True,
                 ensemble: Sequence[str | Path] | None = None, record: Any = None) -> None:
        super().__init__()
        if not 1 <= int(views) <= len(TTA_VIEWS):
            raise ValueError(f"tta_views must be 1..{len(TTA_VIEWS)}, got {views}")
        self.inferer = inferer
        self.views = TTA_VIEWS if tta else TTA_VIEWS[:1]
        self.max_views = int(views) if tta else 1
        self.batch_views = bool(batch_views)
        self.networks = list(networks)
        self.ensemble = [str(p) for p in ensemble or []]
        self.record = record
        self.eps = eps

    def _members(self, network: Any, device: torch.device) -> list[torch.nn.Module]:
        """The ensemble's other members: ``networks``, and the ``ensemble`` files loaded once into copies of
        ``network`` (unwrapped from DistributedDataParallel)."""
        if self.ensemble:
            template = getattr(network, "module", network)
            self.networks += load_ensemble(template, self.ensemble, self.record, device)
            self.ensemble = []
        return self.networks

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        members = self._members(network, inputs.device)
        if len(self.views) == 1 and not members:
            return self.inferer(inputs, network, *args, **kwargs)
        square = inputs.shape[-1] == inputs.shape[-2]
        views = [(k, flip) for k, flip in self.views if square or k % 2 == 0][: self.max_views]
        groups = [[v for v in views if v[0] % 2 == parity] for parity in (0, 1)] if self.batch_views else [
            [v] for v in views]
        n = inputs.shape[0]
        total: torch.Tensor | None = None
        for net in [network, *members]:
            for group in (g for g in groups if g):
                batch = torch.cat([apply_view(inputs, k, flip) for k, flip in group], dim=0)
                logits = self.inferer(batch, net, *args, **kwargs)
                for i, (k, flip) in enumerate(group):
                    prob = torch.sigmoid(invert_view(logits[i * n:(i + 1) * n], k, flip).float())
                    total = prob if total is None else total + prob
        mean = total / (len(views) * (1 + len(members)))
        return torch.logit(mean.clamp(self.eps, 1 - self.eps))


def load_ensemble(network: torch.nn.Module, paths: Sequence[str | Path] | None, record: Any = None,
                  device: str | torch.device | None = None) -> list[torch.nn.Module]:
    """Copies of ``network`` holding the weights of each checkpoint in ``paths`` (the ensemble's other members).

    Args:
        network: the configured network (its architecture is copied; its own weights are left alone).
        paths: ``model.pt`` files of the same network (``{"model": ..., "config": ...}`` or a bare state dict).
        record: the configuration's :class:`~isic_monai.bundle.checkpoint.CheckpointInfo`; each member's saved record
            must match it (same channels, size and network), like the main checkpoint's.
        device: where the members run (default: where ``network`` is).

    Raises:
        ValueError: a member cannot be read, was trained with other settings, or does not fit the network; the
            message names the file.
    """
    from isic_monai.bundle.checkpoint import load_checkpoint

    members = []
    for path in paths or []:
        ckpt = load_checkpoint(path)
        if record is not None:
            wrong = record.mismatches(dict(ckpt.get("config", {})))
            if wrong:
                raise ValueError(f"ensemble member {path} was trained with other settings than this config:\n  "
                                 + "\n  ".join(wrong))
        member = copy.deepcopy(network)
        try:
            member.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise ValueError(f"ensemble member {path} does not fit the configured network: {err}") from err
        if device is not None:
            member = member.to(device)
        members.append(member.eval())
    return members
