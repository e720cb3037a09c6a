"""The `octorelay` command: run the service, migrate, and administer keys, channels and prices.

Admin commands validate with the same schemas and call the same services
as the admin API, so `--json` prints exactly what the API would return.
Each module adds its commands to the one group, `main`.
"""
from . import channels, keys, reports, serve  # noqa: F401  (each registers its commands)
from .common import main

__all__ = ["main"]
