"""localizer: the sagittal level localiser, a stage of its own (``lsdc train-localizer``).

data.py      the store's sagittal volumes and labelled keypoints as a training set (``load_locset``)
model.py     the heat-map network (``create_localizer``) and its decoding to volume coordinates
train.py     ``train_localizer(store, out_dir, cfg) -> metrics``: folds, fit, held-out evaluation
localize.py  a trained localiser (``load_localizer``) applied to a store's volumes
project.py   canal point + learned offset -> axial stack, slice and pixel (``project``)
cli.py       ``lsdc train-localizer``
"""
