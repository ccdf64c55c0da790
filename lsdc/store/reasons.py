"""Every reason a conversion can report, as one enum; the README's tables mirror it (tested).

A reason has a kind:

``READ``   a file, a series or a slice cannot be read (``SeriesError.reason``). It is a note when only
           that slice drops out of its series, and a skip for the samples it takes with it (the
           labelled slice itself, or every slice of the series).
``SKIP``   something that did not become a sample (a ``skipped`` record in ``report.json``).
``NOTE``   something read differently from the files without losing a sample (a ``notes`` record).

Members are strings (``Reason.ONE_SLICE == "one_slice"``), so report records stay plain JSON.
"""
from __future__ import annotations

from enum import StrEnum

READ, SKIP, NOTE = "read", "skip", "note"


class Reason(StrEnum):
    """A reason code, its kind and the one-line description the README's tables show."""

    def __new__(cls, code: str, kind: str, description: str):
        member = str.__new__(cls, code)
        member._value_ = code
        member.kind = kind
        member.description = description
        return member

    EMPTY = "empty", READ, "the series folder is missing or holds no .dcm file"
    NOT_DICOM = "not_dicom", READ, "a file is not DICOM"
    UNREADABLE = "unreadable", READ, "a file's DICOM structure cannot be parsed"
    NO_GEOMETRY = ("no_geometry", READ, "Rows/Columns, ImagePositionPatient, ImageOrientationPatient or "
                   "PixelSpacing missing or malformed")
    NO_INSTANCE_NUMBER = "no_instance_number", READ, "InstanceNumber missing"
    NO_PIXELS = "no_pixels", READ, "no PixelData (or the file ends before it)"
    TRUNCATED = "truncated", READ, "less pixel data than Rows x Columns x BitsAllocated"
    UNDECODABLE = ("undecodable", READ,
                   "no installed decoder reads the transfer syntax, or the compressed stream is corrupt")
    NOT_2D = "not_2d", READ, "not one grey frame (colour or multi-frame)"
    ONE_SLICE = ("one_slice", SKIP,
                 "the sample's stack (or, for a localiser volume, every stack) has a single slice")
    INSTANCE_NOT_IN_SERIES = "instance_not_in_series", SKIP, "the labelled InstanceNumber is not in the series"
    POINT_OUTSIDE_IMAGE = "point_outside_image", SKIP, "the labelled x, y lies outside its slice"
    UNKNOWN_SERIES_DESCRIPTION = ("unknown_series_description", SKIP,
                                  "a series whose description is none of the three views (and every "
                                  "coordinate row on it)")
    SERIES_NOT_IN_SERIES_DESCRIPTIONS = ("series_not_in_series_descriptions", SKIP,
                                         "a coordinate row on a series absent from the series descriptions")
    SERIES_VIEW_MISMATCH = ("series_view_mismatch", SKIP,
                            "a coordinate row whose condition belongs to another view than its series")
    STUDY_NOT_IN_SERIES_DESCRIPTIONS = ("study_not_in_series_descriptions", SKIP,
                                        "a coordinate row of a study absent from the series descriptions")
    STUDY_NOT_IN_LABELS = "study_not_in_labels", SKIP, "a coordinate row of a study without a train.csv row"
    STUDY_FOLDER_MISSING = "study_folder_missing", SKIP, "the study's image folder is missing"
    CONFLICTING_COORDINATES = ("conflicting_coordinates", SKIP,
                               "coordinate rows of one study, condition and level give different points (series, "
                               "instance or x, y): none is used")
    NO_COORDINATES = "no_coordinates", SKIP, "graded in train.csv but no coordinate row"
    DUPLICATE_COLLAPSED = ("duplicate_collapsed", NOTE,
                           "two slices at one position: the labelled (else higher) InstanceNumber kept")
    COORDINATE_ROW_REPEATED = ("coordinate_row_repeated", NOTE,
                               "a coordinate row repeated verbatim (same series, instance, x and y): read once")


#: what a ``skipped`` record can carry: every read reason, then every skip reason
SKIP_REASONS = tuple(r for r in Reason if r.kind in (READ, SKIP))
#: what a ``notes`` record can carry: a single slice's read error (a series cannot be empty by one
#: slice), then every note reason
NOTE_REASONS = tuple(r for r in Reason if (r.kind == READ and r is not Reason.EMPTY) or r.kind == NOTE)
