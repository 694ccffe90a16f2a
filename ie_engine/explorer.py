"""One exploration run: the loop of METHOD.md, one readable iteration top to bottom.

The explorer owns the run's state (policy, trainer, replay buffer, downloaded images) and its
folder; it takes every collaborator (search engine, downloader settings, progress sink, an
optional evaluation hook) as an argument. It never sees class labels: evaluation is a callback
that receives target features and returns figures, so labels stay with the caller.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ie_engine.checkpoint import load_checkpoint, save_checkpoint
from ie_engine.config import ExplorerConfig
from ie_engine.download_cache import DownloadCache
from ie_engine.errors import Cancelled, CheckpointError
from ie_engine.fetch_steps import choose_queries, download_all, search_all, uniform_distribution
from ie_engine.imaging import DedupIndex
from ie_engine.policy import ConceptPolicy
from ie_engine.reward import (
    ReplayBuffer,
    ReplayEntry,
    concept_rewards,
    image_rewards,
    whitener,
)
from ie_engine.run_records import (
    Fetched,
    ImageRecord,
    IterationSummary,
    summarise,
    write_iteration,
    write_text_atomic,
)
from ie_engine.ssl import SSLTrainer
from ie_engine.train_batches import BatchSampler, PixelCache, batch_sampler, training_pool
from ie_engine.types import DownloadRequest, NullProgress, ProgressSink, SearchEngine
from ie_engine.vocabulary import DescriptorSource, Vocabulary, add_concepts

CHECKPOINT_FORMAT = 1

EvaluationHook = Callable[[torch.Tensor, int], dict[str, float]]
"""Called with the target features (T, D) and the iteration; returns figures to record."""


class Explorer:
    """Runs (and resumes) an exploration in ``run_dir``.

    ``target_images``: uint8 array (T, 3, S, S), S = ``config.download.stored_size``;
    ``target_hashes``: their dHashes (the leakage guard). ``concept_embeddings``: (N, D) unit rows
    for ``vocabulary``. ``class_concepts``: in label-set mode, the indices of the class-name
    concepts (queried for ``class_name_query_share`` of each iteration); ``allowed`` restricts the
    policy to the concepts nearest the class names. ``download_cache``: where image downloads are
    recorded and, in replay, answered from (web engines made by ``make_engine`` carry the one
    that goes with their response cache: ``engine.download_cache``).
    """

    def __init__(
        self,
        *,
        config: ExplorerConfig,
        run_dir: Path,
        vocabulary: Vocabulary,
        concept_embeddings: np.ndarray,
        target_images: np.ndarray,
        target_hashes: list[int],
        engine: SearchEngine | None,
        descriptors: DescriptorSource,
        class_concepts: list[int] | None = None,
        allowed: np.ndarray | None = None,
        evaluate: EvaluationHook | None = None,
        progress: ProgressSink | None = None,
        should_stop: Callable[[], bool] | None = None,
        download_cache: DownloadCache | None = None,
    ) -> None:
        self.config = config.validate()
        self.run_dir = run_dir
        self.vocabulary = vocabulary
        self.engine = engine
        self.download_cache = download_cache
        self.descriptors = descriptors
        self.class_concepts = list(class_concepts or [])
        self.evaluate_hook = evaluate
        self.progress = progress or NullProgress()
        self.should_stop = should_stop or (lambda: False)
        if config.mode != "target-only" and engine is None:
            raise ValueError("a search engine is needed unless mode is target-only")

        self.target = torch.from_numpy(np.ascontiguousarray(target_images))
        self.target_hashes = list(target_hashes)
        self.policy = ConceptPolicy(concept_embeddings, config.policy, seed=config.seed)
        if allowed is not None:
            self.policy.restrict(np.union1d(allowed, np.array(self.class_concepts, dtype=int)))
        self.trainer = SSLTrainer(config.train, seed=config.seed)
        self.replay = ReplayBuffer(config.reward.replay_keep_fraction)
        self.dedup = DedupIndex()
        self.images: list[ImageRecord] = []
        self.history: list[dict[str, Any]] = []
        self.iteration = 0  # iterations completed
        self.pending: Fetched | None = None  # fetched, not yet learned
        self.added: list[tuple[str, list[float]]] = []  # concepts added mid-run, with vectors
        self.reward_reference: list[int] = []  # image ids the reward's whitening is fitted on
        self._pixels = PixelCache(run_dir, config.download.stored_size)
        # One event loop for the whole run: engines keep HTTP sessions (bound to a loop) across
        # iterations. Closed by close().
        self._loop = asyncio.new_event_loop()
        for sub in ("images", "iterations"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)

    def attach(self, progress: ProgressSink, should_stop: Callable[[], bool]) -> None:
        """Report progress to ``progress`` and poll ``should_stop`` from now on (a worker gives
        each step of a resumed run its own)."""
        self.progress = progress
        self.should_stop = should_stop

    # ================================================================== the loop
    def run(self, iterations: int | None = None) -> list[dict[str, Any]]:
        """Run until ``iterations`` (default: the config's) are complete; return the history."""
        total = iterations if iterations is not None else self.config.iterations
        if self.iteration == 0 and not self.history:
            self._start()
        while self.iteration < total:
            self.step()
        return self.history

    def _start(self) -> None:
        """Warm up on the target alone (if configured) and record the starting point."""
        steps = self.config.target_warmup_steps
        if steps:
            self.trainer.train(self._batch_sampler([]), steps, progress=self.progress,
                               should_stop=self.should_stop)
        metrics = self._evaluate(0)
        self.history.append({"iteration": 0, **metrics})
        self._save()

    def step(self) -> IterationSummary:
        """Run one iteration, write its files and a checkpoint; return its summary."""
        return self.learn(self.pending or self.fetch())

    def fetch(self) -> Fetched:
        """First half of an iteration (network work): sample concepts, search, download.

        The result is kept as ``self.pending`` and is part of the checkpoint, so a worker
        process can hand it to another that calls :meth:`learn`.
        """
        it = self.iteration + 1
        cfg = self.config
        seconds: dict[str, float] = {}
        self._check_stop()

        # ---------------------------------------------------------------- 1. sample concepts
        t0 = time.perf_counter()
        dist = self.policy.distribution() if cfg.mode == "explore" else uniform_distribution(
            len(self.vocabulary), self.policy.vetoed)
        queries = (
            [] if cfg.mode == "target-only" else choose_queries(
                dist, policy=self.policy, vocabulary=self.vocabulary,
                descriptors=self.descriptors, class_concepts=self.class_concepts,
                config=cfg, iteration=it)
        )
        seconds["policy"] = time.perf_counter() - t0

        # ---------------------------------------------------------------- 2. search
        t0 = time.perf_counter()
        results = search_all(
            self._loop, self.engine, queries, limit=cfg.search.results_per_query,
            concurrency=cfg.search.concurrency, progress=self.progress) if queries else []
        seconds["search"] = time.perf_counter() - t0
        self._check_stop()

        # ---------------------------------------------------------------- 3. download
        t0 = time.perf_counter()
        requests = [
            DownloadRequest(result=r, query=q.text, concept_index=q.concept_index)
            for q, rs in zip(queries, results, strict=True)
            for r in rs
        ]
        records, failures = download_all(
            self._loop, requests, config=cfg.download, run_dir=self.run_dir,
            target_hashes=self.target_hashes, dedup=self.dedup, vocabulary=self.vocabulary,
            iteration=it, first_id=len(self.images), progress=self.progress,
            should_stop=self.should_stop, cache=self.download_cache)
        self.images += records
        new_ids = [r.id for r in records]
        seconds["download"] = time.perf_counter() - t0
        self.pending = Fetched(
            iteration=it,
            model=dist.model,
            queries=queries,
            n_results=[len(rs) for rs in results],
            new_ids=new_ids,
            failures=[
                {"url": f.url, "reason": f.reason, "detail": f.detail,
                 "query": f.request.query if f.request else None,
                 "concept_index": f.request.concept_index if f.request else None,
                 "duplicate_of": f.duplicate_of}
                for f in failures
            ],
            seconds=seconds,
        )
        return self.pending

    def learn(self, fetched: Fetched) -> IterationSummary:
        """Second half of an iteration (compute): train, score, update the policy, record."""
        it = fetched.iteration
        if it != self.iteration + 1:
            raise ValueError(f"fetched data is for iteration {it}, the run is at {self.iteration}")
        cfg = self.config
        seconds = dict(fetched.seconds)
        queries, new_ids = fetched.queries, fetched.new_ids
        self._check_stop()

        # ---------------------------------------------------------------- 4. train
        t0 = time.perf_counter()
        pool = self._training_pool(new_ids, it)
        stats = self.trainer.train(
            self._batch_sampler(pool),
            cfg.train.steps_per_iteration,
            progress=self.progress,
            should_stop=self.should_stop,
        )
        seconds["train"] = time.perf_counter() - t0

        # ---------------------------------------------------------------- 5. score images
        t0 = time.perf_counter()
        target_feats = self.trainer.embed(self.target)
        rewards = np.zeros(0, dtype=np.float32)
        white = None
        if new_ids:
            web_feats = self.trainer.embed(self._stack(new_ids))
            reference = self._reward_reference(new_ids, it)
            if reference:
                white = whitener(self.trainer.embed(self._stack(reference)),
                                 shrink=cfg.reward.whiten_shrink)
                web_feats, target_feats = white(web_feats), white(target_feats)
            rewards = image_rewards(web_feats, target_feats, k=cfg.reward.k).numpy()
        for i, r in zip(new_ids, rewards.tolist(), strict=True):
            self.images[i].reward = r

        # ---------------------------------------------------------------- 6. concept rewards
        queried = [q.concept_index for q in queries]
        concept_of = [self.images[i].concept_index for i in new_ids]
        found = self._found_again(fetched) if cfg.reward.count_repeats else []
        scored = rewards
        own = {(self.images[i].concept_index, i) for i in new_ids}
        found = [pair for pair in found if pair not in own]
        if found:
            again = self.trainer.embed(self._stack([i for _, i in found]))
            if white is not None:
                again = white(again)
            scored = np.concatenate(
                [rewards, image_rewards(again, target_feats, k=cfg.reward.k).numpy()])
            concept_of += [c for c, _ in found]
        per_concept = concept_rewards(
            concept_of,
            scored,
            queried,
            top=cfg.reward.top_images,
            min_results=cfg.search.min_results,
        )
        observed = [c for c in dict.fromkeys(queried) if c not in self.class_concepts]
        self.policy.observe(observed, [per_concept[c] for c in observed])

        # ---------------------------------------------------------------- 7. replay buffer
        vetoed = self.policy.vetoed
        kept = self.replay.add_iteration([
            ReplayEntry(i, self.images[i].concept_index, it, self.images[i].reward)
            for i in new_ids
            if self.images[i].concept_index not in vetoed
        ])
        for e in kept:
            self.images[e.image_id].kept = True
        seconds["score"] = time.perf_counter() - t0

        # ---------------------------------------------------------------- 8. evaluate, record
        metrics = self._evaluate(it)
        summary = summarise(fetched, images=self.images, vocabulary=self.vocabulary,
                            replay_size=len(self.replay), per_concept=per_concept,
                            rewards=rewards, stats=stats, seconds=seconds, metrics=metrics)
        self.iteration = it
        self.pending = None
        self.history.append({
            "iteration": it,
            "mean_image_reward": summary.mean_image_reward,
            "mean_concept_reward": summary.mean_concept_reward,
            "loss": summary.loss_mean,
            "n_images": summary.n_images,
            "kept_share": len(kept) / max(1, len(new_ids)),
            "seconds": seconds,
            **metrics,
        })
        write_iteration(self.run_dir, summary, [self.images[i] for i in new_ids],
                        fetched.failures, self.history)
        self._save()
        return summary

    def save(self) -> None:
        """Checkpoint now (e.g. between :meth:`fetch` and :meth:`learn`)."""
        self._save()

    # ================================================================== steps in detail
    def _training_pool(self, new_ids: list[int], it: int) -> list[int]:
        replay_ids = [i for i in self.replay.image_ids() if self.images[i].iteration < it]
        return training_pool(new_ids, replay_ids, pcr=self.config.reward.pcr,
                             rng=np.random.default_rng([self.config.seed, it, 1]))

    def _found_again(self, fetched: Fetched) -> list[tuple[int, int]]:
        """(concept, image id) for each result of this iteration that repeated an image the run
        had already downloaded (RewardConfig.count_repeats): the query found that image too,
        so its concept reward counts it, scored again in the current features. On a small web
        most results of a well-explored region are such repeats; without them the query would
        score as empty whatever it showed. Each image counts once per concept."""
        if not any(f.get("duplicate_of") for f in fetched.failures):
            return []
        by_key: dict[str, int] = {}
        for r in self.images:  # the earliest image under each key
            for key in (f"url:{r.image_url}", f"sha256:{r.sha256}", f"dhash:{r.dhash}"):
                by_key.setdefault(key, r.id)
        out: dict[tuple[int, int], None] = {}
        for f in fetched.failures:
            repeated, concept = f.get("duplicate_of"), f.get("concept_index")
            if repeated is None or concept is None or repeated not in by_key:
                continue
            out[(int(concept), by_key[repeated])] = None
        return list(out)

    def _reward_reference(self, new_ids: list[int], it: int) -> list[int]:
        """The web sample the reward's whitening is fitted on (RewardConfig.whiten): a seeded
        sample of the first iteration's downloads, topped up from the next ones while it holds
        fewer than ``min_reference``; empty (no whitening) until then or when switched off."""
        rc = self.config.reward
        if not rc.whiten:
            return []
        if len(self.reward_reference) < rc.min_reference:
            room = rc.reference_images - len(self.reward_reference)
            rng = np.random.default_rng([self.config.seed, it, 2])
            take = rng.permutation(len(new_ids))[:room]
            self.reward_reference += sorted(new_ids[int(i)] for i in take)
        return self.reward_reference if len(self.reward_reference) >= rc.min_reference else []

    def _batch_sampler(self, pool: list[int]) -> BatchSampler:
        return batch_sampler(self.target, self._stack(pool) if pool else None,
                             batch_size=self.config.train.batch_size,
                             target_fraction=self.config.target_fraction)

    def _stack(self, ids: list[int]) -> torch.Tensor:
        return self._pixels.stack(ids, lambda i: self.images[i].path)

    def _evaluate(self, it: int) -> dict[str, float]:
        if self.evaluate_hook is None:
            return {}
        return self.evaluate_hook(self.trainer.embed(self.target), it)

    def _check_stop(self) -> None:
        if self.should_stop():
            raise Cancelled("the run was asked to stop")

    def close(self) -> None:
        """Close the engine's HTTP session (if it has one) and the run's event loop."""
        if self._loop.is_closed():
            return
        close = getattr(self.engine, "close", None)
        if close is not None:
            self._loop.run_until_complete(close())
        self._loop.close()

    def __enter__(self) -> Explorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ================================================================== vetoes (any time)
    def veto(self, concepts: list[int]) -> int:
        """Veto concepts: never sampled again, images out of the replay buffer, and fed to the
        policy as negative observations. Returns how many replay images left."""
        self.policy.veto(concepts)
        removed = self.replay.remove_concepts(set(concepts))
        for img in self.images:
            if img.concept_index in concepts:
                img.kept = False
        return removed

    def unveto(self, concepts: list[int]) -> None:
        self.policy.unveto(concepts)

    def add_concepts(self, phrases: list[str], vectors: np.ndarray) -> list[int]:
        """Add the user's own concepts mid-run; ``vectors``: (len(phrases), D) embeddings of the
        phrases (from the same text embedder). Returns the new concepts' indices (phrases that
        are already in the vocabulary are skipped)."""
        before = len(self.vocabulary)
        known = {c.lemma.casefold() for c in self.vocabulary.concepts}
        fresh = [(p, v) for p, v in zip(phrases, vectors, strict=True)
                 if " ".join(p.split()).casefold() not in known]
        self.vocabulary = add_concepts(self.vocabulary, [p for p, _ in fresh])
        added = list(range(before, len(self.vocabulary)))
        if added:
            vecs = np.array([v for _, v in fresh], dtype=np.float32)[: len(added)]
            self.policy.extend(vecs)
            self.added += [(self.vocabulary.concepts[i].lemma, vecs[j].tolist())
                           for j, i in enumerate(added)]
        return added

    # ================================================================== checkpoint
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "policy": self.policy.state_dict(),
            "trainer": self.trainer.state_dict(),
            "replay": self.replay.state_dict(),
            "dedup": self.dedup.state_dict(),
            "images": [asdict(r) for r in self.images],
            "history": self.history,
            "vocabulary_size": len(self.vocabulary) - len(self.added),
            "added": self.added,
            "pending": None if self.pending is None else self.pending.to_dict(),
            "reward_reference": self.reward_reference,
            "base": self.trainer.base_record(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("checkpoint format not understood by this version")
        if state["vocabulary_size"] != len(self.vocabulary) - len(self.added):
            raise CheckpointError(
                f"checkpoint was made with {state['vocabulary_size']} concepts, "
                f"this run has {len(self.vocabulary)}: use the same vocabulary options"
            )
        if not self.added and state.get("added"):
            phrases = [p for p, _ in state["added"]]
            vectors = np.array([v for _, v in state["added"]], dtype=np.float32)
            self.add_concepts(phrases, vectors)
        self.iteration = int(state["iteration"])
        self.policy.load_state_dict(state["policy"])
        self.trainer.load_state_dict(state["trainer"])
        self.replay.load_state_dict(state["replay"])
        self.dedup.load_state_dict(state["dedup"])
        self.images = [ImageRecord(**r) for r in state["images"]]
        self.history = list(state["history"])
        # Absent from checkpoints of earlier versions: the next iteration's downloads fill it.
        self.reward_reference = [int(i) for i in state.get("reward_reference", [])]
        pending = state.get("pending")
        self.pending = None if pending is None else Fetched.from_dict(pending)
        self._pixels.clear()

    def _save(self) -> None:
        write_text_atomic(self.run_dir / "config.json", json.dumps(self.config.to_dict(), indent=1))
        save_checkpoint(self.checkpoint_path, self.state_dict())
        # Written after the checkpoint: says which iteration a resume would continue from.
        write_text_atomic(self.run_dir / "run.json", json.dumps(
            {"iterations_done": self.iteration, "images": len(self.images),
             "checkpoint": self.checkpoint_path.name, "saved_at": time.time(),
             "base": self.trainer.base_record()}))

    def resume(self) -> None:
        """Load the run folder's checkpoint (raises CheckpointError if there is none)."""
        self.load_state_dict(load_checkpoint(self.checkpoint_path))

