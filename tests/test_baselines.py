"""baselines/published.csv: every row cites a primary source (a paper by arXiv id or an official repository
file), never this repository or a second-hand citation; every value is a number."""

import csv
import math

import pytest

from svgbench.baselines import load_published, published_path, source_problem


def _rows():
    with open(published_path(), newline="") as f:
        return list(csv.DictReader(f))


def test_every_row_has_a_primary_source_and_a_numeric_value():
    rows = _rows()
    assert len(rows) >= 30
    for line, row in enumerate(rows, start=2):
        source = row["source"]
        assert source_problem(source) is None, f"line {line}: {source_problem(source)}"
        for banned in ("MISSION.md", "DESIGN.md", "as cited", "baselines/"):
            assert banned.lower() not in source.lower(), f"line {line} cites {banned}"
        assert "arXiv" in source or "repo " in source, f"line {line}: {source}"
        assert math.isfinite(float(row["value"])), f"line {line}: {row['value']!r}"
        for col in ("training_epochs", "sampling_steps"):
            assert row[col] == "" or int(row[col]) > 0, f"line {line}: {col}={row[col]!r}"


def test_loader_reads_every_row_as_numbers():
    df = load_published()
    assert len(df) == len(_rows()) and set(df["kind"]) == {"published"}
    assert df["value"].dtype == float and df["value"].notna().all()
    # the paper's headline figures are present, read from its own tables
    svg = df[(df["model"] == "SVG-XL") & (df["training_epochs"] == 1400) & (df["guidance"] == "cfg")]
    assert list(svg["value"]) == [1.92] and "2510.15301" in svg["source"].iloc[0]


@pytest.mark.parametrize("source, ok", [
    ("Some paper (Author et al., arXiv 2304.07193), Table 4", True),
    ("official repo hustvl/LightningDiT, README.md, pre-trained models table", True),
    ("the LightningDiT GitHub page", False),  # names no repository file
    ("repo hustvl/LightningDiT, README.md", True),
    ("DINOv2 (Oquab et al., 2023), as cited in MISSION.md", False),
    ("as cited in MISSION.md (about 8%)", False),
    ("a blog post", False),
    ("", False),
])
def test_source_rule(source, ok):
    assert (source_problem(source) is None) is ok, source_problem(source)


def test_loader_refuses_a_secondary_source_or_a_non_number(tmp_path):
    head = "group,model,latent,metric,value,dataset,source\n"
    good = 'g,m,l,FID,1.5,ImageNet,"Paper (arXiv 2501.01423), Table 1"\n'
    (tmp_path / "ok.csv").write_text(head + good)
    assert load_published(tmp_path / "ok.csv")["value"].tolist() == [1.5]
    (tmp_path / "cited.csv").write_text(head + good + 'g,m,l,top-1,8,ImageNet,"as cited in MISSION.md"\n')
    with pytest.raises(ValueError, match="line 3: not a primary source"):
        load_published(tmp_path / "cited.csv")
    (tmp_path / "nan.csv").write_text(head + 'g,m,l,FID,about 2,ImageNet,"Paper (arXiv 2501.01423)"\n')
    with pytest.raises(ValueError, match="line 2: value 'about 2' is not a number"):
        load_published(tmp_path / "nan.csv")
