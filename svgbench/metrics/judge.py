"""The shapes judge: the feature network of FID/KID/precision-recall on the embedded default.

No Inception weights exist offline, so svgbench trains its own judge: a supervised convnet classifier of
the shape class (the role Inception-v3, trained on ImageNet labels, plays for ImageNet FID). It is
independent of every encoder being compared: its own architecture, its own training seed, labels
instead of self-supervision. It is registered in torch-fidelity's feature-extractor registry as
`svgbench-shapes-judge`, and every table labels its metrics as judge-FID, never as Inception FID.
The registered extractor provides two outputs: "judge" (the 256-d features, float64, the default layer of
FID/KID/precision-recall) and "logits" (its class logits on the same forward, for class accuracy of
generated samples).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

JUDGE_NAME = "svgbench-shapes-judge"
EMBEDDED = Path(__file__).resolve().parent.parent / "weights" / "shapes-judge.safetensors"


class ShapesJudge(nn.Module):
    """uint8 or [-1, 1] float images B x 3 x H x W -> 256-d features (GAP of a 4-stage BN-ReLU convnet) -> logits."""

    feature_dim = 256

    def __init__(self, num_classes: int = 10, resolution: int = 64):
        super().__init__()
        chans, layers, c_in = (32, 64, 128, 256), [], 3
        for c in chans:
            layers += [nn.Conv2d(c_in, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], num_classes)
        self.resolution = resolution

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x.float()
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                              align_corners=False)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x)).mean((2, 3))

    def forward(self, x):
        return self.head(self.features(x))


def load_judge(path: str | Path | None = None) -> ShapesJudge:
    from ..checkpoints import CheckpointError, check_and_load, load_state_dict

    path = Path(path) if path else EMBEDDED
    if not path.exists():
        raise CheckpointError(f"the shapes judge's weights {path} are missing: train them with "
                              f"`svgbench train judge` (judge-FID needs them)")
    judge = ShapesJudge()
    check_and_load(judge, load_state_dict(path), source=str(path))
    return judge.eval().requires_grad_(False)


def judge_available(path: str | Path | None = None) -> bool:
    return Path(path or EMBEDDED).exists()


def register_judge() -> str:
    """Register the judge with torch-fidelity (once per process); returns its extractor name."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if JUDGE_NAME in FEATURE_EXTRACTORS_REGISTRY:
        return JUDGE_NAME

    class JudgeExtractor(FeatureExtractorBase):
        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.judge = load_judge(feature_extractor_weights_path)

        @staticmethod
        def get_provided_features_list():
            return ("judge", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "judge"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 64, 64, dtype=torch.uint8)

        def forward(self, x):
            f = self.judge.features(x)
            out = {"judge": f.double(), "logits": None}
            if "logits" in self.features_list:
                out["logits"] = self.judge.head(f)
            return tuple(out[k] for k in self.features_list)

    register_feature_extractor(JUDGE_NAME, JudgeExtractor)
    return JUDGE_NAME
