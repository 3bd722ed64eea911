"""Turning graphs into videos with a trained pipeline: the two built-in generators (`sg2video.generators`
registers them), used by `src/sample.py`, the eval stage and the TensorBoard sample hook. Each is built from its
stage's checkpoint alone: `DiffusionVideoGenerator` (stage diffusion, model=unet) and `Sg2imVideoGenerator`
(stage sg2im, model=sg2im).

Where a layout-conditioned model's boxes come from (`layout=`, the names of `LAYOUT_SOURCES`):
- `sampled` (default): boxes the graph gives are kept, the others drawn by the layout model the checkpoint
  carries (sg2video.layout), a different plausible layout per seed;
- `given`: the graph's boxes; objects without one get the encoder's box head;
- `head`: every box from the encoder's box head (the sg2im baseline), whatever the graph gives.
Models that read no boxes (adm, none, crossattn with `model.grounding=false`) ignore them.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from einops import rearrange
from omegaconf import OmegaConf

from sg2video.diffusion import GaussianDiffusion, make_sampler, make_schedule, sample, sample_long
from sg2video.encoder.graph_encoder import GraphEncoder
from sg2video.encoder.pretrain import build_pretrainer
from sg2video.errors import UserError
from sg2video.denoiser import Conditioning, Denoiser, build_unet, encode_condition, repeat_condition
from sg2video.generators import VideoGenerator, video_length
# their home was this module: callers (src/sample.py, serve.py, experiments/) import them from here too
from sg2video.generators import generator_from_state, load_video_generator  # noqa: F401
from sg2video.graphs import GraphBatch, SceneGraph, Vocab
from sg2video.layout import LAYOUT_SOURCES
from sg2video.layout.sampler import LayoutSampler


def build_diffusion(diffusion_cfg: Any) -> GaussianDiffusion:
    schedule = make_schedule(str(diffusion_cfg.schedule), int(diffusion_cfg.timesteps))
    return GaussianDiffusion(schedule, parameterization=str(diffusion_cfg.parameterization),
                             loss=str(diffusion_cfg.loss), snr_weighting=diffusion_cfg.get("snr_weighting"))


def fill_layouts(graph_lists: Sequence[Sequence[SceneGraph]], layout: str, reads_boxes: bool,
                 sampler: LayoutSampler | None, generator: torch.Generator | None) -> list[list[SceneGraph]]:
    """The graphs a generator will see: for `layout=sampled`, every missing box drawn by the layout model."""
    if layout not in LAYOUT_SOURCES:
        raise UserError(f"layout={layout!r} is not accepted (accepted: {', '.join(LAYOUT_SOURCES)})")
    graph_lists = [list(frames) for frames in graph_lists]
    if layout != "sampled" or not reads_boxes:
        return graph_lists
    if all(g.all_boxes_given for frames in graph_lists for g in frames):
        return graph_lists
    if sampler is None:
        raise UserError("this checkpoint has no layout model (it was trained with layout=given or layout=head): "
                        "give every object a box, or take boxes from the box head (layout=head)")
    return sampler.fill(graph_lists, generator)


def frozen_encoder(state: dict) -> tuple[GraphEncoder, Vocab, Any]:
    """The checkpoint's frozen graph encoder (what the layout model was trained on), its vocab and config: the
    part of `stages.generator_stage.checkpoint_extra` every generator checkpoint carries."""
    vocab = Vocab.from_dict(state["vocab"])
    enc_cfg = OmegaConf.create(state["encoder_config"])
    encoder = build_pretrainer(enc_cfg, vocab, int(state["image_size"])).graph_encoder
    encoder.load_state_dict(state["graph_encoder"])
    return encoder, vocab, enc_cfg


def layout_sampler(state: dict, encoder: GraphEncoder, vocab: Vocab, enc_cfg: Any,
                   device: str | torch.device) -> LayoutSampler | None:
    """The layout model a generator checkpoint carries (layout=sampled), reading `encoder`'s embeddings; or None."""
    if state.get("layout") is None:
        return None
    return LayoutSampler.from_state(state["layout"], encoder, vocab, int(enc_cfg.cond_dim), device)


def _to_uint8(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> uint8 (B, T, H, W, 3) on the CPU."""
    return ((rearrange(video.clamp(-1, 1).cpu(), "b c t h w -> b t h w c") + 1) * 127.5).round().to(torch.uint8)


class DiffusionVideoGenerator(VideoGenerator):
    """Frozen encoder + denoiser (+ autoencoder in latent space) + diffusion: graphs in, uint8 videos out."""

    def __init__(self, denoiser: Denoiser, encoder: GraphEncoder, diffusion: GaussianDiffusion, vocab: Vocab,
                 clip_frames: int, prefix_frames: int, size: int, channels: int, latent_size: int,
                 autoencoder: torch.nn.Module | None = None, max_objects: int | None = None,
                 device: torch.device | str = "cpu", layout: LayoutSampler | None = None) -> None:
        self.denoiser = denoiser.to(device).eval()
        self.encoder = encoder.to(device).eval()
        self.autoencoder = autoencoder.to(device).eval() if autoencoder is not None else None
        self.diffusion, self.vocab = diffusion, vocab
        self.clip_frames, self.prefix_frames = clip_frames, prefix_frames
        self.size, self.channels, self.latent_size = size, channels, latent_size
        self.max_objects = max_objects
        self.device = torch.device(device)
        self.layout = layout

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device = "cpu", use_ema: bool = True) -> "DiffusionVideoGenerator":
        encoder, vocab, enc_cfg = frozen_encoder(state)
        model_cfg = OmegaConf.create(state["model_config"])
        if "coords" not in model_cfg:  # written before model.coords existed: it had none
            model_cfg.coords = False
        unet = build_unet(model_cfg, int(state["channels"]), int(enc_cfg.cond_dim))
        denoiser = Denoiser(unet, vocab.num_objects, int(enc_cfg.cond_dim),
                            class_tokens=bool(model_cfg.get("class_tokens", False)))
        weights = state["ema"] if use_ema and state.get("ema") is not None else state["model"]
        denoiser.load_state_dict({k.replace("unet.concat_vector.", "unet.adm_vector."): v for k, v in weights.items()})
        autoencoder = None
        if state.get("autoencoder") is not None:
            from sg2video.autoencoder.model import FrameAutoencoder

            autoencoder = FrameAutoencoder.from_state(state["autoencoder"])
        diffusion = build_diffusion(OmegaConf.create(state["diffusion_config"]))
        layout = layout_sampler(state, encoder, vocab, enc_cfg, device)
        return cls(denoiser, encoder, diffusion, vocab, clip_frames=int(state["clip_frames"]),
                   prefix_frames=int(model_cfg.prefix_frames), size=int(state["image_size"]),
                   channels=int(state["channels"]), latent_size=int(state["latent_size"]),
                   autoencoder=autoencoder, max_objects=state.get("max_objects"), device=device, layout=layout)

    # -- conditioning --------------------------------------------------------------------------

    def condition(self, graph_lists: Sequence[Sequence[SceneGraph]], start: int, end: int,
                  layout: str = "given") -> Conditioning:
        """Frames [start, end) of each video's per-frame graphs -> their Conditioning (B, end-start, ...)."""
        graphs = [g for frames in graph_lists for g in frames[start:end]]
        batch = GraphBatch.pack(graphs).to(self.device)
        return encode_condition(self.encoder, batch, len(graph_lists), end - start, layout)

    # -- sampling ------------------------------------------------------------------------------

    chunked = True  # videos longer than a clip are made chunk by chunk, each continuing the last prefix_frames

    @property
    def cond_mode(self) -> str:
        return self.denoiser.cond_mode

    @property
    def reads_boxes(self) -> bool:
        return self.denoiser.reads_boxes

    def with_layouts(self, graph_lists: Sequence[Sequence[SceneGraph]], layout: str,
                     generator: torch.Generator | None) -> list[list[SceneGraph]]:
        """The graphs the denoiser will see: for `layout=sampled`, every missing box drawn by the layout model."""
        return fill_layouts(graph_lists, layout, self.reads_boxes, self.layout, generator)

    @torch.no_grad()
    def generate(self, graph_lists: Sequence[Sequence[SceneGraph]], sampler: str = "ddim", steps: int = 50,
                 guidance: float = 2.0, eta: float = 0.0, seed: int = 0, layout: str = "sampled",
                 progress: Callable[[int, int], None] | None = None, return_graphs: bool = False):
        """uint8 videos (B, T, H, W, 3) for B per-frame graph lists of equal length T (and, with `return_graphs`,
        the per-frame graphs they were drawn from, sampled boxes included). Every random draw (layouts, noise)
        comes from one generator on this generator's device, seeded with `seed`."""
        total, batch = video_length(graph_lists), len(graph_lists)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        graph_lists = self.with_layouts(graph_lists, layout, generator)
        schedule = self.diffusion.schedule
        factory = lambda: make_sampler(sampler, schedule, steps, eta)  # noqa: E731
        clip_x0 = self.autoencoder is None  # latents are not bounded to [-1, 1]
        if total <= self.clip_frames:
            cond = self.condition(graph_lists, 0, total, layout)
            shape = (batch, self.channels, total, self.latent_size, self.latent_size)
            x = sample(self.diffusion, self.denoiser, shape, cond, factory(), guidance=guidance,
                       generator=generator, progress=progress, clip_x0=clip_x0, device=self.device,
                       repeat_cond=repeat_condition)
        else:
            x, _ = sample_long(self.diffusion, self.denoiser, factory, total, self.clip_frames, self.prefix_frames,
                               lambda s, e: self.condition(graph_lists, s, e, layout), self.channels,
                               self.latent_size, self.latent_size, batch=batch, guidance=guidance,
                               generator=generator, device=self.device, clip_x0=clip_x0, progress=progress,
                               repeat_cond=repeat_condition)
        videos = self.to_uint8(x)
        return (videos, graph_lists) if return_graphs else videos

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        if self.autoencoder is None:
            return x
        return torch.cat([self.autoencoder.decode(part.to(self.device)).cpu() for part in x.split(8)])

    def to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """Samples (B, C, T, h, w) -> uint8 videos (B, T, H, W, 3) on the CPU, decoded and converted a clip's
        frames at a time: besides the output, memory stays that of one clip however long the video is."""
        batch, frames = x.shape[0], x.shape[2]
        out = torch.empty(batch, frames, self.size, self.size, 3, dtype=torch.uint8)
        for start in range(0, frames, self.clip_frames):
            part = self.decode(x[:, :, start : start + self.clip_frames]).clamp(-1, 1).cpu()
            out[:, start : start + self.clip_frames] = ((rearrange(part, "b c t h w -> b t h w c") + 1) * 127.5).round()
        return out


class Sg2imVideoGenerator(VideoGenerator):
    """A trained sg2im generator (model=sg2im): graphs in, uint8 videos out.

    Boxes (`layout=`): `sampled` keeps the graph's boxes and draws the others with the layout model the checkpoint
    carries; `given` keeps the graph's and predicts the others with sg2im's box head; `head` predicts every box
    (the paper's pipeline). A timeline of any length is made in one pass (the CRN's temporal convolutions slide
    along it). `guidance` has no meaning for a GAN, except 0: the condition dropped, an empty layout (the
    eval stage's unconditional control). `sampler`, `steps` and `eta` are not read.
    """

    cond_mode = "concat"  # a scene layout painted from the boxes
    reads_boxes = True
    chunked = False  # any length in one pass

    def __init__(self, generator, vocab: Vocab, clip_frames: int, size: int, max_objects: int | None = None,
                 device: torch.device | str = "cpu", layout: LayoutSampler | None = None) -> None:
        self.generator = generator.to(device).eval()
        self.vocab, self.clip_frames, self.size = vocab, clip_frames, size
        self.max_objects, self.device, self.layout = max_objects, torch.device(device), layout

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device = "cpu", use_ema: bool = True) -> "Sg2imVideoGenerator":
        from sg2video.sg2im import build_sg2im

        frozen, vocab, enc_cfg = frozen_encoder(state)
        size = int(state["image_size"])
        own_encoder = build_pretrainer(enc_cfg, vocab, size).graph_encoder
        pair = build_sg2im(OmegaConf.create(state["model_config"]), own_encoder, vocab.num_objects,
                           int(enc_cfg.cond_dim), size)
        pair.load_state_dict(state["ema"] if use_ema and state.get("ema") is not None else state["model"])
        layout = layout_sampler(state, frozen, vocab, enc_cfg, device)
        return cls(pair.generator, vocab, int(state["clip_frames"]), size, state.get("max_objects"), device, layout)

    @torch.no_grad()
    def generate(self, graph_lists: Sequence[Sequence[SceneGraph]], sampler: str = "ddim", steps: int = 50,
                 guidance: float = 2.0, eta: float = 0.0, seed: int = 0, layout: str = "sampled",
                 progress: Callable[[int, int], None] | None = None, return_graphs: bool = False):
        from sg2video.sg2im.model import usable_boxes

        frames, batch = video_length(graph_lists), len(graph_lists)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        graph_lists = fill_layouts(graph_lists, layout, True, self.layout, generator)
        packed = GraphBatch.pack([g for frames_ in graph_lists for g in frames_]).to(self.device)
        g = self.generator
        objs = g.objects(packed, batch, frames)
        predicted = usable_boxes(g.box_head(objs.vectors), self.size)
        boxes = predicted if layout == "head" else torch.where(objs.has_box[..., None], objs.boxes, predicted)
        valid = objs.valid if guidance > 0 else torch.zeros_like(objs.valid)
        video = g.render(objs.vectors, g.mask_head(objs.vectors), boxes, valid, g.noise(batch, self.device, generator))
        if progress is not None:
            progress(1, 1)
        videos = _to_uint8(video)
        if not return_graphs:
            return videos
        drawn = [[SceneGraph(graph.objs, graph.triples, boxes[b, t, : graph.num_objects].cpu())
                  for t, graph in enumerate(frames_)] for b, frames_ in enumerate(graph_lists)]
        return videos, drawn
