"""Phantoms planned once per session (shared with the anatomy tests), their exact bone solids.

Planning is tested from the phantom's TRUE label map (the segmentation's quality is the anatomy
tests' business); one test goes through the builtin segmentation (test_builtin_backend.py).
The helpers live in plan_cases.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # grading.py, plan_cases.py

from plan_cases import planned  # noqa: E402


@pytest.fixture(scope="session")
def normal_screws():
    return planned("noisy", "screws", "L1-L3")
