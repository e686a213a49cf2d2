"""One way to compile the package's numba kernels: into numba's on-disk cache, without the GIL.

Every numba kernel in the package (the spectral and GLMM closed forms, the sparse-pedigree
recursions, the multi-trait Gaussian likelihood) is compiled through :func:`cached_jit`, so
that a fresh process loads them from the cache (``__pycache__`` beside the module, or the
user's cache directory) in hundredths of a second instead of compiling them again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba


def cached_jit(func: Callable | None = None, *, error_model: str = "python") -> Any:
    """``numba.njit(cache=True, nogil=True)``, compiled once per process where no cache
    directory is writable (numba refuses to cache then).

    ``nogil``: chains sampled in parallel threads run the kernels at the same time.
    ``error_model="numpy"``: a division by zero gives inf/nan instead of raising, for
    kernels behind C callbacks (a cfunc cannot raise; the non-finite value is reported to
    the sampler as a rejected point). Use it bare (``@cached_jit``) or with options
    (``@cached_jit(error_model="numpy")``).

    Examples
    --------
    >>> @cached_jit
    ... def twice(x):
    ...     return 2.0 * x
    >>> twice(1.5)
    3.0
    """
    options: dict[str, Any] = {"nogil": True, "error_model": error_model}

    def compile_(f: Callable) -> Callable:
        try:
            return numba.njit(cache=True, **options)(f)
        except RuntimeError:  # pragma: no cover - no writable cache directory
            return numba.njit(**options)(f)

    return compile_ if func is None else compile_(func)
