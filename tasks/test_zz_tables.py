"""After the task modules: with --benchmark, rebuild every table under results/ from the records."""

from svgbench.report import write_reports


def test_regenerate_tables(request):
    if not request.config.getoption("--benchmark"):
        import pytest

        pytest.skip("tables are regenerated with --benchmark")
    results = request.config.getoption("--results")
    paths = write_reports(results)
    assert paths, f"no records under {results}/records"
    for p in paths.values():
        assert p.read_text().count("|") > 0
