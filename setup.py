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
    # JPEG (baseline/lossless) decoding via libjpeg is GPL: opt in explicitly.
    extras_require={"gpl": ["pylibjpeg-libjpeg>=2"]},
    entry_points={"console_scripts": ["lsdc=lsdc.core.cli:main"]},
)
