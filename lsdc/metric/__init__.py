"""Metrics: the official competition score (``official``) and per-epoch monitoring (``classification``)."""
