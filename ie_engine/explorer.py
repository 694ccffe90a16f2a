"""One exploration run: the loop of METHOD.md, one readable iteration top to bottom.

The explorer owns the run's state (policy, trainer, replay buffer, downloaded images) and its
folder; it takes every collaborator (search engine, downloader settings, progress sink, an
optional evaluation hook) as an argument. It never sees class labels: evaluation is a callback
that receives target features and returns figures, so labels stay with the caller.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ie_engine.checkpoint import load_checkpoint, save_checkpoint
from ie_engine.config import ExplorerConfig
from ie_engine.download import Downloader
from ie_engine.errors import Cancelled, CheckpointError, SearchError
from ie_engine.imaging import DedupIndex, to_uint8_tensor_batch
from ie_engine.policy import ConceptPolicy, Distribution
from ie_engine.reward import ReplayBuffer, ReplayEntry, concept_rewards, image_rewards
from ie_engine.ssl import SSLTrainer
from ie_engine.types import (
    DownloadRequest,
    NullProgress,
    ProgressSink,
    Query,
    SearchEngine,
    SearchResult,
)
from ie_engine.vocabulary import DescriptorSource, Vocabulary, add_concepts, compose_query

CHECKPOINT_FORMAT = 1

EvaluationHook = Callable[[torch.Tensor, int], dict[str, float]]
"""Called with the target features (T, D) and the iteration; returns figures to record."""


@dataclass
class ImageRecord:
    """A downloaded web image with its provenance and its reward when it was scored."""

    id: int
    path: str  # relative to the run folder
    sha256: str
    dhash: str  # hex, 16 digits
    iteration: int
    concept_index: int
    concept: str
    query: str
    image_url: str
    page_url: str
    title: str
    license: str
    creator: str
    engine: str
    category: str
    reward: float = float("nan")
    kept: bool = False  # entered the replay buffer


@dataclass
class Fetched:
    """The network half of an iteration, waiting for the compute half (:meth:`Explorer.learn`)."""

    iteration: int
    model: str  # the policy's model when the concepts were sampled
    queries: list[Query]
    n_results: list[int]  # per query
    new_ids: list[int]  # images added to ``Explorer.images``, in request order
    failures: list[dict[str, Any]]  # url, reason, detail, query
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fetched:
        return cls(**{**d, "queries": [Query(**q) for q in d["queries"]]})


@dataclass
class IterationSummary:
    """What one iteration did; written to ``iterations/NNNN.json``."""

    iteration: int
    model: str
    queries: list[dict[str, Any]]
    n_results: int
    n_images: int
    n_failures: int
    failure_reasons: dict[str, int]
    n_leaked: int
    replay_size: int
    mean_image_reward: float
    mean_concept_reward: float
    loss_mean: float
    train_images_per_second: float
    seconds: dict[str, float]
    metrics: dict[str, float] = field(default_factory=dict)


class Explorer:
    """Runs (and resumes) an exploration in ``run_dir``.

    ``target_images``: uint8 array (T, 3, S, S), S = ``config.download.stored_size``;
    ``target_hashes``: their dHashes (the leakage guard). ``concept_embeddings``: (N, D) unit rows
    for ``vocabulary``. ``class_concepts``: in label-set mode, the indices of the class-name
    concepts (queried for ``class_name_query_share`` of each iteration); ``allowed`` restricts the
    policy to the concepts nearest the class names.
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
    ) -> None:
        self.config = config.validate()
        self.run_dir = run_dir
        self.vocabulary = vocabulary
        self.engine = engine
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
        self._pixels: dict[int, np.ndarray] = {}
        # One event loop for the whole run: engines keep HTTP sessions (bound to a loop) across
        # iterations. Closed by close().
        self._loop = asyncio.new_event_loop()
        for sub in ("images", "iterations"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)

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
        dist = self.policy.distribution() if cfg.mode == "explore" else self._uniform()
        queries = self._choose_queries(dist, it)
        seconds["policy"] = time.perf_counter() - t0

        # ---------------------------------------------------------------- 2. search
        t0 = time.perf_counter()
        results = self._search(queries) if queries else []
        seconds["search"] = time.perf_counter() - t0
        self._check_stop()

        # ---------------------------------------------------------------- 3. download
        t0 = time.perf_counter()
        requests = [
            DownloadRequest(result=r, query=q.text, concept_index=q.concept_index)
            for q, rs in zip(queries, results, strict=True)
            for r in rs
        ]
        new_ids, failures = self._download(requests, it)
        seconds["download"] = time.perf_counter() - t0
        self.pending = Fetched(
            iteration=it,
            model=dist.model,
            queries=queries,
            n_results=[len(rs) for rs in results],
            new_ids=new_ids,
            failures=[
                {"url": f.url, "reason": f.reason, "detail": f.detail,
                 "query": f.request.query if f.request else None}
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
        if new_ids:
            web_feats = self.trainer.embed(self._stack(new_ids))
            rewards = image_rewards(web_feats, target_feats, k=cfg.reward.k).numpy()
        for i, r in zip(new_ids, rewards.tolist(), strict=True):
            self.images[i].reward = r

        # ---------------------------------------------------------------- 6. concept rewards
        queried = [q.concept_index for q in queries]
        per_concept = concept_rewards(
            [self.images[i].concept_index for i in new_ids],
            rewards,
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
        summary = self._summarise(fetched, per_concept, rewards, stats, seconds, metrics)
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
        self._write_iteration(summary, new_ids, fetched.failures)
        self._save()
        return summary

    def save(self) -> None:
        """Checkpoint now (e.g. between :meth:`fetch` and :meth:`learn`)."""
        self._save()

    # ================================================================== steps in detail
    def _choose_queries(self, dist: Distribution, it: int) -> list[Query]:
        """Draw this iteration's queries (uniform in ``random`` mode, none in target-only)."""
        cfg = self.config
        if cfg.mode == "target-only":
            return []
        rng = np.random.default_rng([cfg.seed, it, 0])
        m = cfg.policy.queries_per_iteration
        chosen: list[tuple[int, int]] = []  # (concept, tier)
        if self.class_concepts:
            n_class = round(m * cfg.vocabulary.class_name_query_share)
            picks = rng.choice(len(self.class_concepts), size=n_class, replace=True)
            chosen += [(self.class_concepts[int(p)], -1) for p in picks]
            m -= n_class
        probs = dist.probability.copy()
        probs[self.class_concepts] = 0.0  # class names are queried by the share above
        if probs.sum() > 0:
            probs /= probs.sum()
        idx = self.policy.sample(
            Distribution(dist.mu, dist.sigma, probs, dist.tier, dist.model), m, rng
        )
        chosen += [(int(i), int(dist.tier[i])) for i in idx]
        queries: list[Query] = []
        seen: set[str] = set()
        for c, tier in chosen:
            concept = self.vocabulary.concepts[c]
            descriptor = self.descriptors.choose(concept, rng)
            text = compose_query(descriptor, concept.lemma)
            if text in seen:  # the same text twice would only fetch duplicates
                text, descriptor = concept.lemma, None
                if text in seen:
                    continue
            seen.add(text)
            queries.append(Query(
                concept_index=c,
                text=text,
                descriptor=descriptor,
                predicted_mu=float(dist.mu[c]),
                predicted_sigma=float(dist.sigma[c]),
                probability=float(dist.probability[c]),
                tier=tier,
            ))
        return queries

    def _uniform(self) -> Distribution:
        """The random arm's distribution: uniform over the concepts not vetoed."""
        n = len(self.vocabulary)
        allowed = np.ones(n, dtype=bool)
        allowed[list(self.policy.vetoed)] = False
        zeros = np.zeros(n, dtype=np.float32)
        return Distribution(zeros, zeros, allowed / allowed.sum(), np.full(n, 2, np.int8), "random")

    def _search(self, queries: list[Query]) -> list[list[SearchResult]]:
        """Send every query to the engine, ``search.concurrency`` at a time; failures -> []."""
        assert self.engine is not None
        engine = self.engine
        limit = self.config.search.results_per_query
        self.progress.start("search", len(queries))

        async def run_all() -> list[list[SearchResult]]:
            sem = asyncio.Semaphore(self.config.search.concurrency)

            async def one(q: Query) -> list[SearchResult]:
                async with sem:
                    try:
                        return (await engine.search(q.text, limit=limit))[:limit]
                    except SearchError:
                        return []
                    finally:
                        self.progress.advance("search")

            return list(await asyncio.gather(*(one(q) for q in queries)))

        out = self._loop.run_until_complete(run_all())
        self.progress.finish("search")
        return out

    def _download(self, requests: list[DownloadRequest], it: int) -> tuple[list[int], list[Any]]:
        """Fetch, guard, dedup and store; return the new image ids (request order) and failures."""
        downloader = Downloader(
            self.config.download,
            image_dir=self.run_dir / "images",
            target_hashes=self.target_hashes,
            dedup=self.dedup,
        )
        report = self._loop.run_until_complete(
            downloader.fetch_all(requests, progress=self.progress, should_stop=self.should_stop)
        )
        new_ids: list[int] = []
        for img in report.images:
            r = img.request.result
            rec = ImageRecord(
                id=len(self.images),
                path=str(Path("images") / img.path),
                sha256=img.sha256,
                dhash=f"{img.dhash:016x}",
                iteration=it,
                concept_index=img.request.concept_index,
                concept=self.vocabulary.concepts[img.request.concept_index].lemma,
                query=img.request.query,
                image_url=r.image_url,
                page_url=r.page_url,
                title=r.title,
                license=r.license,
                creator=r.creator,
                engine=r.engine,
                category=r.extra.get("category", ""),
            )
            self.images.append(rec)
            new_ids.append(rec.id)
        return new_ids, report.failures

    def _training_pool(self, new_ids: list[int], it: int) -> list[int]:
        """This iteration's web images: all new ones plus replay sampled at PCR x their number."""
        replay_ids = [i for i in self.replay.image_ids() if self.images[i].iteration < it]
        n_old = min(len(replay_ids), round(self.config.reward.pcr * max(1, len(new_ids))))
        rng = np.random.default_rng([self.config.seed, it, 1])
        old = rng.choice(replay_ids, size=n_old, replace=False).tolist() if n_old else []
        return new_ids + [int(i) for i in old]

    def _batch_sampler(self, pool: list[int]) -> Callable[[int, torch.Generator], torch.Tensor]:
        """A batch maker: ``target_fraction`` of each batch from the target, the rest from
        ``pool``; with an empty pool (target-only) the batch is the target share alone."""
        batch = self.config.train.batch_size
        n_target = max(2, round(batch * self.config.target_fraction))
        n_web = batch - n_target if pool else 0
        pool_pixels = self._stack(pool) if pool and n_web else None

        def sample(step: int, gen: torch.Generator) -> torch.Tensor:
            t_idx = torch.randint(len(self.target), (n_target,), generator=gen)
            parts = [self.target[t_idx]]
            if pool_pixels is not None:
                w_idx = torch.randint(len(pool_pixels), (n_web,), generator=gen)
                parts.append(pool_pixels[w_idx])
            return torch.cat(parts)

        return sample

    def _stack(self, ids: list[int]) -> torch.Tensor:
        """uint8 (len(ids), 3, S, S) pixels of stored web images (read once, then cached)."""
        size = self.config.download.stored_size
        missing = [i for i in ids if i not in self._pixels]
        for i in missing:
            with Image.open(self.run_dir / self.images[i].path) as im:
                arr = np.asarray(im.convert("RGB"))
            self._pixels[i] = to_uint8_tensor_batch([arr], size)[0]
        return torch.from_numpy(np.stack([self._pixels[i] for i in ids]))

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

    # ================================================================== records
    def _summarise(
        self,
        fetched: Fetched,
        per_concept: dict[int, float],
        rewards: np.ndarray,
        stats: Any,
        seconds: dict[str, float],
        metrics: dict[str, float],
    ) -> IterationSummary:
        counts: dict[int, int] = {}
        for i in fetched.new_ids:
            counts[self.images[i].concept_index] = counts.get(self.images[i].concept_index, 0) + 1
        reasons: dict[str, int] = {}
        for f in fetched.failures:
            reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
        rows = []
        for q, n_results in zip(fetched.queries, fetched.n_results, strict=True):
            row = asdict(q)
            row["concept"] = self.vocabulary.concepts[q.concept_index].lemma
            row["n_results"] = n_results
            row["n_images"] = counts.get(q.concept_index, 0)
            row["observed_reward"] = per_concept.get(q.concept_index)
            rows.append(row)
        losses = list(getattr(stats, "losses", []))
        return IterationSummary(
            iteration=fetched.iteration,
            model=fetched.model,
            queries=rows,
            n_results=sum(fetched.n_results),
            n_images=len(fetched.new_ids),
            n_failures=len(fetched.failures),
            failure_reasons=reasons,
            n_leaked=reasons.get("target-leak", 0),
            replay_size=len(self.replay),
            mean_image_reward=float(rewards.mean()) if rewards.size else float("nan"),
            mean_concept_reward=float(np.mean(list(per_concept.values())))
            if per_concept else float("nan"),
            loss_mean=float(np.mean(losses)) if losses else float("nan"),
            train_images_per_second=float(getattr(stats, "images_per_second", 0.0)),
            seconds=seconds,
            metrics=metrics,
        )

    def _write_iteration(self, summary: IterationSummary, new_ids: list[int],
                         failures: list[dict[str, Any]]) -> None:
        base = self.run_dir / "iterations" / f"{summary.iteration:04d}"
        _write_text(base.with_suffix(".json"), json.dumps(asdict(summary), indent=1))
        lines = [json.dumps(asdict(self.images[i])) for i in new_ids]
        _write_text(base.with_name(base.name + "-images.jsonl"), "\n".join(lines) + "\n")
        fail_lines = [json.dumps(f) for f in failures]
        _write_text(base.with_name(base.name + "-failures.jsonl"), "\n".join(fail_lines) + "\n")
        _write_text(self.run_dir / "metrics.json", json.dumps(self.history, indent=1))

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
        pending = state.get("pending")
        self.pending = None if pending is None else Fetched.from_dict(pending)
        self._pixels.clear()

    def _save(self) -> None:
        _write_text(self.run_dir / "config.json", json.dumps(self.config.to_dict(), indent=1))
        save_checkpoint(self.checkpoint_path, self.state_dict())
        # Written after the checkpoint: says which iteration a resume would continue from.
        _write_text(self.run_dir / "run.json", json.dumps(
            {"iterations_done": self.iteration, "images": len(self.images),
             "checkpoint": self.checkpoint_path.name, "saved_at": time.time()}))

    def resume(self) -> None:
        """Load the run folder's checkpoint (raises CheckpointError if there is none)."""
        self.load_state_dict(load_checkpoint(self.checkpoint_path))


def _write_text(path: Path, text: str) -> None:
    """Write a small text file atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
