"""What a veto does to the vetoed concept's nearest neighbours, on the real vocabulary.

    .venv/bin/python benchmarks/veto_effect.py [--seeds 10] [--first-seed 0] [--data-dir DIR]
        [--only NAME ...]

For each setting of :data:`SETTINGS` - 150 concepts spread over WordNet with 6 queries an
iteration, the full WordNet vocabulary with 32, and vocabularies restricted to the nouns under
bird.n.01, fruit.n.01 (and flower.n.01) with 6, the browser test's queries - it simulates three
iterations of the policy on a reward that is high near three concepts (bird, strawberry, tulip,
added when the vocabulary lacks them), vetoes the policy's favourite, and compares its five
nearest concepts' sampling probability before the veto, after it, and had the veto only removed
the concept (no negative observation). Each seed's ratio is listed beside the RBF length-scale
the GP had fitted (on unit embeddings): the negative observation reaches the neighbours only
when that length-scale is not far below their distance. Prints a JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ie_engine.config import PolicyConfig, VocabularyConfig
from ie_engine.policy import ConceptPolicy
from ie_engine.vocabulary import MiniLMEmbedder, build_vocabulary, load_or_compute_embeddings

GOOD = ("bird", "strawberry", "tulip")
ROOTS = ("bird.n.01", "fruit.n.01", "flower.n.01")
SETTINGS: dict[str, tuple[VocabularyConfig, int]] = {
    "small": (VocabularyConfig(max_concepts=150), 6),
    "full": (VocabularyConfig(), 32),
    "rooted": (VocabularyConfig(roots=ROOTS), 6),
    "rooted-1000": (VocabularyConfig(roots=ROOTS, max_concepts=1000), 6),
    "rooted-500": (VocabularyConfig(roots=ROOTS, max_concepts=500), 6),
    "rooted-150": (VocabularyConfig(roots=ROOTS, max_concepts=150), 6),
    "bird-fruit-1000": (VocabularyConfig(roots=ROOTS[:2], max_concepts=1000), 6),
}
"""Each setting: its vocabulary (GOOD is added to it, without descriptors) and its queries per
iteration."""


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
    theta = policy.state_dict()["gp_theta"]  # log of (signal, length-scale, noise)
    return {
        "after_over_before": float(after.probability[near].sum() / before.probability[near].sum()),
        "length_scale": float(np.exp(theta[1])) if theta is not None else float("nan"),
        "after_over_removed_only": float(
            after.probability[near].sum() / removed.probability[near].sum()),
        "mu_fall": float((before.mu[near] - after.mu[near]).mean()),
        "neighbour_similarity": float(sims[near].mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path,
                    default=Path.home() / ".cache" / "internet-explorer")
    ap.add_argument("--only", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                    help="run these settings only (default: all)")
    args = ap.parse_args()
    embedder = MiniLMEmbedder()
    out: dict[str, object] = {}
    for name in args.only:
        config, queries = SETTINGS[name]
        t0 = time.perf_counter()
        config = replace(config, extra_concepts=GOOD, descriptors="none")
        vocab = build_vocabulary(config, data_dir=args.data_dir)
        emb = np.asarray(load_or_compute_embeddings(vocab.texts(), embedder,
                                                    args.data_dir / "embeddings"))
        good = [i for i, c in enumerate(vocab.concepts) if c.lemma in GOOD]
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        rows = [one(emb, good, queries, seed) for seed in seeds]
        ratio = np.array([r["after_over_before"] for r in rows])
        own = np.array([r["after_over_removed_only"] for r in rows])
        out[name] = {
            "roots": list(config.roots), "max_concepts": config.max_concepts,
            "concepts": len(vocab), "queries_per_iteration": queries,
            "seeds": [seeds.start, seeds.stop - 1],
            "neighbours_fell": int((ratio < 1).sum()),
            "neighbours_below_removal_only": int((own < 1).sum()),
            "median_after_over_before": round(float(np.median(ratio)), 4),
            "median_after_over_removed_only": round(float(np.median(own)), 4),
            "mean_mu_fall": round(float(np.mean([r["mu_fall"] for r in rows])), 4),
            "mean_neighbour_similarity": round(
                float(np.mean([r["neighbour_similarity"] for r in rows])), 3),
            "after_over_before": [round(float(r), 3) for r in ratio],
            "gp_length_scale": [round(r["length_scale"], 2) for r in rows],
            "seconds": round(time.perf_counter() - t0, 1),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
