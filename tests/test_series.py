"""DICOM series reading: spatial sort, rescale, MONOCHROME1, transfer-syntax invariance, every bad input."""
from __future__ import annotations

import os

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (MPEG2MPML, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, MRImageStorage,
                         generate_uid)

from lsdc.core.errors import InputError
from lsdc.core.geometry import slice_normal
from lsdc.preprocess.series import (SeriesError, _native_pixels, index_series, load_series, read_header,
                                   read_slice)

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # columns run posterior, rows run inferior: normal is -x
OBLIQUE = tuple(np.round([0.0, 0.98, 0.199, 0.0, -0.199, 0.98], 6))  # ~11.5 degrees about x
PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")  # bundled: no download


def write_slice(path, pixels, *, instance=1, ipp=(0.0, 0.0, 0.0), iop=SAGITTAL, spacing=(0.5, 0.6),
                photometric="MONOCHROME2", slope=None, intercept=None, bits_stored=16, **tags):
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
    ds.SliceThickness = 3.5
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


# ------------------------------------------------------------------------------------------- sorting

@pytest.mark.parametrize("iop", [SAGITTAL, OBLIQUE])
def test_slices_sorted_by_position_not_instance_number(tmp_path, iop):
    instances = write_series(tmp_path / "s", iop=iop, seed=3)
    s = load_series(tmp_path / "s", study_id=7, series_id=8)
    assert (s.study_id, s.series_id) == (7, 8)
    assert s.volume.shape == (6, 12, 10) and s.volume.dtype == np.float32
    np.testing.assert_array_equal(s.volume[:, 0, 0], 100 + np.arange(6))
    np.testing.assert_array_equal(s.instance_numbers, instances)
    assert np.all(np.diff(s.slice_positions_mm) > 0)
    np.testing.assert_allclose(np.diff(s.slice_positions_mm), 4.0, atol=1e-4)
    assert s.slice_spacing_mm == pytest.approx(4.0, abs=1e-4)
    np.testing.assert_allclose(s.normal, slice_normal(iop))
    assert s.spacing_rc == (0.5, 0.6) and s.thickness_mm == 3.5
    assert [p.name for p in s.files] == [f"{i}.dcm" for i in instances]
    for k, inst in enumerate(instances):
        assert s.spatial_index(inst) == k


def test_instance_order_against_the_normal_is_reversed(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    for k in range(4):  # instance 1 is the highest position along the normal
        write_slice(folder / f"{k + 1}.dcm", np.full((4, 4), k, np.uint16), instance=k + 1, ipp=(-10.0 * (3 - k), 0, 0))
    s = load_series(folder)  # the normal is -x, so instance 1 (x = -30) lies furthest along it
    np.testing.assert_array_equal(s.instance_numbers, [4, 3, 2, 1])
    np.testing.assert_array_equal(s.volume[:, 0, 0], [3, 2, 1, 0])
    assert np.all(np.diff(s.slice_positions_mm) > 0)


def test_index_series_reads_headers(tmp_path):
    write_series(tmp_path / "s", n=3, SpacingBetweenSlices=4.0)
    headers = index_series(tmp_path / "s")
    assert sorted(h.instance_number for h in headers) == [1, 2, 3]
    h = headers[0]
    assert (h.rows, h.cols, h.spacing_rc, h.iop) == (12, 10, (0.5, 0.6), SAGITTAL)
    assert (h.slope, h.intercept, h.photometric) == (1.0, 0.0, "MONOCHROME2")
    assert (h.thickness_mm, h.spacing_between_mm) == (3.5, 4.0)
    assert h.description == "Sagittal T2/STIR" and h.series_uid.startswith("1.2.826")
    assert read_header(h.path) == h


def test_pixel_patient_round_trip(tmp_path):
    write_series(tmp_path / "s", iop=OBLIQUE)
    s = load_series(tmp_path / "s")
    point = s.pixel_to_patient(3, 4.5, 7.25)
    idx, col, row = s.patient_to_pixel(point)
    assert (idx, col, row) == pytest.approx((3.0, 4.5, 7.25), abs=1e-6)
    between = (s.pixel_to_patient(1, 2.0, 3.0) + s.pixel_to_patient(2, 2.0, 3.0)) / 2
    assert s.patient_to_pixel(between)[0] == pytest.approx(1.5)
    beyond = s.pixel_to_patient(5, 0.0, 0.0) + 2.0 * s.normal  # half a slice gap past the last slice
    assert s.patient_to_pixel(beyond)[0] == pytest.approx(5.5)


# ------------------------------------------------------------------------------------------ intensities

def test_rescale_slope_intercept(tmp_path):
    raw = np.arange(20, dtype=np.uint16).reshape(4, 5) * 100
    header, image = read_slice(write_slice(tmp_path / "a.dcm", raw, slope=2.5, intercept=-100))
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, raw * 2.5 - 100)
    assert (header.slope, header.intercept) == (2.5, -100.0)


def test_monochrome1_inverted_about_stored_max(tmp_path):
    raw = np.array([[0, 1, 4095], [100, 2000, 7]], np.uint16)
    _, image = read_slice(write_slice(tmp_path / "m1.dcm", raw, photometric="MONOCHROME1", bits_stored=12))
    np.testing.assert_array_equal(image, 4095.0 - raw)
    _, scaled = read_slice(write_slice(tmp_path / "m1s.dcm", raw, photometric="MONOCHROME1", bits_stored=12,
                                       slope=2.0, intercept=10.0))
    np.testing.assert_allclose(scaled, (4095 * 2.0 + 10.0) - (raw * 2.0 + 10.0))


def test_monochrome1_series_bright_is_high(tmp_path):
    write_series(tmp_path / "s", n=3, photometric="MONOCHROME1")
    s = load_series(tmp_path / "s")
    np.testing.assert_array_equal(s.volume[:, 0, 0], 65535.0 - (100 + np.arange(3)))


# ------------------------------------------------------------------------------------ transfer syntaxes

ENCODINGS = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
             "MR_small_deflate.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_padded.dcm",
             "MR_small_jpeg_ls_lossless.dcm"]


@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding")  # MR_small_padded, on purpose
def test_all_bundled_encodings_decode_to_identical_pixels():
    present = [f for f in ENCODINGS if os.path.exists(os.path.join(PYDICOM_FILES, f))]
    assert len(present) >= 5, f"pydicom test files missing from {PYDICOM_FILES}"
    _, reference = read_slice(os.path.join(PYDICOM_FILES, "MR_small.dcm"))
    assert reference.shape == (64, 64) and reference.std() > 0
    decoded = []
    for name in present:
        try:
            header, image = read_slice(os.path.join(PYDICOM_FILES, name))
        except SeriesError as e:
            # JPEG-LS needs an optional plugin; without it the error must say so, not crash.
            assert name == "MR_small_jpeg_ls_lossless.dcm" and e.reason == "undecodable", e
            assert name in str(e)
            continue
        np.testing.assert_array_equal(image, reference, err_msg=name)
        assert header.spacing_rc == (0.3125, 0.3125)
        decoded.append(name)
    assert {"MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
            "MR_small_jp2klossless.dcm"} <= set(decoded)


NATIVE = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
          "MR_small_padded.dcm", "deflated (written here)"]


@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding")
@pytest.mark.parametrize("name", NATIVE)
def test_native_fast_path_equals_pydicom_decoder(name, tmp_path):
    """The uncompressed fast path returns exactly pydicom's pixel_array (values and dtype)."""
    path = os.path.join(PYDICOM_FILES, name)
    if name.startswith("deflated"):  # this pydicom bundles no deflated MR_small: write one
        ds = pydicom.dcmread(os.path.join(PYDICOM_FILES, "MR_small.dcm"))
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        path = tmp_path / "deflated.dcm"
        ds.save_as(path, enforce_file_format=True)
    ds = pydicom.dcmread(path)
    fast = _native_pixels(ds.PixelData, read_header(path), ds.file_meta.TransferSyntaxUID)
    assert fast is not None, f"{name}: native syntax should take the fast path"
    expected = ds.pixel_array
    assert fast.dtype.kind == expected.dtype.kind and fast.dtype.itemsize == expected.dtype.itemsize
    np.testing.assert_array_equal(fast, expected)


@pytest.mark.parametrize("signed", [False, True])
def test_native_fast_path_corrects_unused_high_bits_like_pydicom(tmp_path, signed):
    """BitsStored 12 of 16 with garbage in the top 4 bits: masked (unsigned) or sign-extended (signed),
    exactly as pydicom does; a compressed file goes the general path (None)."""
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 4096, (9, 7)).astype(np.uint16)
    noisy = stored | (rng.integers(0, 16, stored.shape).astype(np.uint16) << 12)
    path = write_slice(tmp_path / "a.dcm", noisy, bits_stored=12, PixelRepresentation=int(signed))
    ds = pydicom.dcmread(path)
    fast = _native_pixels(ds.PixelData, read_header(path), ds.file_meta.TransferSyntaxUID)
    np.testing.assert_array_equal(fast, ds.pixel_array)
    assert fast.max() < 4096 and (fast.min() >= -2048 if signed else fast.min() >= 0)
    assert signed == bool((fast < 0).any())
    rle = pydicom.dcmread(os.path.join(PYDICOM_FILES, "MR_small_RLE.dcm"))
    assert _native_pixels(rle.PixelData, read_header(os.path.join(PYDICOM_FILES, "MR_small_RLE.dcm")),
                          rle.file_meta.TransferSyntaxUID) is None


# ------------------------------------------------------------------------------------------ bad inputs

def _reason(fn, *args):
    with pytest.raises(SeriesError) as info:
        fn(*args)
    return info.value


def test_series_error_is_an_input_error():
    assert issubclass(SeriesError, InputError)


def test_non_dicom_file(tmp_path):
    write_series(tmp_path / "s", n=3)
    (tmp_path / "s" / "99.dcm").write_text("not a DICOM file\n" * 20)
    e = _reason(load_series, tmp_path / "s")
    assert e.reason == "not_dicom" and "99.dcm" in str(e)
    assert _reason(index_series, tmp_path / "s").reason == "not_dicom"


def test_truncated_pixel_data(tmp_path):
    write_series(tmp_path / "s", n=3)
    path = tmp_path / "s" / "2.dcm"
    path.write_bytes(path.read_bytes()[:-30])
    e = _reason(load_series, tmp_path / "s")
    assert e.reason == "truncated" and "2.dcm" in str(e)


def test_file_cut_inside_header(tmp_path):
    path = write_slice(tmp_path / "a.dcm", np.zeros((4, 4), np.uint16))
    path.write_bytes(path.read_bytes()[:300])
    e = _reason(read_slice, path)
    assert e.reason in {"unreadable", "no_geometry", "no_instance_number", "no_pixels"} and "a.dcm" in str(e)


def test_missing_pixel_data(tmp_path):
    path = write_slice(tmp_path / "a.dcm", np.zeros((4, 4), np.uint16))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    e = _reason(read_slice, path)
    assert e.reason == "no_pixels" and "a.dcm" in str(e)
    assert read_header(path).rows == 4  # the header alone is fine


def test_undecodable_transfer_syntax(tmp_path):
    path = write_slice(tmp_path / "a.dcm", np.zeros((4, 4), np.uint16))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML  # a video syntax no pixel handler decodes
    ds.PixelData = encapsulate([b"\x00" * 32])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.save_as(path, enforce_file_format=True)
    e = _reason(read_slice, path)
    assert e.reason == "undecodable" and "a.dcm" in str(e) and "MPEG2" in str(e)


def test_missing_geometry(tmp_path):
    path = write_slice(tmp_path / "a.dcm", np.zeros((4, 4), np.uint16))
    ds = pydicom.dcmread(path)
    del ds.ImageOrientationPatient
    ds.save_as(path, enforce_file_format=True)
    e = _reason(read_header, path)
    assert e.reason == "no_geometry" and "ImageOrientationPatient" in str(e) and "a.dcm" in str(e)
    write_slice(path, np.zeros((4, 4), np.uint16), iop=(1, 0, 0, 1, 0, 0))  # parallel axes
    assert _reason(read_header, path).reason == "no_geometry"


def test_one_slice(tmp_path):
    write_series(tmp_path / "s", n=1)
    e = _reason(load_series, tmp_path / "s")
    assert e.reason == "one_slice" and "1.dcm" in str(e)


def test_duplicate_positions(tmp_path):
    folder = tmp_path / "s"
    write_series(folder, n=3)
    ds = pydicom.dcmread(folder / "1.dcm")
    ds.InstanceNumber = 4
    ds.ImagePositionPatient = [v + 1e-4 for v in ds.ImagePositionPatient]
    ds.save_as(folder / "4.dcm", enforce_file_format=True)
    e = _reason(load_series, folder)
    assert e.reason == "duplicate_positions" and "1.dcm" in str(e) and "4.dcm" in str(e)


@pytest.mark.parametrize("change", [dict(shape=(12, 11)), dict(iop=OBLIQUE), dict(spacing=(0.5, 0.7))])
def test_mixed_geometry(tmp_path, change):
    folder = tmp_path / "s"
    write_series(folder, n=3)
    shape = change.pop("shape", (12, 10))
    write_slice(folder / "9.dcm", np.zeros(shape, np.uint16), instance=9, ipp=(50.0, 0, 0), **change)
    e = _reason(load_series, folder)
    assert e.reason == "mixed_geometry" and "9.dcm" in str(e)


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert _reason(load_series, tmp_path / "empty").reason == "empty"
    assert _reason(load_series, tmp_path / "nope").reason == "empty"


def test_unknown_instance(tmp_path):
    write_series(tmp_path / "s", n=3)
    s = load_series(tmp_path / "s", series_id=5)
    e = _reason(s.spatial_index, 42)
    assert e.reason == "no_instance" and "42" in str(e)


def test_header_integers_from_raw_and_converted_elements(tmp_path):
    """US values: unpacked from the raw bytes (both byte orders), taken from converted elements, and a
    malformed multi-valued one yields its first value instead of a TypeError; absent -> None."""
    from lsdc.preprocess.series import _uint
    big = pydicom.dcmread(os.path.join(PYDICOM_FILES, "MR_small_bigendian.dcm"))
    little = pydicom.dcmread(os.path.join(PYDICOM_FILES, "MR_small.dcm"))
    assert _uint(big, 0x00280010) == _uint(little, 0x00280010) == 64  # Rows, raw bytes
    ds = Dataset()
    ds.Columns = 9
    ds.add_new(0x00280010, "US", [7, 8])
    assert _uint(ds, 0x00280011) == 9 and _uint(ds, 0x00280010) == 7 and _uint(ds, 0x00280100) is None
