"""Fixtures shared by the data tests: the committed measured homes, loaded once per session."""

import pytest

import desmarket.data as D


@pytest.fixture(scope="session")
def measured():
    return D.load_measured_homes()


@pytest.fixture(scope="session")
def quality(measured):
    return D.home_quality(measured)


@pytest.fixture(scope="session")
def flags(measured):
    return D.day_flags(measured)
