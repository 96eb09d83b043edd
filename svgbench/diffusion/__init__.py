"""Latent diffusion on any encoder's latents: the transformer (models), the rectified flow and its loss
(transport), and the ODE samplers with classifier-free guidance (samplers)."""
