"""loaders: the Zarr crop store -> training batches (``factory.create_loader``; backends dali, torch, dicom).

reader.py (fast chunk reads, epochs, shards), augment.py (one param draw per sample), batching.py
(uint8 batches + params), pipeline_dali.py, torch_backend.py, dicom_baseline.py (seed reference).
"""
