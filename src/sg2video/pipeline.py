"""Runs the stages of an experiment in order and caches finished stages by config hash.

Stages talk through files in the run directory (`checkpoints/<stage>/last.pt`, `metrics.json`), so
each can run alone (`stage=encoder`), be resumed (a killed run picks up its last checkpoint), and be
shared: with `cache_dir` set, a finished encoder (or autoencoder) is stored under
`cache_dir/<stage>/<hash>/` and every run whose config determines the same stage reuses it. A file
lock makes two racing jobs train it once.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from sg2video.atomic import copy_atomic, write_text_atomic
from sg2video.logs import say
from sg2video.config import config_hash, migrate_renamed_keys, to_dict, uses_autoencoder, uses_layout_model, validate
from sg2video.errors import UserError
from sg2video.generators import GENERATORS, generator_for_model, import_ref
from sg2video.rundir import read_metrics, stage_checkpoint, update_metrics
from sg2video.train.distributed import DistInfo, barrier, cleanup, setup_distributed


def run_dir_of(cfg: DictConfig) -> Path:
    """The Hydra output directory of this job (a test may set `run_dir` in the config instead)."""
    explicit = OmegaConf.select(cfg, "run_dir", default=None)
    if explicit:
        return Path(explicit)
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def stage_plan(cfg: DictConfig) -> list[str]:
    """The stages `stage=` asks for, in order; `all`: [autoencoder,] encoder, [layout,] the generator's, eval."""
    if cfg.stage != "all":
        return [cfg.stage]
    plan = ["encoder", generator_for_model(str(cfg.model.name)).stage, "eval"]
    if uses_layout_model(cfg):
        plan.insert(1, "layout")
    if uses_autoencoder(cfg):
        plan.insert(0, "autoencoder")
    return plan


# -- the stages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """A stage's function `(cfg, run_dir, info) -> result` ("module:function": imported when the stage runs), and
    whether a finished result is shared through the stage cache (`cache_dir`; its module must be
    `sg2video.stages.<name>`: the cache key hashes that module's imports)."""

    function: str | Callable[[DictConfig, Path, DistInfo], Any]
    cached: bool = False


# The pipeline's own stages. Each registered generator (sg2video.generators.GENERATORS) adds its training stage.
STAGES: dict[str, Stage] = {
    "autoencoder": Stage("sg2video.stages.autoencoder:run_autoencoder_stage", cached=True),
    "encoder": Stage("sg2video.stages.encoder:run_encoder_stage", cached=True),
    "layout": Stage("sg2video.stages.layout:run_layout_stage", cached=True),
    "eval": Stage("sg2video.stages.evaluate:run_eval_stage"),
}

CACHED_STAGES = tuple(name for name, stage in STAGES.items() if stage.cached)


def stage_names() -> list[str]:
    """Every stage a run can name: the pipeline's own and the generators'."""
    return [*STAGES, *GENERATORS]


def stage_function(name: str) -> Callable[[DictConfig, Path, DistInfo], Any]:
    """The function of stage `name`: one of the pipeline's own, or a registered generator's training stage."""
    if name in STAGES:
        if name in GENERATORS:
            raise ValueError(f"generator stage {name!r} has the name of one of the pipeline's own stages")
        return import_ref(STAGES[name].function)
    if name in GENERATORS:
        return GENERATORS[name].stage_function()
    raise UserError(f"stage={name!r} is not accepted (accepted: all, {', '.join(stage_names())})")


# -- stage cache ---------------------------------------------------------------------------------


# `train` keys every stage's loop reads (stages.common.SHARED_TRAIN_KEYS) that change what it learns
RESULT_TRAIN_KEYS = ("seed", "precision", "compile", "deterministic", "threads")

PACKAGE = "sg2video"


def _package_root(root: Path | None) -> Path:
    return Path(root).resolve() if root is not None else Path(__file__).resolve().parent


def _module_file(root: Path, module: str) -> Path | None:
    """The source file of package module `module` ("sg2video.a.b") under `root`; None when there is none."""
    parts = module.split(".")[1:]
    base = root.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if parts and base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _in_package(module: str | None) -> bool:
    return module is not None and (module == PACKAGE or module.startswith(PACKAGE + "."))


# (module, is a package, sha256 of its source) -> the package modules its import statements may name
_IMPORTS_SEEN: dict[tuple[str, bool, bytes], tuple[str, ...]] = {}


def _imported_names(module: str, path: Path, source: bytes) -> tuple[str, ...]:
    """Every package module an `import` / `from ... import` anywhere in `source` (functions included) may load:
    the modules named, relative imports resolved, and `from m import x` also as the candidate submodule `m.x`."""
    is_package = path.name == "__init__.py"
    key = (module, is_package, hashlib.sha256(source).digest())
    if key in _IMPORTS_SEEN:
        return _IMPORTS_SEEN[key]
    import ast

    names: list[str] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names if _in_package(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module if is_package else module.rpartition(".")[0]
                anchor = package.split(".")
                if node.level - 1 >= len(anchor):
                    continue  # beyond the top package: not ours (Python would refuse it)
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module
            if not _in_package(base):
                continue
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    _IMPORTS_SEEN[key] = result = tuple(dict.fromkeys(names))
    return result


def _stage_sources(stage: str, root: Path | None = None) -> dict[str, bytes]:
    """Relative path (posix) -> bytes of every package source file loaded when the stage's module
    (`sg2video.stages.<stage>`) is imported or run, found by following its import statements transitively,
    with the `__init__.py` of every package on the way (importing a submodule runs them)."""
    if stage not in CACHED_STAGES:
        raise ValueError(f"stage {stage} is not cached")
    root = _package_root(root)
    sources: dict[str, bytes] = {}
    seen: set[str] = set()
    todo = [f"{PACKAGE}.stages.{stage}"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(root, module)
        if path is None:  # `from sg2video.m import name` where name is not a submodule, or a stale import
            continue
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # the packages it sits in
        source = path.read_bytes()
        sources[path.relative_to(root).as_posix()] = source
        todo += _imported_names(module, path, source)
    if f"stages/{stage}.py" not in sources:
        raise FileNotFoundError(f"no module {PACKAGE}.stages.{stage} under {root}")
    return dict(sorted(sources.items()))


def stage_code_files(stage: str, root: Path | None = None) -> list[Path]:
    """The package source files whose code a cached stage runs (its import closure), sorted: an edit to any of
    them makes a new cache key for it. `root`: the package directory (default this one)."""
    base = _package_root(root)
    return [base / rel for rel in _stage_sources(stage, root)]


def code_hash(stage: str, root: Path | None = None) -> str:
    """sha256 of the package version and of the relative path and bytes of every source file in the stage's
    import closure (`stage_code_files`, under the package directory `root`, default this one), 16 hex digits."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256()
    try:
        digest.update(version(PACKAGE).encode())
    except PackageNotFoundError:  # running from a source tree that was not installed
        digest.update(b"source")
    for rel, source in _stage_sources(stage, root).items():
        digest.update(rel.encode() + b"\0")
        digest.update(len(source).to_bytes(8, "little"))
        digest.update(source)
    return digest.hexdigest()[:16]


def cache_key(cfg: DictConfig, stage: str) -> str:
    """The hash of everything that determines a stage's result: the data (not how it is loaded), the stage's
    own config, the `train` keys that change results, and the code that trains it."""
    if stage not in CACHED_STAGES:
        raise ValueError(f"stage {stage} is not cached")
    data = {k: v for k, v in to_dict(cfg.data).items() if k not in ("num_workers",)}
    train = {k: OmegaConf.select(cfg, f"train.{k}") for k in RESULT_TRAIN_KEYS}
    own = {"autoencoder": [cfg.autoencoder], "encoder": [cfg.encoder], "layout": [cfg.encoder, cfg.layout]}[stage]
    return config_hash(stage, data, *own, train, code_hash(stage))


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_cached(cfg: DictConfig, run_dir: Path, stage: str, train: Callable[[], Path], info: DistInfo,
               log: Callable[[str], None] = say) -> Path:
    """Reuse a finished stage from the cache, or train it and store it there."""
    target = stage_checkpoint(run_dir, stage)
    cache_root = OmegaConf.select(cfg, "cache_dir", default=None)
    done = _finished_step(target)
    wanted = OmegaConf.select(cfg, f"{stage}.train.max_steps", default=None)
    if done is not None and (not wanted or done >= wanted):
        log(f"[{stage}] finished in this run dir at step {done}: kept (delete {target} to train it anew)")
        return target
    if done is not None:  # asked for more steps than it has: the stage's loop resumes from its checkpoint
        return train()
    if not cache_root or info.world_size > 1:
        return train()
    entry = Path(cache_root) / stage / cache_key(cfg, stage)
    cached = entry / "last.pt"
    with _locked(entry.with_suffix(".lock")):
        if cached.exists() and _is_finished(cached):
            copy_atomic(cached, target)
            _restore_stage_metrics(entry, run_dir, stage)
            log(f"[{stage}] reusing cached stage {entry} (same config and code; cache_dir=null trains it anew)")
            return target
        result = train()
        if _is_finished(result):
            _store_stage_metrics(run_dir, entry, stage)  # before the checkpoint: last.pt marks a complete entry
            copy_atomic(result, cached)
            log(f"[{stage}] trained; stored as cache entry {entry}")
        return result


def _store_stage_metrics(run_dir: Path, entry: Path, stage: str) -> None:
    """The stage's metrics.json section beside its cached checkpoint, so a run that reuses it has them too."""
    section = read_metrics(run_dir).get(stage)
    if section is not None:
        write_text_atomic(entry / "metrics.json", json.dumps(section, indent=2, sort_keys=True) + "\n", durable=True)


def _restore_stage_metrics(entry: Path, run_dir: Path, stage: str) -> None:
    path = entry / "metrics.json"
    if path.exists():
        update_metrics(run_dir, stage, {**json.loads(path.read_text()), "reused_from": str(entry)})


def _is_finished(path: Path) -> bool:
    return _finished_step(path) is not None


def _finished_step(path: Path) -> int | None:
    """The step of a finished stage checkpoint; None when there is none, it is unfinished or unreadable."""
    from sg2video.train.checkpoint import CheckpointError, load_checkpoint

    if not path.exists():
        return None
    try:
        state = load_checkpoint(path)
    except CheckpointError:
        return None
    return int(state.get("step", 0)) if state.get("finished") else None


# -- the pipeline --------------------------------------------------------------------------------


def run_stage(cfg: DictConfig, run_dir: Path, stage: str, info: DistInfo, log: Callable[[str], None] = say) -> Any:
    """Run one stage in `run_dir` (a cached stage through the stage cache), its start and end in the log; returns
    what the stage function returns (eval: the headline metric)."""
    if info.is_main:
        log(f"[{stage}] starting (run dir: {run_dir})")
    t0 = time.time()
    fn = stage_function(stage)
    if stage in CACHED_STAGES:
        out = run_cached(cfg, run_dir, stage, lambda: fn(cfg, run_dir, info), info, log)
    else:
        out = fn(cfg, run_dir, info)
    barrier(info)
    if info.is_main:
        log(f"[{stage}] done in {time.time() - t0:.0f} s")
    return out


def run_pipeline(cfg: DictConfig, log: Callable[[str], None] = say) -> float | None:
    """Run the configured stages; returns the headline metric (for sweepers) when eval ran."""
    for notice in migrate_renamed_keys(cfg):
        log(notice)
    validate(cfg)
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = OmegaConf.select(cfg, "train.threads")
    if threads:  # the same thread count on every machine: CPU float results depend on how sums are split
        import torch

        torch.set_num_threads(int(threads))
    info = setup_distributed(cfg.device)
    start = time.time()
    result = None
    try:
        for stage in stage_plan(cfg):
            out = run_stage(cfg, run_dir, stage, info, log)
            if stage == "eval":
                result = out
    finally:
        cleanup(info)
    if info.is_main:
        from sg2video.hparams import log_hparams

        log_hparams(cfg, run_dir)  # one row per run in TensorBoard's HPARAMS tab
        log(f"finished in {time.time() - start:.0f} s. Outputs: {run_dir}")
        for name in ("metrics.json", "report.html", "samples", "tb"):
            if (run_dir / name).exists():
                log(f"  {run_dir / name}")
        log(f"  tensorboard --logdir {run_dir / 'tb'}")
    return result
