"""Thin entry point for the end-to-end demo (``make demo``); the logic lives in :mod:`isic_monai.demo`."""

from __future__ import annotations

from isic_monai.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
