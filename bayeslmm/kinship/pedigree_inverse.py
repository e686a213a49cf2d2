"""The inverse relationship matrix A⁻¹ of a pedigree, built sparse, without ever forming A.

Every animal's additive value is the mean of its parents' plus a Mendelian-sampling term
(Quaas 1976; Mrode 2005, chapter 2):

    a_i = ½ a_sire + ½ a_dam + m_i,    m_i ~ N(0, d_i σ_a²),

with an unknown parent's term left out. In matrix form a = P a + m, so
a = L m with L = (I − P)⁻¹, and

    A = L D Lᵀ,    A⁻¹ = (I − P)ᵀ D⁻¹ (I − P),

where I − P has 1 on the diagonal and −½ at (animal, parent): Henderson's (1976) rules are
this product written out. The Mendelian-sampling variances are

    d_i = ½ − ¼ (F_sire + F_dam)   both parents known,
    d_i = ¾ − ¼ F_parent          one parent known,
    d_i = 1                        none,

so A⁻¹ needs the inbreeding coefficients F of the parents only. F_i = Σ_j L_ij² d_j − 1
(the diagonal of L D Lᵀ) is computed generation by generation: row i of L is
e_i + ½ (row of the sire) + ½ (row of the dam), so the rows of one generation are one
sparse product with the rows of their parents (the vectorised form of Meuwissen & Luo
1992: each animal's ancestors with their contributions). Only the rows of animals that
still have offspring to come are kept. Work and memory grow with the number of ancestors
per animal (about 2^generations in a random-mating population, bounded by the pedigree's
size), never with n².
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse import linalg as spla

from bayeslmm.errors import KinshipError, preview
from bayeslmm.kinship._kinship import Kinship
from bayeslmm.kinship._pedigree_table import _complete, _order_parents_first

__all__ = [
    "DENSE_PEDIGREE_LIMIT",
    "PedigreeDensifyWarning",
    "SparsePedigreeKinship",
    "mendelian_decomposition",
    "pedigree_inverse",
]

#: Largest pedigree (animals, ancestors included) whose dense A an engine may form from a
#: :class:`SparsePedigreeKinship` (with a :class:`PedigreeDensifyWarning`); larger ones
#: raise and point to ``method="reml"``.
DENSE_PEDIGREE_LIMIT = 5000


class PedigreeDensifyWarning(UserWarning):
    """An engine asked a sparse pedigree kinship for its dense n × n relationship matrix."""


def _coded(pedigree: pd.DataFrame, columns: tuple[str, str, str]):
    """Ids (added founders first), sire and dam positions (−1 unknown), generation depth.

    Validation (missing columns, duplicated ids, an animal its own parent, cycles) is the
    dense constructor's, so both paths refuse the same pedigrees with the same messages.
    """
    ids, sires, dams = _complete(pedigree, columns)
    order = _order_parents_first(ids, sires, dams)
    pos = {i: k for k, i in enumerate(ids)}
    sire = np.fromiter((-1 if s is None else pos[s] for s in sires), dtype=np.int64)
    dam = np.fromiter((-1 if d is None else pos[d] for d in dams), dtype=np.int64)
    # depth = 1 + the deeper parent's depth (founders 0): every parent of a depth-g animal
    # lies at depth < g, so one generation's rows of L need only rows already computed
    depth = np.zeros(len(ids), dtype=np.int64)
    for k in order:
        s, d = sire[k], dam[k]
        if s >= 0 or d >= 0:
            depth[k] = 1 + max(depth[s] if s >= 0 else -1, depth[d] if d >= 0 else -1)
    return ids, sire, dam, depth


def _mendelian_variances(sire: np.ndarray, dam: np.ndarray, F: np.ndarray) -> np.ndarray:
    """d_i from the parents' inbreeding (an unknown parent counts as F = −1: it then adds
    ¼ to d, which turns ½ into ¾ and ¾ into 1)."""
    fs = np.where(sire >= 0, F[np.maximum(sire, 0)], -1.0)
    fd = np.where(dam >= 0, F[np.maximum(dam, 0)], -1.0)
    return 0.5 - 0.25 * (fs + fd)


def _inbreeding(
    sire: np.ndarray, dam: np.ndarray, depth: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inbreeding F and Mendelian-sampling variances d of every animal (see module notes)."""
    n = sire.size
    F = np.zeros(n)
    d = np.ones(n)
    if n == 0:
        return F, d
    is_parent = np.zeros(n, dtype=bool)
    is_parent[sire[sire >= 0]] = True
    is_parent[dam[dam >= 0]] = True
    # the deepest generation that still reads an animal's row of L
    last_use = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_use, sire[sire >= 0], depth[sire >= 0])
    np.maximum.at(last_use, dam[dam >= 0], depth[dam >= 0])
    founders = np.flatnonzero((depth == 0) & is_parent)
    stored = founders  # animals whose rows of L are held, in the order of `rows`' rows
    rows = sp.csr_matrix(
        (np.ones(founders.size), (np.arange(founders.size), founders)), shape=(founders.size, n)
    )
    row_of = np.full(n, -1, dtype=np.int64)
    row_of[stored] = np.arange(stored.size)
    by_depth = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[by_depth], np.arange(int(depth.max()) + 2))
    for g in range(1, int(depth.max()) + 1):
        kids = by_depth[bounds[g] : bounds[g + 1]]
        if kids.size == 0:
            continue
        s, m = sire[kids], dam[kids]
        d[kids] = _mendelian_variances(s, m, F)
        # rows of L: e_i + ½ L_sire + ½ L_dam (a selfed animal's two halves add up)
        local = np.arange(kids.size)
        pick_r = np.r_[local[s >= 0], local[m >= 0]]
        pick_c = np.r_[row_of[s[s >= 0]], row_of[m[m >= 0]]]
        half = sp.csr_matrix(
            (np.full(pick_r.size, 0.5), (pick_r, pick_c)), shape=(kids.size, stored.size)
        )
        L_kids = (half @ rows).tocsr()
        L_kids = L_kids + sp.csr_matrix((np.ones(kids.size), (local, kids)), shape=(kids.size, n))
        sq = L_kids.multiply(L_kids).tocsr()
        F[kids] = sq @ d - 1.0
        # keep the rows still read by a deeper generation
        keep_old = last_use[stored] > g
        keep_new = is_parent[kids]
        rows = sp.vstack([rows[np.flatnonzero(keep_old)], L_kids[np.flatnonzero(keep_new)]]).tocsr()
        row_of[stored] = -1
        stored = np.r_[stored[keep_old], kids[keep_new]]
        row_of[stored] = np.arange(stored.size)
    # rounding: F of a non-inbred animal is an exact 0 (sums of squares of powers of ½ may
    # leave 1e-16)
    F[np.abs(F) < 1e-14] = 0.0
    return F, d


def _inverse_factor(sire: np.ndarray, dam: np.ndarray) -> sp.csr_matrix:
    """I − P: 1 on the diagonal, −½ at (animal, parent); a selfed animal gets −1."""
    n = sire.size
    animals = np.arange(n)
    r = np.r_[animals, animals[sire >= 0], animals[dam >= 0]]
    c = np.r_[animals, sire[sire >= 0], dam[dam >= 0]]
    v = np.r_[
        np.ones(n), np.full(int((sire >= 0).sum()), -0.5), np.full(int((dam >= 0).sum()), -0.5)
    ]
    return sp.csr_matrix((v, (r, c)), shape=(n, n))


def mendelian_decomposition(
    pedigree: pd.DataFrame, columns: tuple[str, str, str] = ("id", "sire", "dam")
) -> tuple[list[str], sp.csr_matrix, np.ndarray, np.ndarray]:
    """The factors of A = L D Lᵀ: L⁻¹ = I − P (sparse), D = diag(d), and the inbreeding F.

    Parameters
    ----------
    pedigree, columns
        As in :func:`bayeslmm.kinship.pedigree_relationship`.

    Returns
    -------
    ids : list of str
        Animals in the order of the matrices' rows: parents without a row of their own
        first (as founders), then the pedigree's rows.
    inverse_factor : scipy.sparse.csr_matrix
        L⁻¹ = I − P: 1 on the diagonal, −½ at (animal, each known parent).
    mendelian_variances : ndarray
        d, the Mendelian-sampling variances (in units of σ_a²).
    inbreeding : ndarray
        F = diag(A) − 1.

    Examples
    --------
    The Mendelian-sampling parametrisation a = L (√d ∘ z), z ~ N(0, I), has covariance
    L D Lᵀ = A (Mrode 2005, Example 2.1):

    >>> import pandas as pd
    >>> ped = pd.DataFrame({"id": [1, 2, 3, 4, 5, 6], "sire": [0, 0, 1, 1, 4, 5],
    ...                     "dam": [0, 0, 2, 0, 3, 2]})
    >>> ids, Linv, d, F = mendelian_decomposition(ped)
    >>> d.tolist(), F.tolist()
    ([1.0, 1.0, 0.5, 0.75, 0.5, 0.46875], [0.0, 0.0, 0.0, 0.0, 0.125, 0.125])
    >>> L = np.linalg.inv(Linv.toarray())
    >>> A = (L * d) @ L.T
    >>> float(A[4, 5])  # a_56 of Mrode's Table 2.1
    0.6875
    """
    ids, sire, dam, depth = _coded(pedigree, columns)
    F, d = _inbreeding(sire, dam, depth)
    return ids, _inverse_factor(sire, dam), d, F


def pedigree_inverse(
    pedigree: pd.DataFrame,
    columns: tuple[str, str, str] = ("id", "sire", "dam"),
    name: str = "A",
) -> SparsePedigreeKinship:
    """A⁻¹ of a pedigree by Henderson's rules with inbreeding, as a sparse kinship.

    The same as ``pedigree_relationship(pedigree, sparse=True)``.

    Parameters
    ----------
    pedigree, columns, name
        As in :func:`bayeslmm.kinship.pedigree_relationship`.

    Returns
    -------
    SparsePedigreeKinship

    Examples
    --------
    >>> import pandas as pd
    >>> ped = pd.DataFrame({"id": ["a", "b", "c"], "sire": [None, None, "a"],
    ...                     "dam": [None, None, "b"]})
    >>> Ainv = pedigree_inverse(ped)
    >>> Ainv.inverse.toarray().tolist()
    [[1.5, 0.5, -1.0], [0.5, 1.5, -1.0], [-1.0, -1.0, 2.0]]
    """
    ids, inverse_factor, d, F = mendelian_decomposition(pedigree, columns)
    return SparsePedigreeKinship(ids, inverse_factor, d, F, name=name)


class SparsePedigreeKinship(Kinship):
    """A pedigree's relationship matrix A held as its sparse inverse, never as A.

    Made by ``pedigree_relationship(pedigree, sparse=True)`` (or :func:`pedigree_inverse`)
    and given wherever a :class:`~bayeslmm.kinship.Kinship` goes, e.g.
    ``LMM("y ~ 1 + (1 | id)", data, kinship={"id": Ainv})``.

    Design: it *is* a Kinship (a labelled relationship matrix; the model specification
    accepts it unchanged) whose dense :attr:`matrix` is formed only on demand. Kinship
    consumers that need A itself (the Bayesian engines, dense REML, predictions for new
    animals) get it for pedigrees of at most :data:`DENSE_PEDIGREE_LIMIT` animals, with a
    :class:`PedigreeDensifyWarning`; for larger pedigrees they get a
    :class:`~bayeslmm.errors.KinshipError` that names ``method="reml"``. The model
    specification and the result tables use only :meth:`diagonal` (1 + F) and :meth:`dot`
    (A v by two sparse triangular solves), never the dense matrix.

    A model's data usually cover some of the pedigree's animals (those with records);
    :meth:`subset` then returns a *view*: ``ids`` are those animals, while :attr:`inverse`
    stays A⁻¹ of the whole pedigree (``pedigree_ids``, ancestors without records
    included), and :attr:`positions` locate the view's animals in it. The marginal
    covariance of the recorded animals' values is the submatrix of A either way, so the
    likelihood is the same; the sparse REML route fits the whole pedigree and reports
    breeding values of every animal in it.

    Attributes
    ----------
    ids : tuple of str
        The animals this kinship relates (all of the pedigree's, or a view's).
    name : str
    pedigree_ids : tuple of str
        Every animal of the pedigree: parents without a row of their own first, then the
        pedigree's rows (the order of :func:`~bayeslmm.kinship.pedigree_relationship`).
    positions : ndarray of int
        Position of each of ``ids`` in ``pedigree_ids``.
    inverse : scipy.sparse.csr_matrix
        A⁻¹ over ``pedigree_ids`` (about 5 non-zeros per animal).
    inverse_factor : scipy.sparse.csr_matrix
        L⁻¹ = I − P over ``pedigree_ids``: A = L D Lᵀ.
    mendelian_variances : ndarray
        d over ``pedigree_ids``.
    inbreeding : ndarray
        F = diag(A) − 1 over ``pedigree_ids``.

    Examples
    --------
    >>> import pandas as pd
    >>> from bayeslmm.kinship import pedigree_relationship
    >>> ped = pd.DataFrame({"id": [1, 2, 3, 4, 5, 6], "sire": [0, 0, 1, 1, 4, 5],
    ...                     "dam": [0, 0, 2, 0, 3, 2]})
    >>> Ainv = pedigree_relationship(ped, sparse=True)
    >>> Ainv.n, Ainv.inverse.nnz, Ainv.diagonal().tolist()
    (6, 26, [1.0, 1.0, 1.0, 1.0, 1.125, 1.125])
    >>> view = Ainv.subset(["5", "6"])
    >>> view.dot(np.eye(2)).round(4).tolist()  # the 2 × 2 block of A, by sparse solves
    [[1.125, 0.6875], [0.6875, 1.125]]
    """

    def __init__(
        self,
        pedigree_ids: Sequence[str],
        inverse_factor: sp.spmatrix,
        mendelian_variances: np.ndarray,
        inbreeding: np.ndarray,
        name: str = "A",
        positions: np.ndarray | None = None,
        _root: SparsePedigreeKinship | None = None,
    ) -> None:
        pedigree_ids = tuple(str(i) for i in pedigree_ids)
        n_all = len(pedigree_ids)
        positions = (
            np.arange(n_all, dtype=np.int64)
            if positions is None
            else np.asarray(positions, dtype=np.int64)
        )
        positions.setflags(write=False)
        ids = tuple(pedigree_ids[k] for k in positions)
        # the frozen dataclass parent refuses attribute assignment: write as it does
        set_ = object.__setattr__
        set_(self, "ids", ids)
        set_(self, "name", name)
        set_(self, "pedigree_ids", pedigree_ids)
        set_(self, "positions", positions)
        set_(self, "inverse_factor", sp.csr_matrix(inverse_factor))
        set_(self, "mendelian_variances", np.asarray(mendelian_variances, dtype=float))
        set_(self, "inbreeding", np.asarray(inbreeding, dtype=float))
        set_(self, "_root", self if _root is None else _root)
        set_(self, "_index", {i: k for k, i in enumerate(ids)})

    # -- the sparse representation --------------------------------------------------------
    @cached_property
    def inverse(self) -> sp.csr_matrix:
        """A⁻¹ = (I − P)ᵀ D⁻¹ (I − P) over ``pedigree_ids`` (Henderson's rules)."""
        if self._root is not self:
            return self._root.inverse
        T = self.inverse_factor
        Ainv = (T.T @ sp.diags(1.0 / self.mendelian_variances) @ T).tocsr()
        Ainv.sum_duplicates()
        Ainv.sort_indices()
        return Ainv

    @property
    def n_pedigree(self) -> int:
        """Number of animals in the whole pedigree (ancestors without records included)."""
        return len(self.pedigree_ids)

    @cached_property
    def _triangular(self):
        """An exact LU of I − P (a permuted triangular matrix: no fill, no pivoting)."""
        if self._root is not self:
            return self._root._triangular
        return spla.splu(
            self.inverse_factor.tocsc(),
            permc_spec="NATURAL",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )

    def full_dot(self, v: np.ndarray) -> np.ndarray:
        """A v over the whole pedigree: L (D (Lᵀ v)), two sparse triangular solves."""
        v = np.asarray(v, dtype=float)
        lu = self._triangular
        w = lu.solve(np.ascontiguousarray(v), trans="T")
        w = w * (self.mendelian_variances if w.ndim == 1 else self.mendelian_variances[:, None])
        return lu.solve(w)

    # -- the Kinship interface ------------------------------------------------------------
    def diagonal(self) -> np.ndarray:
        """diag(A) = 1 + F of this kinship's animals."""
        return 1.0 + self.inbreeding[self.positions]

    def dot(self, v: np.ndarray) -> np.ndarray:
        """A v for this kinship's animals (v has one row per id), without forming A."""
        v = np.asarray(v, dtype=float)
        full = np.zeros((self.n_pedigree,) + v.shape[1:])
        np.add.at(full, self.positions, v)
        return self.full_dot(full)[self.positions]

    @property
    def mean_diagonal(self) -> float:
        """Mean of 1 + F over this kinship's animals."""
        return float(np.mean(self.diagonal()))

    def subset(self, ids: Sequence[str], name: str | None = None) -> SparsePedigreeKinship:
        """A view on ``ids`` (in that order) that keeps the whole pedigree's A⁻¹.

        Raises a :class:`~bayeslmm.errors.KinshipError` listing the ids that the pedigree
        lacks.
        """
        ids = [str(i) for i in ids]
        if tuple(ids) == self.ids and (name is None or name == self.name):
            return self
        index = self._root._index
        missing = [i for i in ids if i not in index]
        if missing:
            raise KinshipError(
                f"{len(missing)} ids are missing from pedigree kinship '{self.name}': "
                f"{preview(missing)}. Every level of the grouping factor needs a row in the "
                "pedigree: drop those records or add the animals to the pedigree."
            )
        positions = np.fromiter((index[i] for i in ids), dtype=np.int64, count=len(ids))
        return SparsePedigreeKinship(
            self.pedigree_ids,
            self.inverse_factor,
            self.mendelian_variances,
            self.inbreeding,
            name=name or self.name,
            positions=positions,
            _root=self._root,
        )

    @cached_property
    def _dense_full(self) -> np.ndarray:
        if self._root is not self:
            return self._root._dense_full
        L = np.linalg.inv(self.inverse_factor.toarray())
        A = (L * self.mendelian_variances) @ L.T
        return 0.5 * (A + A.T)

    def to_dense(self) -> Kinship:
        """The dense :class:`~bayeslmm.kinship.Kinship` of this kinship's animals.

        For pedigrees of at most :data:`DENSE_PEDIGREE_LIMIT` animals; larger ones raise.
        """
        return Kinship(self.matrix, ids=self.ids, name=self.name, check_psd=False)

    @property
    def matrix(self) -> np.ndarray:  # type: ignore[override]
        """Dense A of this kinship's animals, formed on demand (small pedigrees only).

        An engine that needs A itself gets it, with a :class:`PedigreeDensifyWarning`,
        when the pedigree has at most :data:`DENSE_PEDIGREE_LIMIT` animals; otherwise a
        :class:`~bayeslmm.errors.KinshipError` says to fit by REML, whose sparse route
        never forms A.
        """
        cache = self.__dict__
        if "_matrix" not in cache:
            if self.n_pedigree > DENSE_PEDIGREE_LIMIT:
                raise KinshipError(
                    f"Pedigree kinship '{self.name}' ({self.n_pedigree} animals) is held as its "
                    f"sparse inverse; this computation needs the dense {self.n}×{self.n} matrix "
                    f"A, which is formed only for pedigrees of at most {DENSE_PEDIGREE_LIMIT} "
                    "animals. The sparse inverse fits the Gaussian animal model (one (1 | id) "
                    "term with this kinship and one residual variance): method='reml', or "
                    "method='nuts' with strategy 'auto' / 'sparse-pedigree'. Other models "
                    "(GLMMs, several terms, slopes) need the dense kinship "
                    "bayeslmm.pedigree_relationship(pedigree), if memory allows."
                )
            warnings.warn(
                f"Forming the dense {self.n}×{self.n} relationship matrix of pedigree kinship "
                f"'{self.name}' for an engine that needs A itself; the sparse inverse serves "
                "the Gaussian animal model (method='reml', or the 'sparse-pedigree' NUTS "
                "strategy).",
                PedigreeDensifyWarning,
                stacklevel=2,
            )
            A = self._dense_full[np.ix_(self.positions, self.positions)]
            A.setflags(write=False)
            cache["_matrix"] = A
        return cache["_matrix"]

    def __repr__(self) -> str:
        return (
            f"SparsePedigreeKinship(name={self.name!r}, n={self.n}, "
            f"pedigree={self.n_pedigree}, nnz_inverse={self.inverse.nnz}, "
            f"mean_diagonal={self.mean_diagonal:.4g})"
        )

    def _repr_html_(self) -> str:
        """What a notebook shows: sizes and the inbreeding summary (no dense matrix)."""
        import html

        F = self.inbreeding[self.positions]
        rows = [
            ("animals", f"{self.n} (pedigree: {self.n_pedigree})"),
            ("non-zeros of A⁻¹", f"{self.inverse.nnz}"),
            ("mean diagonal (1 + F)", f"{self.mean_diagonal:.4g}"),
            ("inbred animals", f"{int((F > 0).sum())} (max F {float(F.max(initial=0.0)):.4g})"),
        ]
        body = "".join(f"<tr><td><b>{a}</b></td><td>{b}</td></tr>" for a, b in rows)
        title = f"<b>Sparse pedigree kinship {html.escape(self.name)}</b>"
        return f"<div>{title}<table>{body}</table></div>"
