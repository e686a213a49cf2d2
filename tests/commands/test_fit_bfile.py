"""``bayeslmm fit --bfile PREFIX``: the kinship from PLINK genotypes, low-rank when p < n.

The reference is the Python API on the same dosages (``bl.grm(dosages, low_rank=True)``).
"""

import json

import numpy as np
import pandas as pd
import pytest

import bayeslmm as bl
from bayeslmm.cli import main

pytest.importorskip("bed_reader")


@pytest.fixture(scope="module")
def plink(tmp_path_factory):
    from bed_reader import to_bed

    rng = np.random.default_rng(12)
    n, p = 150, 40
    dosages = rng.binomial(2, rng.uniform(0.1, 0.5, p), size=(n, p)).astype(float)
    ids = [f"a{k}" for k in range(n)]
    folder = tmp_path_factory.mktemp("plink")
    to_bed(
        folder / "geno.bed",
        dosages,
        properties={"iid": ids, "fid": ids, "sid": [f"s{j}" for j in range(p)]},
    )
    K = bl.grm(dosages, ids=ids, low_rank=True)
    data = pd.DataFrame({"id": ids, "x": rng.normal(size=n)})
    data["y"] = 0.5 * data["x"] + K.markers @ rng.normal(size=p) + rng.normal(size=n)
    data = data.sample(frac=1.0, random_state=1)  # rows need not follow the .fam
    data.to_csv(folder / "data.csv", index=False)
    return folder, data, K


def test_bfile_reml_is_the_low_rank_fit(plink, capsys):
    folder, data, K = plink
    out = folder / "reml"
    rc = main(
        [
            "fit", str(folder / "data.csv"), "--formula", "y ~ x + (1|id)",
            "--bfile", str(folder / "geno"), "--method", "reml", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "spectral-low-rank"
    ref = bl.LMM("y ~ x + (1|id)", data, kinship={"id": K}).fit(method="reml")
    vcov = [row["vcov"] for row in summary["variance_components"]]
    np.testing.assert_allclose(vcov, ref.parameters["estimate"], rtol=1e-6)
    saved = bl.load_fit(out, data=data)
    assert saved.spec.terms[0].kinship.n_markers == 40


def test_bfile_group_must_be_named_when_ambiguous(plink, capsys):
    folder, _, _ = plink
    rc = main(
        [
            "fit", str(folder / "data.csv"), "--formula", "y ~ x + (1|id) + (1|x)",
            "--bfile", str(folder / "geno"), "--method", "reml", "--out", str(folder / "o"),
        ]
    )  # fmt: skip
    assert rc == 2
    assert "name the one the genotypes relate" in capsys.readouterr().err
