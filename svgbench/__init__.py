"""svgbench: is this latent space good for diffusion, and does it still understand images?

Heavy dependencies (timm, diffusers, torch-fidelity, mmseg) are imported where they are used,
so importing the package and `svgbench --help` stay fast.
"""

__version__ = "0.1.0"
