"""Ignite handlers for the in-house networks."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["FreezeEncoderHandler", "unwrap_network"]

logger = logging.getLogger(__name__)


def unwrap_network(network: nn.Module) -> nn.Module:
    """Return the network inside DistributedDataParallel/DataParallel wrappers (``.module``).

    Args:
        network: a network, possibly wrapped.

    Returns:
        The innermost network.
    """
    while hasattr(network, "module") and isinstance(network.module, nn.Module):
        network = network.module
    return network


class FreezeEncoderHandler:
    """Freeze a network's encoder during the first ``epochs`` epochs of training, then unfreeze it.

    The network must have a ``freeze_encoder(flag: bool)`` method (:class:`ConvNeXtUNet` has one). The state is set
    at every ``EPOCH_STARTED`` from ``engine.state.epoch``, so a run resumed from a checkpoint gets the right state.
    ``epochs=0`` never freezes, and then accepts any network: a bundle whose network override added this handler
    (an ImageNet-encoder bundle) can have another network layered on it.

    With DistributedDataParallel, construct DDP with ``find_unused_parameters=True`` when ``epochs > 0``: frozen
    parameters produce no gradients and DDP otherwise waits for them.

    Args:
        network: the network (DDP/DataParallel wrappers are unwrapped through ``.module``).
        epochs: number of initial epochs with a frozen encoder.

    Raises:
        TypeError: when ``epochs > 0`` and the network has no ``freeze_encoder`` method.
        ValueError: when ``epochs`` is negative.
    """

    def __init__(self, network: nn.Module, epochs: int) -> None:
        if int(epochs) < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        inner = unwrap_network(network)
        if int(epochs) > 0 and not callable(getattr(inner, "freeze_encoder", None)):
            raise TypeError(f"{type(inner).__name__} has no freeze_encoder(flag) method")
        self.network = inner
        self.epochs = int(epochs)
        self.frozen: bool | None = None

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine`` (``Events.EPOCH_STARTED``).

        Args:
            engine: the trainer.
        """
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Set the encoder state for the epoch that starts."""
        freeze = engine.state.epoch <= self.epochs
        if self.epochs == 0 and self.frozen is None:
            self.frozen = False
            return
        if freeze != self.frozen:
            self.network.freeze_encoder(freeze)
            logger.info("epoch %d: encoder %s", engine.state.epoch, "frozen" if freeze else "trainable")
            self.frozen = freeze
