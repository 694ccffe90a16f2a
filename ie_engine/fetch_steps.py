"""The network half of an iteration, step by step: which concepts to query (drawn from the
policy's distribution, plus the class names' share in label-set mode) and the text sent for each,
the search, and the download of the results into the run folder."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ie_engine.config import DownloadConfig, ExplorerConfig
from ie_engine.download import Downloader
from ie_engine.download_cache import DownloadCache
from ie_engine.errors import SearchError
from ie_engine.imaging import DedupIndex
from ie_engine.policy import ConceptPolicy, Distribution
from ie_engine.run_records import ImageRecord
from ie_engine.types import DownloadRequest, ProgressSink, Query, SearchEngine, SearchResult
from ie_engine.vocabulary import DescriptorSource, Vocabulary, compose_query


def uniform_distribution(n: int, vetoed: set[int]) -> Distribution:
    """The random arm's distribution over ``n`` concepts: uniform over those not vetoed."""
    allowed = np.ones(n, dtype=bool)
    allowed[list(vetoed)] = False
    zeros = np.zeros(n, dtype=np.float32)
    return Distribution(zeros, zeros, allowed / allowed.sum(), np.full(n, 2, np.int8), "random")


def choose_queries(
    dist: Distribution,
    *,
    policy: ConceptPolicy,
    vocabulary: Vocabulary,
    descriptors: DescriptorSource,
    class_concepts: list[int],
    config: ExplorerConfig,
    iteration: int,
) -> list[Query]:
    """Draw iteration ``iteration``'s queries from ``dist`` (deterministic under the seed).

    In label-set mode ``class_name_query_share`` of them are class names (drawn with
    replacement); the rest come from the distribution with the class names left out. Each
    concept's text gets a descriptor; a text already chosen falls back to the bare lemma, and is
    dropped if that too was chosen (it would only fetch duplicates).
    """
    rng = np.random.default_rng([config.seed, iteration, 0])
    m = config.policy.queries_per_iteration
    chosen: list[tuple[int, int]] = []  # (concept, tier)
    if class_concepts:
        n_class = round(m * config.vocabulary.class_name_query_share)
        picks = rng.choice(len(class_concepts), size=n_class, replace=True)
        chosen += [(class_concepts[int(p)], -1) for p in picks]
        m -= n_class
    probs = dist.probability.copy()
    probs[class_concepts] = 0.0  # class names are queried by the share above
    if probs.sum() > 0:
        probs /= probs.sum()
    idx = policy.sample(Distribution(dist.mu, dist.sigma, probs, dist.tier, dist.model), m, rng)
    chosen += [(int(i), int(dist.tier[i])) for i in idx]
    queries: list[Query] = []
    seen: set[str] = set()
    for c, tier in chosen:
        concept = vocabulary.concepts[c]
        descriptor = descriptors.choose(concept, rng)
        text = compose_query(descriptor, concept.lemma)
        if text in seen:
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


def search_all(
    loop: asyncio.AbstractEventLoop,
    engine: SearchEngine | None,
    queries: list[Query],
    *,
    limit: int,
    concurrency: int,
    progress: ProgressSink,
) -> list[list[SearchResult]]:
    """Send every query to ``engine``, ``concurrency`` at a time, on ``loop`` (the run's: engines
    keep HTTP sessions bound to it); at most ``limit`` results each, a failed query gives []."""
    assert engine is not None, "a search engine is needed unless mode is target-only"
    progress.start("search", len(queries))

    async def run_all() -> list[list[SearchResult]]:
        sem = asyncio.Semaphore(concurrency)

        async def one(q: Query) -> list[SearchResult]:
            async with sem:
                try:
                    return (await engine.search(q.text, limit=limit))[:limit]
                except SearchError:
                    return []
                finally:
                    progress.advance("search")

        return list(await asyncio.gather(*(one(q) for q in queries)))

    out = loop.run_until_complete(run_all())
    progress.finish("search")
    return out


def download_all(
    loop: asyncio.AbstractEventLoop,
    requests: list[DownloadRequest],
    *,
    config: DownloadConfig,
    run_dir: Path,
    target_hashes: list[int],
    dedup: DedupIndex,
    vocabulary: Vocabulary,
    iteration: int,
    first_id: int,
    progress: ProgressSink,
    should_stop: Callable[[], bool],
    cache: DownloadCache | None = None,
) -> tuple[list[ImageRecord], list[Any]]:
    """Fetch, guard, dedup and store under ``run_dir/images``; return the stored images' records
    (request order, ids from ``first_id`` on) and the failures, each with its reason. ``cache``:
    the download cache to record into and answer from (replay: the only source)."""
    downloader = Downloader(config, image_dir=run_dir / "images", target_hashes=target_hashes,
                            dedup=dedup, cache=cache)
    report = loop.run_until_complete(
        downloader.fetch_all(requests, progress=progress, should_stop=should_stop))
    records: list[ImageRecord] = []
    for img in report.images:
        r = img.request.result
        records.append(ImageRecord(
            id=first_id + len(records),
            path=str(Path("images") / img.path),
            sha256=img.sha256,
            dhash=f"{img.dhash:016x}",
            iteration=iteration,
            concept_index=img.request.concept_index,
            concept=vocabulary.concepts[img.request.concept_index].lemma,
            query=img.request.query,
            image_url=r.image_url,
            page_url=r.page_url,
            title=r.title,
            license=r.license,
            creator=r.creator,
            engine=r.engine,
            category=r.extra.get("category", ""),
        ))
    return records, report.failures
