"""notebooks/results.ipynb runs top to bottom on a results folder and draws its figures, with and without data."""

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from test_report import write_synthetic_results  # tests/ is on sys.path under pytest

from svgbench.report import write_reports

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "results.ipynb"
FIGURE_CELLS = 7  # training curve, sampler steps, samples, understanding, reconstruction, discriminability, overview


@pytest.fixture(scope="session")
def kernel_manager_factory(tmp_path_factory):
    """Kernels of the interpreter running the tests, whatever kernelspecs are (or are not) installed."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    root = tmp_path_factory.mktemp("kernels")
    spec_dir = root / "svgbench-test"
    spec_dir.mkdir()
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "svgbench tests", "language": "python"}))

    def make():
        return KernelManager(kernel_name="svgbench-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(root)]))

    return make


def run_notebook(results: Path, kernel_manager_factory, monkeypatch):
    monkeypatch.setenv("SVGBENCH_RESULTS", str(results))
    monkeypatch.setenv("SVGBENCH_CACHE", str(results.parent / "cache"))  # the svgbench.evaluate cell's features
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, km=kernel_manager_factory(), timeout=300,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    return nb


def _images(nb) -> list[int]:
    """Indices of the code cells that displayed a PNG."""
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]


def _errors(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]


def test_notebook_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert any("SVGBENCH_RESULTS" in c.source and "../results" in c.source for c in code)


def test_notebook_runs_on_results(tmp_path, kernel_manager_factory, monkeypatch):
    results = write_synthetic_results(tmp_path / "results")
    write_reports(results, plots=False)
    nb = run_notebook(results, kernel_manager_factory, monkeypatch)
    assert not _errors(nb)
    assert len(_images(nb)) == FIGURE_CELLS
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "records under" in text
    html = "".join(o.get("data", {}).get("text/html", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "judge-FID" in html and "arXiv 2510.15301" in html  # the scorecard and the published table
    # the svgbench.evaluate cell: a module defined in the notebook, its metrics with intervals
    last = nb.cells[-1]
    assert "svgbench.evaluate(PatchAE()" in last.source
    shown = "".join(o.get("data", {}).get("text/html", "") for o in last.get("outputs", []))
    for metric in ("psnr", "ssim", "knn_top1_k5"):
        assert f"<td>{metric}</td>" in shown, metric


def test_notebook_runs_without_records(tmp_path, kernel_manager_factory, monkeypatch):
    (tmp_path / "empty").mkdir()
    nb = run_notebook(tmp_path / "empty", kernel_manager_factory, monkeypatch)
    assert not _errors(nb)
    assert len(_images(nb)) == FIGURE_CELLS  # every figure drawn, saying "no data"
