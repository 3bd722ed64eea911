"""src/serve.py: the page for writing a graph, generating, editing and regenerating, and its server.

The server's rules (one-line refusals naming the field, bounded bodies, no path from a client, one request at a
time, cancel and abandon) run against a fake generator, fast. The page is driven in a real headless Chromium
(tests/chromium_cdp.py) against the smoke checkpoint (slow), and against the fake generator to see that a closed
tab cancels its request.
"""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sg2video.cli import REPO_ROOT, preflight
from sg2video.data.shapes import ShapesWorld, shapes_vocab
from sg2video.graph_json import load_graph_json
from sg2video.serve.app import ServeApp, make_server
from sg2video.serve.requests import Limits, Settings
from sg2video.serve.results import has_checker, verdicts
from sg2video.video_io import read_video
from test_pipeline import smoke_run  # noqa: F401  # the session's smoke checkpoint, trained once
from test_report import find_chromium

sys.path.insert(0, str(REPO_ROOT / "src"))
LIMITS = Limits(max_frames=64, max_num=4, max_steps=1000, max_bytes=4096, max_objects=4, clip_frames=4,
                prefix_frames=1, chunked=True)
DEFAULTS = Settings(num=2, seed=0, sampler="ddim", steps=3, eta=0.0, guidance=2.0, layout="sampled")
GRAPH = {"objects": ["red circle", "blue square", "green triangle"], "relations": [[0, "left of", 1], [1, "above", 2]]}


class FakeGenerator:
    """VideoGenerator's interface on noise: each step waits `step_s` and reports progress (which may cancel)."""

    vocab, max_objects, clip_frames, prefix_frames, chunked, size, makes_long_videos = shapes_vocab(), 4, 4, 1, True, 16, True

    def __init__(self, step_s: float = 0.0) -> None:
        self.step_s, self.active, self.most_active, self.calls = step_s, 0, 0, 0

    def generate(self, graph_lists, sampler, steps, guidance, eta, seed, layout, progress, return_graphs):
        self.calls += 1
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            for step in range(steps):
                time.sleep(self.step_s)
                progress(step + 1, steps)
            frames = len(graph_lists[0])
            videos = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (len(graph_lists), frames, 16, 16, 3),
                                                                           dtype=np.uint8))
            drawn = [[g.with_boxes(torch.tensor([[0.1, 0.2, 0.5, 0.6]] * g.num_objects)) for g in f] for f in graph_lists]
            return videos, drawn
        finally:
            self.active -= 1


@pytest.fixture
def fake_server(tmp_path):
    """start(step_s, **limits) -> (base URL, app), a server on a free loopback port over a FakeGenerator."""
    started = []

    def start(step_s: float = 0.0, max_queue: int = 4, abandon_s: float = 30.0, **limits):
        app = ServeApp(FakeGenerator(step_s), Limits(**{**vars(LIMITS), **limits}), DEFAULTS, 8,
                       tmp_path / f"jobs{len(started)}", max_queue, 4, abandon_s, label="fake")
        server = make_server(app, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append((server, app))
        return server.server_address[1], app

    yield start
    for server, app in started:
        server.shutdown()
        server.server_close()
        app.queue.close()


def call(port: int, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None):
    """(status, decoded JSON or bytes) of one request; `body` a dict or list is sent as JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    sent = {"Content-Type": "application/json", **({"Content-Length": str(len(data))} if data is not None else {})}
    connection.request(method, path, body=data, headers={**sent, **(headers or {})})
    reply = connection.getresponse()
    raw = reply.read()
    connection.close()
    return reply.status, json.loads(raw) if reply.getheader("Content-Type") == "application/json" else raw


def wait_for(port: int, job: str, states=("done", "failed", "cancelled"), timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, data = call(port, "GET", f"/api/jobs/{job}")
        if data["state"] in states or time.monotonic() > deadline:
            return data
        time.sleep(0.02)


# -- what a request may hold ------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, message, where", [
    (b"{not json", "request: not valid JSON (line 1, column 2: Expecting property name enclosed in double quotes)", ""),
    ({"graph": {"objects": ["red circle", "purple circle"]}}, 'graph: objects[1]: unknown object "purple circle" (known: red circle,', "objects[1]"),
    ({"graph": {"objects": ["red circle", "blue square"], "relations": [[0, "besides", 1]]}}, 'unknown predicate "besides" (known: left of, right of, above, below)', "relations[0]"),
    ({"graph": {"objects": ["red circle"] * 5}}, "graph: objects: 5 objects, but this model takes at most 4", "objects"),
    ({"graph": {"objects": ["red circle", "blue square"], "timeline": [{"frames": [0, 4], "relations": [[1, "above", 1]]}]}},
     'timeline[0].relations[0]: self-relation: object 1 ("blue square") related to itself', "timeline[0].relations[0]"),
    ({"graph": {"objects": ["red circle"], "timeline": [{"frames": [0, 4]}, {"frames": [6, 8]}]}},
     "timeline[1].frames: gap: segment starts at 6, expected 4", "timeline[1].frames"),
    ({"graph": GRAPH, "frames": 65}, "65 frames asked for; at most max_frames=64", "frames"),
    ({"graph": {"objects": ["red circle"], "timeline": [{"frames": [0, 8]}]}, "frames": 6}, "frames=6 but the graph's timeline is 8 frames long", "frames"),
    ({"graph": GRAPH, "num": 9}, "num: expected an integer from 1 to 4, got 9", "num"),
    ({"graph": GRAPH, "sampler": "euler"}, 'sampler: "euler" is not accepted (accepted: ddpm, ddim)', "sampler"),
    ({"graph": GRAPH, "path": "/etc/passwd"}, 'request: unknown key "path" (accepted: graph, frames,', ""),
    ([1, 2], "request: expected a JSON object, got list", ""),
])
@pytest.mark.parametrize("endpoint", ["/api/check", "/api/generate"])
def test_bad_requests_get_one_line_naming_the_field(fake_server, endpoint, body, message, where):
    port, app = fake_server()
    status, data = call(port, "POST", endpoint, body)
    assert status == 400 and message in data["error"] and "\n" not in data["error"], data
    assert data["where"] == where
    assert app.generator.calls == 0 and not app.queue.jobs


def test_oversized_bodies_are_refused_unread_and_foreign_requests_refused(fake_server):
    port, _ = fake_server(max_bytes=1024)
    big = {"graph": {**GRAPH, "relations": [[0, "left of", 1]] * 100}}
    status, data = call(port, "POST", "/api/generate", big)
    assert status == 413 and data["error"].startswith("request: ") and "at most max_request_kb=1 KiB" in data["error"]
    status, data = call(port, "POST", "/api/generate", b"x" * 10, {"Content-Length": str(10**9)})  # never sent
    assert status == 413
    status, data = call(port, "POST", "/api/check", {"graph": GRAPH}, {"Content-Type": "text/plain"})
    assert status == 415 and data["error"] == "request: Content-Type must be application/json"
    status, data = call(port, "GET", "/api/info", headers={"Host": "attacker.example:80"})  # DNS rebinding
    assert status == 403
    for path in ("/../../etc/passwd", "/static/../serve.py", "/static/%2e%2e/app.py", "/api/jobs/../../x.png",
                 "/api/jobs/0123456789abcdef/0.png", "/static/index.html"):
        status, data = call(port, "GET", path)
        assert status == 404 and "\n" not in data["error"], path


def test_a_generated_request_serves_its_frames_layout_files_and_verdicts(fake_server, tmp_path):
    port, _ = fake_server()
    status, data = call(port, "POST", "/api/generate", {"graph": GRAPH, "frames": 6, "num": 2, "seed": 3})
    assert status == 202 and data["state"] == "queued"
    done = wait_for(port, data["job"])
    result = done["result"]
    assert done["state"] == "done" and result["frames"] == 6 and result["graph"] == GRAPH and result["cols"] == 3
    for i, sample in enumerate(result["samples"]):
        assert len(sample["layout"]) == 6 and sample["layout"][0][2] == [0.1, 0.2, 0.5, 0.6]
        assert [len(seg) for seg in sample["verdicts"]["relations"]] == [2] and len(sample["verdicts"]["objects"]) == 3
        status, png = call(port, "GET", f"/api/jobs/{data['job']}/{i}.png")
        assert Image.open(__import__("io").BytesIO(png)).size == (3 * 16, 2 * 16)  # 6 frames, 3 a row
    for kind in ("gif", "mp4"):
        status, body = call(port, "GET", f"/api/jobs/{data['job']}/1.{kind}")
        (tmp_path / f"s.{kind}").write_bytes(body)
    assert read_video(tmp_path / "s.mp4").shape == (6, 128, 128, 3) and read_video(tmp_path / "s.gif").shape[1] == 128
    status, drawn = call(port, "GET", f"/api/jobs/{data['job']}/1.json")
    (tmp_path / "drawn.json").write_text(json.dumps(drawn))
    assert load_graph_json(tmp_path / "drawn.json", shapes_vocab()).frame_graphs()[0].all_boxes_given
    status, _ = call(port, "GET", f"/api/jobs/{data['job']}/2.png")
    assert status == 404


def test_requests_are_drawn_one_after_the_other_and_a_full_queue_says_busy(fake_server):
    port, app = fake_server(step_s=0.02, max_queue=2)
    jobs = [call(port, "POST", "/api/generate", {"graph": GRAPH, "steps": 15})[1]["job"] for _ in range(3)]
    positions = [call(port, "GET", f"/api/jobs/{job}")[1]["position"] for job in jobs]
    assert positions[1:] == [1, 2]
    status, data = call(port, "POST", "/api/generate", {"graph": GRAPH, "steps": 15})
    assert status == 503 and data["error"].startswith("the server is busy: 2 requests are waiting")
    assert all(wait_for(port, job)["state"] == "done" for job in jobs)
    assert app.generator.calls == 3 and app.generator.most_active == 1


def test_cancel_stops_a_request_within_a_step_and_an_abandoned_one_stops_alone(fake_server):
    port, app = fake_server(step_s=0.02, abandon_s=0.6)
    job = call(port, "POST", "/api/generate", {"graph": GRAPH, "steps": 1000})[1]["job"]  # 20 s if not stopped
    wait_for(port, job, states=("running",))
    started = time.monotonic()
    assert call(port, "POST", f"/api/jobs/{job}/cancel")[0] == 200
    data = wait_for(port, job)
    assert data["state"] == "cancelled" and data["progress"][0] < 1000 and time.monotonic() - started < 2
    job = call(port, "POST", "/api/generate", {"graph": GRAPH, "steps": 1000})[1]["job"]
    time.sleep(2)  # nobody asks about it: its tab was closed without a beacon
    left = app.queue.get(job, touch=False)
    assert left.state == "cancelled" and left.error.startswith("abandoned") and not left.folder.exists()


def test_the_page_is_all_local_and_a_loaded_file_comes_back_in_the_editors_form(fake_server):
    port, _ = fake_server()
    status, page = call(port, "GET", "/")
    script = call(port, "GET", "/static/app.js")[1]
    assert status == 200 and b"http" not in page + script and b"//cdn" not in page + script  # nothing from elsewhere
    text = json.dumps({"objects": ["red circle", "blue square"], "timeline": [
        {"frames": [0, 4], "relations": [["blue square", "above", "red circle"]], "boxes": [[0, 0, 0.5, 0.5], None]}]})
    status, data = call(port, "POST", "/api/parse", {"name": "mine.json", "text": text})
    assert status == 200 and data["graph"] == {"objects": ["red circle", "blue square"], "static": False, "segments": [
        {"frames": [0, 4], "relations": [[1, "above", 0]], "boxes": [[0.0, 0.0, 0.5, 0.5], None]}]}
    status, data = call(port, "POST", "/api/parse", {"name": "../../etc/passwd", "text": "{"})
    assert status == 400 and data["where"] == "file" and data["error"].startswith("../../etc/passwd: not valid JSON")


def test_verdicts_accept_the_worlds_own_clips():
    world = ShapesWorld(size=32, frames=6, min_objects=3, max_objects=3, seed=1)
    vocab = shapes_vocab()
    assert has_checker(vocab)
    for item in world.clips("val", [0, 1, 2]):
        video, graphs = item["video"].permute(0, 2, 3, 1).numpy(), item["graphs"]
        found = verdicts(video, graphs, [(0, 6)], vocab)
        assert all(v["held"] == v["frames"] == 6 for v in found["relations"][0] + found["objects"])


@pytest.mark.parametrize("args, message", [
    ([], "ckpt is not set (python src/serve.py ckpt=RUN_DIR"),
    (["ckpt=/no/such/run"], "ckpt=/no/such/run does not exist"),
    (["ckpt=.", "port=70000"], "port=70000 must be an integer >= 0 and <= 65535"),
    (["ckpt=.", "num=20"], "num=20 is above max_num=8"),
    (["ckpt=.", "sampler=euler"], "sampler='euler' is not accepted"),
    (["ckpt=."], "ckpt=. is a directory without checkpoints/diffusion/last.pt"),
])
def test_bad_settings_are_one_line_and_exit_2(args, message, capsys):
    import serve

    with pytest.raises(SystemExit) as stopped:
        preflight("serve", args, serve.check_settings)
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(err) == 1 and message in err[0], err


# -- the page in a real browser -------------------------------------------------------------------------------

READY = "document.body && document.body.dataset.ready === '1'"


def players_shown(role: str, count: int, frames: int) -> str:
    """JS: the run `role` holds `count` players of `frames` frames, each of which has shown every frame."""
    return (f"(() => {{ const c = [...document.querySelectorAll('.run[data-role={role}] canvas.player')];"
            f" return c.length === {count} && c.every(p => p.dataset.frames === '{frames}' && p.dataset.shown === '{frames}'); }})()")


def choose(browser, selector: str, key: str, times: int = 1) -> None:
    """Pick an option of a <select> with the keyboard, as a person tabbing through the form does (focus, arrows)."""
    browser.js(f"document.querySelector({json.dumps(selector)}).focus()")
    for _ in range(times):
        browser.key(key)


def page_graph(browser) -> dict:
    return browser.js("graphJSON()")


def downloaded(folder: Path, name: str, timeout: float = 20) -> Path:
    deadline = time.monotonic() + timeout
    while not (folder / name).is_file() or list(folder.glob("*.crdownload")):
        assert time.monotonic() < deadline, f"{name} was not downloaded: {sorted(p.name for p in folder.iterdir())}"
        time.sleep(0.1)
    return folder / name


@pytest.fixture(scope="session")
def smoke_server(smoke_run, tmp_path_factory):
    """src/serve.py on the smoke checkpoint, on a free loopback port: (URL, process)."""
    import select

    run_dir, _ = smoke_run
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "src" / "serve.py"), f"ckpt={run_dir}", "port=0",
                                 "steps=3", "num=2"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    if "http://" not in line:
        proc.kill()
        pytest.fail(f"serve.py did not start: {line!r} {log.read_text()[-2000:]}")
    yield line.split(" at ")[1].split()[0], proc
    proc.terminate()  # SIGTERM ends it like Ctrl-C: the queue stops, the temporary files go
    assert proc.wait(timeout=30) == 0 and "stopped" in proc.stdout.read(), log.read_text()[-2000:]


@pytest.mark.slow
def test_a_taken_port_or_a_checkpoint_of_another_stage_is_one_line_and_exit_2(smoke_server, smoke_run):
    port = smoke_server[0].rsplit(":", 1)[1].strip("/")
    encoder = smoke_run[0] / "checkpoints" / "encoder" / "last.pt"
    for args, message in (([f"ckpt={smoke_run[0]}", f"port={port}"], f"cannot serve on host=127.0.0.1 port={port}"),
                          ([f"ckpt={encoder}", "port=0"], "a 'encoder' checkpoint, not a generator's")):
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "src" / "serve.py"), *args], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr


@pytest.mark.slow
def test_the_page_in_chromium_writes_generates_flips_saves_loads_and_refuses(smoke_server, tmp_path):
    from chromium_cdp import Chromium

    binary = find_chromium()
    url, _ = smoke_server
    shots, downloads = tmp_path / "screenshots", tmp_path / "downloads"
    shots.mkdir()
    downloads.mkdir()
    browser = Chromium(binary, tmp_path / "profile")
    try:
        browser.allow_downloads(downloads)
        browser.goto(url)
        browser.wait(READY, what="the page")
        # three objects, one typed and two picked from the checkpoint's vocabulary; two relations
        browser.click("#object-name")
        browser.type("red circle")
        browser.key("Enter")
        browser.click('#palette button[data-name="blue square"]')
        browser.click('#palette button[data-name="green triangle"]')
        browser.click(".add-relation")
        browser.click(".add-relation")  # both rows start as 0 left of 1; the second becomes 1 above 2
        choose(browser, '[data-where="relations[1]"] .subject', "ArrowDown")
        choose(browser, '[data-where="relations[1]"] .predicate', "ArrowDown", 2)
        choose(browser, '[data-where="relations[1]"] .object', "ArrowDown")
        browser.click("#frames")
        browser.type("6")  # 6 frames from a model of 4-frame clips: generated in two chunks
        browser.key("Tab")
        assert page_graph(browser) == GRAPH
        browser.wait("document.getElementById('status').textContent === '6 frames'", what="the graph checked")

        browser.click("#generate")
        browser.wait(players_shown("current", 2, 6), what="two players showing 6 frames each")
        verdicts_shown = browser.js("[...document.querySelectorAll('.run[data-role=current] .relation-verdict')]"
                                    ".map(v => [v.dataset.verdict, v.textContent])")
        assert len(verdicts_shown) == 4 and all(v in ("yes", "partly", "no") for v, _ in verdicts_shown)
        assert verdicts_shown[1][1].startswith("blue square above green triangle: ") and "/6 frames" in verdicts_shown[1][1]
        # the sampled layout is drawn over the frame, and the toggle takes it away
        browser.click(".run[data-role=current] canvas.player")  # pause
        with_layout = browser.js("document.querySelector('.run[data-role=current] canvas.player').toDataURL()")
        browser.click("#show-layout")
        assert browser.js("document.querySelector('.run[data-role=current] canvas.player').toDataURL()") != with_layout
        browser.click("#show-layout")
        browser.click('.run[data-role=current] .sample[data-index="0"] a[download$=".mp4"]')
        assert read_video(downloaded(downloads, "sample_000.mp4")).shape == (6, 128, 128, 3)
        browser.screenshot(shots / "1_generated.png")

        # flip one relation and regenerate with the same seed: the two results side by side
        browser.click('[data-where="relations[0]"] .flip')
        browser.click("#generate")
        browser.wait(players_shown("current", 2, 6) + " && " + players_shown("previous", 2, 6), what="two runs")
        heads = browser.js("[...document.querySelectorAll('.run h3')].map(h => h.textContent)")
        assert len(heads) == 2 and all(h.startswith("seed 0, 2 sample(s), 6 frames") for h in heads)
        assert browser.js("[...document.querySelectorAll('.run[data-role=current] .graph-text .changed')]"
                          ".map(l => l.textContent)") == ["blue square left of red circle"]
        assert browser.js("document.querySelector('.run[data-role=current] .relation-verdict').textContent"
                          ).startswith("blue square left of red circle: ")
        browser.screenshot(shots / "2_flipped.png")

        # save the graph JSON, change the editor, load the file back: the same graph (the documented format)
        browser.click("#save-json")
        saved = json.loads(downloaded(downloads, "graph.json").read_text())
        assert saved == {**GRAPH, "relations": [[1, "left of", 0], [1, "above", 2]]}
        load_graph_json(downloads / "graph.json", shapes_vocab(), 4)
        browser.click('[data-where="objects[0]"] .remove')
        assert len(page_graph(browser)["objects"]) == 2
        browser.set_files("#load-file", [downloads / "graph.json"])
        browser.wait("document.querySelectorAll('#objects li').length === 3", what="the loaded graph")
        assert page_graph(browser) == saved

        # a bad graph: the message beside the field at fault, and nothing generated
        choose(browser, '[data-where="relations[1]"] .object', "ArrowUp")  # 1 above 1
        message = browser.wait("document.querySelector('[data-where=\"relations[1]\"] > .err').textContent",
                               what="the inline message")
        assert message == 'graph: relations[1]: self-relation: object 1 ("blue square") related to itself'
        browser.click("#generate")
        time.sleep(0.5)
        assert browser.js("document.querySelectorAll('.run').length") == 2
        assert browser.js("document.querySelector('[data-where=\"relations[1]\"] > .err').textContent") == message
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"objects": ["red circle", "blue square"], "relations": [[0, "besides", 1]]}))
        browser.set_files("#load-file", [bad])
        assert 'bad.json: relations[0]: unknown predicate "besides"' in browser.wait(
            "document.querySelector('[data-where=\"file\"] > .err').textContent", what="the file's message")
        browser.screenshot(shots / "3_refused.png")

        # a timeline: loaded, one more segment by clicking and typing, generated, a verdict per segment
        timeline = tmp_path / "timeline.json"
        timeline.write_text(json.dumps({"objects": ["red circle", "blue square"], "timeline": [
            {"frames": [0, 4], "relations": [[0, "left of", 1]]}, {"frames": [4, 8], "relations": [[0, "above", 1]]}]}))
        browser.set_files("#load-file", [timeline])
        browser.wait("document.querySelectorAll('.segment').length === 2", what="the timeline")
        browser.click("#add-segment")
        browser.click('[data-where="timeline[2].frames"] .segment-end')
        browser.key("Backspace")
        browser.key("Backspace")
        browser.type("10")
        browser.key("Tab")
        browser.click("#generate")
        browser.wait(players_shown("current", 2, 10), what="two players showing 10 frames each")
        segments = browser.js("[...document.querySelectorAll('.run[data-role=current] .sample[data-index=\"0\"] "
                              ".relation-verdict')].map(v => v.textContent.split(':')[0])")
        assert segments == ["[0, 4) red circle left of blue square", "[4, 8) red circle above blue square",
                            "[8, 10) red circle above blue square"]
        browser.screenshot(shots / "4_timeline.png")
    finally:
        browser.close()
    assert all(Image.open(p).size[0] == 1400 for p in shots.iterdir())


def draw_two_boxes(browser) -> None:
    """Two objects; a box drawn for each by dragging on the segment's canvas (the chosen object moves on by itself)."""
    browser.click('#palette button[data-name="red circle"]')
    browser.click('#palette button[data-name="blue square"]')
    browser.click(".box-editor summary")
    browser.drag(".box-canvas", (0.10, 0.20), (0.40, 0.50))
    assert browser.js("document.querySelector('.box-target').value") == "1"
    browser.drag(".box-canvas", (0.55, 0.25), (0.85, 0.55))


def test_boxes_are_drawn_moved_and_dropped_on_the_canvas(fake_server, tmp_path):
    from chromium_cdp import Chromium

    port, _ = fake_server()
    browser = Chromium(find_chromium(), tmp_path / "profile")
    try:
        browser.goto(f"http://127.0.0.1:{port}/")
        browser.wait(READY, what="the page")
        browser.click('#palette button[data-name="red circle"]')
        assert page_graph(browser) == {"objects": ["red circle"], "relations": []}  # no box unless one is drawn
        browser.click('[data-where="objects[0]"] .remove')
        draw_two_boxes(browser)
        boxes = page_graph(browser)["boxes"]
        assert np.allclose(boxes, [[0.10, 0.20, 0.40, 0.50], [0.55, 0.25, 0.85, 0.55]], atol=0.01), boxes
        # drag the first box by its middle: it moves, its size stays; the other box stays where it was
        browser.drag(".box-canvas", (0.25, 0.35), (0.25, 0.75))
        moved = page_graph(browser)["boxes"]
        assert np.allclose(moved[0], [0.10, 0.60, 0.40, 0.90], atol=0.01) and moved[1] == boxes[1], moved
        # a move past the edge stops at the edge
        browser.drag(".box-canvas", (0.25, 0.75), (0.25, 1.4))
        assert np.allclose(page_graph(browser)["boxes"][0], [0.10, 0.70, 0.40, 1.0], atol=0.01)
        assert browser.js("document.querySelector('#boxes-note').textContent").startswith("1 segment(s) give boxes")
        # the server accepts the drawn graph (its check names the frames), a dropped box is null, the last one drops all
        browser.wait("document.getElementById('status').textContent === '4 frames'", what="the graph checked")
        browser.double_click(".box-canvas", (0.7, 0.4))
        assert page_graph(browser)["boxes"][1] is None
        browser.double_click(".box-canvas", (0.25, 0.85))
        assert "boxes" not in page_graph(browser)
        browser.screenshot(tmp_path / "boxes.png")
    finally:
        browser.close()


@pytest.mark.slow
def test_drawn_boxes_reach_the_generator_and_come_back_as_the_layout(smoke_server, tmp_path):
    from chromium_cdp import Chromium

    browser = Chromium(find_chromium(), tmp_path / "profile")
    try:
        browser.goto(smoke_server[0])
        browser.wait(READY, what="the page")
        draw_two_boxes(browser)
        drawn = page_graph(browser)["boxes"]
        browser.click("#generate")
        browser.wait(players_shown("current", 2, 4), what="two players showing 4 frames each")
        layouts = browser.js("runs[runs.length - 1].players.map(p => p.layout)")  # per sample, per frame, per object
        assert len(layouts) == 2 and all(len(frames) == 4 for frames in layouts)
        assert np.allclose(np.array(layouts, dtype=float), np.array(drawn)[None, None], atol=1e-3), layouts[0][0]
    finally:
        browser.close()


def test_a_closed_tab_cancels_its_request(fake_server, tmp_path):
    from chromium_cdp import Chromium

    binary = find_chromium()
    port, app = fake_server(step_s=0.02)
    browser = Chromium(binary, tmp_path / "profile")
    try:
        browser.goto(f"http://127.0.0.1:{port}/")
        browser.wait(READY, what="the page")
        browser.click('#palette button[data-name="red circle"]')
        browser.click("#steps")
        browser.js("document.getElementById('steps').select()")
        browser.type("1000")  # 20 s of steps
        browser.click("#generate")
        browser.wait("document.getElementById('status').textContent.startsWith('sampling')", what="sampling")
        browser.goto("about:blank")  # the tab goes away: its pagehide beacon cancels
        job = next(iter(app.queue.jobs.values()))
        deadline = time.monotonic() + 5
        while job.state != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.state == "cancelled" and job.error == "cancelled" and job.progress[0] < 1000
    finally:
        browser.close()
