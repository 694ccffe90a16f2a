"""Does the image reward tell relevant web images from the rest, before any exploration?

    .venv/bin/python benchmarks/reward_separation.py [--base NAME ...] [--size PX]
                          [--sample 2000] [--steps N] [--concepts N] [--reference N]

The whole method rests on this: a web image's reward (mean cosine similarity to its 15 nearest
target images, METHOD.md step 5) must rank images of the target's kind above the others, or the
policy has nothing to follow. For each built-in benchmark target, this embeds a seeded random
sample of the offline web (the target's own held-out images excluded) and the target, and prints
the reward's AUROC for relevant against other web images (0.5 = no better than chance) in the
features of every base given with ``--base`` (default: every base of ``ie bases`` available
here; ``scratch`` is the same network with random weights), plain and whitened as the loop
whitens them (RewardConfig.whiten) on a reference of ``--reference`` other web images (seeded,
disjoint from the sample), beside 16 x 16 average-pooled pixels (a floor any learned feature
should beat). Each base is measured at its cpu-small crop size (``--size`` overrides). Needs
``ie corpus build``; prints a JSON object, and the README's table on stderr.

``--concepts N`` also measures what the policy sees: for N concepts drawn (seeded) from the whole
WordNet vocabulary, each lemma is searched in the offline web as the benchmark's queries are
(its 20 best results), and the concept's reward is the mean of its top 10 image rewards
(METHOD.md step 5) in the base model's features. Reported per target: the AUROC of that reward
for concepts whose results are mostly relevant (at least half) against the others, its Spearman
correlation with the concepts' relevant share, and the relevant share of the 10% of concepts
the reward ranks highest against that of all of them (what a policy that knew every concept's
reward exactly would gain over random here).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from ie_engine.bases import BASES, BaseUnavailable, resolve_base
from ie_engine.bench.arms import ArmSettings, arm_config
from ie_engine.bench.targets import (
    BUILTIN_TARGETS,
    BenchTarget,
    build_builtin_target,
    relevant_classes,
)
from ie_engine.config import RewardConfig, VocabularyConfig
from ie_engine.imaging import to_uint8_tensor_batch
from ie_engine.pretrain import PretrainSettings, decode_item, pretrain_base_path
from ie_engine.reward import image_rewards, whitener
from ie_engine.search import CorpusIndex
from ie_engine.search.corpus import CorpusItem
from ie_engine.ssl import SSLTrainer
from ie_engine.ssl.model import backbone_digest
from ie_engine.target import load_target
from ie_engine.vocabulary import MiniLMEmbedder, build_vocabulary


def pixels16(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.adaptive_avg_pool2d(x.float(), 16).flatten(1), dim=1)


@dataclass
class ConceptPool:
    """The offline web's answers to the sampled lemmas, decoded once for every base."""

    hits: list[list[CorpusItem]]
    """Each lemma's results, best first."""
    ids: list[str]
    """The decodable result images, in ``pixels`` order."""
    pixels: torch.Tensor
    """uint8 (N, 3, S, S)."""


def concept_pool(index: CorpusIndex, lemmas: list[str], *, size: int, max_pixels: int,
                 per_query: int = 20) -> ConceptPool:
    """Search every lemma as the benchmark's queries are (its ``per_query`` best results) and
    decode each result image once."""
    vecs = np.asarray(MiniLMEmbedder().embed(lemmas), dtype=np.float32)
    hits = [[it for it, _score in index.search(v, per_query)] for v in vecs]
    items = {it.id: it for row in hits for it in row}
    arrays, ids = [], []
    for item_id, item in items.items():
        img = decode_item(item, size, max_pixels)
        if img is not None:
            arrays.append(img)
            ids.append(item_id)
    return ConceptPool(hits, ids, torch.from_numpy(to_uint8_tensor_batch(arrays, size)))


def concept_separation(
    spec: BenchTarget,
    pool: ConceptPool,
    web_feats: torch.Tensor,
    target_feats: torch.Tensor,
    maps: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    top: int = 10,
) -> dict[str, object]:
    """Concept-level separation of the reward (see the module docstring), in each feature
    space of ``maps`` (name -> a map applied to the base's features); ``web_feats`` are the
    base's features of ``pool.pixels``."""
    return {name: _concept_row(spec, pool.hits, dict(zip(
        pool.ids, image_rewards(f(web_feats), f(target_feats), k=15).tolist(), strict=True)), top)
        for name, f in maps.items()}


def _concept_row(spec: BenchTarget, hits: list[list[CorpusItem]], reward: dict[str, float],
                 top: int) -> dict[str, object]:
    rewards, shares = [], []
    for row in hits:
        got = [it for it in row if it.id in reward]
        if not got:
            continue
        best = sorted((reward[it.id] for it in got), reverse=True)[:top]
        rewards.append(float(np.mean(best)))
        shares.append(float(np.mean([
            bool(relevant_classes(it.category, it.also_in, spec.relevance)) for it in got])))
    r, y = np.array(rewards), np.array(shares)
    order = np.argsort(-r)
    top_share = float(y[order[: max(1, len(r) // 10)]].mean())
    mostly = y >= 0.5
    return {
        "concepts": len(r),
        "mostly_relevant": int(mostly.sum()),
        "concept_reward_auroc": (round(float(roc_auc_score(mostly, r)), 3)
                                 if 0 < mostly.sum() < len(r) else None),
        "spearman_reward_vs_share": round(float(spearmanr(r, y).statistic), 3),
        "relevant_share_all": round(float(y.mean()), 3),
        "relevant_share_top10pct_by_reward": round(top_share, 3),
    }


def base_trainer(name: str, *, data_dir: Path, offline_ssl: Path | None, size: int | None,
                 random_weights: bool = False) -> tuple[SSLTrainer | None, str]:
    """A trainer holding base ``name`` at the benchmark's cpu-small settings (the base's CPU
    crop size, unless ``size``), or None and the reason it is not available here. With
    ``random_weights``: the same network, randomly initialised."""
    try:
        base = resolve_base(name, data_dir=data_dir, offline_ssl=offline_ssl)
    except BaseUnavailable as exc:
        return None, str(exc)
    checkpoint = None if random_weights or base.checkpoint is None else str(base.checkpoint)
    cfg = arm_config(replace(ArmSettings(), base=name), arm="explore", seed=0,
                     init_checkpoint=checkpoint, host=None)
    train = cfg.train if size is None else replace(cfg.train, image_size=size)
    digest = backbone_digest(checkpoint)[:12] if checkpoint else "random"
    frozen = f", {train.frozen_stages} stages frozen" if train.frozen_stages else ""
    return SSLTrainer(train, seed=0), (f"{train.arch}, {train.image_size} px{frozen}, "
                                       f"weights {digest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path,
                    default=Path.home() / ".cache" / "internet-explorer")
    ap.add_argument("--sample", type=int, default=2000, help="web images per target")
    ap.add_argument("--base", action="append", default=[],
                    help="a base to measure (repeatable; default: every base available here)")
    ap.add_argument("--size", type=int, help="crop size for every base (default: each base's "
                    "cpu-small size)")
    ap.add_argument("--random-weights", action="store_true",
                    help="also measure each base's network with random weights")
    ap.add_argument("--steps", type=int, default=800,
                    help="steps of the offline-ssl base (`ie pretrain --steps N`)")
    ap.add_argument("--concepts", type=int, default=0,
                    help="also measure the concept-level reward on this many concepts")
    ap.add_argument("--reference", type=int, default=2000,
                    help="web images the whitened reward's reference holds")
    ap.add_argument("--shrink", type=float, default=RewardConfig().whiten_shrink,
                    help="the whitening's shrinkage (RewardConfig.whiten_shrink)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    index = CorpusIndex.load(args.data_dir / "corpus")
    specs = {n: build_builtin_target(n, index.items, args.data_dir / "bench-targets" / n)
             for n in BUILTIN_TARGETS}
    held = frozenset().union(*(s.heldout_ids for s in specs.values()))
    offline_ssl = pretrain_base_path(
        corpus_dir=args.data_dir / "corpus", data_dir=args.data_dir,
        settings=PretrainSettings(steps=args.steps, num_threads=None), exclude_ids=held)
    names = args.base or list(BASES)
    cfg = arm_config(ArmSettings(), arm="explore", seed=0, init_checkpoint=None, host=None)
    decode_size, max_px = max(cfg.download.stored_size, 128), cfg.download.max_pixels
    web_items = [it for it in index.items if it.id not in held]
    out: dict[str, object] = {"sample": args.sample, "bases": {}}
    web_index = CorpusIndex.load(args.data_dir / "corpus", exclude_ids=held)
    concept_set = _concept_sample(args.data_dir, args.concepts) if args.concepts else []
    pool = (concept_pool(web_index, concept_set, size=decode_size, max_pixels=max_px)
            if concept_set else None)
    # The sample and, disjoint from it, the whitening's reference: one seeded permutation.
    order = np.random.default_rng(0).permutation(len(web_items))
    picked, rest = order[: args.sample], order[args.sample : args.sample + args.reference]

    def pixels(items: list[CorpusItem]) -> tuple[torch.Tensor, list[CorpusItem]]:
        arrays, kept = [], []
        for item in items:
            img = decode_item(item, decode_size, max_px)
            if img is not None:
                arrays.append(img)
                kept.append(item)
        return torch.from_numpy(to_uint8_tensor_batch(arrays, decode_size)), kept

    reference, _ = pixels([web_items[int(i)] for i in rest])
    sample, sample_items = pixels([web_items[int(i)] for i in picked])
    targets = {name: torch.from_numpy(to_uint8_tensor_batch(load_target(
        spec.image_dir, max_pixels=max_px, size=decode_size).images, decode_size))
        for name, spec in specs.items()}
    out["reference"] = len(reference)
    rows: dict[str, object] = {}
    for name, spec in specs.items():
        y = np.array([bool(relevant_classes(it.category, it.also_in, spec.relevance))
                      for it in sample_items])
        rows[name] = {
            "web_images": len(y), "relevant_share": round(float(y.mean()), 3),
            "target_images": len(targets[name]),
            "16x16 pixels": round(float(roc_auc_score(y, image_rewards(
                pixels16(sample), pixels16(targets[name]), k=15).numpy())), 3)}
    out["targets"] = rows
    rows_to_measure = [(n, False) for n in names]
    rows_to_measure += [(n, True) for n in names if n != "scratch" and args.random_weights]
    for base_name, random_weights in rows_to_measure:
        t0 = time.perf_counter()
        net, about = base_trainer(base_name, data_dir=args.data_dir, offline_ssl=offline_ssl,
                                  size=args.size, random_weights=random_weights)
        if random_weights:
            if net is None:
                continue
            base_name = f"{base_name}, random weights"
        entry: dict[str, object] = {"about": about}
        out["bases"][base_name] = entry  # type: ignore[index]
        if net is None:
            continue
        white = whitener(net.embed(reference), shrink=args.shrink)
        maps = {"plain": lambda x: x, "whitened": white}
        web = net.embed(sample)
        pool_feats = net.embed(pool.pixels) if pool is not None else None
        for name, spec in specs.items():
            y = np.array([bool(relevant_classes(it.category, it.also_in, spec.relevance))
                          for it in sample_items])
            target = net.embed(targets[name])
            row: dict[str, object] = {
                f"image_auroc_{label}": round(float(roc_auc_score(
                    y, image_rewards(f(web), f(target), k=15).numpy())), 3)
                for label, f in maps.items()}
            if pool is not None and pool_feats is not None:
                row["concept_level"] = concept_separation(spec, pool, pool_feats, target, maps)
            entry[name] = row
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{base_name}: {json.dumps(entry)}", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))
    print(table(out), file=sys.stderr)


def table(out: dict[str, Any]) -> str:
    """The README's table: one row per available base and target."""
    lines = ["| base | target | image AUROC plain | whitened | concept AUROC (whitened) | "
             "relevant share, top 10% of concepts by reward / all (whitened) |",
             "|---|---|---|---|---|---|"]
    for base_name, entry in out["bases"].items():
        for target, row in entry.items():
            if not isinstance(row, dict):
                continue
            level = (row.get("concept_level") or {}).get("whitened") or {}
            top, every = (level.get("relevant_share_top10pct_by_reward"),
                          level.get("relevant_share_all"))
            ratio = f"{top:.3f} / {every:.3f} = {top / every:.2f}x" if top and every else "-"
            lines.append(f"| {base_name} ({entry['about']}) | {target} | "
                         f"{row['image_auroc_plain']} | {row['image_auroc_whitened']} | "
                         f"{level.get('concept_reward_auroc', '-')} | {ratio} |")
    return "\n".join(lines)


def _concept_sample(data_dir: Path, n: int) -> list[str]:
    """``n`` lemmas drawn (seed 0) from the whole WordNet vocabulary: bare lemmas, as queries
    without a descriptor."""
    vocab = build_vocabulary(VocabularyConfig(), data_dir=data_dir)
    lemmas = [c.lemma for c in vocab.concepts]
    pick = np.random.default_rng(0).choice(len(lemmas), min(n, len(lemmas)), replace=False)
    return [lemmas[int(i)] for i in np.sort(pick)]


if __name__ == "__main__":
    main()
