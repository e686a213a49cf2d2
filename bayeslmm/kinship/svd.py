"""The thin SVD of a tall marker matrix, in memory or on Dask.

The SNP-space path needs the left singular vectors and singular values of the scaled,
centred marker matrix W (n × p, p < n), never the n × n kinship W Wᵀ. For a NumPy array
this is LAPACK's thin SVD; for a Dask array it is the tall-and-skinny QR (Benson, Gleich
and Demmel 2013; :func:`dask.array.linalg.tsqr`), which factors each block of rows on its
own worker and combines the small R factors, so a matrix larger than one machine's memory
is never gathered in one place, and the same code runs on a ``dask.distributed`` cluster.

References
----------
Benson, A. R., Gleich, D. F. and Demmel, J. (2013). Direct QR factorizations for tall-and-
skinny matrices in MapReduce architectures. IEEE BigData, 264–272.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bayeslmm.kinship._kinship import root_tolerance


def _is_dask(values: Any) -> bool:
    return type(values).__module__.split(".")[0] == "dask"


def thin_svd(markers: Any, tol: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The thin SVD W = U diag(s) Vᵀ of a tall matrix, small singular values dropped.

    Parameters
    ----------
    markers : ndarray or dask.array.Array, shape (n, p)
        The scaled, centred markers W (:func:`~bayeslmm.kinship.snp_factor`), n ≥ p.
    tol : float, optional
        Singular values with s² ≤ ``tol`` · s²_max are dropped (rank deficiency: a centred
        W has rank at most n − 1, a marker repeated exactly adds nothing). Default
        :func:`~bayeslmm.kinship._kinship.root_tolerance` (n ε), the tolerance every kinship
        root uses.

    Returns
    -------
    (U, s, V)
        U, shape (n, r), and V, shape (p, r), orthonormal columns; s, shape (r,), descending
        singular values, so W Wᵀ = U diag(s²) Uᵀ up to the dropped part. NumPy arrays for
        either input (a Dask input's are computed together, in one pass over its blocks).

    Raises
    ------
    ValueError
        When the matrix is wider than tall (use the kinship itself: it is the smaller side).

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(1).normal(size=(40, 6))
    >>> U, s, V = thin_svd(W)
    >>> bool(np.allclose((U * s**2) @ U.T, W @ W.T))
    True
    """
    n, p = markers.shape
    if p > n:
        raise ValueError(
            f"thin_svd needs a tall matrix (n ≥ p); got n = {n} individuals and p = {p} "
            "markers. With more markers than individuals the n × n kinship is the smaller "
            "side: use bl.grm(...) (the dense path)."
        )
    if _is_dask(markers):
        import dask
        import dask.array as da

        # tsqr wants one block of columns; rows stay in the caller's chunks
        tall = markers.rechunk({1: -1}).astype(float)
        u, s, vt = dask.compute(*da.linalg.tsqr(tall, compute_svd=True))
        u, s, vt = np.asarray(u), np.asarray(s), np.asarray(vt)
    else:
        u, s, vt = np.linalg.svd(np.asarray(markers, dtype=float), full_matrices=False)
    tol = root_tolerance(n) if tol is None else float(tol)
    keep = s**2 > tol * (float(s[0]) ** 2 if s.size else 0.0)
    if s.size and float(s[0]) == 0.0:
        keep[:] = False
    order = np.argsort(-s[keep], kind="stable")
    index = np.flatnonzero(keep)[order]
    return u[:, index], s[index], vt[index].T
