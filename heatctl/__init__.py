"""heatctl: heat a room with the GPU that runs your local AI."""

from __future__ import annotations

__version__ = "0.1.0"
