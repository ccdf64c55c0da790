"""Numba settings that must be in force before any lsdc kernel compiles; imported first by kernels.py.

Why: pip's numba defaults to the OpenMP threading layer, and GNU OpenMP aborts a forked child once the
parent has run a parallel kernel (the converter and loaders fork worker processes). The ``workqueue``
layer is fork-safe. It is not thread-safe: call the parallel kernels from one thread per process.
A user's explicit ``NUMBA_THREADING_LAYER`` is respected.

The on-disk kernel cache goes next to the sources; where that folder is read-only (site-packages,
containers) and ``NUMBA_CACHE_DIR`` is unset, it goes to a user cache folder instead.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numba
from numba.np.ufunc import parallel as _parallel

FORK_SAFE_LAYER = "workqueue"


def _writable_cache_dir() -> str:
    for base in (Path.home() / ".cache", Path(tempfile.gettempdir())):
        path = base / "lsdc" / "numba"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return str(path)
    return ""


def configure() -> None:
    if "NUMBA_THREADING_LAYER" not in os.environ:
        if _parallel._is_initialized and numba.threading_layer() != FORK_SAFE_LAYER:
            # Too late to switch: some other code ran a parallel kernel first.
            warnings.warn(f"numba threading layer is already {numba.threading_layer()!r}; "
                          "forked workers may abort after a parallel kernel ran", RuntimeWarning)
        else:
            numba.config.THREADING_LAYER = FORK_SAFE_LAYER
    if not os.environ.get("NUMBA_CACHE_DIR") and not os.access(Path(__file__).parent, os.W_OK):
        numba.config.CACHE_DIR = _writable_cache_dir()


configure()
