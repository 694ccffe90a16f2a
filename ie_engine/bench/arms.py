"""One benchmark arm on one target with one seed: an exploration run, then its measurements.

Arms (METHOD.md; issue 3), all at equal compute - the same iterations, queries, results per
query and training steps, and the same number of target samples per training batch (the
explorer's ``target_fraction``: web images are added to the target share, never substituted;
the target-only arm trains on the target share alone):

``explore``     the method;
``random``      concepts drawn uniformly from the same vocabulary;
``target-only`` no web at all;
``label-set``   the method given the class names (vocabulary restricted to the concepts
                nearest them, half of the queries are the class names themselves).

The loop never sees labels or relevance: the evaluation hook receives target features only, and
relevance is computed afterwards from the run's records (image URL -> corpus id -> category).
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ie_engine.bases import ResolvedBase, apply_base, spec_of, stored_size_for
from ie_engine.bench.metrics import (
    first_found,
    knn_loo_predictions,
    relevant_precision,
    reward_auroc,
)
from ie_engine.bench.targets import BenchTarget, item_id_from_url, relevant_classes
from ie_engine.config import ExplorerConfig, make_config
from ie_engine.evaluate import knn_accuracy_splits, linear_probe_accuracy
from ie_engine.explorer import Explorer
from ie_engine.search.corpus import CorpusIndex
from ie_engine.search.http_engine import HttpSearchEngine
from ie_engine.ssl.model import backbone_digest
from ie_engine.types import ProgressSink
from ie_engine.vocabulary import (
    Vocabulary,
    add_concepts,
    make_descriptor_source,
    restrict_to_label_set,
)

Arm = Literal["explore", "random", "target-only", "label-set"]
ARMS: tuple[Arm, ...] = ("explore", "random", "target-only", "label-set")
Init = Literal["base", "scratch"]
RESULT_FORMAT = 1


@dataclass(frozen=True)
class ArmSettings:
    """The compute of every arm (equal across arms by construction)."""

    iterations: int = 5
    queries: int = 32
    """M: queries per iteration."""
    per_query: int = 30
    """Q: results kept per query."""
    steps: int = 10
    """Training steps per iteration (at about 3 s a step on 2 busy cores, the full benchmark's
    budget: see README, Benchmark)."""
    batch_size: int = 64
    """Training batch of the web arms; the target share is ``target_fraction`` of it."""
    target_fraction: float = 0.5
    max_concepts: int | None = None
    """Vocabulary: None = every WordNet noun (the paper's); N = N of them spread evenly."""
    knn_k: int = 5
    knn_repeats: int = 10
    """Repeated stratified splits of the split kNN accuracy."""
    probe_repeats: int = 5
    num_threads: int | None = 1
    """torch threads: one is faster than two on 2 cores shared with other work (measured)."""
    base: str = "offline-ssl"
    """The base every ``base`` arm starts from (``ie bases``); the ``scratch`` arms use the same
    network with random weights."""


@dataclass
class Target:
    """A benchmark target loaded for the runs: normalised pixels, dHashes, labels."""

    spec: BenchTarget
    pixels: np.ndarray  # uint8 (T, 3, S, S)
    dhashes: list[int]
    labels: list[str]


@dataclass
class World:
    """What every arm shares: the corpus (all of it, for relevance look-ups), the vocabulary and
    its embeddings, the descriptor source settings, and the class-name embedder."""

    index: CorpusIndex
    vocab: Vocabulary
    embeddings: np.ndarray
    embed_phrases: Any  # (list[str]) -> float32 (n, D) unit rows


@functools.lru_cache(maxsize=8)
def _digest_of(path: str, mtime_ns: int, size: int) -> str:
    return backbone_digest(path)


def base_digest(path: str | Path) -> str:
    """:func:`backbone_digest` of a base checkpoint, read once per file version in a process
    (every run of a benchmark names its base by it; the file is about 45 MB)."""
    try:
        st = Path(path).stat()
    except OSError:
        return backbone_digest(path)  # raises the checkpoint error that says what is missing
    return _digest_of(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def arm_config(
    settings: ArmSettings, *, arm: Arm, seed: int, init_checkpoint: str | None, host: str | None
) -> ExplorerConfig:
    """The explorer configuration of one arm (cpu-small preset, the benchmark's compute),
    starting from ``settings.base`` whose weights file is ``init_checkpoint`` (None: the same
    network with random weights)."""
    mode: Literal["explore", "random", "target-only"] = (
        "explore" if arm == "label-set" else arm
    )
    cfg = make_config("cpu-small", seed=seed, mode=mode, iterations=settings.iterations,
                      target_fraction=settings.target_fraction, eval_knn_k=settings.knn_k)
    spec = spec_of(settings.base)
    resolved = ResolvedBase(spec, spec.arch,
                            Path(init_checkpoint) if init_checkpoint else None)
    train = apply_base(cfg.train, resolved, cpu=True)
    if init_checkpoint is None:
        train = replace(train, base="scratch", frozen_stages=0)
    cfg = replace(cfg, train=train, download=replace(
        cfg.download, stored_size=stored_size_for(train.image_size, cfg.download.stored_size)))
    return replace(
        cfg,
        vocabulary=replace(cfg.vocabulary, max_concepts=settings.max_concepts),
        policy=replace(cfg.policy, queries_per_iteration=settings.queries),
        search=replace(cfg.search, results_per_query=settings.per_query),
        train=replace(cfg.train, steps_per_iteration=settings.steps,
                      batch_size=settings.batch_size, num_threads=settings.num_threads),
        download=replace(cfg.download, allowed_private_hosts=(host,) if host else ()),
    ).validate()


def label_set_vocabulary(
    world: World, class_names: tuple[str, ...], fraction: float
) -> tuple[Vocabulary, np.ndarray, list[int], np.ndarray]:
    """Vocabulary, embeddings, class-name concept indices and allowed concepts of label-set mode.

    A class name that is already a lemma of the vocabulary ("bird") is queried as that concept;
    the others are appended (their embedding rows computed here, so the cached vocabulary
    embedding is reused rather than recomputed). The restriction keeps the ``fraction`` of
    concepts nearest the embeddings of the bare class names.
    """
    vocab = world.vocab
    indices: list[int | None] = [vocab.index_of(n) for n in class_names]
    missing = [n for n, i in zip(class_names, indices, strict=True) if i is None]
    embeddings = world.embeddings
    if missing:
        vocab = add_concepts(vocab, missing, source="class-name")
        extra = np.asarray(world.embed_phrases(missing), dtype=np.float32)
        embeddings = np.concatenate([np.asarray(embeddings, dtype=np.float32), extra])
    class_concepts = [vocab.index_of(n) for n in class_names]
    concepts = sorted({int(i) for i in class_concepts if i is not None})
    name_vecs = np.asarray(world.embed_phrases(list(class_names)), dtype=np.float32)
    allowed = restrict_to_label_set(vocab, embeddings, name_vecs, fraction=fraction)
    return vocab, embeddings, concepts, allowed


def run_arm(
    world: World,
    target: Target,
    *,
    arm: Arm,
    seed: int,
    init: Init,
    base_checkpoint: str | None,
    settings: ArmSettings,
    run_dir: Path,
    engine_url: str | None,
    keep_run: bool = False,
    progress: ProgressSink | None = None,
) -> dict[str, Any]:
    """Run one arm (or load its finished result from ``run_dir/result.json``); return the
    result dict (see :func:`_measure` for its keys)."""
    fingerprint = {
        "format": RESULT_FORMAT, "arm": arm, "seed": seed, "init": init,
        # The base by its weights, not its path: a base retrained to the same weights (its
        # cache name carries the corpus build time) finds the runs it already made.
        "base": (f"sha256:{base_digest(base_checkpoint)}"
                 if init == "base" and base_checkpoint else None),
        "settings": asdict(settings), "target": target.spec.name,
        "target_size": len(target.labels),
    }
    result_file = run_dir / "result.json"
    if result_file.is_file():
        old = json.loads(result_file.read_text())
        if old.get("fingerprint") == fingerprint:
            return dict(old)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a half-finished or stale run: start it again
    host = engine_url.split("//", 1)[1] if engine_url else None
    cfg = arm_config(settings, arm=arm, seed=seed, host=host,
                     init_checkpoint=base_checkpoint if init == "base" else None)
    vocab, embeddings = world.vocab, world.embeddings
    class_concepts: list[int] = []
    allowed: np.ndarray | None = None
    if arm == "label-set":
        names = tuple(target.spec.class_names)
        cfg = replace(cfg, vocabulary=replace(cfg.vocabulary, class_names=names))
        vocab, embeddings, class_concepts, allowed = label_set_vocabulary(
            world, names, cfg.vocabulary.label_set_fraction)

    per_iteration: dict[int, dict[str, Any]] = {}
    eval_seconds: dict[int, float] = {}
    final_feats: dict[str, np.ndarray] = {}

    def evaluate(feats: torch.Tensor, it: int) -> dict[str, float]:
        t0 = time.perf_counter()
        x = feats.numpy()
        preds = knn_loo_predictions(x, target.labels, k=settings.knn_k)
        loo = float(np.mean([p == y for p, y in zip(preds, target.labels, strict=True)]))
        split_mean, split_sd = knn_accuracy_splits(
            x, target.labels, k=settings.knn_k, repeats=settings.knn_repeats, seed=seed)
        per_iteration[it] = {"knn_loo": loo, "knn_splits_mean": split_mean,
                             "knn_splits_sd": split_sd, "loo_predictions": preds}
        final_feats["x"] = x
        eval_seconds[it] = time.perf_counter() - t0
        return {"knn_accuracy": loo, "knn_splits": split_mean}

    engine = HttpSearchEngine(engine_url) if engine_url and arm != "target-only" else None
    started = time.perf_counter()
    explorer = Explorer(
        config=cfg, run_dir=run_dir, vocabulary=vocab, concept_embeddings=embeddings,
        target_images=target.pixels, target_hashes=target.dhashes, engine=engine,
        descriptors=make_descriptor_source(cfg.vocabulary), class_concepts=class_concepts,
        allowed=allowed, evaluate=evaluate, progress=progress,
    )
    with explorer:
        explorer.run()
    wall = time.perf_counter() - started
    probe_mean, probe_sd = linear_probe_accuracy(
        final_feats["x"], target.labels, seed=seed, repeats=settings.probe_repeats)
    result = _measure(world, target, explorer, per_iteration, eval_seconds, run_dir)
    result.update({
        "fingerprint": fingerprint, "arm": arm, "seed": seed, "init": init,
        "wall_seconds": wall, "linear_probe_mean": probe_mean, "linear_probe_sd": probe_sd,
        "vocabulary_size": len(vocab),
        "allowed_concepts": None if allowed is None else len(allowed),
    })
    result_file.write_text(json.dumps(result, indent=1))
    if not keep_run:
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)
        shutil.rmtree(run_dir / "images", ignore_errors=True)
    return result


def _relevance_of_url(
    world: World, target: Target, url: str, fallback_category: str
) -> list[str]:
    item_id = item_id_from_url(url)
    item = world.index.get(item_id) if item_id else None
    if item is None:
        return relevant_classes(fallback_category, (), target.spec.relevance)
    return relevant_classes(item.category, item.also_in, target.spec.relevance)


def _measure(
    world: World,
    target: Target,
    explorer: Explorer,
    per_iteration: dict[int, dict[str, Any]],
    eval_seconds: dict[int, float],
    run_dir: Path,
) -> dict[str, Any]:
    """Per-iteration and final figures of a finished run.

    Keys: ``iterations`` (one dict per iteration 0..N: ``knn_loo``, ``knn_splits_mean``,
    ``precision`` - share of relevant images among every result fetched for the iteration's
    queries, duplicates and refusals included -, ``precision_new`` - among the new images only -,
    ``kept_precision``, ``reward_auroc``, ``n_images``, ``n_results``, ``n_leaked``,
    ``seconds``, ``train_images_per_second``, ``top_concepts``), ``final_knn_loo``,
    ``final_knn_splits_mean``, ``loo_correct`` (final, per target image), ``first_found``
    (class -> iteration), ``phase_seconds`` (totals), ``images_total``.
    """
    labels = target.labels
    images_by_it: dict[int, list[Any]] = {}
    classes_of: list[list[str]] = []
    its: list[int] = []
    for rec in explorer.images:
        cls = _relevance_of_url(world, target, rec.image_url, rec.category)
        images_by_it.setdefault(rec.iteration, []).append((rec, cls))
        classes_of.append(cls)
        its.append(rec.iteration)
    rows: list[dict[str, Any]] = []
    phase_totals: dict[str, float] = {}
    for h in explorer.history:
        it = int(h["iteration"])
        ev = per_iteration.get(it, {})
        row: dict[str, Any] = {
            "iteration": it,
            "knn_loo": ev.get("knn_loo"),
            "knn_splits_mean": ev.get("knn_splits_mean"),
            "knn_splits_sd": ev.get("knn_splits_sd"),
        }
        if it > 0:
            summary = json.loads((run_dir / "iterations" / f"{it:04d}.json").read_text())
            imgs = images_by_it.get(it, [])
            fetched = [bool(c) for _, c in imgs]
            failures_file = run_dir / "iterations" / f"{it:04d}-failures.jsonl"
            for line in failures_file.read_text().splitlines():
                if line.strip():
                    f = json.loads(line)
                    fetched.append(bool(_relevance_of_url(world, target, f["url"], "")))
            seconds = dict(summary["seconds"])
            seconds["evaluate"] = eval_seconds.get(it, 0.0)
            for k, v in seconds.items():
                phase_totals[k] = phase_totals.get(k, 0.0) + float(v)
            top = sorted(
                (q for q in summary["queries"] if q.get("observed_reward") is not None),
                key=lambda q: -float(q["observed_reward"]),
            )[:5]
            row.update({
                "precision": relevant_precision(fetched),
                "precision_new": relevant_precision([bool(c) for _, c in imgs]),
                "kept_precision": relevant_precision([bool(c) for r, c in imgs if r.kept]),
                "reward_auroc": reward_auroc([r.reward for r, _ in imgs],
                                             [bool(c) for _, c in imgs]),
                "n_images": len(imgs),
                "n_results": int(summary["n_results"]),
                "n_leaked": int(summary["n_leaked"]),
                "seconds": seconds,
                "train_images_per_second": float(summary["train_images_per_second"]),
                "loss": float(summary["loss_mean"]),
                "top_concepts": [
                    {"concept": q["concept"], "reward": round(float(q["observed_reward"]), 4),
                     "tier": q["tier"]} for q in top
                ],
            })
        rows.append(row)
    last = per_iteration[max(per_iteration)]
    correct = [p == y for p, y in zip(last["loo_predictions"], labels, strict=True)]
    return {
        "iterations": rows,
        "final_knn_loo": last["knn_loo"],
        "final_knn_splits_mean": last["knn_splits_mean"],
        "loo_correct": correct,
        "first_found": first_found(its, classes_of, target.spec.class_names),
        "phase_seconds": phase_totals,
        "images_total": len(explorer.images),
    }


__all__ = [
    "ARMS",
    "Arm",
    "ArmSettings",
    "Init",
    "Target",
    "World",
    "arm_config",
    "label_set_vocabulary",
    "run_arm",
]
