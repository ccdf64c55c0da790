"""Device resolution shared by every stage that runs a model (classifier, localiser, predict)."""
from __future__ import annotations

import torch

from ..core.errors import InputError


def resolve_device(name: str, key: str = "train.device") -> str:
    """``auto`` -> ``cuda`` when a CUDA device is visible, else ``cpu``; ``cuda`` without one is an error
    naming the config ``key`` it came from."""
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{key}=cuda but no CUDA device is visible")
    return "cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu"
