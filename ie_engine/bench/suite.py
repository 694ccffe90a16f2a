"""The whole benchmark: targets, base model, throughput checks, every arm, the summary.

Output folder layout::

    summary.json                     the aggregate (see ie_engine.bench.report)
    measurements.json                throughput checks (reused by later invocations)
    plots/<target>.png               kNN accuracy and relevant precision per iteration
    runs/<target>/<base|scratch>/<arm>-s<seed>/result.json   one finished run each

Finished runs are never repeated (their ``result.json`` is reused when its fingerprint matches),
so the benchmark can be stopped and restarted, or run one target at a time into the same folder:
the summary always covers every finished run in the folder.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ie_engine.bases import resolve_base
from ie_engine.bench.arms import (
    ARMS,
    Arm,
    ArmSettings,
    Init,
    Target,
    arm_config,
    base_digest,
    run_arm,
)
from ie_engine.bench.pool import RunJob, WorldSpec, build_world, run_jobs
from ie_engine.bench.report import (
    carry_targets,
    plot_target,
    readme_section,
    summarise,
    update_readme,
)
from ie_engine.bench.targets import (
    BUILTIN_TARGETS,
    BenchTarget,
    build_builtin_target,
    load_custom_target,
)
from ie_engine.bench.throughput import measure_download_ratio, measure_train_ratio
from ie_engine.config import ExplorerConfig
from ie_engine.errors import ConfigError
from ie_engine.imaging import to_uint8_tensor_batch
from ie_engine.pretrain import PretrainSettings, pretrain_base
from ie_engine.search import CorpusIndex, serve_in_background
from ie_engine.target import load_target
from ie_engine.types import ProgressSink
from ie_engine.vocabulary import MiniLMEmbedder

Say = Callable[[str], None]


@dataclass(frozen=True)
class BenchPlan:
    """Which runs the benchmark makes."""

    targets: tuple[str, ...] = BUILTIN_TARGETS
    arms: tuple[Arm, ...] = ARMS
    seeds: dict[str, tuple[int, ...]] = field(default_factory=lambda: {
        "clipart-heldout": (0, 1, 2, 3, 4), "tuxpaint-photos": (0, 1, 2)})
    """Seeds per target (a target not listed uses ``default_seeds``)."""
    default_seeds: tuple[int, ...] = (0, 1, 2)
    scratch_arms: tuple[Arm, ...] = ("explore", "random", "target-only")
    scratch_seeds: tuple[int, ...] = (0, 1)
    arm: ArmSettings = field(default_factory=ArmSettings)
    pretrain: PretrainSettings = field(default_factory=lambda: PretrainSettings(
        steps=400, num_threads=None))
    """The base model (the same for the quick and the full benchmark, and ``ie pretrain``'s
    default, so one cached base serves all three)."""
    train_bench_steps: int = 3
    train_bench_rounds: int = 5
    """Trainer and bare loop alternate ``rounds`` times, ``steps`` steps each; the best of each
    counts (other programs' load on 2 shared cores makes single timings swing 2x)."""
    download_bench_count: int = 400
    quick: bool = False

    def seeds_for(self, target: str) -> tuple[int, ...]:
        return self.seeds.get(target, self.default_seeds)


def quick_plan() -> BenchPlan:
    """One target, two seeds, three short iterations; no scratch rows. The base model is the
    full benchmark's (trained once and cached: the first quick run also pays for it)."""
    return BenchPlan(
        targets=("clipart-heldout",),
        seeds={"clipart-heldout": (0, 1)},
        default_seeds=(0, 1),
        scratch_arms=(),
        scratch_seeds=(),
        arm=ArmSettings(iterations=3, queries=16, per_query=20, steps=4, knn_repeats=5,
                        probe_repeats=3),
        train_bench_steps=3,
        train_bench_rounds=2,
        download_bench_count=150,
        quick=True,
    )


def _cpu_model() -> str | None:
    """The CPU's model name (Linux), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        # The kernels torch picks (e.g. AVX2, AVX512): the same code, data and seed give other
        # weights where they differ, so a base model is named by its digest, not its settings.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _load(spec: BenchTarget, size: int, max_pixels: int) -> Target:
    ts = load_target(spec.image_dir, max_pixels=max_pixels, size=size, labelled="yes")
    assert ts.labels is not None
    return Target(spec=spec, pixels=to_uint8_tensor_batch(ts.images, size),
                  dhashes=ts.dhashes, labels=list(ts.labels))


def _schedule(plan: BenchPlan, target: str) -> list[tuple[Init, int, Arm]]:
    """The runs of one target: every arm from the base, then the arms from scratch."""
    base: list[tuple[Init, int, Arm]] = [
        ("base", seed, arm) for seed in plan.seeds_for(target) for arm in plan.arms]
    return base + [("scratch", seed, arm) for seed in plan.scratch_seeds
                   for arm in plan.scratch_arms]


def collect_results(out_dir: Path) -> list[dict[str, Any]]:
    """Every finished run's ``result.json`` under ``out_dir/runs``."""
    return [json.loads(p.read_text()) for p in sorted((out_dir / "runs").glob("*/*/*/result.json"))]


def write_report(out_dir: Path, *, readme: Path | None, say: Say,
                 carry: Path | None = None) -> dict[str, Any]:
    """(Re)build ``summary.json`` and the plots from the run folders; update the README's
    generated block when ``readme`` is given. ``carry``: an earlier ``summary.json`` whose
    targets with no runs here are carried into this one (same run settings only). Returns the
    summary."""
    meas_file = out_dir / "measurements.json"
    measurements = json.loads(meas_file.read_text()) if meas_file.is_file() else {}
    meta_file = out_dir / "bench.json"
    extra = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    summary = summarise(collect_results(out_dir), measurements, extra)
    if carry is not None:
        try:
            earlier = json.loads(carry.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the summary to carry, {carry}: {exc}") from exc
        for target in carry_targets(summary, earlier, carry.as_posix()):
            say(f"{target}: carried over from {carry}")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    plots: dict[str, str] = {}
    for target in sorted(set(summary["targets"]) | set(summary["from_scratch"])):
        path = plot_target(summary, target, out_dir / "plots" / f"{target}.png")
        plots[target] = str(path)
    if readme is not None:
        docs = readme.parent / "docs" / "bench"
        rel: dict[str, str] = {}
        for target, p in plots.items():
            docs.mkdir(parents=True, exist_ok=True)
            dest = docs / Path(p).name
            dest.write_bytes(Path(p).read_bytes())
            rel[target] = dest.relative_to(readme.parent).as_posix()
        docs.mkdir(parents=True, exist_ok=True)
        (docs / f"{out_dir.name}-summary.json").write_text(json.dumps(summary, indent=1))
        if not update_readme(readme, readme_section(summary, rel)):
            say(f"README {readme} has no benchmark markers: table not written")
    for c in summary["checks"]:
        mark = {True: "HOLDS ", False: "MISSED", None: "n/a   "}[c["holds"]]
        say(f"[{mark}] {c['target']}: {c['detail']}")
    return summary


def _network_line(cfg: ExplorerConfig) -> str:
    """``ResNet-18, 64 px crops of 96 px images`` for the settings line."""
    names = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "effnet-lite0": "EfficientNet-Lite0"}
    t = cfg.train
    frozen = f", first {t.frozen_stages} stages frozen" if t.frozen_stages else ""
    return (f"{names.get(t.arch, t.arch)}, {t.image_size} px crops of "
            f"{cfg.download.stored_size} px images{frozen}")


def run_bench(
    *,
    data_dir: Path,
    corpus_dir: Path,
    out_dir: Path,
    plan: BenchPlan,
    custom: tuple[Path, Path] | None = None,
    base_checkpoint: Path | None = None,
    keep_runs: bool = False,
    jobs: int = 1,
    readme: Path | None = None,
    progress: ProgressSink | None = None,
    say: Say = print,
) -> dict[str, Any]:
    """Run every planned run that is not finished yet (``jobs`` of them at a time, each in its
    own process when more than one), then write the report."""
    t_start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    index = CorpusIndex.load(corpus_dir)
    # ------------------------------------------------------------ targets (built-in ones always
    # built: their held-out ids are kept out of the base model's pretraining set)
    specs: dict[str, BenchTarget] = {
        name: build_builtin_target(name, index.items, data_dir / "bench-targets" / name)
        for name in BUILTIN_TARGETS
    }
    names = list(plan.targets)
    if custom is not None:
        spec = load_custom_target(custom[0], custom[1], index.items)
        specs[spec.name] = spec
        names = [spec.name]
    for n in names:
        s = specs[n]
        say(f"target {n}: {sum(len(v) for v in s.members.values())} images in "
            f"{len(s.class_names)} classes, {len(s.heldout_ids)} corpus items held out of the web")
    # ------------------------------------------------------------ base model
    if base_checkpoint is not None:
        base = str(base_checkpoint)
    elif plan.arm.base != "offline-ssl":
        resolved = resolve_base(plan.arm.base, data_dir=data_dir)
        if resolved.checkpoint is None:
            raise ConfigError(f"base {plan.arm.base!r} has no weights: the scratch rows are "
                              "already the arms from random weights")
        base = str(resolved.checkpoint)
        say(f"base: {plan.arm.base} ({base})")
    else:
        held = frozenset().union(*(s.heldout_ids for s in specs.values()))
        base = str(pretrain_base(corpus_dir=corpus_dir, data_dir=data_dir,
                                 settings=plan.pretrain, exclude_ids=held, progress=progress,
                                 say=say))
    # ------------------------------------------------------------ vocabulary
    embedder = MiniLMEmbedder()
    world = build_world(corpus_dir, data_dir,
                        arm_config(plan.arm, arm="explore", seed=0, init_checkpoint=None,
                                   host=None).vocabulary,
                        index=index, embedder=embedder, progress=progress)
    vocab = world.vocab
    say(f"vocabulary: {len(vocab)} concepts")
    cfg0 = arm_config(plan.arm, arm="explore", seed=0, init_checkpoint=base, host=None)
    size, max_px = cfg0.download.stored_size, cfg0.download.max_pixels
    loaded = {n: _load(specs[n], size, max_px) for n in names}
    # ------------------------------------------------------------ throughput checks
    meas_file = out_dir / "measurements.json"
    if not meas_file.is_file():
        say("measuring trainer and downloader throughput ...")
        first = loaded[names[0]]
        web = first.pixels[::-1].copy()
        train = measure_train_ratio(cfg0.train, first.pixels, web,
                                    target_fraction=plan.arm.target_fraction,
                                    steps=plan.train_bench_steps, rounds=plan.train_bench_rounds)
        download = measure_download_ratio(cfg0.download, count=plan.download_bench_count)
        meas_file.write_text(json.dumps({"train": train, "download": download}, indent=1))
        say(f"training ratio {train['ratio']}, downloader ratio {download['ratio']}")
    bench_meta = {
        "settings": {"plan": asdict(plan)},
        "settings_line": (
            f"{'--quick' if plan.quick else 'full'}; cpu-small preset ({_network_line(cfg0)}), "
            f"{plan.arm.iterations} iterations x {plan.arm.queries} queries x "
            f"{plan.arm.per_query} results, {plan.arm.steps} steps of batch "
            f"{plan.arm.batch_size} ({plan.arm.target_fraction:.0%} target) per iteration; "
            f"vocabulary {len(vocab)} WordNet nouns; base model "
            + (f"{plan.pretrain.steps} steps" if plan.arm.base == "offline-ssl"
               else plan.arm.base)),
        "machine": _machine(),
        "base_checkpoint": base,
        "base_digest": f"sha256:{base_digest(base)}" if base else None,
        "jobs": jobs,
    }
    (out_dir / "bench.json").write_text(json.dumps(bench_meta, indent=1, default=str))
    # ------------------------------------------------------------ the runs
    handles: dict[str, Any] = {}
    try:
        for n in names:
            handles[n] = serve_in_background(
                CorpusIndex.load(corpus_dir, exclude_ids=loaded[n].spec.heldout_ids), embedder)
        schedule = [
            RunJob(target=n, init=init, seed=seed, arm=arm, engine_url=handles[n].url,
                   run_dir=out_dir / "runs" / n / init / f"{arm}-s{seed}")
            for n in names
            for init, seed, arm in _schedule(plan, n)
        ]
        finished = 0

        def report(job: RunJob, r: dict[str, Any]) -> None:
            nonlocal finished
            finished += 1
            last = r["iterations"][-1]
            say(f"[{finished}/{len(schedule)}] {job.target} {job.init} {job.arm} seed "
                f"{job.seed}: kNN {r['final_knn_loo']:.3f}, precision {last.get('precision')}, "
                f"AUROC {last.get('reward_auroc')} ({r.get('wall_seconds', 0.0):.0f} s)")

        workers = max(1, min(jobs, len(schedule)))
        if workers > 1:
            say(f"{len(schedule)} runs, {workers} at a time")
            world_spec = WorldSpec(corpus_dir=corpus_dir, data_dir=data_dir,
                                   embeddings_dir=data_dir / "embeddings",
                                   vocabulary=cfg0.vocabulary, targets=loaded)
            run_jobs(world_spec, schedule, workers=workers, base_checkpoint=base,
                     settings=plan.arm, keep_run=keep_runs, on_done=report)
        else:
            for job in schedule:
                r = run_arm(world, loaded[job.target], arm=job.arm, seed=job.seed,
                            init=job.init, base_checkpoint=base, settings=plan.arm,
                            run_dir=job.run_dir, engine_url=job.engine_url,
                            keep_run=keep_runs, progress=progress)
                report(job, r)
    finally:
        for h in handles.values():
            h.stop()
    say(f"benchmark runs done in {time.perf_counter() - t_start:.0f} s")
    return write_report(out_dir, readme=readme, say=say)


__all__ = ["BenchPlan", "collect_results", "quick_plan", "run_bench", "write_report"]
