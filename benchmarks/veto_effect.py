"""What a veto does to the vetoed concept's nearest neighbours, on the real vocabulary.

    .venv/bin/python benchmarks/veto_effect.py [--seeds 10] [--data-dir DIR]

For two settings - the browser test's (153 concepts, 6 queries an iteration) and the full
WordNet vocabulary with 32 queries - it simulates three iterations of the policy on a reward that
is high near three concepts (bird, strawberry, tulip), vetoes the policy's favourite, and compares
its five nearest concepts' sampling probability before the veto, after it, and had the veto only
removed the concept (no negative observation). Prints a JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ie_engine.config import PolicyConfig, VocabularyConfig
from ie_engine.policy import ConceptPolicy
from ie_engine.vocabulary import MiniLMEmbedder, build_vocabulary, load_or_compute_embeddings

GOOD = ("bird", "strawberry", "tulip")


def one(emb: np.ndarray, good: list[int], queries: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    truth = 0.3 + 0.3 * (emb @ emb[good].T).max(1) + 0.03 * rng.normal(size=len(emb))
    policy = ConceptPolicy(emb, PolicyConfig(queries_per_iteration=queries), seed=seed)
    for _ in range(3):
        chosen = policy.sample(policy.distribution(), queries, rng)
        policy.observe(chosen.tolist(), truth[chosen].tolist())
    before = policy.distribution()
    favourite = int(np.argmax(before.probability))
    sims = emb @ emb[favourite]
    sims[favourite] = -np.inf
    near = np.argsort(-sims)[:5]
    policy.veto([favourite])
    after = policy.distribution()
    removed = policy.distribution(negatives=False)
    return {
        "after_over_before": float(after.probability[near].sum() / before.probability[near].sum()),
        "after_over_removed_only": float(
            after.probability[near].sum() / removed.probability[near].sum()),
        "mu_fall": float((before.mu[near] - after.mu[near]).mean()),
        "neighbour_similarity": float(sims[near].mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--data-dir", type=Path,
                    default=Path.home() / ".cache" / "internet-explorer")
    args = ap.parse_args()
    embedder = MiniLMEmbedder()
    out: dict[str, object] = {}
    for name, max_concepts, queries in (("small", 150, 6), ("full", None, 32)):
        t0 = time.perf_counter()
        vocab = build_vocabulary(VocabularyConfig(max_concepts=max_concepts, extra_concepts=GOOD,
                                                  descriptors="none"), data_dir=args.data_dir)
        emb = np.asarray(load_or_compute_embeddings(vocab.texts(), embedder,
                                                    args.data_dir / "embeddings"))
        good = [i for i, c in enumerate(vocab.concepts) if c.lemma in GOOD]
        rows = [one(emb, good, queries, seed) for seed in range(args.seeds)]
        ratio = np.array([r["after_over_before"] for r in rows])
        own = np.array([r["after_over_removed_only"] for r in rows])
        out[name] = {
            "concepts": len(vocab), "queries_per_iteration": queries, "seeds": args.seeds,
            "neighbours_fell": int((ratio < 1).sum()),
            "neighbours_below_removal_only": int((own < 1).sum()),
            "median_after_over_before": round(float(np.median(ratio)), 4),
            "median_after_over_removed_only": round(float(np.median(own)), 4),
            "mean_mu_fall": round(float(np.mean([r["mu_fall"] for r in rows])), 4),
            "mean_neighbour_similarity": round(
                float(np.mean([r["neighbour_similarity"] for r in rows])), 3),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
