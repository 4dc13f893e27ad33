"""Fixtures shared by the tests (the committed measured homes, loaded once per session), the solving methods'
tolerances, and the hypothesis profile.

Hypothesis runs derandomized by default (profile "repeatable"): every run of ``make test``, on CI or here, draws
the same examples, so a result never depends on the day it ran. ``HYPOTHESIS_PROFILE=explore make unit`` draws
new examples each run (and keeps failures in ``.hypothesis/``), for a contributor hunting new cases; a failing
example it finds becomes an ``@example`` of its test.
"""

import os
import warnings

import pytest
from hypothesis import settings

import desmarket as dm
import desmarket.data as D

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session")
def measured():
    return D.load_measured_homes()


@pytest.fixture(scope="session")
def quality(measured):
    return D.home_quality(measured)


@pytest.fixture(scope="session")
def flags(measured):
    return D.day_flags(measured)


# ------------------------------------------------------------------------------ solving methods

#: Accuracy each method promises against the exact optimum (issue "Scale"): costs in $, prices in $/kWh,
#: dispatch in kW. Central and decomposed are exact up to the solver; coordinated up to its tolerances.
METHOD_TOLERANCE = {
    "central": {"cost": 1e-6, "price": 1e-7, "kw": 1e-5},
    "decomposed": {"cost": 1e-6, "price": 1e-7, "kw": 1e-5},
    "coordinated": {"cost": 1e-3, "price": 1e-4, "kw": 1e-2},
}


@pytest.fixture(params=dm.METHODS)
def method(request):
    """Every test that takes ``method`` runs once per solving method."""
    return request.param


@pytest.fixture
def tol(method):
    return METHOD_TOLERANCE[method]


@pytest.fixture
def quiet_routing():
    """Silence RoutingWarning (MODEL.md tie-break) in tests that solve cases for other reasons."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.RoutingWarning)
        yield
