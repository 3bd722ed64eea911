"""Compare the runs of a sweep (the library behind `python experiments/report.py <sweep dir> [--out DIR]`).

Reads every job directory of a Hydra multirun (`<sweep dir>/<job number>/` with `.hydra/overrides.yaml`,
`metrics.json`, `tb/`, `samples/`), groups the jobs into arms by the overrides that differ between jobs
(`train.seed` excluded: seeds are the repeats of an arm), and writes into DIR (default: the sweep dir):

- `results.md`, `results.csv`: one row per arm, mean, std and n over its seeds of each metric (eval
  object / relation accuracy, the unconditional control, long timelines, encoder retrieval top-1 / top-5
  in both directions, SG score and fidelity; a metric no job has is left out). Both are a pure function of the
  sweep directory (no dates, no absolute paths), so committed tables regenerate byte for byte.
- `metrics.png`: each metric against the swept value, mean +- std over seeds, single runs as dots.
- `losses.png`: training losses from TensorBoard, one line per arm (mean over its seeds).
- `curves.md`, `curves.png` (jobs run with `eval.curve_every`): box-free held-out object / relation accuracy and
  objects kept through the clip against the generator's training steps and against training CPU time, per arm, mean over seeds.
- `samples.png`: each arm's best and worst sample (the ones the page shows), a strip of frames each.
- `comparison.html`: one self-contained page (images as data URIs) with the table, the plots, and the
  best and worst sample of each arm, scored one by one with the shapes compliance checker.

A job without metrics.json (or without the sections its stage writes) is listed as failed and left out
of the means; it never stops the report.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from sg2video.sweeps.page import *  # noqa: F401,F403
from sg2video.sweeps.page import comparison_html, samples_figure
from sg2video.sweeps.plots import *  # noqa: F401,F403
from sg2video.sweeps.plots import loss_curves, plot_compliance_curves, plot_losses, plot_metrics
from sg2video.sweeps.reading import *  # noqa: F401,F403
from sg2video.sweeps.reading import Summary, summarize
from sg2video.sweeps.tables import *  # noqa: F401,F403
from sg2video.sweeps.tables import curves_markdown, markdown, write_csv
from sg2video.video_io import write_atomic


def _save_png(fig: Figure, path: Path) -> None:
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))


def write_sweep_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> tuple[Summary, dict[str, Path]]:
    """Every output of the report for `sweep_dir`, written into `out_dir` (default: the sweep dir)."""
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir
    summary = summarize(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results.md": out / "results.md", "results.csv": out / "results.csv",
             "comparison.html": out / "comparison.html"}
    text = markdown(summary)
    write_atomic(paths["results.md"], lambda tmp: tmp.write_text(text, encoding="utf-8"))
    write_csv(summary, paths["results.csv"])
    metrics_fig, losses_fig = plot_metrics(summary), plot_losses(loss_curves(summary))
    for name, fig in (("metrics.png", metrics_fig), ("losses.png", losses_fig)):
        if fig is not None:
            paths[name] = out / name
            _save_png(fig, paths[name])
    curves_text, curves_fig = curves_markdown(summary), plot_compliance_curves(summary)
    if curves_text is not None:
        paths["curves.md"] = out / "curves.md"
        write_atomic(paths["curves.md"], lambda tmp: tmp.write_text(curves_text, encoding="utf-8"))
    if curves_fig is not None:
        paths["curves.png"] = out / "curves.png"
        _save_png(curves_fig, paths["curves.png"])
    samples_fig = samples_figure(summary)
    if samples_fig is not None:
        paths["samples.png"] = out / "samples.png"
        _save_png(samples_fig, paths["samples.png"])
    page = comparison_html(summary, metrics_fig, losses_fig)
    write_atomic(paths["comparison.html"], lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return summary, paths


