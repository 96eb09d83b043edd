"""The diffusion transformer: DiT/SiT layout with adaLN-Zero blocks, used on any encoder's latents.

Two input stems, named after the two official checkpoint families so that their weights load as-is:

- patch size 1 (SVG, high-dimensional latents such as 392 x 16 x 16): every latent position is a token,
  projected by `ln1 = Linear(in_channels, hidden_size)` (SVG's `models/models_SVG.py` name);
- patch size >= 2 (SD-VAE-style 4-channel latents): a strided conv, `x_embedder.proj` (DiT/SiT name).

The rest of the state dict is shared by DiT, SiT and SVG: `pos_embed`, `t_embedder.mlp.{0,2}`,
`y_embedder.embedding_table`, `blocks.N.{attn.qkv, attn.q_norm, attn.k_norm, attn.proj, mlp.fc1, mlp.fc2,
adaLN_modulation.1}`, `final_layer.{linear, adaLN_modulation.1}`.

Inputs and outputs are B x C x H x W latents (what encoders produce); the time t is a float in [0, 1]
(t = 0 noise, t = 1 data) fed to the sinusoidal embedder unscaled, as SiT and SVG do.
"""

from __future__ import annotations

import math
import os
from functools import partial

import torch
from torch import nn
from timm.layers import Mlp, PatchEmbed

try:
    from timm.layers import Attention
except ImportError:  # timm releases before Attention moved to timm.layers
    from timm.models.vision_transformer import Attention

from ..checkpoints import check_and_load, load_state_dict


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x: B x N x D; shift, scale: B x D."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


#################################################################################
#                   Sine/Cosine Positional Embedding                            #
#################################################################################

def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """pos: (M,) -> (M, dim) = [sin(pos * w_k), cos(pos * w_k)], w_k = 10000^(-k / (dim/2))."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.to(torch.float64)[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim: int, grid_size: int) -> torch.Tensor:
    """(grid_size**2, dim) float32, tokens in row-major order.

    The first half of the channels encodes the column index and the second half the row index: the MAE /
    DiT convention (its meshgrid puts w first), kept so that models trained from scratch here see the same
    embedding as the official checkpoints.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding needs a dimension divisible by 4, got {dim}")
    idx = torch.arange(grid_size, dtype=torch.float64)
    row, col = torch.meshgrid(idx, idx, indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, col.reshape(-1)), sincos_1d(dim // 2, row.reshape(-1))], dim=1)
    return emb.float()


#################################################################################
#               Embedding Layers for Timesteps and Class Labels                 #
#################################################################################

class TimestepEmbedder(nn.Module):
    """t: (B,) floats -> (B, hidden_size), sinusoidal features [cos, sin] then a 2-layer SiLU MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """labels: (B,) ints in [0, num_classes] -> (B, hidden_size); index num_classes is the null class.

    The null row exists only when dropout_prob > 0 (the DiT layout), which classifier-free guidance needs.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids.to(labels.device) == 1
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None):
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


#################################################################################
#                                 Core Model                                    #
#################################################################################

class DiTBlock(nn.Module):
    """Pre-norm attention + MLP, each scaled/shifted/gated by the condition (adaLN-Zero)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, qk_norm=qk_norm,
                              norm_layer=nn.LayerNorm)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(in_features=hidden_size, hidden_features=int(hidden_size * mlp_ratio),
                       act_layer=lambda: nn.GELU(approximate="tanh"), drop=0)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiffusionTransformer(nn.Module):
    """Class-conditional velocity model v(x_t, t, y) on square latents.

    input_size: latent height = width; in_channels: latent channels; patch_size 1 uses the linear token
    stem `ln1`, larger patch sizes the conv stem `x_embedder`. learn_sigma doubles the output channels of
    `final_layer.linear` only to keep the layout of checkpoints trained with it (SVG's and SiT's default);
    the extra half is never returned, because flow matching predicts a velocity and nothing else.
    """

    def __init__(self, input_size: int = 16, patch_size: int = 1, in_channels: int = 392,
                 hidden_size: int = 1152, depth: int = 28, num_heads: int = 16, mlp_ratio: float = 4.0,
                 class_dropout_prob: float = 0.1, num_classes: int = 1000, learn_sigma: bool = False,
                 qk_norm: bool = False):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not a multiple of patch_size {patch_size}")
        self.input_size, self.patch_size = input_size, patch_size
        self.in_channels = in_channels
        self.learn_sigma = learn_sigma
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.grid_size = input_size // patch_size

        if patch_size == 1:
            self.ln1 = nn.Linear(in_channels, hidden_size)
        else:
            self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        # A buffer, not a parameter: the sin-cos table is fixed, so optimisers and EMA never touch it.
        self.register_buffer("pos_embed", sincos_2d(hidden_size, self.grid_size).unsqueeze(0), persistent=True)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio, qk_norm) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
        self.apply(_basic_init)
        if self.patch_size > 1:
            # initialise the conv stem like the linear map it is
            w = self.x_embedder.proj.weight.data
            nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
            nn.init.constant_(self.x_embedder.proj.bias, 0)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # adaLN-Zero: every residual branch and the output start at exactly zero
        for block in self.blocks:
            nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x T x D tokens, row-major (SVG's view(B, C, H*W).permute(0, 2, 1) at patch 1)."""
        if x.shape[1:] != (self.in_channels, self.input_size, self.input_size):
            raise ValueError(f"expected latents B x {self.in_channels} x {self.input_size} x {self.input_size}, "
                             f"got {tuple(x.shape)}")
        if self.patch_size == 1:
            return self.ln1(x.flatten(2).transpose(1, 2))
        return self.x_embedder(x)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """B x T x (p*p*C_out) -> B x C_out x H x W."""
        c, p, h = self.out_channels, self.patch_size, self.grid_size
        x = x.reshape(x.shape[0], h, h, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, h * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                force_drop_ids: torch.Tensor | None = None, learned_sigma: bool = False) -> torch.Tensor:
        """x: B x C x H x W; t: (B,) or scalar in [0, 1]; y: (B,) long in [0, num_classes] -> velocity B x C x H x W.

        learned_sigma=True (a learn_sigma model): all 2C output channels, e.g. DiT's eps and variance.

        In training mode labels are dropped to the null class with probability class_dropout_prob;
        force_drop_ids (B,), 1 = drop, overrides that draw in any mode (reproducible dropout).
        """
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        h = self.embed(x) + self.pos_embed.to(x.dtype)
        c = self.t_embedder(t) + self.y_embedder(y, self.training, force_drop_ids)
        for block in self.blocks:
            h = block(h, c)
        out = self.unpatchify(self.final_layer(h, c))
        return out[:, : self.in_channels] if self.learn_sigma and not learned_sigma else out


#################################################################################
#                                   Sizes                                       #
#################################################################################

SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(depth=4, hidden_size=192, num_heads=4),
    "S": dict(depth=12, hidden_size=384, num_heads=6),
    "B": dict(depth=12, hidden_size=768, num_heads=12),
    "L": dict(depth=24, hidden_size=1024, num_heads=16),
    "XL": dict(depth=28, hidden_size=1152, num_heads=16),
}


def build_model(size: str, **kwargs) -> DiffusionTransformer:
    """A DiffusionTransformer of a named size ('tiny', 'S', 'B', 'L', 'XL'); kwargs set the rest."""
    if size not in SIZES:
        raise ValueError(f"unknown diffusion model size {size!r}; known: {', '.join(SIZES)}")
    clash = set(SIZES[size]) & set(kwargs)
    if clash:
        raise ValueError(f"size {size!r} already fixes {sorted(clash)}")
    return DiffusionTransformer(**SIZES[size], **kwargs)


MODELS = {name: partial(build_model, name) for name in SIZES}


def load_official(path: str | os.PathLike, size: str, *, in_channels: int, input_size: int = 16,
                  patch_size: int = 1, learn_sigma: bool = True, qk_norm: bool = True, num_classes: int = 1000,
                  class_dropout_prob: float = 0.1, key: str | None = "ema") -> DiffusionTransformer:
    """Build a model of the given architecture and load `path` into it strictly; returns it in eval mode.

    The defaults are SVG-XL's published config (`config/example_svg_xl.yaml`: patch 1, 16 x 16, qk_norm,
    class dropout 0.1; learn_sigma is its model class's default, so `final_layer.linear` has 2 x C outputs).
    key selects the entry of the checkpoint: "ema" for `{"ema": state_dict}` (SVG, DiT, SiT training
    checkpoints), "model" for the raw weights, None for a bare state dict. Nothing is inferred from the
    file: an architecture that does not fit raises CheckpointError naming the offending keys.
    """
    model = build_model(size, in_channels=in_channels, input_size=input_size, patch_size=patch_size,
                        learn_sigma=learn_sigma, qk_norm=qk_norm, num_classes=num_classes,
                        class_dropout_prob=class_dropout_prob)
    state = load_state_dict(path, key=key)
    check_and_load(model, state, source=str(path))
    return model.eval()
