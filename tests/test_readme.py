"""The README's add-an-encoder example is the file examples/my_encoder.py, and following it puts the
encoder into every table, the scorecard and every plot."""

from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_encoder.py"


@pytest.mark.parametrize("example", ["my_encoder.py", "my_task.py", "my_finding.py"])
def test_readme_shows_the_example_file_verbatim_and_short(example):
    text = (ROOT / "examples" / example).read_text()
    assert len(text.splitlines()) < 70
    assert text.strip() in (ROOT / "README.md").read_text(), f"README's example differs from examples/{example}"


def test_readme_dataset_excerpt_is_the_example_files_registration():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Adding a dataset", 1)[1].split("\n## ", 1)[0]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "register_dataset(" in block and block.strip() in (ROOT / "examples" / "my_dataset.py").read_text()


# training sets far below the preset's (10k probe / kNN images): what is tested is that each table, the scorecard
# and each plot take the plugin's encoder in, not the values, which tests/test_understanding.py checks
SMALL = ("--set", "probe.train_size=256", "--set", "probe.epochs=5", "--set", "probe.spread_seeds=1",
         "--set", "knn.train_size=256", "--set", "seg.train_size=64", "--set", "seg.epochs=2")


@pytest.mark.parametrize("tasks", ["reconstruction,probe,knn,seg,generation,sampling"])
def test_example_encoder_reaches_every_table_and_plot(tmp_path, tasks, svgbench_cli):
    results = tmp_path / "results"
    out = svgbench_cli("--plugin", EXAMPLE, "run", "--encoders", "pixel-shuffle", "--tasks", tasks,
                       "--num-images", "48", "--results", results, *SMALL, cwd=tmp_path,
                       env={"SVGBENCH_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr[-3000:]
    for task in tasks.split(","):
        df = pd.read_csv(results / f"{task}.csv")
        assert "pixel-shuffle" in set(df["encoder"]), task
    rec = pd.read_csv(results / "reconstruction.csv")
    # an exact inverse: SSIM 1, and PSNR infinite, so n/a with that reason (a table never holds inf)
    assert rec.loc[rec.encoder == "pixel-shuffle", "SSIM"].item() > 0.9999
    assert pd.isna(rec.loc[rec.encoder == "pixel-shuffle", "PSNR (dB)"].item())
    assert "every reconstruction is identical to its original" in (results / "reconstruction.md").read_text()
    score = pd.read_csv(results / "scorecard.csv")
    assert "pixel-shuffle" in set(score.loc[score["kind"] == "measured", "encoder"])
    for png in ("understanding", "reconstruction", "discriminability", "overview"):
        assert (results / f"{png}.png").stat().st_size > 0, png
