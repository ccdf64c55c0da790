"""DICOM series reading: spatial sort, rescale, MONOCHROME1, transfer-syntax invariance, every bad input."""
from __future__ import annotations

import os

import numpy as np
import pydicom
import pydicom.data
import pytest
from dicom_files import OBLIQUE, SAGITTAL, write_series, write_slice
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, DeflatedExplicitVRLittleEndian

from lsdc.core.errors import InputError
from lsdc.core.geometry import slice_normal
from lsdc.preprocess.series import SeriesError, _native_pixels, index_series, load_series, read_header, read_slice

PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")  # bundled: no download


# ------------------------------------------------------------------------------------------- sorting

@pytest.mark.parametrize("iop", [SAGITTAL, OBLIQUE])
def test_slices_sorted_by_position_not_instance_number(tmp_path, iop):
    instances = write_series(tmp_path / "s", iop=iop, seed=3)
    s = load_series(tmp_path / "s", study_id=7, series_id=8)
    assert (s.study_id, s.series_id) == (7, 8) and len(s.stacks) == 1 and s.n_slices == 6
    st = s.stacks[0]
    assert (st.series_id, st.index) == (8, 0)
    assert st.volume.shape == (6, 12, 10) and st.volume.dtype == np.float32
    np.testing.assert_array_equal(st.volume[:, 0, 0], 100 + np.arange(6))
    np.testing.assert_array_equal(st.instance_numbers, instances)
    assert np.all(np.diff(st.z_mm) > 0)
    np.testing.assert_allclose(np.diff(st.z_mm), 4.0, atol=1e-4)
    assert st.slice_spacing_mm == pytest.approx(4.0, abs=1e-4)
    np.testing.assert_allclose(st.normal, slice_normal(iop))
    assert st.spacing_rc == (0.5, 0.6) and (st.rows, st.cols) == (12, 10)
    assert [p.name for p in st.files] == [f"{i}.dcm" for i in instances]
    for k, inst in enumerate(instances):
        assert s.find(inst) == (st, k)


def test_instance_order_against_the_normal_is_reversed(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    for k in range(4):  # instance 1 is the highest position along the normal
        write_slice(folder / f"{k + 1}.dcm", np.full((4, 4), k, np.uint16), instance=k + 1, ipp=(-10.0 * (3 - k), 0, 0))
    st = load_series(folder).stacks[0]  # the normal is -x, so instance 1 (x = -30) lies furthest along it
    np.testing.assert_array_equal(st.instance_numbers, [4, 3, 2, 1])
    np.testing.assert_array_equal(st.volume[:, 0, 0], [3, 2, 1, 0])
    assert np.all(np.diff(st.z_mm) > 0)


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
    s = load_series(tmp_path / "s").stacks[0]
    point = s.pixel_to_patient(3, 4.5, 7.25)
    idx, col, row = s.locate(point)
    assert (idx, col, row) == pytest.approx((3.0, 4.5, 7.25), abs=1e-6)
    between = (s.pixel_to_patient(1, 2.0, 3.0) + s.pixel_to_patient(2, 2.0, 3.0)) / 2
    assert s.locate(between)[0] == pytest.approx(1.5)
    beyond = s.pixel_to_patient(5, 0.0, 0.0) + 2.0 * s.normal  # half a slice gap past the last slice
    assert s.locate(beyond)[0] == pytest.approx(5.5)


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
    st = load_series(tmp_path / "s").stacks[0]
    np.testing.assert_array_equal(st.volume[:, 0, 0], 65535.0 - (100 + np.arange(3)))


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
    for name in present:  # JPEG-LS included: CharLS and GDCM are plain dependencies
        header, image = read_slice(os.path.join(PYDICOM_FILES, name))
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
    s = load_series(tmp_path / "s")  # the file drops out with its reason; the series stays
    assert s.n_slices == 3 and [(d.path.name, d.reason, d.instance_number) for d in s.dropped] == [("99.dcm", "not_dicom", 99)]
    assert "99.dcm" in s.dropped[0].detail
    assert _reason(s.find, 99).reason == "not_dicom"  # a label on it: skipped with the file's own reason
    assert _reason(index_series, tmp_path / "s").reason == "not_dicom"
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "1.dcm").write_text("not a DICOM file\n" * 20)
    assert _reason(load_series, tmp_path / "t").reason == "not_dicom"  # nothing readable: the series fails


def test_truncated_pixel_data(tmp_path):
    write_series(tmp_path / "s", n=3)
    path = tmp_path / "s" / "2.dcm"
    path.write_bytes(path.read_bytes()[:-30])
    s = load_series(tmp_path / "s")
    assert [(d.reason, d.instance_number) for d in s.dropped] == [("truncated", 2)] and "2.dcm" in s.dropped[0].detail
    assert s.n_slices == 2 and all(2 not in st.instance_numbers for st in s.stacks)
    e = _reason(s.find, 2)
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
    s = load_series(tmp_path / "s")
    assert len(s.stacks) == 1 and s.stacks[0].n_slices == 1 and not s.stacks[0].usable


def _repeat(folder, source: str, instance: int):
    """Copy ``source`` as another instance at the same position (a repeated acquisition)."""
    ds = pydicom.dcmread(folder / source)
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [v + 1e-4 for v in ds.ImagePositionPatient]
    ds.PixelData = (np.frombuffer(ds.PixelData, "<u2") + 1000).astype("<u2").tobytes()
    ds.save_as(folder / f"{instance}.dcm", enforce_file_format=True)


def test_duplicate_position_collapses_to_the_higher_instance(tmp_path):
    folder = tmp_path / "s"
    instances = write_series(folder, n=3)
    first = int(instances[0])  # spatial slice 0
    _repeat(folder, f"{first}.dcm", 4)
    s = load_series(folder)
    assert len(s.stacks) == 1 and s.n_slices == 3 and s.collapsed == {first: 4}
    st = s.stacks[0]
    assert st.instance_numbers[0] == 4 and st.volume[0, 0, 0] == 1100  # the copy's pixels
    assert s.find(first) == (st, 0)  # a label on the dropped copy resolves to the kept one


def test_duplicate_position_keeps_the_labelled_instance(tmp_path):
    folder = tmp_path / "s"
    instances = write_series(folder, n=3)
    first = int(instances[0])
    _repeat(folder, f"{first}.dcm", 4)
    s = load_series(folder, keep_instances=[first])
    assert s.collapsed == {4: first} and s.stacks[0].instance_numbers[0] == first
    assert s.stacks[0].volume[0, 0, 0] == 100


@pytest.mark.parametrize("change", [dict(shape=(12, 11)), dict(iop=OBLIQUE), dict(spacing=(0.5, 0.7))])
def test_other_geometry_is_its_own_stack(tmp_path, change):
    folder = tmp_path / "s"
    write_series(folder, n=3)
    shape = change.pop("shape", (12, 10))
    write_slice(folder / "9.dcm", np.zeros(shape, np.uint16), instance=9, ipp=(50.0, 0, 0), **change)
    write_slice(folder / "8.dcm", np.zeros(shape, np.uint16), instance=8, ipp=(46.0, 0, 0), **change)
    s = load_series(folder)
    assert [st.n_slices for st in s.stacks] in ([3, 2], [2, 3]) and not s.dropped
    main = next(st for st in s.stacks if st.n_slices == 3)
    odd = next(st for st in s.stacks if st.n_slices == 2)
    assert sorted(main.instance_numbers) == [1, 2, 3] and sorted(odd.instance_numbers) == [8, 9]
    assert odd.volume.shape[1:] == shape and main.volume.shape[1:] == (12, 10)
    assert [st.index for st in s.stacks] == [0, 1]


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert _reason(load_series, tmp_path / "empty").reason == "empty"
    assert _reason(load_series, tmp_path / "nope").reason == "empty"


def test_unknown_instance(tmp_path):
    write_series(tmp_path / "s", n=3)
    s = load_series(tmp_path / "s", series_id=5)
    e = _reason(s.find, 42)
    assert e.reason == "instance_not_in_series" and "42" in str(e)


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
