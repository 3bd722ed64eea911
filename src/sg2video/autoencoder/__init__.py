"""Per-frame KL autoencoder: the latent space of latent video diffusion (issue 10)."""
from sg2video.autoencoder.model import AutoencoderOutput, FrameAutoencoder, psnr

__all__ = ["AutoencoderOutput", "FrameAutoencoder", "psnr"]
