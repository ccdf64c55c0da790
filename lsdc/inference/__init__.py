"""inference: from raw test studies to a submission (``lsdc predict``).

predict.py    localise (lsdc.localizer) -> convert (lsdc.preprocess) -> classify -> submit
classify.py   run directories -> per-sample probabilities (eval transform from lsdc.loaders.augment)
calibrate.py  temperature per metric group
"""
