"""lsdc: `pip install .` keeps the torch you have (>= 2.10); `make install` installs the tested set.

Requirements are ranges, never pins: users keep their own torch (Kaggle: Python 3.12, torch 2.10 for
CUDA 12.8). The exact versions our CI tests live in constraints/ and are applied by the Makefile only.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    # The floor is the oldest pair the test suite runs on (Kaggle's torch 2.10, CUDA 12.8, on Python
    # 3.12); our 3.11 CI runs torch 2.14.1 (CUDA 13.0). No upper bound: pip keeps an installed torch.
    "torch>=2.10",
    "torchvision>=0.25",
    "timm>=1.0",
    "huggingface_hub>=0.23",  # timm's hub download; lsdc names its offline errors
    "safetensors>=0.4",  # --checkpoint_path *.safetensors
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
    "scipy>=1.11",
    "pandas>=2",
    "numba>=0.60",
    # 3.0.0-3.0.7 are yanked; 3.2+ needs Python 3.12, and zarr's own python_requires picks the release.
    "zarr>=3.0.8",
    "numcodecs>=0.14",  # Blosc codec of the store's arrays
    "scikit-learn>=1.4",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "pyarrow>=15",
    "pyyaml>=6",
]

# NVIDIA DALI: the GPU loader (and its CPU-only mode). Linux only; pick the CUDA major of your torch
# (`python -c "import torch; print(torch.version.cuda)"`). Without DALI, --backend=auto uses torch.
# Tested: 2.4 for CUDA 13 (CI, Python 3.11) and for CUDA 12 (CI and the Kaggle rehearsal, Python 3.12).
DALI_RANGE = ">=2.4,<3"
LINUX = '; platform_system == "Linux"'

EXTRAS_REQUIRE = {
    "dali-cu12": [f"nvidia-dali-cuda120{DALI_RANGE}{LINUX}"],
    "dali-cu13": [f"nvidia-dali-cuda130{DALI_RANGE}{LINUX}"],
    "test": ["pytest>=8"],
    # libjpeg (GPL, opt in explicitly) is only needed for 12-bit JPEG Extended (1.2.840.10008.1.2.4.51
    # with BitsStored > 8), which neither GDCM (as pydicom uses it) nor Pillow decodes.
    "gpl": ["pylibjpeg-libjpeg>=2.1"],
}

setup(
    name="lsdc",
    version="0.1.0",
    description="Lumbar spine degenerative classification (RSNA 2024): DICOM -> Zarr -> DALI -> BiGRU-MIL -> submission",
    python_requires=">=3.11",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
    packages=find_packages(include=["lsdc", "lsdc.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["lsdc=lsdc.core.cli:main"]},
)
