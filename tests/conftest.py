"""Shared fixtures: the real CT data folder (skips with the reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinenav.datasets import test_data_dir, test_data_missing_reason

CHEST_CT = "chest_ct/ct.nii.gz"
CHEST_LABELS = "chest_ct/labels.nii.gz"
ABDOMEN_SERIES = "abdomen_dicom/series"


def _require(rel: str) -> Path:
    reason = test_data_missing_reason(rel)
    if reason:
        pytest.skip(reason)
    return test_data_dir() / rel


@pytest.fixture(scope="session")
def chest_ct_path() -> Path:
    return _require(CHEST_CT)


@pytest.fixture(scope="session")
def chest_labels_path() -> Path:
    return _require(CHEST_LABELS)


@pytest.fixture(scope="session")
def abdomen_series_dir() -> Path:
    return _require(ABDOMEN_SERIES)
