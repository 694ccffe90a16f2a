"""Per-process engine state of a worker, built lazily inside the worker process.

Nothing here is built at import: a Celery worker forks its pool processes first, and each
process builds what it needs on first use (so CUDA, if any, is touched only after the fork). A
:class:`Runtime` holds

* the store's engine and session factory;
* the text embedder (MiniLM) and, per vocabulary configuration, the vocabulary and its
  embeddings (cached on disk under ``{data_dir}/embeddings``, memory-mapped);
* the disk reserve (:class:`~worker.disk.DiskReserve`) in the data folder;
* one :class:`RunContext` per run it has worked on: the :class:`~ie_engine.explorer.Explorer`
  with its target and evaluation data. A context is reloaded from the run's checkpoint when the
  checkpoint changed since this process last saved or read it (another worker advanced the run).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings, get_settings
from app.store.db import make_engine, make_session_factory
from app.store.models import Run, Upload
from ie_engine.bases import resolve_config_base
from ie_engine.config import ExplorerConfig, VocabularyConfig
from ie_engine.errors import TargetError
from ie_engine.evaluate import knn_accuracy
from ie_engine.explorer import Explorer
from ie_engine.imaging import to_uint8_tensor_batch
from ie_engine.target import load_target
from ie_engine.vocabulary import (
    MiniLMEmbedder,
    Vocabulary,
    add_concepts,
    build_vocabulary,
    class_name_concepts,
    load_or_compute_embeddings,
    make_descriptor_source,
    restrict_to_label_set,
)
from worker.disk import MIB, DiskReserve
from worker.engines import allow_engine_hosts, download_cache, engine_health, search_engine

Stamp = tuple[int, int, int]
"""A checkpoint file's (inode, mtime in ns, size): changes whenever it is rewritten."""


def checkpoint_stamp(path: Path) -> Stamp | None:
    """``path``'s :data:`Stamp`, or None when there is no checkpoint."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def run_config(run: Run, settings: Settings) -> ExplorerConfig:
    """Run ``run``'s engine configuration as the worker runs it: the vocabulary capped by
    ``vocabulary_max_concepts`` when it sets no cap, training steps capped by
    ``max_train_steps``, and the search service's host allowed to the downloader (it is on
    loopback or a private network), and the base's weights file found in the data folder
    (a base published online is fetched there once; offline the run fails saying which file to
    put where)."""
    cfg = ExplorerConfig.from_dict(dict(run.config))
    cfg = resolve_config_base(cfg, data_dir=settings.data_dir)
    if settings.vocabulary_max_concepts and cfg.vocabulary.max_concepts is None:
        cfg = replace(cfg, vocabulary=replace(
            cfg.vocabulary, max_concepts=settings.vocabulary_max_concepts))
    if settings.max_train_steps and cfg.train.steps_per_iteration > settings.max_train_steps:
        cfg = replace(cfg, train=replace(cfg.train, steps_per_iteration=settings.max_train_steps))
    host = urlsplit(settings.search_url).netloc
    if host and host not in cfg.download.allowed_private_hosts:
        cfg = replace(cfg, download=replace(
            cfg.download, allowed_private_hosts=(*cfg.download.allowed_private_hosts, host)))
    return cfg.validate()


@dataclass
class RunContext:
    """What one process holds of one run."""

    run_id: int
    explorer: Explorer
    config: ExplorerConfig
    embeddings: np.ndarray
    """(N, D) unit rows of the vocabulary the run started with."""
    eval_pixels: torch.Tensor | None
    """uint8 (T, 3, S, S) of the labelled target, None without labels."""
    eval_labels: list[str] | None
    stamp: Stamp | None = None
    projection: tuple[np.ndarray, np.ndarray] | None = field(default=None)
    """(mean (D,), components (D, 2)) of the concept map, once computed."""

    def evaluate(self, _target_feats: torch.Tensor, _iteration: int) -> dict[str, float]:
        """The explorer's evaluation hook: kNN accuracy on the labelled target. The loop
        receives only this figure, never a label."""
        if self.eval_pixels is None or not self.eval_labels:
            return {}
        feats = self.explorer.trainer.embed(self.eval_pixels).numpy()
        return {"knn_accuracy": knn_accuracy(feats, self.eval_labels,
                                             k=self.config.eval_knn_k)}


class Runtime:
    """The engine state of one worker process (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._factory: sessionmaker[Session] | None = None
        self._embedder: MiniLMEmbedder | None = None
        self._vocabularies: dict[VocabularyConfig, tuple[Vocabulary, np.ndarray]] = {}
        self._runs: dict[int, RunContext] = {}
        self.reserve = DiskReserve(settings.data_dir, settings.disk_reserve_mb * MIB)

    # ---------------------------------------------------------------- shared state
    @property
    def factory(self) -> sessionmaker[Session]:
        """Sessions on the store (the engine is made on first use, in this process)."""
        if self._factory is None:
            self._engine = make_engine(self.settings.database_url)
            self._factory = make_session_factory(self._engine)
        return self._factory

    @property
    def embedder(self) -> MiniLMEmbedder:
        if self._embedder is None:
            self._embedder = MiniLMEmbedder()
        return self._embedder

    def vocabulary(self, config: VocabularyConfig) -> tuple[Vocabulary, np.ndarray]:
        """The vocabulary ``config`` asks for and its (N, D) embeddings (built once)."""
        if config not in self._vocabularies:
            data_dir = self.settings.data_dir
            vocab = build_vocabulary(config, data_dir=data_dir)
            if config.class_names:
                vocab = add_concepts(vocab, list(config.class_names), source="class-name")
            embeddings = load_or_compute_embeddings(
                vocab.texts(), self.embedder, data_dir / "embeddings")
            self._vocabularies[config] = (vocab, np.asarray(embeddings))
        return self._vocabularies[config]

    def embed(self, phrases: list[str]) -> np.ndarray:
        """(len(phrases), D) unit embeddings of ``phrases`` (concepts a person adds)."""
        return np.asarray(self.embedder.embed(phrases), dtype=np.float32)

    def run_dir(self, run_id: int) -> Path:
        return self.settings.runs_dir / str(run_id)

    # ---------------------------------------------------------------- runs
    def context(self, session: Session, run: Run) -> RunContext:
        """Run ``run``'s context, built (and resumed from its checkpoint) when this process has
        none or the checkpoint changed since this process last saw it."""
        path = self.run_dir(run.id) / "checkpoint.pt"
        held = self._runs.get(run.id)
        if held is not None and held.stamp == checkpoint_stamp(path):
            return held
        if held is not None:
            self.forget(run.id)
        ctx = self._build(session, run)
        if path.exists():
            ctx.explorer.resume()
        ctx.stamp = checkpoint_stamp(path)
        self._runs[run.id] = ctx
        return ctx

    def save(self, ctx: RunContext) -> None:
        """Checkpoint the run now and remember the checkpoint as this process's own."""
        ctx.explorer.save()
        ctx.stamp = checkpoint_stamp(ctx.explorer.checkpoint_path)

    def saved(self, ctx: RunContext) -> None:
        """The explorer checkpointed by itself (end of ``learn``): remember the new file."""
        ctx.stamp = checkpoint_stamp(ctx.explorer.checkpoint_path)

    def forget(self, run_id: int) -> None:
        """Drop (and close) this process's context of run ``run_id``."""
        ctx = self._runs.pop(run_id, None)
        if ctx is not None:
            ctx.explorer.close()

    def engine_health(self, run_id: int) -> dict[str, Any] | None:
        """The health of the web engines this process holds for run ``run_id`` (None: none)."""
        ctx = self._runs.get(run_id)
        return engine_health(ctx.explorer.engine) if ctx is not None else None

    def _build(self, session: Session, run: Run) -> RunContext:
        engine = search_engine(run, self.settings, self.run_dir(run.id))
        cfg = allow_engine_hosts(run_config(run, self.settings), engine)
        upload = session.get(Upload, run.upload_id) if run.upload_id is not None else None
        if upload is None:
            raise TargetError(f"run {run.id} has no target images (its upload is gone)")
        size = cfg.download.stored_size
        target = load_target(self.settings.data_dir / upload.folder,
                             max_pixels=cfg.download.max_pixels, size=size)
        pixels = to_uint8_tensor_batch(target.images, size)
        vocab, embeddings = self.vocabulary(cfg.vocabulary)
        class_concepts = class_name_concepts(vocab, cfg.vocabulary.class_names)
        allowed = None
        if cfg.vocabulary.class_names and class_concepts:
            allowed = restrict_to_label_set(
                vocab, embeddings, embeddings[class_concepts],
                fraction=cfg.vocabulary.label_set_fraction,
            )
        labels = target.labels if target.labels else None
        ctx_holder: list[RunContext] = []

        def evaluate(feats: torch.Tensor, it: int) -> dict[str, float]:
            return ctx_holder[0].evaluate(feats, it)

        explorer = Explorer(
            config=cfg, run_dir=self.run_dir(run.id), vocabulary=vocab,
            concept_embeddings=embeddings, target_images=pixels,
            target_hashes=target.dhashes, engine=engine,
            descriptors=make_descriptor_source(cfg.vocabulary), class_concepts=class_concepts,
            allowed=allowed, evaluate=evaluate if labels else None,
            download_cache=download_cache(engine),
        )
        ctx = RunContext(
            run_id=run.id, explorer=explorer, config=cfg, embeddings=embeddings,
            eval_pixels=torch.from_numpy(pixels) if labels else None, eval_labels=labels,
        )
        ctx_holder.append(ctx)
        return ctx


@cache
def get_runtime() -> Runtime:
    """This process's runtime, made on first use (after the worker's fork)."""
    return Runtime(get_settings())
