"""Fixtures: every kport device present, and torch when it is installed.

KPORT_REQUIRE_BACKENDS=cpu,opencl (CI) fails the run when one of those backends has no device,
and KPORT_REQUIRE_TORCH=1 fails torch's tests instead of skipping them when torch is missing:
on a CI machine a skip would hide that nothing ran.
"""

import os

import numpy as np
import pytest

import kport

DEVICES = [d["backend"] for d in kport.devices()]


def pytest_configure(config):
    missing = [b for b in os.environ.get("KPORT_REQUIRE_BACKENDS", "").split(",") if b and b not in DEVICES]
    if missing:
        reasons = {b["name"]: b["reason"] for b in kport.backends()}
        raise pytest.UsageError("KPORT_REQUIRE_BACKENDS: no device for " +
                                ", ".join(f"{b} ({reasons.get(b, 'no such plugin')})" for b in missing))


@pytest.fixture(params=DEVICES)
def device(request):
    """Each kport device present, by backend name (cpu, opencl on PoCL in CI, cuda on a GPU)."""
    return kport.device(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(int(os.environ.get("KPORT_TEST_SEED", "1234")))


def require_torch():
    if os.environ.get("KPORT_REQUIRE_TORCH") == "1":
        import torch  # an ImportError fails the test: CI must run it

        return torch
    return pytest.importorskip("torch")
