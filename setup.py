"""lsdc: install with `pip install -e .` (the Makefile does this into .venv)."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    # torch 2.14.1 is a CUDA 13.0 build (runs on CPU too); torchvision must match it exactly.
    "torch==2.14.1",
    "torchvision==0.29.1",
    "nvidia-dali-cuda130",  # GPU pipeline; CPU-only mode (device_id=None) where there is no GPU
    "timm>=1.0",
    "pydicom>=3,<4",
    "pylibjpeg>=2",
    "pylibjpeg-openjpeg>=2",  # JPEG 2000
    "pylibjpeg-rle>=2",  # RLE Lossless
    # JPEG-LS (lossless, near-lossless) and JPEG (baseline, 8-bit extended, lossless process 14 and
    # SV1), as clinical MR exports use them, decode with a plain install and no GPL code: both are
    # pydicom 3 decoder plugins under permissive licences. CharLS also takes the JPEG-LS cases that
    # pydicom's GDCM plugin refuses (6/7-bit samples, signed near-lossless under 8 bits).
    "pyjpegls>=1.2",  # CharLS (BSD-3) in an MIT wrapper: JPEG-LS
    "python-gdcm>=3.0.10",  # GDCM (BSD-3), Apache-2.0 wheel: JPEG baseline/extended/lossless, JPEG-LS, J2K
    "numpy>=1.26,<3",
    "pandas>=2",
    "numba>=0.60",
    "zarr>=3,<3.2",  # 3.2+ needs Python 3.12
    "scikit-learn>=1.4",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "pyarrow>=15",
    "pyyaml>=6",
    "pytest>=8",
]

setup(
    name="lsdc",
    version="0.1.0",
    description="Lumbar spine degenerative classification (RSNA 2024): DICOM -> Zarr -> DALI -> BiGRU-MIL -> submission",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["lsdc", "lsdc.*"]),
    install_requires=INSTALL_REQUIRES,
    # libjpeg (GPL, opt in explicitly) is only needed for 12-bit JPEG Extended (1.2.840.10008.1.2.4.51
    # with BitsStored > 8), which neither GDCM (as pydicom uses it) nor Pillow decodes.
    extras_require={"gpl": ["pylibjpeg-libjpeg>=2.1"]},
    entry_points={"console_scripts": ["lsdc=lsdc.core.cli:main"]},
)
