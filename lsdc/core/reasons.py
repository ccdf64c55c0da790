"""Every reason code a conversion can report: one list, which the README's table mirrors (tested).

``SKIP_REASONS``: something that did not become a sample (a ``skipped`` record in ``report.json``).
``NOTE_REASONS``: something read differently from the files without losing a sample (a ``notes``
record): a slice that dropped out of its series (its own read error's code) or a repeated position.
A slice's read error is a note when only that slice is lost, and a skip for the samples it takes
with it (the labelled slice itself, or every slice of the series).
"""
from __future__ import annotations

#: reasons a file, a series or the whole series cannot be read (``SeriesError.reason``)
READ_REASONS = {
    "empty": "the series folder is missing or holds no .dcm file",
    "not_dicom": "a file is not DICOM",
    "unreadable": "a file's DICOM structure cannot be parsed",
    "no_geometry": "Rows/Columns, ImagePositionPatient, ImageOrientationPatient or PixelSpacing missing or malformed",
    "no_instance_number": "InstanceNumber missing",
    "no_pixels": "no PixelData (or the file ends before it)",
    "truncated": "less pixel data than Rows x Columns x BitsAllocated",
    "undecodable": "no installed decoder reads the transfer syntax, or the compressed stream is corrupt",
    "not_2d": "not one grey frame (colour or multi-frame)",
}

SKIP_REASONS = {
    **READ_REASONS,
    "one_slice": "the sample's stack (or, for a localiser volume, every stack) has a single slice",
    "instance_not_in_series": "the labelled InstanceNumber is not in the series",
    "point_outside_image": "the labelled x, y lies outside its slice",
    "unknown_series_description": "a series whose description is none of the three views",
    "series_description_unknown": "a coordinate row on a series whose description is none of the three views",
    "series_not_in_series_descriptions": "a coordinate row on a series absent from the series descriptions",
    "series_view_mismatch": "a coordinate row whose condition belongs to another view than its series",
    "study_not_in_series_descriptions": "a coordinate row of a study absent from the series descriptions",
    "study_not_in_labels": "a coordinate row of a study without a train.csv row",
    "study_folder_missing": "the study's image folder is missing",
    "no_coordinates": "graded in train.csv but no coordinate row",
}

NOTE_REASONS = {
    **{k: v for k, v in READ_REASONS.items() if k != "empty"},  # one slice dropped out of its series
    "duplicate_collapsed": "two slices at one position: the labelled (else higher) InstanceNumber kept",
}
