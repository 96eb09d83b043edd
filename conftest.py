"""Options shared by tests/ and tasks/ (pytest-benchmark owns `benchmark` and every --benchmark-* option)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: fail fast instead of retrying the hub

import pytest


def pytest_addoption(parser):
    g = parser.getgroup("svgbench")
    g.addoption("--benchmark", action="store_true", default=False,
                help="run tasks/ at full size and regenerate the tables under results/")
    g.addoption("--encoders", default=None, help="comma-separated encoders for tasks/ (default: embedded ones)")
    g.addoption("--tasks", default=None, help="comma-separated task names for tasks/")
    g.addoption("--preset", default="tiny", help="tiny (embedded default) or imagenet256")
    g.addoption("--data-root", default=None, help="dataset folder for tasks/ (ImageNet / ADE20K layout)")
    g.addoption("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    g.addoption("--results", default="results", help="where --benchmark writes records and tables")
    g.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "one_per_family: in the default tasks/ run, one encoder per family; the "
                            "others with --runslow (tasks/conftest.py)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
