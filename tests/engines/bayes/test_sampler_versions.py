"""The JAX samplers' version guard: a blackjax PyMC cannot drive fails with a clear message."""

import importlib.metadata

import pytest

from bayeslmm.engines.bayes import sampling
from bayeslmm.errors import SpecificationError


@pytest.mark.parametrize("installed", ["1.6", "1.7.1", "2.0.0"])
def test_blackjax_from_1_6_is_refused_with_the_fix(monkeypatch, installed):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed)
    with pytest.raises(SpecificationError, match=r"blackjax<1\.6"):
        sampling._check_blackjax_version()


@pytest.mark.parametrize("installed", ["1.0.0", "1.2.5", "1.5"])
def test_blackjax_below_1_6_passes(monkeypatch, installed):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed)
    sampling._check_blackjax_version()
