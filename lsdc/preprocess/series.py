"""Read one DICOM series (a folder of single-frame ``*.dcm`` files) and split it into stacks.

Slices are grouped and ordered by :mod:`lsdc.preprocess.stacks` (orientation, matrix, pixel spacing;
ImagePositionPatient projected on each stack's normal; never file name, InstanceNumber,
SliceThickness or SpacingBetweenSlices). Pixels are decoded by pydicom's handlers (pylibjpeg plugins
for JPEG 2000 / RLE, CharLS for JPEG-LS, GDCM for JPEG baseline/extended/lossless), rescaled with
RescaleSlope/Intercept, and MONOCHROME1 is inverted so that bright always means high signal.

Every failure is a :class:`SeriesError` whose ``reason`` is a short code (listed in
:mod:`lsdc.store.reasons`) and whose message names the file. A file that cannot be read drops out of
its series with its reason (``Series.dropped``); only a series with no readable file fails whole.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (JPEG2000, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSLossless,
                         JPEGLSNearLossless)

from ..core.errors import InputError
from ..store.reasons import Reason
from . import stacks
from .stacks import Stack


class SeriesError(InputError):
    """A series that cannot be read; ``reason`` is a short code, the message names the file."""

    def __init__(self, reason: str, message: str, instance_number: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.instance_number = instance_number  # the file's, when its header could be read


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
        raise SeriesError(Reason.NOT_DICOM, f"{path}: not a DICOM file ({e})") from e
    except Exception as e:  # pydicom raises many types on garbage bytes; all mean "cannot parse"
        raise SeriesError(Reason.UNREADABLE, f"{path}: cannot parse DICOM ({type(e).__name__}: {e})") from e


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
            raise SeriesError(Reason.NO_GEOMETRY, f"{path}: missing {keyword}")
    try:
        ipp, iop, spacing = _numbers(ds, _IPP), _numbers(ds, _IOP), _numbers(ds, _SPACING)
        for name, value in (("ImagePositionPatient", ipp), ("ImageOrientationPatient", iop), ("PixelSpacing", spacing)):
            if value is None:
                raise SeriesError(Reason.NO_GEOMETRY, f"{path}: missing {name}")
        instance = _numbers(ds, _INSTANCE)
        if instance is None:
            raise SeriesError(Reason.NO_INSTANCE_NUMBER, f"{path}: missing InstanceNumber")
        if len(ipp) != 3 or len(iop) != 6 or len(spacing) != 2 or min(spacing) <= 0:
            raise ValueError(f"IPP {ipp}, IOP {iop}, PixelSpacing {spacing}")
        _check_orientation(iop)
    except (TypeError, ValueError) as e:
        raise SeriesError(Reason.NO_GEOMETRY, f"{path}: malformed geometry ({e})") from e
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


def _gdcm_last() -> None:
    """pydicom tries GDCM first for every JPEG family syntax; where a dedicated decoder is installed
    it is 1.4-4x faster per slice (JPEG 2000: openjpeg 1.8 vs 6.6 ms; JPEG-LS: CharLS 5.1 vs 7.4 ms;
    baseline: Pillow 1.4 vs 4.5 ms on a 512 px slice), so GDCM is moved to the back: it stays the
    fallback, and the only decoder of JPEG lossless without the GPL extra."""
    for syntax in (JPEG2000Lossless, JPEG2000, JPEGLSLossless, JPEGLSNearLossless, JPEGBaseline8Bit, JPEGExtended12Bit):
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            continue
        if "gdcm" in decoder.available_plugins and len(decoder.available_plugins) > 1:
            decoder.remove_plugin("gdcm")
            decoder.add_plugin("gdcm", ("pydicom.pixels.decoders.gdcm", "_decode_frame"))


_gdcm_last()


@contextmanager
def _quiet_pydicom():
    logger = logging.getLogger("pydicom")
    was, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = was


def _decode(path) -> tuple[SliceHeader, np.ndarray]:
    """(header, stored values [rows, cols] as decoded, integer dtype) of one file."""
    path = Path(path)
    ds = _read(path, pixels=True)
    header = _header(ds, path)
    elem = ds.get_item(_PIXEL_DATA)
    if elem is None:
        raise SeriesError(Reason.NO_PIXELS, f"{path}: no PixelData element (or the file is cut short before it)",
                          header.instance_number)
    pixel_bytes = elem.value or b""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and not syntax.is_compressed:
        expected = header.rows * header.cols * header.bits_allocated // 8 * header.samples_per_pixel
        if len(pixel_bytes) < expected:
            raise SeriesError(Reason.TRUNCATED, f"{path}: {len(pixel_bytes)} bytes of pixel data, {expected} expected",
                              header.instance_number)
    try:
        raw = _native_pixels(pixel_bytes, header, syntax)
        if raw is None:
            with _quiet_pydicom():  # it logs each failing plugin's traceback; we raise one clear error
                raw = ds.pixel_array
    except Exception as e:  # missing plugin, unsupported syntax, corrupt stream: all undecodable
        name = syntax.name if syntax is not None else "no transfer syntax"
        raise SeriesError(Reason.UNDECODABLE, f"{path}: cannot decode pixel data ({name}): {e}",
                          header.instance_number) from e
    if raw.ndim != 2:
        raise SeriesError(Reason.NOT_2D, f"{path}: pixel array of shape {raw.shape}, expected one grey frame",
                          header.instance_number)
    return header, raw


def _dicom_files(series_dir: Path) -> list[Path]:
    if not series_dir.is_dir():
        raise SeriesError(Reason.EMPTY, f"{series_dir}: no such series folder")
    files = sorted(p for p in series_dir.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
    if not files:
        raise SeriesError(Reason.EMPTY, f"{series_dir}: no .dcm files")
    return files


def index_series(series_dir) -> list[SliceHeader]:
    """Headers of every ``*.dcm`` file in the folder, in file-name order; the first unreadable file
    raises (see :func:`read_series_geometry` for the tolerant, stack-split reading)."""
    return [read_header(p) for p in _dicom_files(Path(series_dir))]


@dataclass(frozen=True)
class DroppedSlice:
    """A file of a series that could not be read: it drops out, the rest of the series stays."""

    path: Path
    reason: str  # a SeriesError reason code
    detail: str
    instance_number: int | None  # from its header, else its file name, else None


@dataclass
class Series:
    """One series split into stacks (see :mod:`lsdc.preprocess.stacks`), in spatial order."""

    study_id: int | None
    series_id: int | None
    stacks: list  # Stack per stack, spatial order
    dropped: list = field(default_factory=list)  # DroppedSlice per unreadable file
    collapsed: dict = field(default_factory=dict)  # dropped InstanceNumber -> the one kept at its position
    description: str = ""
    series_uid: str = ""

    @property
    def n_slices(self) -> int:
        return sum(st.n_slices for st in self.stacks)

    def find(self, instance_number: int) -> tuple[Stack, int]:
        """(stack, index in it) of the slice with this InstanceNumber; a collapsed duplicate resolves
        to the slice kept at its position. Raises SeriesError with the slice's own reason when its
        file could not be read, ``instance_not_in_series`` when the series has no such instance."""
        inst = self.collapsed.get(int(instance_number), int(instance_number))
        for st in self.stacks:
            j = st.slice_of(inst)
            if j is not None:
                return st, j
        for d in self.dropped:
            if d.instance_number == int(instance_number):
                raise SeriesError(d.reason, d.detail)
        where = Path(self.stacks[0].files[0]).parent if self.stacks and self.stacks[0].files else self.series_id
        raise SeriesError(Reason.INSTANCE_NOT_IN_SERIES, f"instance {instance_number} not in series {self.series_id} ({where})")


def _tolerant(files: list[Path], read) -> tuple[list, list]:
    """(results of ``read(path)`` for the readable files, DroppedSlice per unreadable one). Raises
    the first file's error when none can be read. A dropped file's InstanceNumber comes with its error
    (its header was read) or, failing that, from its name (``<instance_number>.dcm``)."""
    ok, dropped, first_error = [], [], None
    for p in files:
        try:
            ok.append(read(p))
        except SeriesError as e:
            first_error = first_error or e
            instance = e.instance_number if e.instance_number is not None else (
                int(p.stem) if p.stem.isdigit() else None)
            dropped.append(DroppedSlice(p, e.reason, str(e), instance))
    if not ok:
        raise first_error
    return ok, dropped


def _assemble(headers: list, raws, study_id, series_id, dropped, keep_instances) -> Series:
    split = stacks.split_stacks(headers, keep_instances)
    built = []
    for k, members in enumerate(split.stacks):
        volume = None
        if raws is not None:
            first = headers[members[0]]
            volume = np.empty((len(members), first.rows, first.cols), np.float32)
            for j, i in enumerate(members):
                _intensities_into(volume[j], raws[i], headers[i])
        built.append(stacks.make_stack(headers, members, series_id, k, volume))
    first = headers[split.stacks[0][0]]
    return Series(study_id, series_id, built, dropped, split.alias, first.description, first.series_uid)


def load_series(series_dir, study_id=None, series_id=None, keep_instances=()) -> Series:
    """Read every slice once (header and pixels) and split the series into stacks. An unreadable
    file drops out (``Series.dropped``); only a series with no readable file raises SeriesError.
    ``keep_instances``: labelled InstanceNumbers, kept when a repeated position is collapsed."""
    slices, dropped = _tolerant(_dicom_files(Path(series_dir)), _decode)
    return _assemble([h for h, _ in slices], [r for _, r in slices], study_id, series_id, dropped, keep_instances)


def read_series_geometry(series_dir, series_id=None, study_id=None) -> Series:
    """:func:`load_series` from the headers alone: the same stacks, without volumes."""
    headers, dropped = _tolerant(_dicom_files(Path(series_dir)), read_header)
    return _assemble(headers, None, study_id, series_id, dropped, ())
