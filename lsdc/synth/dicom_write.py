"""Write a planned series as single-frame MR Image Storage DICOM files, one per slice.

Stored values decode to the physical image through the usual chain: Modality LUT
(``stored * RescaleSlope + RescaleIntercept``) for rescaled series; MONOCHROME1 series store
``2**BitsStored - 1 - physical`` (and carry no rescale), so ``(2**BitsStored - 1) - pixel`` inverts
them exactly. Compressed transfer syntaxes go through pydicom's encoders (``Dataset.compress``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import MRImageStorage, generate_uid

from ..core.geometry import slice_normal
from .series import SeriesPlan

#: (RepetitionTime, EchoTime, InversionTime or None) in ms per sequence
TIMING = {"T1": (550.0, 10.0, None), "T2": (3500.0, 100.0, None), "STIR": (4200.0, 45.0, 150.0)}


def uid(seed: int, *parts) -> str:
    """A valid UID derived only from the dataset seed and the given parts (deterministic)."""
    return generate_uid(entropy_srcs=[f"lsdc-synth-{seed}"] + [str(p) for p in parts])


def to_stored(plan: SeriesPlan, physical: np.ndarray) -> np.ndarray:
    """uint16 stored pixel values of a physical-intensity image under the plan's encoding."""
    top = 2 ** plan.bits_stored - 1
    if plan.photometric == "MONOCHROME1":
        return (top - np.clip(np.rint(physical), 0, top)).astype(np.uint16)
    return np.clip(np.rint((physical - plan.intercept) / plan.slope), 0, top).astype(np.uint16)


def _ds(v: float) -> str:
    return f"{v:.10g}"


def write_series(plan: SeriesPlan, stored: list, series_dir: Path, *, seed: int, study_id: int,
                 description: str) -> list[Path]:
    """Write ``stored[k]`` (uint16, slice k of the plan, its own geometry) as ``<instance_number>.dcm``;
    returns the paths."""
    series_dir.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = uid(seed, study_id), uid(seed, study_id, plan.series_id)
    frame_uid = uid(seed, study_id, "frame")
    tr, te, ti = TIMING[plan.sequence]
    paths = []
    for k, pixels in enumerate(stored):
        inst = int(plan.instance_numbers[k])
        sop = uid(seed, study_id, plan.series_id, inst)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = plan.transfer_syntax
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientID, ds.StudyID = str(study_id), str(study_id)[-8:]
        ds.Modality, ds.Manufacturer = "MR", "lsdc-synth"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.SeriesDescription = description
        ds.SeriesNumber = int(plan.series_id % 1000) + 1
        ds.InstanceNumber = inst
        ds.PatientPosition = "HFS"
        ds.ScanningSequence, ds.MRAcquisitionType = ("IR" if ti else "SE"), "2D"
        ds.RepetitionTime, ds.EchoTime = _ds(tr), _ds(te)
        if ti:
            ds.InversionTime = _ds(ti)
        ipp, iop, spacing_rc, _, _ = plan.geometry(k)
        ds.ImagePositionPatient = [_ds(v) for v in ipp]
        ds.ImageOrientationPatient = [_ds(v) for v in iop]
        ds.SliceLocation = _ds(float(np.dot(ipp, slice_normal(iop))))
        ds.PixelSpacing = [_ds(v) for v in spacing_rc]
        if plan.write_thickness:
            ds.SliceThickness = _ds(plan.thickness_mm)
            ds.SpacingBetweenSlices = _ds(plan.slice_spacing_mm)
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = plan.photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, plan.bits_stored, plan.bits_stored - 1
        ds.PixelRepresentation = 0
        if plan.slope != 1.0 or plan.intercept != 0.0:
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(plan.slope), _ds(plan.intercept), "US"
        pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
        if plan.transfer_syntax.is_compressed:
            ds.compress(plan.transfer_syntax, pixels, generate_instance_uid=False)
        else:
            ds.PixelData = pixels.tobytes()
        path = series_dir / f"{inst}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
