"""Typo-proof command-line overrides for the stock ``python -m monai.bundle run`` CLI.

MONAI's CLI (Python Fire) hands every ``--key value`` it does not know to the config as an override, and an id the
config lacks is added silently: ``--max_epoch 5`` trains for the default 100 epochs. The bundle's ``initialize``
lists call :func:`check_command_line` first; it reads ``sys.argv`` the way Fire parses it, loads the same config
files, and stops with the nearest known id (``unknown id 'max_epoch' (did you mean 'max_epochs'?)``).

The check only runs when the process *is* a ``monai.bundle run`` (or ``run_workflow``) command line: under MONAI
Label, a Python ``ConfigWorkflow`` or any other program, ``sys.argv`` belongs to someone else and is left alone.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CommandLine", "check_command_line", "parse_fire_args", "unknown_overrides"]

RUN_ARGS: tuple[str, ...] = ("run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking",
                             "args_file")
"""The parameters of ``monai.bundle.scripts.run``, in order (positional arguments fill them in this order)."""
WORKFLOW_ARGS: tuple[str, ...] = ("workflow_name", "workflow_type", "properties_path")
"""What ``run_workflow`` / ``ConfigWorkflow`` take besides :data:`RUN_ARGS`."""
COMMANDS: tuple[str, ...] = ("run", "run_workflow")
"""The ``monai.bundle`` commands whose extra keywords are config overrides."""


@dataclass
class CommandLine:
    """A ``monai.bundle`` command line as Fire reads it: the command, its named arguments and positional ones."""

    command: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    positional: list[str] = field(default_factory=list)


def _is_flag(arg: str) -> bool:
    """Fire's flag test: ``--x``, or ``-x`` with a letter (``-1`` is a value)."""
    return arg.startswith("--") or re.match(r"^-[a-zA-Z]", arg) is not None


def _parse_value(text: str) -> Any:
    """A value the way Fire parses it (Python literals, else the text)."""
    try:
        from fire.parser import DefaultParseValue

        return DefaultParseValue(text)
    except Exception:  # fire missing or a value it cannot parse: keep the text
        return text


def parse_fire_args(argv: Sequence[str]) -> CommandLine | None:
    """Read ``python -m monai.bundle COMMAND ARGS`` the way Fire does.

    ``--key value``, ``--key=value``, a bare ``--flag`` (true; ``--noflag`` false), hyphens in keys read as
    underscores; everything after a lone ``--`` belongs to Fire itself and is ignored.

    Args:
        argv: the arguments after the program name (``sys.argv[1:]``).

    Returns:
        The command line, or ``None`` when its command is not one of :data:`COMMANDS`.
    """
    args = list(argv)
    if "--" in args:
        args = args[: len(args) - 1 - args[::-1].index("--")]
    if not args or args[0] not in COMMANDS:
        return None
    line = CommandLine(args[0])
    rest = args[1:]
    index = 0
    while index < len(rest):
        arg = rest[index]
        index += 1
        if not _is_flag(arg):
            line.positional.append(arg)
            continue
        stripped = arg.lstrip("-")
        if "=" in stripped:
            key, text = stripped.split("=", 1)
            value: Any = _parse_value(text)
        elif index == len(rest) or _is_flag(rest[index]):
            key, value = stripped, True
            if key.startswith("no") and key not in RUN_ARGS:
                key, value = key[2:], False
        else:
            key, value = stripped, _parse_value(rest[index])
            index += 1
        line.kwargs[key.replace("-", "_")] = value
    return line


def _config_ids(config: dict[str, Any]) -> list[str]:
    """Every id path of a config (``a``, ``a#b``, ``a#0#c``), for suggestions."""
    ids: list[str] = []

    def walk(value: Any, prefix: str) -> None:
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, sub in items:
            path = f"{prefix}#{key}" if prefix else str(key)
            ids.append(path)
            walk(sub, path)

    walk(config, "")
    return ids


def _suggest(wrong: str, known: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest known id, or nothing."""
    close = difflib.get_close_matches(wrong, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_overrides(keys: Sequence[str], config: dict[str, Any], accepted: Sequence[str] = ()) -> list[str]:
    """The override keys that name nothing in ``config``, each as a message with the nearest known id.

    A key is known when its root id is a top-level id (or in ``accepted``) and every level of its ``#`` path but the
    last exists; the last level may add a key to an existing dict (``--optimizer#momentum 0.9``).

    Args:
        keys: the override ids (``max_epochs``, ``train#trainer#max_epochs``; ``::`` is read as ``#``).
        config: the merged config content.
        accepted: further ids that are not config ids but are fine (the CLI's own, tracking settings).

    Returns:
        One message per unknown key, e.g. ``unknown id 'max_epoch' (did you mean 'max_epochs'?)``.
    """
    problems = []
    top = [str(k) for k in config] + list(accepted)
    for key in keys:
        parts = str(key).replace("::", "#").lstrip("+").split("#")
        if parts[0] in accepted:
            continue
        if parts[0] not in config:
            problems.append(f"unknown id '{key}'{_suggest(parts[0], top)}")
            continue
        node: Any = config[parts[0]]
        for depth, part in enumerate(parts[1:], start=1):
            last = depth == len(parts) - 1
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and re.fullmatch(r"-?\d+", part) and -len(node) <= int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and last:
                break  # a new key of an existing dict (e.g. an extra keyword argument)
            else:
                where = "#".join(parts[:depth])
                if isinstance(node, dict):
                    hint = _suggest("#".join(parts[: depth + 1]), [f"{where}#{k}" for k in node])
                elif isinstance(node, list):
                    hint = f" (a list of {len(node)}: indices 0 to {len(node) - 1})"
                else:
                    hint = f" (it is a value, {type(node).__name__})"
                problems.append(f"unknown id '{key}': '{where}' has no '{part}'{hint}")
                break
    return problems


def _as_files(value: Any) -> list[str]:
    """A ``--config_file`` / ``--meta_file`` value as a list of paths (a list, or a comma-separated string)."""
    if value is None or value is False:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value)
    return text.split(",") if "," in text and not Path(text).is_file() else [text]


def _tracking_ids(tracking: Any) -> list[str]:
    """The ids ``--tracking`` lets the command line set (its settings' ``configs``, e.g. ``tracking_uri``)."""
    if tracking is None or tracking is False:
        return []
    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    if isinstance(tracking, dict):
        settings = tracking
    elif str(tracking) in DEFAULT_EXP_MGMT_SETTINGS:
        settings = DEFAULT_EXP_MGMT_SETTINGS[str(tracking)]
    elif os.path.isfile(str(tracking)):
        settings = ConfigParser.load_config_files(str(tracking))
    else:
        return []
    return [str(k) for k in settings.get("configs", {})]


def command_line_problems(argv: Sequence[str]) -> list[str]:
    """What :func:`check_command_line` would report for ``argv`` (``sys.argv[1:]`` of ``python -m monai.bundle``).

    Returns:
        One message per unknown override (empty: all known, or not a ``run`` command line, or no config file).
    """
    from monai.bundle import ConfigParser

    line = parse_fire_args(argv)
    if line is None:
        return []
    order = RUN_ARGS if line.command == "run" else ("workflow_name", "args_file")
    named = dict(zip(order, line.positional, strict=False)) | line.kwargs
    args_file = named.get("args_file")
    from_file = ConfigParser.load_config_file(str(args_file)) if args_file and os.path.isfile(str(args_file)) else {}
    merged = {**from_file, **named}
    files = _as_files(merged.get("config_file"))
    if not files or not all(os.path.isfile(f) for f in files):
        return []  # MONAI itself reports a missing config file
    config = ConfigParser.load_config_files(files)
    config.setdefault("_meta_", {})
    accepted = [*RUN_ARGS, *WORKFLOW_ARGS, *_tracking_ids(merged.get("tracking"))]
    return unknown_overrides([k for k in merged if k not in accepted], config, accepted)


def is_bundle_run(argv0: str, argv: Sequence[str]) -> bool:
    """Whether a process is ``python -m monai.bundle run|run_workflow ...`` (also under ``torchrun -m``)."""
    path = Path(argv0)
    return path.name == "__main__.py" and path.parent.name == "bundle" and path.parent.parent.name == "monai" \
        and bool(argv) and argv[0] in COMMANDS


def check_command_line(argv: Sequence[str] | None = None) -> list[str]:
    """Stop a ``monai.bundle run`` whose command line overrides an id the config does not define.

    Args:
        argv: the whole command line (default ``sys.argv``); anything but a ``monai.bundle run`` command line is not
            checked.

    Returns:
        The override ids checked (empty when not checked).

    Raises:
        ValueError: listing every unknown id with the nearest known one.
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv or not is_bundle_run(argv[0], argv[1:]):
        return []
    problems = command_line_problems(argv[1:])
    if problems:
        raise ValueError("command line overrides ids the config does not define:\n  " + "\n  ".join(problems)
                         + "\n(an override of an unknown id would be added to the config silently and change nothing)")
    line = parse_fire_args(argv[1:])
    return [k for k in (line.kwargs if line else {}) if k not in RUN_ARGS + WORKFLOW_ARGS]
