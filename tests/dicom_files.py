"""DICOM files for tests: single-frame MR slices written with pydicom, and whole series of them."""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from lsdc.core.geometry import slice_normal

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # columns run posterior, rows run inferior: normal is -x
OBLIQUE = tuple(np.round([0.0, 0.98, 0.199, 0.0, -0.199, 0.98], 6))  # ~11.5 degrees about x


def write_slice(path, pixels, *, instance=1, ipp=(0.0, 0.0, 0.0), iop=SAGITTAL, spacing=(0.5, 0.6),
                photometric="MONOCHROME2", slope=None, intercept=None, bits_stored=16, thickness=3.5, **tags):
    """One single-frame MR Image Storage file with uint16 pixels (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.SeriesInstanceUID, ds.SeriesDescription = "1.2.826.0.1.3680043.8.498.1", "Sagittal T2/STIR"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.PixelSpacing = [float(v) for v in spacing]
    if thickness is not None:
        ds.SliceThickness = thickness
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder, n=6, shape=(12, 10), iop=SAGITTAL, spacing_mm=4.0, seed=0, **kw):
    """n slices at shuffled InstanceNumbers; slice at spatial rank k has all pixels == 100 + k.
    File names follow the instance numbers (as in the competition data), not the positions."""
    folder.mkdir(parents=True, exist_ok=True)
    normal = slice_normal(iop)
    instances = np.random.default_rng(seed).permutation(n) + 1
    origin = np.array([10.0, -20.0, 30.0])
    for k in range(n):
        pixels = np.full(shape, 100 + k, np.uint16)
        write_slice(folder / f"{instances[k]}.dcm", pixels, instance=int(instances[k]),
                    ipp=origin + k * spacing_mm * normal, iop=iop, **kw)
    return instances
