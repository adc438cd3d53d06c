"""Checks of the bundle's settings, run before any work starts (the configs' ``checked_*`` ids)."""

from __future__ import annotations

from typing import Any

from monai.utils import str2bool

__all__ = ["as_bool", "check_overrides", "check_settings", "check_size"]


def check_size(image_size: list[int] | tuple[int, ...], multiple: int) -> list[int]:
    """Validate the configured training size against the network's required multiple.

    Raises:
        ValueError: naming the size and the multiple.
    """
    size = [int(s) for s in image_size]
    if len(size) != 2 or any(s <= 0 for s in size):
        raise ValueError(f"image_size must be two positive integers, got {image_size}")
    if any(s % int(multiple) for s in size):
        raise ValueError(f"image_size {size}: each side must be a multiple of {multiple} for this network")
    return size


def check_settings(**settings: Any) -> dict[str, Any]:
    """Validate the bundle's numeric settings before any work starts.

    Known keys: ``max_epochs``, ``batch_size``, ``val_interval`` (positive integers), ``learning_rate`` (> 0),
    ``val_fraction`` (in [0, 1)), ``threshold`` (in (0, 1)). Unknown keys are ignored.

    Returns:
        The settings, unchanged.

    Raises:
        ValueError: naming every setting that is wrong, its value and what it must be.
    """
    rules = {
        "max_epochs": (lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
        "batch_size": (lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
        "val_interval": (lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
        "learning_rate": (lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
        "val_fraction": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)"),
        "threshold": (lambda v: isinstance(v, (int, float)) and 0 < v < 1, "a number in (0, 1)"),
    }
    wrong = [
        f"--{key} {value!r}: must be {rules[key][1]}"
        for key, value in settings.items()
        if key in rules and (isinstance(value, bool) or not rules[key][0](value))
    ]
    if wrong:
        raise ValueError("invalid bundle settings:\n  " + "\n  ".join(wrong))
    return settings




def as_bool(value: Any, name: str) -> bool:
    """A boolean setting as typed on the command line.

    The MONAI CLI (Python Fire) passes ``--save_overlays false`` as the *string* ``"false"``, which Python treats as
    true; every boolean id of the bundle goes through this function instead of being used as it comes.

    Raises:
        ValueError: naming the setting when the value is neither a boolean nor one of true/false/yes/no/on/off/1/0.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    try:  # MONAI's str2bool, plus the two words it lacks
        return str2bool({"on": "true", "off": "false"}.get(text, text))
    except ValueError:
        raise ValueError(f"--{name} {value!r}: must be true or false (or yes/no, on/off, 1/0)") from None


def check_overrides() -> list[str]:
    """Stop a ``python -m monai.bundle run`` whose command line names an id the config does not define.

    MONAI adds such ids silently (``--max_epoch 5`` would change nothing); the configs' ``initialize`` lists call
    this first. Only a ``monai.bundle run`` command line is checked (not MONAI Label or a Python ``ConfigWorkflow``);
    see :mod:`isic_monai.bundle.overrides`.

    Returns:
        The override ids checked.

    Raises:
        ValueError: naming each unknown id and the nearest known one (``did you mean 'max_epochs'?``).
    """
    from isic_monai.bundle.overrides import check_command_line

    return check_command_line()
