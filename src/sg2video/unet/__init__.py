"""The video denoiser: `UNet3D` and the `Conditioning` it takes (see unet3d.py and conditioning.py)."""
from sg2video.unet.conditioning import COND_MODES, Conditioning
from sg2video.unet.unet3d import UNet3D, build_unet

__all__ = ["COND_MODES", "Conditioning", "UNet3D", "build_unet"]
