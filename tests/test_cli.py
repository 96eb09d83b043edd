"""svgbench.cli: help of every command, `svgbench compare`, and the interval rendering users see."""

import numpy as np
import pytest

from svgbench.cli import main
from svgbench.records import Record, record_path, write_record


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["train", "--help"], ["train", "diffusion", "--help"],
                                  ["train", "vae", "--help"], ["report", "--help"], ["compare", "--help"]])
def test_every_help_prints_and_exits_0(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr().out
    assert rc == 0 and "usage" in out


def test_train_without_recipe_lists_the_recipes(capsys):
    assert main(["train"]) == 0
    out = capsys.readouterr().out
    assert all(r in out for r in ("dino", "vae", "svg", "diffusion", "judge"))


def _records(tmp_path, n=200, seed=0):
    """Two encoders on the same 200 items: b is right where a is, and on 20% more of the items."""
    rng = np.random.default_rng(seed)
    a = (rng.random(n) < 0.6).astype(float) * 100
    b = np.where(a > 0, 100.0, (rng.random(n) < 0.5) * 100.0)
    out = []
    for enc, items in (("enc-a", a), ("enc-b", b)):
        from svgbench.metrics.stats import ci_entry, mean_ci

        rec = Record(key=f"k{enc}", task="probe", encoder=enc, config={}, spec={"latent_shape": [1], "weights": "w"},
                     data={"name": "shapes", "split": "val", "resolution": 64, "key": "d"},
                     metrics={"probe_top1": float(items.mean()), "per_item": {"probe_top1": items.tolist()},
                              "ci": {"probe_top1": ci_entry(mean_ci(items))}})
        write_record(record_path(tmp_path, "probe", enc, rec.key), rec)
        out.append(items)
    return out


def test_compare_prints_the_paired_difference(tmp_path, capsys):
    a, b = _records(tmp_path)
    assert main(["compare", "enc-a", "enc-b", "--results", str(tmp_path), "--resamples", "500"]) == 0
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith("| probe "))
    diff = float(line.split("|")[6])
    assert diff == pytest.approx((a - b).mean(), abs=0.01)  # the mean of per-item differences
    assert line.rstrip().endswith("| yes |")  # b is better on a fifth of the items: the interval excludes 0
    assert main(["compare", "enc-a", "nope", "--results", str(tmp_path)]) == 2
    assert "no records of nope" in capsys.readouterr().err


def test_tables_show_intervals_and_say_how(tmp_path):
    from svgbench.records import load_records
    from svgbench.report import write_reports

    _records(tmp_path)
    write_reports(tmp_path, plots=False)
    md = (tmp_path / "probe.md").read_text()
    rec = {r.encoder: r for r in load_records(tmp_path)}
    ci = rec["enc-a"].metrics["ci"]["probe_top1"]
    assert f"{rec['enc-a'].metrics['probe_top1']:.2f} [{ci['ci_low']:.2f}, {ci['ci_high']:.2f}]" in md
    assert "95% interval" in md and "bootstrap" in md
    csv = (tmp_path / "probe.csv").read_text().splitlines()[0]
    assert "linear top-1 (%) ci_low" in csv and "linear top-1 (%) n" in csv
    assert (tmp_path / "findings.md").exists()
    plain = tmp_path / "plain"
    write_reports(tmp_path, plots=False, intervals=False)  # the plain tables: values only
    assert "[" not in (tmp_path / "probe.md").read_text().split("|---|")[1].split("\n- ")[0]
    assert not plain.exists()
