"""lsdc: lumbar-spine degenerative classification, from DICOM to submission, without a data bottleneck."""

__version__ = "0.1.0"
