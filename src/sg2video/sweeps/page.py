"""The sweep report's page: comparison.html with the table, the figures and each arm's best and worst sample."""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from sg2video.eval.report import _png_uri, _sample_card, html_page
from sg2video.sweeps.reading import Arm, Job, Summary
import numpy as np

from sg2video.sweeps.tables import _cell, _fixed


# -- samples ---------------------------------------------------------------------------------------


@dataclass
class ScoredSample:
    job: Job
    index: int
    relation_accuracy: float
    object_accuracy: float

    @property
    def stem(self) -> Path:
        return self.job.path / "samples" / f"sample_{self.index:03d}"

    def rank(self) -> tuple[float, float]:
        """Relation accuracy first (NaN: no relations, counts as 0), then object accuracy."""
        rel = 0.0 if math.isnan(self.relation_accuracy) else self.relation_accuracy
        obj = 0.0 if math.isnan(self.object_accuracy) else self.object_accuracy
        return rel, obj


def score_samples(job: Job) -> list[ScoredSample]:
    """Per-sample compliance of a job's saved samples (shapes world); NaN scores elsewhere."""
    from sg2video.data.shapes import shapes_vocab
    from sg2video.eval.compliance import check_video
    from sg2video.graph_json import GraphFormatError, load_graph_json

    data_name = str((job.config.get("data") or {}).get("name", "shapes"))
    vocab = shapes_vocab() if data_name == "shapes" else None
    scored = []
    for npy in sorted((job.path / "samples").glob("sample_[0-9][0-9][0-9].npy")):
        index = int(npy.stem.split("_")[1])
        rel = obj = math.nan
        graph_path = npy.with_suffix(".json")
        if vocab is not None and graph_path.exists():
            try:
                frames = np.load(npy)
                graphs = load_graph_json(graph_path, vocab).frame_graphs(frames.shape[0])
                result = check_video(frames, graphs[: frames.shape[0]], vocab)
                rel, obj = result.relation_accuracy, result.object_accuracy
            except (GraphFormatError, ValueError, OSError):
                pass
        scored.append(ScoredSample(job, index, rel, obj))
    return scored


def best_and_worst(arm: Arm) -> list[tuple[str, ScoredSample]]:
    """The arm's best sample (the first of the highest scores, in job / sample order) and its worst (the
    last of the lowest), so that two samples show whenever there are two, even when all score alike."""
    samples = [s for job in arm.ok for s in score_samples(job)]
    if not samples:
        return []
    best = max(samples, key=ScoredSample.rank)
    worst = min(reversed(samples), key=ScoredSample.rank)
    return [("best", best)] if best is worst else [("best", best), ("worst", worst)]


def _sample_html(index: int, which: str, sample: ScoredSample) -> str:
    score = f"relation acc {_fixed(sample.relation_accuracy)}, object acc {_fixed(sample.object_accuracy)}"
    stem = sample.stem
    card = {
        "gif_path": f"{stem}.gif",
        "gt_gif_path": f"{stem}_gt.gif" if Path(f"{stem}_gt.gif").exists() else None,
        "graph_png_path": f"{stem}_graph.png" if Path(f"{stem}_graph.png").exists() else None,
        "caption": f"{which}: job {sample.job.num} (seed {sample.job.seed}), sample {sample.index:03d}: {score}",
    }
    return _sample_card(index, card, 500_000)


def samples_figure(summary: Summary, frames: int = 4) -> Figure | None:
    """samples.png: each arm's best and worst sample (the page's picks), their first `frames` frames side by
    side, one row each, captioned with the arm, the job and the sample's scores. None without samples."""
    rows = []
    for arm in summary.arms:
        for which, sample in best_and_worst(arm):
            video = np.load(f"{sample.stem}.npy")  # (T, H, W, 3) uint8
            strip = np.concatenate(list(video[:frames]), axis=1)
            caption = (f"{arm.label(summary.keys)} - {which} (job {sample.job.num}): relations "
                       f"{_fixed(sample.relation_accuracy)}, objects {_fixed(sample.object_accuracy)}")
            rows.append((caption, strip))
    if not rows:
        return None
    fig = Figure(figsize=(6.5, 1.25 * len(rows)))
    for i, (caption, strip) in enumerate(rows):
        ax = fig.add_subplot(len(rows), 1, i + 1)
        ax.imshow(strip, interpolation="nearest")
        ax.set_title(caption, fontsize=7, loc="left")
        ax.axis("off")
    fig.tight_layout()
    return fig


# -- the page --------------------------------------------------------------------------------------


def _html_table(summary: Summary) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["arm", "runs", *(n for n, _, _ in summary.columns)])
    rows = []
    for arm in summary.arms:
        cells = [arm.label(summary.keys), f"{len(arm.ok)}/{len(arm.jobs)}", *map(_cell, summary.stats(arm))]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f'<table id="results"><tr>{head}</tr>{"".join(rows)}</table>'


def comparison_html(summary: Summary, metrics_fig: Figure | None, losses_fig: Figure | None) -> str:
    keys = ", ".join(summary.keys) or "nothing"
    common = ", ".join(f"{k}={v}" for k, v in summary.common.items()) or "none"
    failed = [job for job in summary.jobs if job.failure is not None]
    failed_html = ("<ul>" + "".join(f"<li>job {html.escape(j.num)}: {html.escape(j.failure or '')}</li>"
                                     for j in failed) + "</ul>") if failed else '<p class="note">None.</p>'
    sections = []
    card = 0
    for arm in summary.arms:
        picked = best_and_worst(arm)
        cards = []
        for which, sample in picked:
            cards.append(_sample_html(card, which, sample))
            card += 1
        body = f'<div class="samples">{"".join(cards)}</div>' if cards else '<p class="note">No samples.</p>'
        sections.append(f'<h3 class="arm">{html.escape(arm.label(summary.keys))}</h3>{body}')

    def figure(fig: Figure | None, alt: str) -> str:
        return f'<img class="curves" src="{_png_uri(fig)}" alt="{alt}">' if fig else '<p class="note">Nothing to plot.</p>'

    title = f"Sweep comparison: {summary.sweep_name}"
    page = html_page(title, f"""<p class="meta">{len(summary.jobs)} jobs in {len(summary.arms)} arms. Swept: <code>{html.escape(keys)}</code>
(seeds are repeats). Common overrides: <code>{html.escape(common)}</code>.</p>
<h2>Results</h2>
<p class="note">Mean ± sample std over seeds (n runs).</p>
{_html_table(summary)}
<h2>Failed jobs</h2>
{failed_html}
<h2>Metrics by arm</h2>
{figure(metrics_fig, "metrics by arm")}
<h2>Training losses</h2>
<p class="note">Mean over an arm's seeds. A stage reused from the stage cache logs no curve in the job that
reused it: shared encoders show under the arm whose job trained them.</p>
{figure(losses_fig, "training losses by arm")}
<h2>Best and worst sample of each arm</h2>
<p class="note">Scored one by one with the shapes compliance checker: relation accuracy, then object accuracy.</p>
{"".join(sections)}
""", extra_css=" h3 { font-size: 1em; margin-top: 1.2em; }")
    return page


