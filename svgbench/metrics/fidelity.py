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
