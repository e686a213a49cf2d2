"""The two ways to hand a closed-form density to nutpie: Python callbacks or C callbacks.

Every closed form (the GLMM densities, the pedigree density, the multi-trait density) is an
object with ``logp(x) -> (value, gradient)``, ``expand(x[, rng])`` returning the model's named
variables, ``initial_point(seed)`` and ``ndim``. nutpie's ``from_pyfunc`` wants them as
factories plus the names, shapes, dims and coordinates of what ``expand`` returns; this
module builds that call once (:func:`pyfunc_model`), so the densities declare only their
dims. The closed forms that also exist as numba C callbacks (the spectral Gaussian
posterior, the one-term GLMM) hand nutpie's Rust sampler the function pointers and a data
buffer instead, through :func:`c_model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def pyfunc_model(
    density: Any,
    dims_of: Mapping[str, Sequence[str]],
    coords: Mapping[str, Any],
    seeded_expand: bool,
) -> Any:
    """A nutpie model (``nutpie.sample`` accepts it) that calls ``density`` from Python.

    Parameters
    ----------
    density : object
        With ``logp``, ``expand``, ``initial_point`` and ``ndim`` (see the module notes).
    dims_of : mapping
        Variable name → its dims, for the variables ``expand`` may return (names it does
        not return are ignored; names without dims are stored without).
    coords : mapping
        Dim → its labels (only the dims in use are passed on).
    seeded_expand : bool
        ``expand(x, rng)`` draws something (β, the effects) with a generator seeded per
        chain by nutpie's seeds; otherwise ``expand(x)`` is deterministic.

    Returns
    -------
    nutpie model

    Examples
    --------
    >>> # pyfunc_model(density, {"beta": ("fixed",)}, {"fixed": ["x"]}, seeded_expand=True)
    """
    from nutpie.compiled_pyfunc import from_pyfunc

    start = density.initial_point(0)
    sample = (
        density.expand(start, np.random.default_rng(0))
        if seeded_expand
        else (density.expand(start))
    )
    names = list(sample)
    dims = {name: tuple(dims_of[name]) for name in names if name in dims_of}
    used = {d for dd in dims.values() for d in dd}

    def make_expand(seed1: int, seed2: int, chain: int):
        if not seeded_expand:
            return density.expand
        rng = np.random.default_rng([seed1, seed2, chain])
        return lambda x: density.expand(x, rng)

    return from_pyfunc(
        ndim=density.ndim,
        make_logp_fn=lambda: density.logp,
        make_expand_fn=make_expand,
        expanded_dtypes=[np.dtype("float64")] * len(names),
        expanded_shapes=[np.shape(sample[name]) for name in names],
        expanded_names=names,
        coords={d: pd.Index(coords[d]) for d in used if d in coords},
        dims=dims,
        make_initial_point_fn=density.initial_point,
    )


def c_model(
    *,
    ndim: int,
    callbacks: tuple[Any, Any],
    buffer: np.ndarray,
    layout: Mapping[str, tuple[int, ...]],
    initial_point: Any,
    dims_of: Mapping[str, Sequence[str]],
    coords: Mapping[str, Any],
) -> Any:
    """nutpie's numba-backend model around compiled C callbacks, or None where this nutpie
    has no such class (the caller then falls back to :func:`pyfunc_model`).

    Parameters
    ----------
    ndim : int
        Dimension of the sampled coordinates.
    callbacks : (logp, expand)
        numba cfuncs with nutpie's C signatures (see
        :func:`~bayeslmm.engines.bayes.spectral_density.nutpie_cfuncs`).
    buffer : ndarray
        The float64 "user data" both callbacks read.
    layout : mapping
        Name → shape of each variable the expand callback writes, in its order (their sizes
        add up to the number of expanded values).
    initial_point : callable
        ``initial_point(seed)`` → a starting point.
    dims_of, coords : mapping
        As for :func:`pyfunc_model`.

    Returns
    -------
    nutpie model or None

    Examples
    --------
    >>> # c_model(ndim=2, callbacks=c_callbacks(), buffer=buf, layout={"h2": ()},
    >>> #         initial_point=density.initial_point, dims_of={}, coords={})
    """
    try:
        from nutpie.compile_pymc import CompiledPyMCModel
    except ImportError:  # pragma: no cover - nutpie without its PyMC backend module
        return None
    names = list(layout)
    shapes = [tuple(layout[name]) for name in names]
    dims = {name: tuple(dims_of[name]) for name in names if name in dims_of}
    used = {d for dd in dims.values() for d in dd}
    logp, expand = callbacks
    try:
        return CompiledPyMCModel(
            _n_dim=ndim,
            dims=dims,
            _coords={d: pd.Index(coords[d]) for d in used if d in coords},
            _shapes=dict(zip(names, shapes, strict=True)),
            compiled_logp_func=logp,
            compiled_expand_func=expand,
            initial_point_func=initial_point,
            shared_data={},
            user_data=buffer,
            n_expanded=int(sum(int(np.prod(shape)) for shape in shapes)),
            shape_info=(names, None, shapes),
            logp_func=None,
            expand_func=None,
        )
    except TypeError:  # pragma: no cover - another nutpie's field names
        return None
