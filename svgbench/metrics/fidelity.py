"""FID / KID / precision-recall through torch-fidelity, on in-memory uint8 images.

torch-fidelity takes Datasets of bare uint8 tensors (3 x H x W). Feature extractors are its own
(`inception-v3-compat` with a local weights file) or any registered through its
`register_feature_extractor` (svgbench's judge network for the embedded default).
"""

from __future__ import annotations

import torch


class UInt8Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W uint8 images, got {tuple(images.shape)} {images.dtype}")
        self.images = images

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i]


def fidelity_metrics(real: torch.Tensor, fake: torch.Tensor, *, feature_extractor: str = "inception-v3-compat",
                     weights_path: str | None = None, fid: bool = True, kid: bool = False, prc: bool = False,
                     device: str = "cpu", batch_size: int = 64) -> dict[str, float]:
    import torch_fidelity

    kw = {}
    if weights_path is not None:
        kw["feature_extractor_weights_path"] = str(weights_path)
    if kid:
        kw["kid_subset_size"] = min(1000, len(real), len(fake))
    out = torch_fidelity.calculate_metrics(
        input1=UInt8Images(fake), input2=UInt8Images(real), fid=fid, kid=kid, prc=prc,
        feature_extractor=feature_extractor, cuda=str(device).startswith("cuda"), batch_size=batch_size,
        verbose=False, save_cpu_ram=True, cache=False, **kw)
    return {k: float(v) for k, v in out.items()}


DINOV2_EXTRACTOR = "dinov2-vit-l-14"  # FD_DINOv2 (Stein et al., 2023): ViT-L/14 CLS features at 224 px
DINOV2_FILES = ("facebookresearch_dinov2_main", "checkpoints/dinov2_vitl14_pretrain.pth")


def dinov2_available() -> tuple[bool, str]:
    """torch-fidelity's DINOv2 extractor loads through torch.hub: usable offline once its repo and weights
    are in the hub cache ($TORCH_HOME/hub). -> (available, reason when not)."""
    from pathlib import Path

    hub = Path(torch.hub.get_dir())
    missing = [str(hub / f) for f in DINOV2_FILES if not (hub / f).exists()]
    if missing:
        return False, f"FD_DINOv2 needs DINOv2 ViT-L/14 in the torch hub cache (missing: {', '.join(missing)})"
    return True, ""
