"""Per-frame KL autoencoder: the latent space of latent video diffusion (`diffusion.space=latent`)."""
from sg2video.autoencoder.model import AutoencoderOutput, FrameAutoencoder, psnr
from sg2video.autoencoder.train import build_autoencoder, load_autoencoder, train_autoencoder

__all__ = ["AutoencoderOutput", "FrameAutoencoder", "build_autoencoder", "load_autoencoder", "psnr",
           "train_autoencoder"]
