"""nbval settings: compare text outputs only (figures are checked through the numbers they plot)."""


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("text/html", "image/png", "application/javascript", "stderr")
