"""Sampling layouts: box trajectories for graphs that give no boxes (or only some).

A timeline of any length is laid out window by window (`plan_windows`): a window of `window` frames starts
`prefix` frames before the end of what is laid out, takes those frames as given (so nothing teleports at a window
or segment border), and keeps its frames except its last `lookahead` ones, which the next window redoes: each
window sees the graphs of a few frames beyond what it keeps, so objects start moving towards a relation that is
about to change instead of jumping when it does. Boxes a graph gives are given too, in every window.

Each video gets `candidates` layouts drawn side by side; their boxes are moved into the range of centres and sizes
the data covers (`LayoutStats.project`), and `layout_scores` (the relation scorer and the data's move and overlap
limits) says which of them look right; a video none of whose candidates does draws again, up to `rounds` times,
then its best one is repaired. Among those that look right, `layout.choice` keeps the best-scoring one (`best`),
the first drawn (`first`: the model's own distribution, less the implausible draws) or, for several samples of one
graph in one call, the one farthest from the samples already chosen (`diverse`). Samples of one graph drawn in one
call are also pushed apart while they are drawn (`layout.repel`: at each DDIM step every object's predicted path
moves a little away from that object's mean path in the other samples, as particle guidance does), so they do not
all settle on the arrangement the model likes best. Diffusion noise makes the candidates, so different seeds give
different layouts. The model trains on windows from a quarter of its length to
all of it; a request shorter than that is laid out at that length, the last frame's graph held.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from omegaconf import OmegaConf

from sg2video.diffusion import GaussianDiffusion, guided_output, make_sampler, make_schedule
from sg2video.encoder.graph_encoder import GraphEncoder
from sg2video.errors import ConfigError
from sg2video.graphs import SceneGraph, Vocab, relation_segments
from sg2video.layout.boxes import centres, from_model_space, to_model_space
from sg2video.layout.condition import LayoutBatch, encode_layout_batch
from sg2video.layout.model import LayoutModule, build_layout_module
from sg2video.layout.scorer import LayoutStats, layout_scores, pair_sets, pairwise_gap, set_log_probs


@dataclass(frozen=True)
class Window:
    """Frames [start, end) of the video, of which those before `given_until` are laid out already; the window
    keeps frames up to `keep_until`."""

    start: int
    end: int
    given_until: int
    keep_until: int


def plan_windows(total: int, window: int, prefix: int, lookahead: int) -> list[Window]:
    """The windows that lay out `total` frames (see the module docstring)."""
    if window < 1 or not 0 <= prefix < window or lookahead < 0 or prefix + lookahead >= window:
        raise ConfigError(f"layout.frames={window}, layout.prefix_frames={prefix}, layout.lookahead={lookahead}: "
                          "need frames >= 1 and prefix_frames + lookahead < frames")
    if total <= window:
        return [Window(0, total, 0, total)]
    if prefix == 0:
        raise ConfigError("layout.prefix_frames=0 cannot lay out more frames than one window (layout.frames)")
    windows, done, start = [], 0, 0
    while True:
        end = start + window
        if end >= total:
            windows.append(Window(max(0, total - window), total, done, total))
            return windows
        keep = end - lookahead
        windows.append(Window(start, end, done, keep))
        done, start = keep, keep - prefix


# layout.* keys that only steer sampling: sample.py and score_layouts.py may change them on a trained model
SAMPLING_KEYS = ("prefix_frames", "lookahead", "eta", "sample_steps", "candidates", "rounds", "choice", "repel",
                 "repair_steps", "scorer_guidance", "guidance", "ranges")


class LayoutSampler:
    """Graphs without (some) boxes -> graphs with a sampled box for every object in every frame."""

    def __init__(self, module: LayoutModule, encoder: GraphEncoder, stats: LayoutStats, layout_cfg,
                 device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.encoder = encoder.to(self.device).eval()
        self.stats = stats
        self.cfg = layout_cfg
        self.window, self.prefix = int(layout_cfg.frames), int(layout_cfg.prefix_frames)
        self.lookahead = int(layout_cfg.lookahead)
        self.diffusion = GaussianDiffusion(make_schedule(str(layout_cfg.schedule), int(layout_cfg.timesteps)),
                                           str(layout_cfg.parameterization))

    @classmethod
    def from_state(cls, state: dict, encoder: GraphEncoder, vocab: Vocab, cond_dim: int,
                   device: torch.device | str = "cpu") -> "LayoutSampler":
        """From `export_state`'s dict (what the layout stage and diffusion checkpoints carry)."""
        cfg = OmegaConf.create(state["config"])
        module = build_layout_module(cfg, vocab.num_objects, vocab.num_predicates, cond_dim)
        module.load_state_dict(state["weights"])
        return cls(module, encoder, LayoutStats.from_dict(state["stats"]), cfg, device)

    def update(self, settings: dict) -> None:
        """Change sampling settings (`SAMPLING_KEYS`) of a trained model; the rest is the model's and refused."""
        wrong = sorted(set(settings) - set(SAMPLING_KEYS))
        if wrong:
            raise ConfigError(f"layout.{wrong[0]} belongs to the trained layout model and cannot change at sampling; "
                              f"these can: {', '.join(SAMPLING_KEYS)}")
        for name, value in settings.items():
            OmegaConf.update(self.cfg, name, value, force_add=True)
        self.prefix, self.lookahead = int(self.cfg.prefix_frames), int(self.cfg.lookahead)

    def export_state(self) -> dict:
        return {"config": OmegaConf.to_container(self.cfg, resolve=True) if OmegaConf.is_config(self.cfg)
                else dict(self.cfg), "weights": {k: v.cpu() for k, v in self.module.state_dict().items()},
                "stats": self.stats.to_dict()}

    # -- sampling --------------------------------------------------------------------------------

    @torch.no_grad()
    def sample_window(self, cond: LayoutBatch, given: torch.Tensor, given_boxes: torch.Tensor,
                      generator: torch.Generator | None, steps: int, guidance: float,
                      samples: torch.Tensor | None = None) -> torch.Tensor:
        """Model-space boxes (B, K, W, 4) for one window; `given` (B, K, W) entries are `given_boxes`. `samples`
        (B, 2) long: per row its graph (rows of one graph share it) and its sample; with `layout.repel`, each row's
        objects are pushed away from where the other samples of its graph put them."""
        sampler = make_sampler("ddim", self.diffusion.schedule, steps, float(self.cfg.get("eta", 0.0)))
        push = float(self.cfg.get("scorer_guidance", 0.0) or 0.0)
        repel = float(self.cfg.get("repel", 0.0) or 0.0)
        x = torch.randn(given_boxes.shape, generator=generator, device=self.device)
        for t in sampler.timesteps:
            x = torch.where(given[..., None], given_boxes, x)
            steps_t = torch.where(given, 0, t)
            out = guided_output(self.module.denoiser, x, steps_t, cond, guidance)
            if push > 0:
                out = self._scorer_push(out, x, t, cond, given, push)
            if repel > 0 and samples is not None:
                out = self._repel(out, x, t, cond, given, samples, repel)
            x = sampler.step(out, t, x, self.diffusion, generator, clip_x0=True)
        return torch.where(given[..., None], given_boxes, x)

    def _scorer_push(self, out: torch.Tensor, x: torch.Tensor, t: int, cond: LayoutBatch, given: torch.Tensor,
                     push: float) -> torch.Tensor:
        """The model output with its predicted clean boxes moved up the relation scorer's log-probability of the
        graph's triples (each coordinate by at most `push` of the model-space range), as the output that
        predicts them: guidance by the scorer, so a graph unlike the data's still gets its relations."""
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        x0, _ = self.diffusion.predict_x0_eps(out, x, t_batch)
        with torch.inference_mode(False), torch.enable_grad():  # also under a caller's inference mode
            clean = x0.clone().clamp(-1, 1).requires_grad_(True)
            log_p = self.module.scorer.predicate_log_probs(from_model_space(clean), cond.classes.clone(),
                                                           cond.triples.clone())
            members, first = pair_sets(cond.triples.clone(), cond.triple_mask.clone(), log_p.shape[-1])
            (grad,) = torch.autograd.grad((set_log_probs(log_p, members) * first).sum(), clean)
        step = grad / grad.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8) * push
        if step.shape[2] > 2:  # smooth over frames: a push that jitters from frame to frame would read as motion
            padded = torch.cat([step[:, :, :1], step, step[:, :, -1:]], dim=2)
            step = (padded[:, :, :-2] + 2 * padded[:, :, 1:-1] + padded[:, :, 2:]) / 4
        x0 = torch.where(given[..., None], x0, x0 + step)
        sqrt_ab = self.diffusion.coef("sqrt_alphas_cumprod", t_batch, x)
        sqrt_1m = self.diffusion.coef("sqrt_one_minus_alphas_cumprod", t_batch, x)
        if self.diffusion.parameterization == "x0":
            return x0
        if self.diffusion.parameterization == "v":
            return (sqrt_ab * x - x0) / sqrt_1m
        return (x - sqrt_ab * x0) / sqrt_1m

    def _repel(self, out: torch.Tensor, x: torch.Tensor, t: int, cond: LayoutBatch, given: torch.Tensor,
               samples: torch.Tensor, repel: float) -> torch.Tensor:
        """The model output with each row's predicted boxes shifted, per object and by `repel` of the model-space
        range, away from the mean path of that object in the other samples of the same graph (particle guidance)."""
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        x0, _ = self.diffusion.predict_x0_eps(out, x, t_batch)
        free = (~given & cond.obj_mask[:, :, None]).float()[..., None]  # (B, K, W, 1)
        path = (x0[..., :2] * free).sum(2) / free.sum(2).clamp(min=1)  # (B, K, 2) mean centre over free frames
        graph, sample = samples.unbind(-1)
        others = (graph[:, None] == graph[None]) & (sample[:, None] != sample[None])  # (B, B)
        weight = others.float() / others.sum(1, keepdim=True).clamp(min=1)
        away = path - torch.einsum("ab,bkc->akc", weight, path)  # (B, K, 2)
        step = away / away.norm(dim=-1, keepdim=True).clamp(min=1e-6) * repel * others.any(1)[:, None, None]
        x0 = x0.clone()
        x0[..., :2] = x0[..., :2] + step[:, :, None] * free
        sqrt_ab = self.diffusion.coef("sqrt_alphas_cumprod", t_batch, x)
        sqrt_1m = self.diffusion.coef("sqrt_one_minus_alphas_cumprod", t_batch, x)
        if self.diffusion.parameterization == "x0":
            return x0
        if self.diffusion.parameterization == "v":
            return (sqrt_ab * x - x0) / sqrt_1m
        return (x - sqrt_ab * x0) / sqrt_1m

    @torch.no_grad()
    def sample_boxes(self, clips: Sequence[Sequence[SceneGraph]], generator: torch.Generator | None = None,
                     candidates: int | None = None, steps: int | None = None,
                     guidance: float | None = None) -> torch.Tensor:
        """(B, K, N, 4) x0 y0 x1 y1 boxes for B clips of N per-frame graphs (the clip's objects in order, padded
        to the most objects). Given boxes are kept as they are."""
        candidates = int(self.cfg.candidates if candidates is None else candidates)
        steps = int(self.cfg.sample_steps if steps is None else steps)
        guidance = float(self.cfg.guidance if guidance is None else guidance)
        lengths = {len(c) for c in clips}
        assert len(lengths) == 1, f"clips of one call need the same length, got {sorted(lengths)}"
        total = lengths.pop()
        if self.window == 1 and total > 1:  # an image model: one layout per run of identical graphs, held
            return self._stills(clips, generator, candidates, steps, guidance)
        shortest = max(1, self.window // 4)  # the shortest window the model trained on (layout.train.crop_window)
        if total < shortest:  # lay out the shortest window it knows, the last graph held
            longer = [list(c) + [c[-1]] * (shortest - total) for c in clips]
            return self.sample_boxes(longer, generator, candidates, steps, guidance)[:, :, :total]
        full = encode_layout_batch(self.encoder, [list(c) for c in clips], self.device)  # boxes the graphs give
        B, K, _ = full.shape
        out = torch.zeros(B, K, total, 4, device=self.device)  # model space
        done = full.has_box.clone()  # (B, K, N): entries known so far
        out[done] = full.boxes[done]
        for win in plan_windows(total, self.window, self.prefix, self.lookahead):
            span = slice(win.start, win.end)
            cond = encode_layout_batch(self.encoder, [list(c[span]) for c in clips], self.device)
            given = done[:, :, span].clone()
            given[:, :, : max(0, win.given_until - win.start)] = True
            given &= cond.obj_mask[:, :, None]
            judged = torch.zeros(win.end - win.start, dtype=torch.bool, device=self.device)
            judged[max(0, win.given_until - win.start):] = True
            x = self._best_of(cond, given, out[:, :, span], judged, generator, candidates, steps, guidance)
            keep = slice(win.given_until, win.keep_until)
            new = ~done[:, :, keep]
            part = out[:, :, keep]
            part[new] = x[:, :, keep.start - win.start : keep.stop - win.start][new]
            out[:, :, keep] = part
            done[:, :, keep] = True
        boxes = from_model_space(out)
        return torch.where(full.has_box[..., None], _given_boxes(clips, K, total, self.device), boxes)

    def _best_of(self, cond: LayoutBatch, given: torch.Tensor, base: torch.Tensor, judged: torch.Tensor,
                 generator: torch.Generator | None, candidates: int, steps: int, guidance: float) -> torch.Tensor:
        """One window's model-space boxes (B, K, W, 4): per video one of its `candidates` draws that looks right (no
        relation the scorer reads otherwise, no implausible move or overlap), chosen by `layout.choice`; a video whose
        candidates all look wrong keeps the best-scoring one and draws `candidates` more, up to `rounds` times."""
        B = given.shape[0]
        rounds = int(self.cfg.get("rounds", 1)) if candidates > 1 else 1
        choice = str(self.cfg.get("choice", "best"))
        twins = _twins(cond) if choice == "diverse" or self.cfg.get("repel", 0) else [[] for _ in range(B)]
        group = torch.tensor([min([v, *twins[v]]) for v in range(B)], device=self.device)  # a graph's first sample
        best = base.clone()
        best_score = torch.full((B,), float("-inf"), device=self.device)
        settled = torch.zeros(B, dtype=torch.bool, device=self.device)  # holds a layout that looks right
        pending = torch.arange(B, device=self.device)
        for _ in range(rounds):
            n = len(pending)
            sub = cond.select(pending).repeat_interleave(candidates)
            sub_given = given[pending].repeat_interleave(candidates, 0)
            rows = torch.stack([group[pending], pending], 1).repeat_interleave(candidates, 0)
            x = self.sample_window(sub, sub_given, base[pending].repeat_interleave(candidates, 0), generator, steps,
                                   guidance, rows)
            per_class = sub.classes[:, :, None].expand(sub_given.shape) if self.cfg.get("ranges", "data") == "class" \
                else None  # each class's own ranges of sizes and centres (LayoutStats.project)
            boxes = self.stats.project(from_model_space(x), per_class)
            if per_class is not None:  # and each class no faster than the data moves it (still furniture stays)
                boxes = self.stats.steady(boxes, sub.classes, sub_given)
            x = torch.where(sub_given[..., None], x, to_model_space(boxes))
            scores, right = layout_scores(self.module.scorer, self.stats, from_model_space(x), sub, judged)
            scores, right, x = scores.view(n, candidates), right.view(n, candidates), x.view(n, candidates, *x.shape[1:])
            for j, video in enumerate(pending.tolist()):
                if right[j].any():
                    peers = [t for t in twins[video] if settled[t]]
                    pick = self._pick_right(x[j], right[j], scores[j], best[peers], judged, choice)
                    best[video], best_score[video], settled[video] = x[j, pick], scores[j, pick], True
                else:
                    pick = int(scores[j].argmax())
                    if scores[j, pick] > best_score[video]:
                        best[video], best_score[video] = x[j, pick], scores[j, pick]
            pending = pending[~settled[pending]]
            if not len(pending):
                break
        repair = int(self.cfg.get("repair_steps", 0) or 0)
        if len(pending) and repair > 0:  # still wrong after every round: move its boxes until the scorer agrees
            sub = cond.select(pending)
            fixed = self._repair(best[pending], sub, given[pending], judged, repair)
            scores, _ = layout_scores(self.module.scorer, self.stats, from_model_space(fixed), sub, judged)
            better = scores > best_score[pending]
            best[pending[better]] = fixed[better]
        return best

    @staticmethod
    def _pick_right(x: torch.Tensor, right: torch.Tensor, scores: torch.Tensor, peers: torch.Tensor,
                    judged: torch.Tensor, choice: str) -> int:
        """Which of one video's candidates x (C, K, W, 4) that look right (`right` (C,)) to keep: `best` the highest
        score, `first` the first drawn, `diverse` the one farthest from the layouts already chosen for other samples
        of the same graph in this call (`peers` (P, K, W, 4); the first drawn when there are none)."""
        if choice == "best":
            return int(torch.where(right, scores, scores.new_tensor(float("-inf"))).argmax())
        if choice == "diverse" and len(peers):
            c, p = centres(from_model_space(x))[:, :, judged], centres(from_model_space(peers))[:, :, judged]
            far = (c[:, None] - p[None]).norm(dim=-1).mean(dim=(2, 3)).amin(dim=1)  # (C,): distance to nearest peer
            return int(torch.where(right, far, far.new_tensor(float("-inf"))).argmax())
        return int(right.to(torch.int8).argmax())  # the first that looks right

    def _repair(self, x: torch.Tensor, cond: LayoutBatch, given: torch.Tensor, judged: torch.Tensor,
                steps: int) -> torch.Tensor:
        """Model-space boxes (B, K, W, 4) moved by `steps` gradient steps on their centres (sizes and given boxes
        kept) towards what the scorer reads as the graph's relations, apart by at least the data's smallest gap,
        no faster than the data's moves, and near where the diffusion model put them: for graphs whose relations
        only jointly fix the arrangement (a row of four), where drawing more candidates rarely finds one."""
        free = (~given & cond.obj_mask[:, :, None])[..., None].float()  # (B, K, W, 1): boxes that may move
        start = from_model_space(x)
        size = start[..., 2:] - start[..., :2]
        lo, hi = x.new_tensor(self.stats.centre_lo), x.new_tensor(self.stats.centre_hi)
        K = x.shape[1]
        pair = cond.obj_mask[:, :, None] & cond.obj_mask[:, None, :] & ~torch.eye(K, dtype=torch.bool, device=x.device)
        pair = pair[:, None] & judged[None, :, None, None]  # (B, W, K, K)
        s, p, o = cond.triples.unbind(-1)
        b = torch.arange(x.shape[0], device=x.device)[:, None, None].expand_as(s)
        w = torch.arange(x.shape[2], device=x.device)[None, :, None].expand_as(s)
        members, first = pair_sets(cond.triples, cond.triple_mask, self.module.scorer.num_predicates)
        rel_mask = (first & judged[None, :, None]).float()  # each pair once, judged by the mass on its predicates
        with torch.inference_mode(False), torch.enable_grad():  # also under a caller's inference mode
            # tensors made under inference mode cannot enter autograd: plain copies of everything the loss reads
            free, size, lo, hi, pair, rel_mask, members = (t.clone() for t in (free, size, lo, hi, pair, rel_mask,
                                                                                members))
            b, s, p, o, w = (t.clone() for t in (b, s, p, o, w))
            classes = cond.classes.clone()
            origin = centres(start).clone()
            shift = torch.zeros_like(origin, requires_grad=True)
            opt = torch.optim.Adam([shift], lr=0.02)
            for i in range(steps):
                keep_apart = 50.0 * min(1.0, 1.25 * (i + 1) / steps)  # weak at first: objects may pass each other
                centre = torch.minimum(torch.maximum(origin + shift * free, lo), hi)
                boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
                log_p = set_log_probs(self.module.scorer(boxes[b, s, w], boxes[b, o, w], classes[b, s],
                                                         classes[b, o]).log_softmax(-1), members)
                gap = pairwise_gap(boxes.transpose(1, 2))  # (B, W, K, K)
                crowd = (self.stats.min_gap + 0.01 - gap).clamp(min=0)[pair].sum()
                step = (centre[:, :, 1:] - centre[:, :, :-1]).norm(dim=-1)
                fast = (step - self.stats.max_move).clamp(min=0).sum()
                loss = -(log_p * rel_mask).sum() + keep_apart * crowd + 50.0 * fast + 1.0 * (shift * free).pow(2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                centre = torch.minimum(torch.maximum(origin + shift * free, lo), hi)
        return to_model_space(torch.cat([centre - size / 2, centre + size / 2], dim=-1)).detach()

    def _stills(self, clips, generator, candidates, steps, guidance) -> torch.Tensor:
        """An image model's layout for a longer static or segmented graph: each segment laid out once, held."""
        segments = relation_segments(clips[0])
        assert all(relation_segments(c) == segments for c in clips), "clips of one call share their segments"
        parts = [self.sample_boxes([c[s:s + 1] for c in clips], generator, candidates, steps, guidance)
                 .expand(-1, -1, e - s, -1) for s, e in segments]
        return torch.cat(parts, dim=2)

    def fill(self, clips: Sequence[Sequence[SceneGraph]], generator: torch.Generator | None = None,
             **options) -> list[list[SceneGraph]]:
        """The clips' per-frame graphs with every object's box: given ones kept, the others sampled."""
        if all(g.all_boxes_given for clip in clips for g in clip):
            return [list(clip) for clip in clips]
        boxes = self.sample_boxes(clips, generator, **options).cpu()
        return [[g.with_boxes(boxes[b, : g.num_objects, f]) for f, g in enumerate(clip)]
                for b, clip in enumerate(clips)]


def _twins(cond: LayoutBatch) -> list[list[int]]:
    """Per video of the batch, the other videos of exactly the same graphs (objects, relations and the boxes the
    graphs give): samples of one graph in one call, whose choices `layout.choice=diverse` keeps apart. The frames a
    window takes from the one before may differ: later windows keep the samples' paths apart too."""
    B = cond.classes.shape[0]
    flat = lambda t: t.reshape(B, -1).float()  # noqa: E731
    signature = torch.cat([flat(cond.classes * cond.obj_mask), flat(cond.obj_mask), flat(cond.triple_mask),
                           flat(cond.triples * cond.triple_mask[..., None]), flat(cond.has_box),
                           flat(cond.boxes * cond.has_box[..., None])], 1)
    same = (signature[:, None] == signature[None]).all(dim=-1) & ~torch.eye(B, dtype=torch.bool,
                                                                            device=signature.device)
    return [same[i].nonzero()[:, 0].tolist() for i in range(B)]


def _given_boxes(clips: Sequence[Sequence[SceneGraph]], K: int, total: int, device) -> torch.Tensor:
    out = torch.zeros(len(clips), K, total, 4, device=device)
    for b, clip in enumerate(clips):
        for f, g in enumerate(clip):
            if g.boxes is not None:
                out[b, : g.num_objects, f] = g.boxes.to(device)
    return out
