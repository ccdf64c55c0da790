"""The learning-rate schedule shared by the classifier and the localiser."""
from __future__ import annotations

import math


def lr_lambda(warmup_steps: int, total_steps: int):
    """Factor of each group's peak lr: linear warm-up, then cosine decay to zero at total_steps."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor
