"""The run report: one self-contained `report.html` that opens from disk, without a server or network.

Everything is inside the file: images and GIFs as base64 `data:` URIs, plots rendered to PNG by matplotlib's
Agg backend (a `Figure`, no pyplot), inline CSS, no scripts. All text from configs, metrics and captions is
escaped. Sections: the config that matters, the model beside its controls (sg2video.eval.report_controls: the
unconditional and the relation control, seen and unseen combinations, how far above the relation control the
model's relations are), the metrics table (missing or NaN values read "n/a"), a note on
which features the fidelity numbers used, the training curves (from TensorBoard or given), and the samples:
each generated video beside its scene graph's picture and the ground-truth clip when there is one.
"""
from __future__ import annotations

import logging

import base64
import html
import io
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from sg2video.eval.report_controls import controls_html
from sg2video.video_io import write_atomic

__all__ = ["read_scalars", "summarize_config", "write_report", "MAX_EMBED_BYTES"]

MAX_EMBED_BYTES = 2_000_000  # an image above this is downscaled before it is embedded
MAX_CURVES = 24  # scalar tags plotted; the rest are named under the plot
_MIME = {".gif": "image/gif", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}

Curves = Mapping[str, Sequence[tuple[int, float]]]


# ----------------------------------------------------------------------------------------------
# TensorBoard scalars


def read_scalars(tb_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series under `tb_dir`: tag -> [(step, value)] sorted by step.

    Event files in subfolders are read too, their tags prefixed with the folder ("eval/fid"). A step
    written twice (a resumed run) keeps its last value. A missing folder gives {}.
    """
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its directory watcher logs every file

    tb_dir = Path(tb_dir)
    if not tb_dir.is_dir():
        return {}
    folders = sorted({p.parent for p in tb_dir.rglob("events.out.tfevents.*") if p.is_file()})
    series: dict[str, dict[int, float]] = {}
    for folder in folders:
        accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep every event
        accumulator.Reload()
        prefix = "" if folder == tb_dir else folder.relative_to(tb_dir).as_posix() + "/"
        for tag in accumulator.Tags()[SCALARS]:
            points = series.setdefault(prefix + tag, {})
            for event in sorted(accumulator.Scalars(tag), key=lambda e: e.wall_time):
                points[int(event.step)] = float(event.value)
    return {tag: sorted(points.items()) for tag, points in sorted(series.items())}


# ----------------------------------------------------------------------------------------------
# Config and values


# the keys a reader needs to tell runs apart (DESIGN.md's swept keys), in the order shown
_SUMMARY_KEYS = (
    "data.name", "data.size", "data.frames", "data.min_objects", "data.max_objects",
    "encoder.name", "encoder.use_gcn", "encoder.layers", "encoder.dim", "encoder.pooling",
    "encoder.loss.contrastive", "encoder.loss.masked", "encoder.loss.box",
    "model.name", "model.cond", "model.prefix_frames", "model.dim", "model.dim_mults", "model.crn_dims",
    "model.train_encoder", "layout.name",
    "diffusion.space", "diffusion.timesteps", "diffusion.schedule", "diffusion.parameterization",
    "diffusion.loss", "diffusion.sampler", "diffusion.sample_steps", "diffusion.guidance",
    "train.max_steps", "train.batch_size", "train.lr", "train.precision", "train.seed",
    "eval.num_samples", "eval.fid_weights", "eval.fvd_weights",
)  # fmt: skip


def summarize_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a resolved config (a nested mapping: dict or DictConfig) that tell runs apart, flat
    ("model.cond" -> "crossattn"); keys the config lacks are left out."""
    summary = {}
    for dotted in _SUMMARY_KEYS:
        node: Any = cfg
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            summary[dotted] = node
    return summary


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def _format(value: Any) -> str:
    """Text of one value; None and NaN read "n/a" (metrics.json stores NaN as null)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "n/a"
        return str(value) if math.isinf(value) else f"{value:.4g}"
    if isinstance(value, Mapping) and not value:
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    return str(value)


def _table(table_id: str, rows: Iterable[tuple[str, Any]]) -> str:
    cells = [(html.escape(str(key)), html.escape(_format(value))) for key, value in rows]
    body = "".join(f'<tr><th scope="row">{key}</th><td>{value}</td></tr>' for key, value in cells)
    return f'<table id="{table_id}">{body}</table>'


def _features_note(metrics: Mapping[str, Any]) -> str:
    """Which features the fidelity numbers used; the project's own ones are not FID / FVD (and are not named so)."""
    names = sorted({str(v) for k, v in _flatten(metrics) if k.split(".")[-1].endswith("features") and isinstance(v, str)})
    if not names:
        return ""
    inception = any(name.startswith("inception:") for name in names)
    i3d = any(name.startswith("i3d:") for name in names)
    parts = ["FID / KID: Inception-v3 frame features from a local weights file." if inception else
             "fd_frame / kd_frame / fd_video: Frechet and kernel distances in the project's own features (not FID); "
             "they compare only with runs that used the same features."]
    parts.append("FVD: I3D logits from a local weights file." if i3d else "No FVD (eval.fvd_weights not set).")
    listed = ", ".join(f"<code>{html.escape(n)}</code>" for n in names)
    return f'<p class="note">Fidelity features: {listed}. {html.escape(" ".join(parts))}</p>'


# ----------------------------------------------------------------------------------------------
# Images


def _shrink(data: bytes, suffix: str, max_bytes: int) -> bytes:
    """Halve the image's sides (every frame of a GIF) until it fits in `max_bytes` or gets tiny."""
    from PIL import Image, ImageSequence

    while len(data) > max_bytes:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if min(width, height) < 64:
                break
            size = (width // 2, height // 2)
            out = io.BytesIO()
            if suffix == ".gif":
                frames = [f.convert("RGB").resize(size, Image.NEAREST) for f in ImageSequence.Iterator(image)]
                duration = image.info.get("duration", 100)
                frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=duration, loop=0)
            else:
                image.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(out, format="PNG")
        data = out.getvalue()
        suffix = suffix if suffix == ".gif" else ".png"
    return data


def _data_uri(path: str | Path | None, max_bytes: int) -> str | None:
    """A `data:` URI holding the image file, or None when there is no such file."""
    if path is None:
        return None
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _MIME:
        raise ValueError(f"cannot embed {path}: not an image type the report knows ({', '.join(_MIME)})")
    if not path.is_file():
        return None
    data = path.read_bytes()
    if len(data) > max_bytes:
        data = _shrink(data, suffix, max_bytes)
        suffix = suffix if suffix == ".gif" else ".png"
    return f"data:{_MIME[suffix]};base64,{base64.b64encode(data).decode('ascii')}"


def _img(uri: str | None, alt: str, css_class: str, missing: str) -> str:
    if uri is None:
        return f'<div class="missing">{html.escape(missing)}</div>'
    return f'<img class="{css_class}" src="{uri}" alt="{html.escape(alt)}">'


def _png_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------------------------
# Curves


def _curve_order(tags: Iterable[str]) -> list[str]:
    """Losses first, then the rest, each group alphabetical."""
    return sorted(tags, key=lambda tag: ("loss" not in tag.lower(), tag))


def _plot_curves(curves: Curves) -> str:
    """The curves as one PNG of small panels (one per tag, at most MAX_CURVES), or a line saying why not."""
    tags = [tag for tag in _curve_order(curves) if len(curves[tag])]
    if not tags:
        return '<p class="note">No training curves were logged.</p>'
    shown, rest = tags[:MAX_CURVES], tags[MAX_CURVES:]
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(4.2 * cols, 2.7 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    for ax, tag in zip(axes, shown):
        steps = np.array([step for step, _ in curves[tag]], dtype=np.float64)
        values = np.array([value for _, value in curves[tag]], dtype=np.float64)
        finite = np.isfinite(values)
        ax.plot(steps, values, lw=0.8, color="tab:blue", marker="o" if len(steps) < 20 else None, ms=3)
        if finite.sum() > 50:  # a smoothed line over a noisy one (exponential moving average)
            smooth, ema = np.empty(finite.sum()), values[finite][0]
            for i, value in enumerate(values[finite]):
                ema = 0.9 * ema + 0.1 * value
                smooth[i] = ema
            ax.plot(steps[finite], smooth, lw=1.4, color="tab:orange")
        shown_values = values[finite]
        if len(shown_values) and shown_values.min() > 0 and shown_values.max() / shown_values.min() > 100:
            ax.set_yscale("log")
        ax.set_title(tag, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    fig.tight_layout()
    note = ""
    if rest:
        note = f'<p class="note">Not plotted ({len(rest)}): {html.escape(", ".join(rest))}</p>'
    return f'<img class="curves" src="{_png_uri(fig)}" alt="training curves: {html.escape(", ".join(shown))}">{note}'


# ----------------------------------------------------------------------------------------------
# The page


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta, .note { color: #555; font-size: 0.9em; } code { background: #eee; padding: 0 3px; border-radius: 3px; }
table { border-collapse: collapse; font-size: 0.9em; background: white; }
th, td { border: 1px solid #ddd; padding: 3px 10px; text-align: left; } th { font-weight: 600; background: #f3f3f3; }
td { font-variant-numeric: tabular-nums; }
.curves { max-width: 100%; background: white; border: 1px solid #ddd; }
.samples { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
.sample { background: white; border: 1px solid #ddd; border-radius: 6px; padding: 10px; }
.sample .row { display: flex; gap: 10px; align-items: flex-start; flex-wrap: wrap; }
.sample figure { margin: 0; text-align: center; font-size: 0.8em; color: #555; }
.video { width: 160px; height: 160px; image-rendering: pixelated; background: black; }
.graph { width: 220px; height: auto; }
.missing { width: 160px; height: 160px; display: flex; align-items: center; justify-content: center;
  font-size: 0.75em; color: #a00; border: 1px dashed #a00; overflow-wrap: anywhere; }
.caption { font-size: 0.9em; margin: 6px 0; } .sample table { font-size: 0.8em; }
"""


# what a sample card shows, in order: (label, key of the sample dict, CSS class, word for a missing file)
_SAMPLE_IMAGES = (
    ("generated", "gif_path", "video", "video"),
    ("ground truth", "gt_gif_path", "video", "clip"),
    ("scene graph", "graph_png_path", "graph", "graph"),
)


def html_page(title: str, body: str, extra_css: str = "") -> str:
    """A self-contained HTML page: the project's style sheet, `title` as <title> and <h1>, then `body`."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_CSS}{extra_css}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
{body}</body>
</html>
"""


def _sample_card(index: int, sample: Mapping[str, Any], max_bytes: int) -> str:
    caption = str(sample.get("caption") or f"sample {index}")
    figures = []
    for label, key, css_class, noun in _SAMPLE_IMAGES:
        if sample.get(key) is None and key != "gif_path":
            continue  # no ground truth / graph picture for this sample
        uri = _data_uri(sample.get(key), max_bytes)
        image = _img(uri, f"{label}: {caption}", css_class, f"missing {noun}: {sample.get(key)}")
        figures.append(f"<figure>{image}<figcaption>{label}</figcaption></figure>")
    metrics = sample.get("metrics") or {}
    table = _table(f"sample-{index}-metrics", _flatten(metrics)) if metrics else ""
    row = f'<div class="row">{"".join(figures)}</div>'
    return f'<div class="sample"><p class="caption">{html.escape(caption)}</p>{row}{table}</div>'


def write_report(
    run_dir: str | Path,
    title: str,
    config_summary: Mapping[str, Any],
    metrics: Mapping[str, Any],
    loss_curves: Curves | None = None,
    samples: Sequence[Mapping[str, Any]] = (),
    filename: str = "report.html",
    max_image_bytes: int = MAX_EMBED_BYTES,
) -> Path:
    """Write `run_dir/report.html` (atomically) and return its path.

    `config_summary`: the settings to show (see `summarize_config`; nested mappings are flattened).
    `metrics`: values to tabulate, nested sections flattened as "section.key"; None / NaN read "n/a".
    `loss_curves`: tag -> [(step, value)]; None reads every scalar from the run's TensorBoard folder `tb/`.
    `samples`: dicts with `gif_path` (generated video), `graph_png_path`, `gt_gif_path` (or None), `caption`
    and `metrics` (a small dict shown under the sample). A file that does not exist shows as a visible
    "missing" box rather than failing the report.
    """
    run_dir = Path(run_dir)
    curves = read_scalars(run_dir / "tb") if loss_curves is None else loss_curves
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cards = "".join(_sample_card(i, sample, max_image_bytes) for i, sample in enumerate(samples))
    samples_html = f'<div class="samples" id="samples">{cards}</div>' if cards else '<p class="note">No samples.</p>'
    page = html_page(title, f"""<p class="meta">Run directory <code>{html.escape(str(run_dir))}</code>, report written {generated}.</p>
<h2>Configuration</h2>
{_table("config", _flatten(config_summary)) if config_summary else '<p class="note">No configuration given.</p>'}
{controls_html(metrics)}<h2>Metrics</h2>
{_table("metrics", _flatten(metrics)) if metrics else '<p class="note">No metrics.</p>'}
{_features_note(metrics)}
<h2>Training curves</h2>
{_plot_curves(curves)}
<h2>Samples</h2>
{samples_html}
""")
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", page), "the report must not reference external files"
    return write_atomic(run_dir / filename, lambda tmp: tmp.write_text(page, encoding="utf-8"))
