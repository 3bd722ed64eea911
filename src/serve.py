"""A local page to write a scene graph, watch its videos, edit it and regenerate:
`python src/serve.py ckpt=RUN_DIR_OR_CKPT [host=127.0.0.1] [port=8765] [key=value ...]`.

Loads the generator once, serves the page (sg2video.serve) on loopback unless `host=` says otherwise, prints its
URL and serves until Ctrl-C. Every setting is checked before anything is loaded; a mistake is one line, exit 2.
"""
import os
import sys

# CPU runs share their cores with other processes; spinning OpenMP threads then waste most of a step
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sg2video.cli import preflight
from sg2video.config import register_resolvers
from sg2video.errors import ConfigError, exit_on_user_error

register_resolvers()
GENERATORS = ("diffusion", "sg2im")  # the stages whose checkpoint draws videos, in the order a run dir is searched


def checkpoint_path(cfg: DictConfig) -> Path:
    """ckpt= as a generator checkpoint: a file, or a run directory's checkpoints/<diffusion|sg2im>/last.pt."""
    path = Path(hydra.utils.to_absolute_path(str(cfg.ckpt))) if _hydra_ready() else Path(str(cfg.ckpt))
    if path.is_dir():
        for stage in GENERATORS:
            if (path / "checkpoints" / stage / "last.pt").is_file():
                return path / "checkpoints" / stage / "last.pt"
        raise ConfigError(f"ckpt={cfg.ckpt} is a directory without checkpoints/diffusion/last.pt or "
                          "checkpoints/sg2im/last.pt (a run directory whose diffusion stage has finished)")
    if not path.is_file():
        raise ConfigError(f"ckpt={cfg.ckpt} does not exist (a run directory or its checkpoints/diffusion/last.pt)")
    return path


def check_settings(cfg: DictConfig) -> None:
    """Types come from the schema at composition; here: what must be given, ranges, names and files."""
    from omegaconf import OmegaConf

    from sg2video.config import check_device
    from sg2video.schema import check_ranges

    if OmegaConf.is_missing(cfg, "ckpt"):
        raise ConfigError("ckpt is not set (python src/serve.py ckpt=RUN_DIR, or ckpt=RUN_DIR/checkpoints/diffusion/"
                          "last.pt)")
    check_ranges(cfg, "serve")
    check_device(cfg.device)
    if not str(cfg.host).strip():
        raise ConfigError("host='' names no interface (accepted: 127.0.0.1, the default, or an address to serve on)")
    for key in ("num", "steps"):
        limit = cfg[f"max_{key}"]
        if cfg[key] > limit:
            raise ConfigError(f"{key}={cfg[key]} is above max_{key}={limit}")
    checkpoint_path(cfg)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _hydra_ready() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


@hydra.main(version_base=None, config_path="../conf", config_name="serve")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    import signal
    import tempfile

    from sg2video.sampling import load_video_generator
    from sg2video.serve.app import ServeApp, make_server
    from sg2video.serve.requests import Limits, Settings
    from sg2video.train.distributed import pick_device

    check_settings(cfg)
    path = checkpoint_path(cfg)
    generator = load_video_generator(path, pick_device(str(cfg.device)))
    limits = Limits(max_frames=int(cfg.max_frames), max_num=int(cfg.max_num), max_steps=int(cfg.max_steps),
                    max_bytes=int(cfg.max_request_kb) * 1024, max_objects=generator.max_objects,
                    clip_frames=int(generator.clip_frames), prefix_frames=int(generator.prefix_frames),
                    chunked=bool(generator.chunked))
    defaults = Settings(num=int(cfg.num), seed=int(cfg.seed), sampler=str(cfg.sampler), steps=int(cfg.steps),
                        eta=float(cfg.eta), guidance=float(cfg.guidance), layout=str(cfg.layout.name))
    with tempfile.TemporaryDirectory(prefix="sg2video-serve-") as scratch:  # the server's files, gone at exit
        app = ServeApp(generator, limits, defaults, int(cfg.fps), Path(scratch), int(cfg.max_queue),
                       int(cfg.keep_results), float(cfg.abandon_s), label=str(cfg.ckpt))
        try:
            server = make_server(app, str(cfg.host), int(cfg.port))
        except OSError as err:
            app.queue.close()
            raise ConfigError(f"cannot serve on host={cfg.host} port={cfg.port}: {err.strerror or err} (another "
                              "server there? port=0 picks a free one)") from None
        host, port = server.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        # SIGTERM (a service manager, a test) ends like Ctrl-C: the queue stops and the files are removed
        signal.signal(signal.SIGTERM, _interrupt)
        print(f"serving {path.name} of {cfg.ckpt} at http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            app.queue.close()
    print("stopped", flush=True)


if __name__ == "__main__":
    preflight("serve", sys.argv[1:], check_settings)
    main()
