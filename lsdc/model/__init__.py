"""The slice-stack classifier (timm backbone -> BiGRU -> attention MIL) and its losses."""
from .losses import any_severe_loss, aux_losses, class_weighted_ce, total_loss
from .net import SliceMIL, channels_last_5d, count_parameters, create_model, load_backbone, param_groups

__all__ = ["SliceMIL", "create_model", "load_backbone", "param_groups", "channels_last_5d",
           "count_parameters", "class_weighted_ce", "any_severe_loss", "aux_losses", "total_loss"]
