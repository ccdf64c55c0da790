"""Compressed transfer syntaxes that clinical MR exports use decode with a plain install (no GPL code).

A plain install brings pyjpegls (CharLS) and python-gdcm as pydicom decoder plugins; the GPL
``pylibjpeg-libjpeg`` stays the opt-in ``lsdc[gpl]`` extra, only needed for 12-bit JPEG Extended.
pydicom bundles no grey JPEG baseline / lossless file, so those are made here from ``MR_small.dcm``
with GDCM's encoder (a plain dependency now); every file goes through lsdc's own ``read_slice``.
"""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.pixels.decoders.base import get_decoder

from lsdc.preprocess.series import SeriesError, load_series, read_header, read_slice

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # bundled: no download
SETUP_PY = Path(__file__).resolve().parents[1] / "setup.py"
HAS_LIBJPEG = importlib.util.find_spec("libjpeg") is not None  # the GPL extra, `pip install lsdc[gpl]`

# The syntaxes a plain install must decode, and a plugin that is not GPL for each (measured with
# pydicom 3.0: gdcm is first in pydicom's order for all JPEG family syntaxes, pyjpegls backs it up
# for JPEG-LS, pylibjpeg-openjpeg / pylibjpeg-rle for JPEG 2000 / RLE).
PLAIN = {
    uid.JPEGBaseline8Bit: "gdcm",
    uid.JPEGExtended12Bit: "gdcm",  # 8-bit samples only; 12-bit needs the gpl extra
    uid.JPEGLossless: "gdcm",
    uid.JPEGLosslessSV1: "gdcm",
    uid.JPEGLSLossless: "pyjpegls",
    uid.JPEGLSNearLossless: "pyjpegls",
    uid.JPEG2000Lossless: "pylibjpeg",
    uid.JPEG2000: "pylibjpeg",
    uid.RLELossless: "pydicom",
}
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _intensities(path) -> np.ndarray:
    """pydicom's own decode of the file, rescaled as lsdc does (float32 raw * slope + intercept)."""
    ds = pydicom.dcmread(path)
    out = ds.pixel_array.astype(np.float32)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1.0 or intercept != 0.0:
        out *= np.float32(slope)
        out += np.float32(intercept)
    return out


def _with_geometry(src, dst, *, instance=1, ipp=(0.0, 0.0, 0.0), intercept=None) -> Path:
    """A copy of ``src`` with the tags lsdc needs added where missing (IPP, IOP, PixelSpacing,
    InstanceNumber), the compressed PixelData kept byte for byte."""
    ds = pydicom.dcmread(src)
    pixel_data = ds.PixelData
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.InstanceNumber = instance
    if "ImageOrientationPatient" not in ds:
        ds.ImageOrientationPatient = list(AXIAL)
    if "PixelSpacing" not in ds:
        ds.PixelSpacing = [0.5, 0.5]
    if intercept is not None:
        ds.RescaleSlope, ds.RescaleIntercept = 1, intercept
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    assert pydicom.dcmread(dst).PixelData == pixel_data
    return dst


def _gdcm_transcode(src: Path, dst: Path, syntax) -> Path:
    import gdcm
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read(), src
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(syntax))
    change.SetInput(reader.GetImage())
    assert change.Change(), (src, syntax)
    writer = gdcm.ImageWriter()
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    writer.SetFileName(str(dst))
    assert writer.Write(), dst
    return dst


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Grey single-frame MR files in the syntaxes pydicom bundles no grey example of, encoded by
    GDCM from MR_small.dcm (16-bit signed) or an 8-bit rescale of it (JPEG baseline/extended)."""
    import gdcm
    base = tmp_path_factory.mktemp("codecs")
    src = PYDICOM_FILES / "MR_small.dcm"
    ds = pydicom.dcmread(src)
    a = ds.pixel_array.astype(np.float64)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.round((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8).tobytes()
    ds.save_as(base / "mr8.dcm")
    ts = gdcm.TransferSyntax
    return {
        "original16": src, "original8": base / "mr8.dcm",
        uid.JPEGLossless: _gdcm_transcode(src, base / "p14.dcm", ts.JPEGLosslessProcess14),
        uid.JPEGLosslessSV1: _gdcm_transcode(src, base / "sv1.dcm", ts.JPEGLosslessProcess14_1),
        uid.JPEGBaseline8Bit: _gdcm_transcode(base / "mr8.dcm", base / "base8.dcm", ts.JPEGBaselineProcess1),
        uid.JPEGExtended12Bit: _gdcm_transcode(base / "mr8.dcm", base / "ext8.dcm", ts.JPEGExtendedProcess2_4),
    }


# ------------------------------------------------------------------------------------- what is declared
def test_setup_declares_bsd_decoders_and_keeps_libjpeg_optional():
    tree = ast.parse(SETUP_PY.read_text())
    assign = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "INSTALL_REQUIRES")
    names = {ast.literal_eval(e).split(">")[0].split("=")[0].split("<")[0] for e in assign.value.elts}
    assert {"pyjpegls", "python-gdcm", "pydicom"} <= names
    assert "pylibjpeg-libjpeg" not in names  # GPL: only through extras_require["gpl"]
    assert '"gpl": ["pylibjpeg-libjpeg' in SETUP_PY.read_text()


@pytest.mark.parametrize("syntax", list(PLAIN), ids=lambda s: s.keyword)
def test_plain_install_has_a_non_gpl_decoder(syntax):
    decoder = get_decoder(syntax)
    assert PLAIN[syntax] in decoder.available_plugins, (syntax.name, decoder.available_plugins)
    if syntax in uid.JPEGTransferSyntaxes or syntax in uid.JPEGLSTransferSyntaxes:
        # for these, pydicom's "pylibjpeg" plugin means libjpeg (GPL): something else must be there
        assert set(decoder.available_plugins) - {"pylibjpeg"}


# ----------------------------------------------------------------------------------------- lossless
LOSSLESS_BUNDLED = ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"]


@pytest.mark.parametrize("name", LOSSLESS_BUNDLED)
def test_bundled_lossless_mr_decodes_exactly(name):
    path = PYDICOM_FILES / name
    header, image = read_slice(path)
    assert image.dtype == np.float32 and image.shape == (header.rows, header.cols) == (64, 64)
    np.testing.assert_array_equal(image, _intensities(path))
    np.testing.assert_array_equal(image, read_slice(PYDICOM_FILES / "MR_small.dcm")[1])  # truly lossless


@pytest.mark.parametrize("syntax", [uid.JPEGLossless, uid.JPEGLosslessSV1], ids=lambda s: s.keyword)
def test_jpeg_lossless_mr_decodes_exactly(made, syntax):
    path = made[syntax]
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    header, image = read_slice(path)
    assert header.bits_stored == 16 and header.signed and image.shape == (64, 64)
    np.testing.assert_array_equal(image, _intensities(path))
    np.testing.assert_array_equal(image, read_slice(made["original16"])[1])


# ------------------------------------------------------------------------------ near-lossless / lossy
@pytest.mark.parametrize("name,bits", [("JPEGLSNearLossless_08.dcm", 8), ("JPEGLSNearLossless_16.dcm", 16)])
def test_jpeg_ls_near_lossless_grey_decodes(tmp_path, name, bits):
    path = _with_geometry(PYDICOM_FILES / name, tmp_path / name)  # the bundled files carry no geometry
    header, image = read_slice(path)
    assert header.bits_stored == bits and image.shape == (header.rows, header.cols) and image.std() > 0
    np.testing.assert_array_equal(image, _intensities(path))


@pytest.mark.parametrize("syntax", [uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit], ids=lambda s: s.keyword)
def test_jpeg_lossy_8bit_grey_decodes(made, syntax):
    path = made[syntax]
    header, image = read_slice(path)
    assert header.bits_stored == 8 and image.shape == (64, 64)
    np.testing.assert_array_equal(image, _intensities(path))
    original = read_slice(made["original8"])[1]
    assert np.abs(image - original).max() <= 4  # lossy, but close to what was encoded


def test_jpeg_extended_12bit_needs_the_gpl_extra(tmp_path):
    """JPGExtended.dcm (12-bit JPEG Extended, NEMA NM1_JPLY): pydicom's GDCM plugin and Pillow both
    refuse 12-bit samples; only pylibjpeg-libjpeg (`pip install lsdc[gpl]`) decodes it."""
    path = _with_geometry(PYDICOM_FILES / "JPGExtended.dcm", tmp_path / "a.dcm")
    if HAS_LIBJPEG:
        header, image = read_slice(path)
        assert header.bits_stored == 12 and image.shape == (1024, 256)
        np.testing.assert_array_equal(image, _intensities(path))
    else:
        with pytest.raises(SeriesError) as info:
            read_slice(path)
        assert info.value.reason == "undecodable" and "JPEG Extended" in str(info.value) and "a.dcm" in str(info.value)


def test_corrupt_jpeg_stream_is_undecodable_not_a_crash(tmp_path):
    """JPEG-lossy.dcm has a malformed JPEG stream (pydicom ships JPGExtended.dcm as its fixed
    version): no decoder reads it, with or without the gpl extra."""
    path = _with_geometry(PYDICOM_FILES / "JPEG-lossy.dcm", tmp_path / "b.dcm")
    with pytest.raises(SeriesError) as info:
        read_slice(path)
    assert info.value.reason == "undecodable" and "b.dcm" in str(info.value)


# ------------------------------------------------------------------------------------------- colour
COLOUR = ["SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless SV1, RGB
          "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG baseline, YBR_FULL_422
          "SC_rgb_jls_lossy_line.dcm"]  # JPEG-LS near-lossless, RGB


@pytest.mark.parametrize("name", COLOUR)
def test_colour_compressed_file_is_not_2d(tmp_path, name):
    path = _with_geometry(PYDICOM_FILES / name, tmp_path / "c.dcm")
    assert read_header(path).samples_per_pixel == 3
    assert pydicom.dcmread(path).pixel_array.ndim == 3  # decodable: the refusal is lsdc's, not the codec's
    with pytest.raises(SeriesError) as info:
        read_slice(path)
    assert info.value.reason == "not_2d" and "c.dcm" in str(info.value)


# --------------------------------------------------------------------------------------- end to end
def _stack(series):
    """The series' one volume (works with and without the stack split of load_series)."""
    if hasattr(series, "stacks"):
        assert len(series.stacks) == 1 and not getattr(series, "dropped", [])
        return series.stacks[0]
    return series


@pytest.mark.parametrize("source", ["MR_small_jpeg_ls_lossless.dcm", uid.JPEGLosslessSV1],
                         ids=["JPEGLSLossless", "JPEGLosslessSV1"])
def test_load_series_of_compressed_slices(made, tmp_path, source):
    """3 copies of one compressed slice moved 4 mm apart along the normal (file names in another
    order than the positions), told apart by their RescaleIntercept: one volume in spatial order."""
    src = made[source] if source in made else PYDICOM_FILES / source
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    syntax = ds.file_meta.TransferSyntaxUID
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    origin = np.array([float(v) for v in ds.ImagePositionPatient])
    folder = tmp_path / "series"
    instances = [3, 1, 2]  # instance at spatial rank k
    for k, inst in enumerate(instances):
        _with_geometry(src, folder / f"{inst}.dcm", instance=inst, ipp=origin + 4.0 * k * normal,
                       intercept=1000 * k)
    assert {pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
            for p in folder.glob("*.dcm")} == {syntax}
    base = read_slice(PYDICOM_FILES / "MR_small.dcm")[1]
    st = _stack(load_series(folder))
    assert st.volume.shape == (3, 64, 64) and st.volume.dtype == np.float32
    assert list(st.instance_numbers) == instances
    for k in range(3):
        np.testing.assert_array_equal(st.volume[k], base + 1000 * k)
    assert st.slice_spacing_mm == pytest.approx(4.0)

