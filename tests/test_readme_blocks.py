"""README blocks quote the generated result files (svgbench.readme, `svgbench report --readme`)."""

from pathlib import Path

import pytest

from svgbench.readme import BLOCKS, begin_marker, end_marker, quoted_blocks, render_block, update_readme

ROOT = Path(__file__).resolve().parents[1]


def _committed_results(tmp_path: Path) -> Path:
    """results/ as committed: in a git checkout, each quoted file as HEAD holds it (a run of the README's first
    command rewrites results/, and on a CPU without native bf16 the float32 path moves some last digits, so the
    README's second command after its first must still compare with what was committed); elsewhere the files on
    disk."""
    import subprocess

    out = tmp_path / "results"
    out.mkdir()
    for file in BLOCKS.values():
        rel = f"results/{file}"
        got = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=ROOT, capture_output=True)
        (out / file).write_bytes(got.stdout if got.returncode == 0 else (ROOT / rel).read_bytes())
    return out


def test_project_readme_quotes_the_committed_results_verbatim(tmp_path):
    """README.md's scorecard and findings blocks are results/scorecard.md and results/findings.md of the
    committed embedded run, as `svgbench report --readme README.md` writes them: a hand edit fails here."""
    blocks = quoted_blocks((ROOT / "README.md").read_text())
    assert set(blocks) == set(BLOCKS)
    committed = _committed_results(tmp_path)
    for name, text in blocks.items():  # as committed, or as just regenerated (before its commit)
        assert text in (render_block(committed, name), render_block(ROOT / "results", name)), \
            f"README block {name!r} differs from results/"
    assert "## " not in blocks["summary"] and "Premises" in blocks["summary"]  # the premises apart from the claims
    findings = blocks["findings"]
    for fid in ("F1", "F1b", "F2", "F3", "F4", "F5", "F6"):
        assert f"| {fid} |" in findings
    assert "[" in blocks["scorecard"]  # values carry their intervals


def _results(tmp_path, findings="# Findings\n\n| a |\n|---|\n| 1 |\n"):
    res = tmp_path / "results"
    res.mkdir()
    (res / "findings.md").write_text(findings)
    (res / "summary.md").write_text("# What it shows\n\n- F1: ...\n")
    (res / "scorecard.md").write_text("# scorecard\n\nnote\n\n## Measured\n\n| x |\n|---|\n| 2 |\n\n"
                                      "## Published (from baselines/published.csv)\n\n| y |\n")
    return res


def test_update_rewrites_blocks_and_keeps_the_rest(tmp_path):
    res = _results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{begin_marker('findings')}\nold numbers\n{end_marker('findings')}\nafter\n"
                      f"{begin_marker('scorecard')}\n{end_marker('scorecard')}\n")
    assert update_readme(readme, res) == ["findings", "scorecard"]
    text = readme.read_text()
    assert "old numbers" not in text and text.startswith("intro\n") and "\nafter\n" in text
    blocks = quoted_blocks(text)
    assert blocks["findings"] == "| a |\n|---|\n| 1 |\n"
    assert blocks["scorecard"] == "note\n\n**Measured**\n\n| x |\n|---|\n| 2 |\n"
    update_readme(readme, res)
    assert readme.read_text() == text  # idempotent
    (res / "findings.md").write_text("# Findings\n\n| b |\n")
    update_readme(readme, res)
    assert quoted_blocks(readme.read_text())["findings"] == "| b |\n"


def test_readme_without_blocks_or_results_is_an_error_naming_it(tmp_path):
    res = _results(tmp_path)
    readme = tmp_path / "README.md"
    (tmp_path / "empty").mkdir()
    readme.write_text(f"{begin_marker('findings')}\n{end_marker('findings')}\n")
    with pytest.raises(Exception, match="not found"):
        update_readme(readme, tmp_path / "empty")
    with pytest.raises(Exception, match="holds no svgbench block"):
        readme.write_text("plain\n")
        update_readme(readme, res)
    assert readme.read_text() == "plain\n"
