"""The HTTP side of `src/serve.py`: Python's threading HTTP server, JSON endpoints and the page's own files.

Endpoints (everything the page needs; no asset from anywhere else, so it works offline):
    GET  /                          the page; /static/app.js, /static/app.css its script and style
    GET  /api/info                  the checkpoint's vocabulary, its limits and the default settings
    POST /api/check                 check a request as Generate would (the page's inline messages while editing)
    POST /api/parse                 a graph JSON file's text -> the editor's form, or the loader's message
    POST /api/generate              queue a request -> {"job": id}
    GET  /api/jobs/ID               its state, queue position, progress, and when done every sample's layout
                                    and verdicts (asking keeps it alive: see sg2video.serve.jobs)
    POST /api/jobs/ID/cancel        stop it
    GET  /api/jobs/ID/N.png|gif|mp4|json   sample N's frame sheet, GIF, MP4, graph with its sampled boxes

Security: no part of a URL or a body becomes a path; files are the page's three, read at start, and the files
the server wrote itself, named from a job id that must be a key of its table, a sample index and a fixed
extension. Bodies are bounded (`max_request_kb`, refused unread), and so are graphs (sg2video.serve.requests).
On loopback the Host header must name this server, so a web page elsewhere cannot reach it through DNS
rebinding; POSTs must be JSON, which a foreign page cannot send without a CORS preflight the server never grants.
"""
from __future__ import annotations

import json
import re
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sg2video.errors import UserError
from sg2video.serve.jobs import DONE, Job, JobQueue, QueueFull
from sg2video.serve.requests import Limits, RequestError, Settings, decode_json, parse_file, parse_generate
from sg2video.serve.results import KINDS, has_checker, layout_boxes, sheet_columns, verdicts, write_sample_files

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/static/app.js": ("app.js", "text/javascript"),
          "/static/app.css": ("app.css", "text/css")}
CSP = "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; object-src 'none'; base-uri 'none'"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_JOB = re.compile(r"^/api/jobs/([0-9a-f]{16})(?:/(cancel|(\d{1,3})\.(png|gif|mp4|json)))?$")


def load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package (sg2video/serve/static)."""
    folder = resources.files("sg2video.serve") / "static"
    return {route: ((folder / name).read_bytes(), ctype) for route, (name, ctype) in STATIC.items()}


class ServeApp:
    """The loaded generator, its limits, the request queue and the page's files; one per server."""

    def __init__(self, generator: Any, limits: Limits, defaults: Settings, fps: int, queue_root: Path,
                 max_queue: int, keep: int, abandon_s: float, label: str = "") -> None:
        self.generator, self.vocab = generator, generator.vocab
        self.limits, self.defaults, self.fps, self.label = limits, defaults, fps, label
        self.checker = has_checker(self.vocab)
        self.static = load_static()
        self.queue = JobQueue(self.draw, queue_root, max_queue, keep, abandon_s)

    def info(self) -> dict:
        g, lim, d = self.generator, self.limits, self.defaults
        return {"objects": list(self.vocab.objects), "predicates": list(self.vocab.predicates),
                "max_objects": lim.max_objects, "clip_frames": lim.clip_frames, "max_frames": lim.max_frames,
                "max_num": lim.max_num, "max_steps": lim.max_steps, "long_videos": bool(g.makes_long_videos),
                "checker": self.checker, "fps": self.fps, "size": int(g.size), "model": self.label,
                "defaults": {"num": d.num, "seed": d.seed, "sampler": d.sampler, "steps": d.steps, "eta": d.eta,
                             "guidance": d.guidance, "layout": d.layout}}

    def draw(self, job: Job, queue: JobQueue) -> dict:
        """Generate a queued request's samples (on the worker thread) and write what the page shows."""
        import torch

        req = job.request
        graphs = req.spec.frame_graphs(req.frames)
        s = req.settings

        def progress(done: int, total: int) -> None:
            job.progress = (done, total)
            queue.check(job)

        job.stage = "sampling"
        with torch.inference_mode():
            videos, drawn = self.generator.generate(
                [graphs] * s.num, sampler=s.sampler, steps=s.steps, guidance=s.guidance, eta=s.eta, seed=s.seed,
                layout=s.layout, progress=progress, return_graphs=True)
        job.stage = "writing"
        samples = []
        for i, video in enumerate(videos.numpy()):
            queue.check(job)
            write_sample_files(job.folder, i, video, self.vocab, drawn[i], self.fps)
            sample: dict[str, Any] = {"layout": layout_boxes(drawn[i])}
            if self.checker:
                sample["verdicts"] = verdicts(video, graphs, req.segments, self.vocab)
            samples.append(sample)
        return {"graph": req.graph, "frames": req.frames, "size": int(videos.shape[2]), "fps": self.fps,
                "cols": sheet_columns(req.frames), "segments": req.segments, "settings": vars(s),
                "checker": self.checker, "samples": samples}

    def status(self, job: Job) -> dict:
        out: dict[str, Any] = {"job": job.id, "state": job.state, "position": self.queue.position(job),
                               "progress": list(job.progress), "stage": job.stage}
        if job.error:
            out["error"] = job.error
        if job.state == DONE:
            out["result"], out["seconds"] = job.result, round(job.seconds, 2)
        return out


class Handler(BaseHTTPRequestHandler):
    server_version = "sg2video-serve"
    protocol_version = "HTTP/1.1"
    app: ServeApp  # set on the subclass make_server builds
    timeout = 60  # seconds a connection may sit idle or trickle a body before its thread lets it go

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # quiet: one line per request is noise
        pass

    # -- replies ------------------------------------------------------------------------------------------

    def send_bytes(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, data: Any) -> None:
        self.send_bytes(status, json.dumps(data).encode(), "application/json")

    def send_error_line(self, status: int, message: str, where: str = "") -> None:
        self.send_json(status, {"error": " ".join(message.split()), "where": where})

    # -- requests -----------------------------------------------------------------------------------------

    def host_ok(self) -> bool:
        """On loopback, only Host headers naming this machine (DNS rebinding); exposed servers take any."""
        bound = self.server.server_address[0]
        if bound not in LOOPBACK:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in LOOPBACK

    def do_GET(self) -> None:  # noqa: N802
        if not self.host_ok():
            return self.send_error_line(HTTPStatus.FORBIDDEN, "request: the Host header does not name this server")
        path = urlsplit(self.path).path
        app = self.app
        if path in app.static:
            body, ctype = app.static[path]
            return self.send_bytes(HTTPStatus.OK, body, ctype, {"Content-Security-Policy": CSP})
        if path == "/api/info":
            return self.send_json(HTTPStatus.OK, app.info())
        found = _JOB.match(path)
        if found is None or found.group(2) == "cancel":
            return self.send_error_line(HTTPStatus.NOT_FOUND, f"no such page: {path[:80]}")
        job = app.queue.get(found.group(1))
        if job is None:
            return self.send_error_line(HTTPStatus.NOT_FOUND, "no such request (finished long ago, or never made)")
        if found.group(2) is None:
            return self.send_json(HTTPStatus.OK, app.status(job))
        index, kind = int(found.group(3)), found.group(4)
        if job.state != DONE or index >= job.request.settings.num:
            return self.send_error_line(HTTPStatus.NOT_FOUND, f"no sample {index} of this request")
        body = (job.folder / f"sample_{index:03d}.{kind}").read_bytes()  # a name the server made, in its own folder
        extra = {} if kind == "png" else {"Content-Disposition": f'attachment; filename="sample_{index:03d}.{kind}"'}
        self.send_bytes(HTTPStatus.OK, body, KINDS[kind], extra)

    do_HEAD = do_GET

    def read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError("request: no Content-Length", status=HTTPStatus.LENGTH_REQUIRED)
        limit = self.app.limits.max_bytes
        if int(length) > limit:
            self.close_connection = True  # the body is never read: this connection cannot carry another request
            raise RequestError(f"request: {int(length)} bytes, at most max_request_kb={limit // 1024} KiB",
                               status=HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        return self.rfile.read(int(length))

    def do_POST(self) -> None:  # noqa: N802
        if not self.host_ok():
            return self.send_error_line(HTTPStatus.FORBIDDEN, "request: the Host header does not name this server")
        path = urlsplit(self.path).path
        app = self.app
        found = _JOB.match(path)
        if found is not None and found.group(2) == "cancel":  # the closing tab's beacon: no body needed
            job = app.queue.cancel(found.group(1))
            if job is None:
                return self.send_error_line(HTTPStatus.NOT_FOUND, "no such request")
            return self.send_json(HTTPStatus.OK, {"job": job.id, "state": job.state})
        if path not in ("/api/check", "/api/parse", "/api/generate"):
            return self.send_error_line(HTTPStatus.NOT_FOUND, f"no such endpoint: {path[:80]}")
        try:
            body = self.read_body()
            if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
                raise RequestError("request: Content-Type must be application/json",
                                   status=HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
            data = decode_json(body)
            if path == "/api/parse":
                return self.send_json(HTTPStatus.OK, {"graph": parse_file(data, app.vocab, app.limits.max_objects)})
            request = parse_generate(data, app.vocab, app.limits, app.defaults)
            if path == "/api/check":
                return self.send_json(HTTPStatus.OK, {"ok": True, "frames": request.frames,
                                                      "segments": request.segments})
            job = app.queue.submit(request)
            self.send_json(HTTPStatus.ACCEPTED, app.status(job))
        except RequestError as err:
            self.send_error_line(err.status, str(err), err.where)
        except QueueFull as err:
            self.send_error_line(HTTPStatus.SERVICE_UNAVAILABLE, str(err))
        except UserError as err:
            self.send_error_line(HTTPStatus.BAD_REQUEST, str(err))


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a page that keeps a connection open never holds up shutdown


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(app: ServeApp, host: str, port: int) -> ThreadingHTTPServer:
    """A threading server bound to host:port (port 0: a free one); OSError when it cannot bind."""
    handler = type("BoundHandler", (Handler,), {"app": app})
    server_class = _Server6 if ":" in host else _Server  # an IPv6 literal, with or without brackets
    return server_class((host.strip("[]"), port), handler)
