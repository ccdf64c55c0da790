"""Read one DICOM series (a folder of single-frame ``*.dcm`` files) into a spatially sorted volume.

Slices are ordered by ImagePositionPatient projected on the slice normal, never by file name or
InstanceNumber (they disagree on real data). Pixels are decoded by pydicom's handlers (pylibjpeg
plugins for JPEG 2000 / RLE; JPEG lossless needs the optional ``pylibjpeg-libjpeg``), rescaled with
RescaleSlope/Intercept, and MONOCHROME1 is inverted so that bright always means high signal.

Every failure is a :class:`SeriesError` whose ``reason`` is a short code for skip reports and whose
message names the file: ``empty``, ``not_dicom``, ``unreadable``, ``no_geometry``,
``no_instance_number``, ``no_pixels``, ``truncated``, ``undecodable``, ``not_2d``, ``one_slice``,
``mixed_geometry``, ``duplicate_positions``, ``no_instance``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)

from ..core import geometry
from ..core.errors import InputError

DUPLICATE_MM = 1e-3  # two slices closer than this along the normal are the same position
GEOMETRY_TOL = 1e-4  # orientation cosines / spacings that differ by more are a different geometry


class SeriesError(InputError):
    """A series that cannot be read; ``reason`` is a short code, the message names the file."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SliceHeader:
    """What one file's header says about its slice (no pixels)."""

    path: Path
    instance_number: int
    ipp: tuple  # ImagePositionPatient: centre of the first pixel, mm (LPS)
    iop: tuple  # ImageOrientationPatient: 6 direction cosines (column axis X, row axis Y)
    spacing_rc: tuple  # PixelSpacing: (row spacing, column spacing) in mm
    rows: int
    cols: int
    thickness_mm: float | None
    spacing_between_mm: float | None
    photometric: str
    slope: float
    intercept: float
    bits_allocated: int
    bits_stored: int
    signed: bool
    samples_per_pixel: int
    frames: int
    description: str
    series_uid: str

    def stored_max(self) -> float:
        """Largest value the stored bits can hold, rescaled: the pivot of MONOCHROME1 inversion,
        the same for every slice of a series (a per-slice max would not be)."""
        top = 2 ** (self.bits_stored - 1) - 1 if self.signed else 2 ** self.bits_stored - 1
        bottom = -(2 ** (self.bits_stored - 1)) if self.signed else 0
        return max(top * self.slope + self.intercept, bottom * self.slope + self.intercept)


# Tags read for the header. DS/IS/UI/LO/CS values are ASCII text in every transfer syntax, so they
# are split straight from the raw element, and US values are unpacked from its two bytes: pydicom's
# per-value conversion (DSfloat objects, validation, a lookup per keyword) cost as much as reading
# the file. Pixel data is decoded by pydicom (or, uncompressed, taken as is: _native_pixels).
_IPP, _IOP, _SPACING = 0x00200032, 0x00200037, 0x00280030
_THICKNESS, _BETWEEN, _SLOPE, _INTERCEPT = 0x00180050, 0x00180088, 0x00281053, 0x00281052
_INSTANCE, _DESCRIPTION, _SERIES_UID = 0x00200013, 0x0008103E, 0x0020000E
_SAMPLES, _PHOTOMETRIC, _FRAMES, _ROWS, _COLS = 0x00280002, 0x00280004, 0x00280008, 0x00280010, 0x00280011
_BITS_ALLOCATED, _BITS_STORED, _PIXEL_REPRESENTATION = 0x00280100, 0x00280101, 0x00280103
_PIXEL_DATA = 0x7FE00010
# What dcmread parses (it skips every other element): the tags above plus all that pydicom's pixel
# decoders consult. Real scanner files carry 100+ elements, most of them private.
_READ_TAGS = [_IPP, _IOP, _SPACING, _THICKNESS, _BETWEEN, _SLOPE, _INTERCEPT, _INSTANCE, _DESCRIPTION,
              _SERIES_UID, _SAMPLES, _PHOTOMETRIC, 0x00280006, _FRAMES, _ROWS, _COLS, _BITS_ALLOCATED,
              _BITS_STORED, 0x00280102, _PIXEL_REPRESENTATION, 0x7FE00001, 0x7FE00002, 0x7FE00008, 0x7FE00009,
              _PIXEL_DATA]


def _is_multi(v) -> bool:
    """A multi-valued element's value (VM > 1): a list, tuple or pydicom MultiValue."""
    return isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue"


def _text(ds, tag) -> str:
    """The value of a text element as str ('' when absent or empty)."""
    elem = ds.get_item(tag)
    if elem is None or elem.value is None:
        return ""
    v = elem.value
    if isinstance(v, bytes):
        return v.decode("latin-1").strip(" \x00")
    if _is_multi(v):
        return "\\".join(str(x) for x in v)
    return str(v).strip()


def _numbers(ds, tag) -> tuple | None:
    """A numeric string element (DS/IS, possibly multi-valued) as floats; None when absent or empty."""
    text = _text(ds, tag)
    return tuple(float(p) for p in text.split("\\")) if text else None


def _uint(ds, tag) -> int | None:
    """A single-valued US element as int; None when absent or empty."""
    elem = ds.get_item(tag)
    if elem is None or elem.value is None:
        return None
    v = elem.value
    if isinstance(v, bytes):
        if len(v) == 2 and getattr(elem, "is_little_endian", None) is not None:
            return int.from_bytes(v, "little" if elem.is_little_endian else "big")
        if not v:
            return None
        v = ds[tag].value  # an unusual encoding: let pydicom convert it
    if _is_multi(v):  # VM > 1: the first value
        v = v[0] if len(v) else None
    return None if v in (None, "") else int(v)


def _optional_float(ds, tag):
    values = _numbers(ds, tag)
    return None if values is None else values[0]


def _read(path: Path, pixels: bool):
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels, specific_tags=_READ_TAGS)
    except InvalidDicomError as e:
        raise SeriesError("not_dicom", f"{path}: not a DICOM file ({e})") from e
    except Exception as e:  # pydicom raises many types on garbage bytes; all mean "cannot parse"
        raise SeriesError("unreadable", f"{path}: cannot parse DICOM ({type(e).__name__}: {e})") from e


def _check_orientation(iop) -> None:
    """Two non-zero, non-parallel axes (plain Python: this runs once per file)."""
    x, y = iop[:3], iop[3:]
    n = (x[1] * y[2] - x[2] * y[1], x[2] * y[0] - x[0] * y[2], x[0] * y[1] - x[1] * y[0])
    norm = sum(v * v for v in n) ** 0.5
    if not (norm > 1e-6 and norm < float("inf")):
        raise ValueError(f"IOP {iop} has zero or parallel axes")


def _header(ds, path: Path) -> SliceHeader:
    rows, cols = _uint(ds, _ROWS), _uint(ds, _COLS)
    for keyword, value in (("Rows", rows), ("Columns", cols)):
        if value is None:
            raise SeriesError("no_geometry", f"{path}: missing {keyword}")
    try:
        ipp, iop, spacing = _numbers(ds, _IPP), _numbers(ds, _IOP), _numbers(ds, _SPACING)
        for name, value in (("ImagePositionPatient", ipp), ("ImageOrientationPatient", iop), ("PixelSpacing", spacing)):
            if value is None:
                raise SeriesError("no_geometry", f"{path}: missing {name}")
        instance = _numbers(ds, _INSTANCE)
        if instance is None:
            raise SeriesError("no_instance_number", f"{path}: missing InstanceNumber")
        if len(ipp) != 3 or len(iop) != 6 or len(spacing) != 2 or min(spacing) <= 0:
            raise ValueError(f"IPP {ipp}, IOP {iop}, PixelSpacing {spacing}")
        _check_orientation(iop)
    except (TypeError, ValueError) as e:
        raise SeriesError("no_geometry", f"{path}: malformed geometry ({e})") from e
    bits_allocated = _uint(ds, _BITS_ALLOCATED) or 16
    return SliceHeader(
        path=path, instance_number=int(instance[0]), ipp=ipp, iop=iop, spacing_rc=spacing,
        rows=rows, cols=cols,
        thickness_mm=_optional_float(ds, _THICKNESS),
        spacing_between_mm=_optional_float(ds, _BETWEEN),
        photometric=_text(ds, _PHOTOMETRIC) or "MONOCHROME2",
        slope=_optional_float(ds, _SLOPE) or 1.0,  # absent or 0 both mean "no rescale"
        intercept=_optional_float(ds, _INTERCEPT) or 0.0,
        bits_allocated=bits_allocated,
        bits_stored=_uint(ds, _BITS_STORED) or bits_allocated,
        signed=_uint(ds, _PIXEL_REPRESENTATION) == 1,
        samples_per_pixel=_uint(ds, _SAMPLES) or 1,
        frames=int((_numbers(ds, _FRAMES) or (1,))[0]),
        description=_text(ds, _DESCRIPTION),
        series_uid=_text(ds, _SERIES_UID),
    )


def read_header(path) -> SliceHeader:
    """One file's header, without reading its pixel data."""
    path = Path(path)
    return _header(_read(path, pixels=False), path)


_NATIVE_SYNTAXES = {ImplicitVRLittleEndian: "<", ExplicitVRLittleEndian: "<",
                    DeflatedExplicitVRLittleEndian: "<", ExplicitVRBigEndian: ">"}


def _native_pixels(pixel_bytes: bytes, header: SliceHeader, syntax) -> np.ndarray | None:
    """The pixels of an uncompressed single-frame grey image straight from the PixelData bytes: what
    pydicom's native decoder returns (same dtype and byte order, unused high bits corrected), without
    its per-call option and attribute handling, which cost more than reading the file. None when the
    file needs pydicom's general path (compressed, colour, multi-frame, 1-bit, 8-bit big endian)."""
    byte_order = _NATIVE_SYNTAXES.get(syntax)
    bits = header.bits_allocated
    if (byte_order is None or bits not in (8, 16, 32) or (bits == 8 and byte_order == ">")
            or header.samples_per_pixel != 1 or header.frames != 1):
        return None
    dtype = np.dtype(f"{byte_order}{'i' if header.signed else 'u'}{bits // 8}")
    arr = np.frombuffer(pixel_bytes, dtype, count=header.rows * header.cols).reshape(header.rows, header.cols)
    unused = bits - header.bits_stored
    if 0 < unused < bits:  # as pydicom: shift out the unused high bits (sign-extends signed data)
        arr = np.right_shift(np.left_shift(arr, unused), unused)
    return arr


def read_slice(path) -> tuple[SliceHeader, np.ndarray]:
    """(header, float32 [rows, cols]) of one file: decoded, rescaled, MONOCHROME1 inverted."""
    header, raw = _decode(path)
    return header, _intensities_into(np.empty(raw.shape, np.float32), raw, header)


def _intensities_into(out: np.ndarray, raw: np.ndarray, header: SliceHeader) -> np.ndarray:
    """``out[...]`` = the slice's intensities: float32 stored values * slope + intercept, MONOCHROME1
    inverted. In place: a series is converted straight into its volume, with no per-slice copy."""
    out[...] = raw
    if header.slope != 1.0 or header.intercept != 0.0:
        out *= np.float32(header.slope)
        out += np.float32(header.intercept)
    if header.photometric == "MONOCHROME1":
        np.subtract(np.float32(header.stored_max()), out, out=out)
    return out


def _decode(path) -> tuple[SliceHeader, np.ndarray]:
    """(header, stored values [rows, cols] as decoded, integer dtype) of one file."""
    path = Path(path)
    ds = _read(path, pixels=True)
    header = _header(ds, path)
    elem = ds.get_item(_PIXEL_DATA)
    if elem is None:
        raise SeriesError("no_pixels", f"{path}: no PixelData element (or the file is cut short before it)")
    pixel_bytes = elem.value or b""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and not syntax.is_compressed:
        expected = header.rows * header.cols * header.bits_allocated // 8 * header.samples_per_pixel
        if len(pixel_bytes) < expected:
            raise SeriesError("truncated", f"{path}: {len(pixel_bytes)} bytes of pixel data, {expected} expected")
    try:
        raw = _native_pixels(pixel_bytes, header, syntax)
        if raw is None:
            raw = ds.pixel_array
    except Exception as e:  # missing plugin, unsupported syntax, corrupt stream: all undecodable
        name = syntax.name if syntax is not None else "no transfer syntax"
        raise SeriesError("undecodable", f"{path}: cannot decode pixel data ({name}): {e}") from e
    if raw.ndim != 2:
        raise SeriesError("not_2d", f"{path}: pixel array of shape {raw.shape}, expected one grey frame")
    return header, raw


def _dicom_files(series_dir: Path) -> list[Path]:
    if not series_dir.is_dir():
        raise SeriesError("empty", f"{series_dir}: no such series folder")
    files = sorted(p for p in series_dir.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
    if not files:
        raise SeriesError("empty", f"{series_dir}: no .dcm files")
    return files


def index_series(series_dir) -> list[SliceHeader]:
    """Headers of every ``*.dcm`` file in the folder, in file-name order (see :func:`spatial_order`)."""
    return [read_header(p) for p in _dicom_files(Path(series_dir))]


def _close(a: tuple, b: tuple) -> bool:
    """Equal within GEOMETRY_TOL, value by value (plain Python: np.allclose costs 20 us a call)."""
    return len(a) == len(b) and all(abs(x - y) <= GEOMETRY_TOL for x, y in zip(a, b))


def spatial_order(headers: list[SliceHeader]) -> tuple[np.ndarray, np.ndarray]:
    """(order, positions_mm): the permutation sorting slices along the slice normal, and each
    header's position on that normal. Rejects one slice, mixed geometry and duplicate positions."""
    if len(headers) < 2:
        where = headers[0].path if headers else "series"
        raise SeriesError("one_slice", f"{where}: a series needs at least 2 slices, found {len(headers)}")
    first = headers[0]
    for h in headers[1:]:
        if (h.rows, h.cols) != (first.rows, first.cols) or not (
                _close(h.iop, first.iop) and _close(h.spacing_rc, first.spacing_rc)):
            raise SeriesError("mixed_geometry", f"{h.path}: {h.rows}x{h.cols}, IOP {h.iop}, spacing {h.spacing_rc} "
                              f"differ from {first.path}: {first.rows}x{first.cols}, IOP {first.iop}, "
                              f"spacing {first.spacing_rc}")
    normal = geometry.slice_normal(first.iop)
    positions_mm = np.array([h.ipp for h in headers]) @ normal
    order = np.argsort(positions_mm, kind="stable")
    gaps = np.diff(positions_mm[order])
    if (gaps < DUPLICATE_MM).any():
        k = int(np.argmax(gaps < DUPLICATE_MM))
        a, b = headers[order[k]].path, headers[order[k + 1]].path
        raise SeriesError("duplicate_positions", f"{a} and {b}: same slice position {positions_mm[order[k]]:.4f} mm")
    return order, positions_mm


@dataclass
class Series:
    """One series, slices in spatial order (ascending position along ``normal``)."""

    study_id: int | None
    series_id: int | None
    volume: np.ndarray  # float32 [S, H, W], rescaled intensities
    instance_numbers: np.ndarray  # int64 [S]
    positions: np.ndarray  # float64 [S, 3] ImagePositionPatient per slice
    iop: np.ndarray  # float64 [6]
    spacing_rc: tuple  # (row mm, col mm)
    normal: np.ndarray  # float64 [3] unit slice normal (X x Y)
    slice_positions_mm: np.ndarray  # float64 [S] positions projected on the normal, ascending
    thickness_mm: float | None
    files: list  # Path per slice, spatial order
    description: str = ""
    series_uid: str = ""

    @property
    def slice_spacing_mm(self) -> float:
        """Median centre-to-centre distance between neighbouring slices."""
        return float(np.median(np.diff(self.slice_positions_mm)))

    def spatial_index(self, instance_number: int) -> int:
        """Index in ``volume`` of the slice with this InstanceNumber."""
        hits = np.flatnonzero(self.instance_numbers == int(instance_number))
        if hits.size != 1:
            what = "not in" if hits.size == 0 else f"{hits.size} times in"
            raise SeriesError("no_instance", f"instance {instance_number} {what} series {self.series_id} "
                              f"({Path(self.files[0]).parent})")
        return int(hits[0])

    def pixel_to_patient(self, slice_idx: int, col, row) -> np.ndarray:
        """Patient point (mm, LPS) of pixel (col, row) on slice ``slice_idx``."""
        return geometry.pixel_to_patient(self.positions[slice_idx], self.iop, self.spacing_rc, col, row)

    def patient_to_pixel(self, point) -> tuple[float, float, float]:
        """(fractional slice index, col, row) of a patient point (see geometry.locate_in_stack)."""
        return geometry.locate_in_stack(point, self.positions, self.slice_positions_mm, self.iop, self.spacing_rc)


def load_series(series_dir, study_id=None, series_id=None) -> Series:
    """Read every slice once (header and pixels) and stack them in spatial order."""
    slices = [_decode(p) for p in _dicom_files(Path(series_dir))]
    headers = [h for h, _ in slices]
    order, positions_mm = spatial_order(headers)
    volume = np.empty((len(order), headers[0].rows, headers[0].cols), np.float32)
    for k, i in enumerate(order):
        _intensities_into(volume[k], slices[i][1], headers[i])
    first = headers[order[0]]
    return Series(
        study_id=study_id, series_id=series_id, volume=volume,
        instance_numbers=np.array([headers[i].instance_number for i in order], np.int64),
        positions=np.array([headers[i].ipp for i in order], np.float64),
        iop=np.array(first.iop, np.float64), spacing_rc=tuple(first.spacing_rc),
        normal=geometry.slice_normal(first.iop), slice_positions_mm=positions_mm[order],
        thickness_mm=first.thickness_mm, files=[headers[i].path for i in order],
        description=first.description, series_uid=first.series_uid,
    )
