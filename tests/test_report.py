"""The run report (sg2video.eval.report): a self-contained HTML page, checked as text and in headless Chromium."""
import base64
import io
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sg2video.data.shapes import ShapesWorld
from sg2video.eval.report import read_scalars, summarize_config, write_report
from sg2video.viz import draw_graph

MAGENTA = (255, 0, 255)


class Page(HTMLParser):
    """The parts of a page the tests look at: table rows by table id, images, and which section holds them."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._open_ids: list[str | None] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id", "")
            self.rows.setdefault(self._table, [])
        elif tag == "tr":
            self._row = []
        elif tag in ("th", "td"):
            self._cell = []
        elif tag == "img":
            self.images.append({**attrs, "in_samples": str(any(i == "samples" for i in self._open_ids))})
        elif tag == "script":
            self.scripts += 1
        if tag in ("link", "a") and "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "div":
            self._open_ids.append(attrs.get("id"))

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "div" and self._open_ids:
            self._open_ids.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(html_text: str) -> Page:
    page = Page()
    page.feed(html_text)
    return page


def write_gif(path: Path, frames: np.ndarray, duration_ms: int = 120) -> Path:
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return path


def magenta_clip(frames: int = 4, size: int = 32) -> np.ndarray:
    """A clip whose frames are mostly one flat colour, easy to find in a screenshot."""
    clip = np.zeros((frames, size, size, 3), dtype=np.uint8)
    clip[:, 4:28, 4:28] = MAGENTA
    for t in range(frames):
        clip[t, 12:20, 2 + 4 * t : 10 + 4 * t] = (255, 255, 0)
    return clip


@pytest.fixture
def run(tmp_path):
    """A run directory with TensorBoard scalars, sample GIFs and a graph picture; returns (run_dir, samples)."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "run"
    writer = SummaryWriter(str(run_dir / "tb"))
    for step in range(0, 200, 10):
        writer.add_scalar("diffusion/loss", 1.0 / (1 + step / 10), step)
        writer.add_scalar("diffusion/lr", 3e-4, step)
    for step in range(0, 50, 5):
        writer.add_scalar("encoder/loss", 2.0 - step / 50, step)
    writer.close()

    world = ShapesWorld(size=32, frames=4, seed=0)
    item = world.clips("test", [0])[0]
    clip = item["video"].numpy().transpose(0, 2, 3, 1)
    samples_dir = run_dir / "samples"
    samples_dir.mkdir()
    graph_png = draw_graph(world.vocab, item["graphs"][0], samples_dir / "graph_0.png", title="test clip 0")
    samples = [
        {
            "gif_path": write_gif(samples_dir / "sample_0.gif", magenta_clip()),
            "graph_png_path": graph_png,
            "gt_gif_path": write_gif(samples_dir / "gt_0.gif", clip),
            "caption": "test clip 0: <b>red</b> & friends",
            "metrics": {"object_accuracy": 0.75, "relation_accuracy": float("nan")},
        },
        {
            "gif_path": write_gif(samples_dir / "sample_1.gif", clip[::-1].copy()),
            "graph_png_path": graph_png,
            "gt_gif_path": None,
            "caption": "test clip 1",
            "metrics": {"object_accuracy": 1.0},
        },
    ]
    return run_dir, samples


CONFIG = {
    "data.name": "shapes",
    "model.cond": "crossattn",
    "encoder.name": "<script>alert('x')</script>",
    "encoder.loss": {"contrastive": 1.0, "masked": 0.5},
}
METRICS = {
    "compliance": {"object_accuracy": 0.8125, "relation_accuracy": float("nan"), "per_predicate": {"left of": 0.5}},
    "fidelity": {"fid_frame": 12.34567, "kid_frame_mean": None, "features": "pixel-stats(grid=4,bins=8)"},
    "num_samples": 2,
}


def test_read_scalars_returns_every_series_and_the_last_value_of_a_rewritten_step(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    tb = tmp_path / "tb"
    first = SummaryWriter(str(tb))
    for step in range(10):
        first.add_scalar("train/loss", float(step), step)
    first.close()
    resumed = SummaryWriter(str(tb))  # a resumed run: a second event file rewriting steps 5..9
    for step in range(5, 12):
        resumed.add_scalar("train/loss", 100.0 + step, step)
    resumed.close()
    nested = SummaryWriter(str(tb / "eval"))
    nested.add_scalar("fid", 3.5, 7)
    nested.close()

    scalars = read_scalars(tb)
    assert sorted(scalars) == ["eval/fid", "train/loss"]
    assert scalars["train/loss"] == [(s, float(s)) for s in range(5)] + [(s, 100.0 + s) for s in range(5, 12)]
    assert scalars["eval/fid"] == [(7, 3.5)]
    assert read_scalars(tmp_path / "missing") == {}


def test_report_is_self_contained_and_escaped(run):
    run_dir, samples = run
    path = write_report(run_dir, "Run <1> & co", CONFIG, METRICS, loss_curves=None, samples=samples)
    assert path == run_dir / "report.html"
    text = path.read_text(encoding="utf-8")
    page = parse(text)

    # metrics: one row per leaf, NaN and None read "n/a", floats at 4 significant digits
    metric_rows = {key: value for key, value in page.rows["metrics"]}
    assert metric_rows == {
        "compliance.object_accuracy": "0.8125",
        "compliance.relation_accuracy": "n/a",
        "compliance.per_predicate.left of": "0.5",
        "fidelity.fid_frame": "12.35",
        "fidelity.kid_frame_mean": "n/a",
        "fidelity.features": "pixel-stats(grid=4,bins=8)",
        "num_samples": "2",
    }
    config_rows = dict(page.rows["config"])
    assert config_rows["model.cond"] == "crossattn" and config_rows["encoder.loss.masked"] == "0.5"
    # every piece of text is escaped: no markup from a config value or a caption reaches the page
    assert page.scripts == 0 and "<script>" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<b>red</b>" not in text and "&lt;b&gt;red&lt;/b&gt; &amp; friends" in text
    assert "<title>Run &lt;1&gt; &amp; co</title>" in text
    assert "own features (not FID)" in text and "No FVD" in text

    # images: the curves plot, then per sample the generated clip, the ground truth (sample 0 only), the graph
    sources = [img["src"] for img in page.images]
    assert len(sources) == 1 + 3 + 2
    assert all(src.startswith("data:image/") for src in sources)
    assert [img["in_samples"] for img in page.images].count("True") == 5
    assert page.images[0]["alt"].startswith("training curves: diffusion/loss, encoder/loss")
    assert not page.links and not re.search(r"(src|href)=\"(?!data:)", text)
    # an embedded GIF is the very file, byte for byte
    gt = next(img for img in page.images if img["alt"].startswith("ground truth"))
    assert base64.b64decode(gt["src"].split(",", 1)[1]) == samples[0]["gt_gif_path"].read_bytes()
    assert len(text) < 500_000
    # sample metrics are tabulated with the same rules
    assert dict(page.rows["sample-0-metrics"]) == {"object_accuracy": "0.75", "relation_accuracy": "n/a"}


def test_given_curves_missing_files_and_big_gifs(tmp_path):
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (6, 256, 256, 3), dtype=np.uint8)  # ~400 KB as GIF
    big = write_gif(tmp_path / "big.gif", noisy)
    samples = [
        {"gif_path": big, "graph_png_path": tmp_path / "no_graph.png", "gt_gif_path": None, "caption": "big"},
    ]
    curves = {"loss": [(0, 2.0), (1, 1.0)], "empty": []}
    path = write_report(tmp_path, "t", {}, {}, loss_curves=curves, samples=samples, max_image_bytes=150_000)
    text = path.read_text()
    page = parse(text)
    assert "missing graph: " in text and "no_graph.png" in text
    video = next(img for img in page.images if img["alt"].startswith("generated"))
    data = base64.b64decode(video["src"].split(",", 1)[1])
    assert len(data) <= 150_000 < big.stat().st_size
    with Image.open(io.BytesIO(data)) as shrunk:
        assert shrunk.format == "GIF" and shrunk.size[0] < 256 and shrunk.n_frames == 6
    assert page.images[0]["alt"] == "training curves: loss"  # a tag without points is not plotted


def test_summarize_config_picks_the_keys_that_tell_runs_apart():
    cfg = {
        "stage": "all",
        "data": {"name": "shapes", "size": 32, "root": None},
        "encoder": {"name": "gcn", "layers": 5, "loss": {"contrastive": 1.0, "masked": 0.0}},
        "model": {"cond": "concat", "prefix_frames": 2},
        "eval": {"fid_weights": None},
    }
    assert summarize_config(cfg) == {
        "data.name": "shapes",
        "data.size": 32,
        "encoder.name": "gcn",
        "encoder.layers": 5,
        "encoder.loss.contrastive": 1.0,
        "encoder.loss.masked": 0.0,
        "model.cond": "concat",
        "model.prefix_frames": 2,
        "eval.fid_weights": None,
    }


# ----------------------------------------------------------------------------------------------
# In a real browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def find_chromium() -> str:
    """The chromium binary; installs Debian's package when it is missing and apt-get and root are there.
    Skips only when it can be neither found nor installed (fails instead with SG2VIDEO_REQUIRE_CHROMIUM=1)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    reason = "chromium is not installed and there is no apt-get (as root) to install it"
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(
            "apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium",
            shell=True, capture_output=True, text=True, env=env, timeout=900,
        )  # fmt: skip
        if shutil.which("chromium"):
            return shutil.which("chromium")
        output = (done.stdout + done.stderr).strip()[-300:]
        reason = f"chromium is not installed and apt-get could not install it: {output}"
    if os.environ.get("SG2VIDEO_REQUIRE_CHROMIUM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(run, tmp_path):
    binary = find_chromium()
    run_dir, samples = run
    path = write_report(run_dir, "Browser check", CONFIG, METRICS, samples=samples)
    url = path.resolve().as_uri()

    dumped = chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = parse(dumped.stdout)
    assert len(dom.rows["metrics"]) == 7 and ["fidelity.fid_frame", "12.35"] in dom.rows["metrics"]
    assert len(dom.images) == 6 and all(img["src"].startswith("data:image/") for img in dom.images)
    assert sum(img["in_samples"] == "True" for img in dom.images) == 5

    shot = tmp_path / "report.png"
    shown = chromium(binary, tmp_path / "profile-shot", "--window-size=1280,2400", f"--screenshot={shot}", url)
    assert shown.returncode == 0 and shot.is_file(), shown.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1280)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 200, f"only {len(colours)} colours: a blank or broken page"
    # the generated GIF is drawn at 160 px: its flat magenta square (24 of 32 px) fills ~120 x 120 px
    magenta = np.all(np.abs(pixels.astype(int) - MAGENTA) <= 3, axis=-1).sum()
    assert magenta > 0.6 * 120 * 120, f"{magenta} magenta pixels: the sample video was not drawn"
    assert math.isfinite(float(pixels.mean())) and pixels.mean() > 100  # a light page, not a black failure screen
