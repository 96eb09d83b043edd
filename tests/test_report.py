"""Tables: built from records only; the same command twice gives identical tables; timings kept apart."""

from svgbench.data import DataConfig
from svgbench.report import write_reports
from svgbench.runner import RunConfig, run_matrix


def _run(results):
    cfg = RunConfig(encoders=("pixels", "tiny-ssl"), tasks=("reconstruction", "probe"),
                    data=DataConfig(size=64), results_dir=str(results), skip_existing=False,
                    task_overrides={"probe": {"train_size": 256, "epochs": 5}})
    summary = run_matrix(cfg, log=lambda m: None)
    assert not summary.failures
    return write_reports(results)


def test_same_command_same_tables(tmp_path):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b")
    assert set(a) == {"reconstruction", "probe"}
    for task in a:
        assert a[task].read_text() == b[task].read_text(), task
        assert (tmp_path / "a" / f"{task}.csv").read_text() == (tmp_path / "b" / f"{task}.csv").read_text()
    eff = (tmp_path / "a" / "efficiency.csv").read_text()
    assert "encode img/s" in eff and "probe fit (s)" in eff
    assert "img/s" not in a["reconstruction"].read_text()
