"""inference: from raw test studies to a submission.

localizer_data / localizer_model / localizer_train   the sagittal level localiser (``lsdc train-localizer``;
                                                     ``train_localizer(store, out_dir, cfg) -> metrics``)
localize                                             a trained localiser applied to a store's volumes
project                                              canal point + learned offset -> axial series, slice, pixel
classify / calibrate                                 run directories -> probabilities; temperature per group
predict                                              ``lsdc predict`` (``predict(data_dir, runs, out_csv, ...)``)
"""
