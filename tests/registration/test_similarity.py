"""Similarity measures: invariances and sensitivity."""

from __future__ import annotations

import numpy as np
import pytest

from spinenav.registration.similarity import (SimilarityError, as_attenuation_image, gradient_correlation,
                                              normalized_cross_correlation)


def _blob(shift=0.0):
    v, u = np.mgrid[0:64, 0:64].astype(float)
    return np.exp(-((u - 30 - shift) ** 2 + (v - 34) ** 2) / 60.0) + 0.5 * ((abs(u - 20 - shift) < 5) & (abs(v - 20) < 8))


def test_gc_is_one_under_affine_grey_change_and_drops_with_misalignment():
    a = _blob()
    assert gradient_correlation(a, 3.0 * a + 7.0) == pytest.approx(1.0, abs=1e-9)
    g1, g4 = gradient_correlation(a, _blob(1.0)), gradient_correlation(a, _blob(4.0))
    assert 1.0 > g1 > g4
    assert gradient_correlation(a, -a) == pytest.approx(-1.0, abs=1e-9)  # polarity matters


def test_ncc_mask_and_constant():
    a = _blob()
    assert normalized_cross_correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert normalized_cross_correlation(a, np.ones_like(a)) == 0.0
    with pytest.raises(SimilarityError, match="shape"):
        normalized_cross_correlation(a, a[:10])


def test_as_attenuation_image_polarity():
    L = _blob()
    I = np.exp(-L) * 1000.0  # raw transmitted signal: bone dark
    np.testing.assert_allclose(as_attenuation_image(I, bone_bright=False), L - L.min(), atol=1e-4)
    assert gradient_correlation(as_attenuation_image(I, bone_bright=False), L) > 0.99


def test_ncc_matches_pearson_with_and_without_mask():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(150, 140))  # > 10^4 elements: the size where numpy's dot went to BLAS threads
    b = 0.6 * a + rng.normal(size=a.shape) + 5.0
    assert normalized_cross_correlation(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-6)
    m = a > 0.3
    assert normalized_cross_correlation(a, b, m) == pytest.approx(np.corrcoef(a[m], b[m])[0, 1], abs=1e-6)
    with pytest.raises(SimilarityError, match="no pixel"):
        normalized_cross_correlation(a, b, np.zeros_like(m))
