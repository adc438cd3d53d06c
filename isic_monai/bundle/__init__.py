"""The bundle's own machinery: export, the checkpoint record, settings checks, command-line overrides, paths.

What a MONAI bundle config needs around the networks and data, below the engines that run it.
"""
