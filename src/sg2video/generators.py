"""Video generators: the one interface every generator meets (`VideoGenerator`), and the registry that names them
(`GENERATORS`).

The eval stage, `src/sample.py`, the server and the training hooks see a generator only through `VideoGenerator`;
which class reads a checkpoint is decided here, by the checkpoint's `stage` (the stage that wrote it), and which
stage trains the generator of a run by its `model.name`. A new generator is one module (a `VideoGenerator`
subclass whose `from_state` reads the checkpoint its stage function writes) and one `register_generator` line at
the end of this file. Classes and stage functions are named "module:name" and imported when first used, so
loading a checkpoint does not import training code, and this module imports none of the generators.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from sg2video.errors import UserError
from sg2video.graphs import SceneGraph, Vocab
from sg2video.train.checkpoint import CheckpointError, load_checkpoint

if TYPE_CHECKING:
    from sg2video.layout.sampler import LayoutSampler

GraphLists = Sequence[Sequence[SceneGraph]]


class VideoGenerator(ABC):
    """A trained generator: per-frame scene graphs in, uint8 videos out.

    What callers read besides `generate`: `vocab` (the names graph files use), `clip_frames` (the frames of a
    training clip: the default length of a static graph), `size` (frame side, pixels), `max_objects` (the most
    objects a graph may hold; None: no limit), `device`, `cond_mode` (how the graph enters, for reports),
    `reads_boxes` (whether boxes matter: `layout=` and the given-boxes measurements apply), `layout` (the layout
    model that draws missing boxes for `layout=sampled`, or None), `chunked` (videos longer than a clip are made
    chunk by chunk, each continuing the last `prefix_frames` of the one before; else in one pass) and
    `makes_long_videos`.
    """

    vocab: Vocab
    clip_frames: int
    size: int
    device: torch.device
    cond_mode: str
    reads_boxes: bool
    max_objects: int | None = None
    layout: LayoutSampler | None = None
    chunked = False
    prefix_frames = 0

    @property
    def makes_long_videos(self) -> bool:
        """Whether videos longer than a clip can be made: in one pass, or chunk by chunk from prefix frames."""
        return not self.chunked or self.prefix_frames > 0

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device = "cpu", use_ema: bool = True) -> "VideoGenerator":
        """The generator a checkpoint state holds. Every generator class defines its own (it reads what its stage
        wrote); called on `VideoGenerator` itself, the registered generator of the state's `stage` reads it."""
        if cls is not VideoGenerator:
            raise NotImplementedError(f"{cls.__name__}.from_state(state, device, use_ema) is not defined")
        return generator_from_state(state, device, use_ema)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> "VideoGenerator":
        """`load_video_generator`, refusing a checkpoint of another generator than this class."""
        generator = load_video_generator(path, device, use_ema)
        if not isinstance(generator, cls):
            raise CheckpointError(f"{path}: holds a {type(generator).__name__}, not a {cls.__name__}")
        return generator

    @abstractmethod
    def generate(self, graph_lists: GraphLists, sampler: str = "ddim", steps: int = 50, guidance: float = 2.0,
                 eta: float = 0.0, seed: int = 0, layout: str = "sampled",
                 progress: Callable[[int, int], None] | None = None, return_graphs: bool = False):
        """uint8 videos (B, T, H, W, 3) on the CPU for B per-frame graph lists of one length T; with `return_graphs`,
        also the per-frame graphs they were drawn from, every box the generator used filled in.

        `layout`: where missing boxes come from (sg2video.layout.LAYOUT_SOURCES; `sampling.fill_layouts`).
        `guidance`: classifier-free guidance; 0 drops the condition (the eval stage's unconditional control).
        `sampler`, `steps`, `eta`: a diffusion sampler's; other generators ignore them. `seed` fixes every random
        draw. `progress(done, total)` is called as the work advances."""


def video_length(graph_lists: GraphLists) -> int:
    """The one length of a call's videos; a UserError when they differ."""
    lengths = {len(frames) for frames in graph_lists}
    if len(lengths) != 1:
        raise UserError(f"all videos of one call need the same length, got {sorted(lengths)}")
    return lengths.pop()


def import_ref(ref: str | Any) -> Any:
    """The object a "module:name" string names (imported now); anything else is returned as it is."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    obj = import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


# -- the registry --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorEntry:
    """One generator. `stage`: the stage that trains it, the `stage` its checkpoint records and its directory
    (checkpoints/<stage>/last.pt); `model`: the `model.name` that selects it; `generator`: its `VideoGenerator`
    class; `run_stage`: its stage function `(cfg, run_dir, info) -> checkpoint path`. Both as objects or as
    "module:name"."""

    stage: str
    model: str
    generator: type[VideoGenerator] | str
    run_stage: Callable | str

    def generator_class(self) -> type[VideoGenerator]:
        cls = import_ref(self.generator)
        if not (isinstance(cls, type) and issubclass(cls, VideoGenerator)):
            raise TypeError(f"generator {self.stage!r}: {cls!r} is not a sg2video.generators.VideoGenerator subclass")
        if cls.from_state.__func__ is VideoGenerator.from_state.__func__:
            raise TypeError(f"generator {self.stage!r}: {cls.__name__} does not define from_state")
        return cls

    def stage_function(self) -> Callable:
        return import_ref(self.run_stage)

    def load(self, state: dict, device: str | torch.device = "cpu", use_ema: bool = True) -> VideoGenerator:
        return self.generator_class().from_state(state, device, use_ema)


GENERATORS: dict[str, GeneratorEntry] = {}  # by stage name, in the order registered


def register_generator(stage: str, model: str, generator: type[VideoGenerator] | str,
                       run_stage: Callable | str) -> GeneratorEntry:
    """Add a generator (see `GeneratorEntry`); a stage or model name that is taken is refused."""
    for other in GENERATORS.values():
        if stage == other.stage or model == other.model:
            raise ValueError(f"generator stage={stage!r} model={model!r}: taken by stage={other.stage!r} "
                             f"model={other.model!r}")
    entry = GeneratorEntry(stage, model, generator, run_stage)
    GENERATORS[stage] = entry
    return entry


def generator_for_model(model: str) -> GeneratorEntry:
    """The generator that `model.name=<model>` trains and evaluates."""
    for entry in GENERATORS.values():
        if entry.model == model:
            return entry
    raise UserError(f"model.name={model!r} has no generator (registered: {', '.join(e.model for e in GENERATORS.values())})")


def generator_from_state(state: dict, device: str | torch.device = "cpu", use_ema: bool = True) -> VideoGenerator:
    """The generator of a checkpoint state, read by the class registered for its `stage`."""
    entry = GENERATORS.get(state.get("stage"))
    if entry is None:
        raise CheckpointError(f"a {state.get('stage')!r} checkpoint, not a generator's ({_generator_checkpoints()})")
    return entry.load(state, device, use_ema)


def load_video_generator(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> VideoGenerator:
    """The generator of a run from its checkpoint alone (checkpoints/<a generator's stage>/last.pt)."""
    state = load_checkpoint(path, "cpu")
    if state.get("stage") not in GENERATORS:
        raise CheckpointError(f"{path}: a {state.get('stage')!r} checkpoint, not a generator's ({_generator_checkpoints()})")
    return generator_from_state(state, device, use_ema)


def _generator_checkpoints() -> str:
    return "use " + " or ".join(f"checkpoints/{stage}/last.pt" for stage in GENERATORS) + " of a run"


# The generators: model=unet trains the diffusion 3D UNet (stage diffusion), model=sg2im the sg2im baseline.
register_generator("diffusion", "unet", "sg2video.sampling:DiffusionVideoGenerator",
                   "sg2video.stages.diffusion:run_diffusion_stage")
register_generator("sg2im", "sg2im", "sg2video.sampling:Sg2imVideoGenerator", "sg2video.stages.sg2im:run_sg2im_stage")
