"""The documented real-scale commands of docs/real-scale.md and the README parse with svgbench's CLI and name real protocols,
with each DiT/SiT-layout checkpoint declaring its kind."""

import re
import shlex
from pathlib import Path

import pytest

from svgbench.cli import build_parser
from svgbench.diffusion.official import KINDS
from svgbench.diffusion.protocols import PROTOCOLS

DOC = Path(__file__).resolve().parents[1] / "docs" / "real-scale.md"


def _commands(text):
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            if "svgbench run" in line and "torchrun" not in line:
                yield shlex.split(line[line.index("svgbench run") + len("svgbench "):])


README = DOC.parents[1] / "README.md"


@pytest.mark.parametrize("doc, start, end", [
    (DOC, "## Published checkpoints, each by its own protocol", "## Inputs"),
    (README, "## The paper's protocol", "## Embedded models")], ids=["real-scale", "readme"])
def test_published_protocol_commands_parse_and_name_their_protocol_and_kind(doc, start, end):
    text = doc.read_text()
    section = text[text.index(start):text.index(end)]
    cmds = list(_commands(section))
    assert len(cmds) == 4
    parser, seen = build_parser(), set()
    for argv in cmds:
        args, extra = parser.parse_known_args(argv)
        assert not extra, extra
        sets = dict(s.split("=", 1) for s in args.set)
        proto = sets["generation.protocol"]
        # every published-protocol command scores against the ADM reference batch
        assert proto in PROTOCOLS and args.reference and "generation.reference_npz" not in sets
        (spec,) = args.diffusion
        kind = dict(o.split("=", 1) for o in spec.split(",")[1:]).get("kind")
        assert kind in KINDS
        assert (kind == "dit") == (PROTOCOLS[proto].kind == "dit")
        seen.add((kind, proto))
    assert seen == {("svg", "svg-paper-cfg"), ("svg", "svg-paper-nocfg"), ("sit", "sit-paper"), ("dit", "dit-paper")}
    for name in re.findall(r"`((?:svg|sit|dit)-[a-z-]+)`", section):  # every protocol the table names exists
        assert name in PROTOCOLS or name.startswith("svg-paper-cfg-"), name
