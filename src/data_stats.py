"""Graph statistics of a dataset's splits, side by side: what to look at before training an encoder on it.

    python src/data_stats.py data=NAME [data.root=...] [splits=[train,val,test]] [max_clips=2000] [out=DIR]
                             [compare=[DIR_OR_STATS_JSON,...]]

Per split (src/sg2video/data/stats.py defines each figure): clips, frames, graphs, nodes, edges, mean degree,
isolated nodes, objects without a box, degree outliers (Q3 + 1.5 IQR), vocabulary sizes, triples per graph,
relation changes per clip and the share of graphs the encoder's token cap truncates. Writes `stats.md`,
`stats.csv`, `stats.json` and `<dataset>_<split>_histograms.png` (object classes, predicates, node degree) into
`out`, and prints the table. `compare` adds the columns of earlier outputs (another dataset, another root).
Every setting is checked before anything is read or written.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from hydra.utils import to_absolute_path  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from sg2video.cli import preflight  # noqa: E402
from sg2video.errors import ConfigError, exit_on_user_error  # noqa: E402


def check_settings(cfg: DictConfig) -> None:
    from sg2video.config import validate_data
    from sg2video.schema import check_ranges

    check_ranges(cfg, "data_stats")
    validate_data(cfg)
    if not cfg.splits:
        raise ConfigError("splits=[] names no split (accepted: a list of train, val, test)")
    out = Path(to_absolute_path(str(cfg.out)))
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={cfg.out!r} exists and is not a directory")
    for entry in cfg.compare:
        path = Path(to_absolute_path(str(entry)))
        if not (path / "stats.json").is_file() and not (path.is_file() and path.suffix == ".json"):
            raise ConfigError(f"compare=[{entry!r}]: neither a stats.json nor a folder holding one "
                              "(an earlier data_stats.py output)")


def _clip_graphs(dataset, count: int):
    """Per-frame graph lists of the first `count` clips (the shapes world draws them without rendering)."""
    world = getattr(dataset, "world", None)
    split = getattr(dataset, "split", None)
    for start in range(0, count, 64):
        indices = list(range(start, min(count, start + 64)))
        if world is not None and split is not None:
            yield from (world.graphs(world.params(split, i)) for i in indices)
        else:
            yield from (item["graphs"] for item in dataset.__getitems__(indices))


def compute(cfg: DictConfig):
    from sg2video.data import build_dataset
    from sg2video.data.stats import read_stats_json, split_stats

    stats = []
    for split in cfg.splits:
        dataset = build_dataset(cfg.data, str(split))
        count = len(dataset) if int(cfg.max_clips) == 0 else min(len(dataset), int(cfg.max_clips))
        stats.append(split_stats(f"{cfg.data.name}/{split}", _clip_graphs(dataset, count), dataset.vocab,
                                 int(cfg.encoder.max_tokens)))
    for entry in cfg.compare:
        stats.extend(read_stats_json(to_absolute_path(str(entry))))
    return stats


def write(cfg: DictConfig, stats) -> list[Path]:
    from sg2video.data.stats import csv_text, json_text, markdown_table, plot_histograms
    from sg2video.video_io import write_atomic

    out = Path(to_absolute_path(str(cfg.out)))
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(stats)
    title = f"# Graph statistics: {', '.join(s.label for s in stats)}\n\n"
    written = []
    for name, text in (("stats.md", title + table), ("stats.csv", csv_text(stats)), ("stats.json", json_text(stats))):
        written.append(write_atomic(out / name, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8")))
    for split_stats in stats:
        fig = plot_histograms(split_stats, int(cfg.top_classes))
        name = split_stats.label.replace("/", "_") + "_histograms.png"
        written.append(write_atomic(out / name, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=80)))
    return written


@hydra.main(version_base=None, config_path="../conf", config_name="data_stats")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from sg2video.data.stats import markdown_table

    stats = compute(cfg)
    written = write(cfg, stats)
    print(markdown_table(stats))
    print(f"wrote {len(written)} files to {Path(to_absolute_path(str(cfg.out)))}")


if __name__ == "__main__":
    preflight("data_stats", sys.argv[1:], check_settings)
    main()
