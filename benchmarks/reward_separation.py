"""Does the image reward tell relevant web images from the rest, before any exploration?

    .venv/bin/python benchmarks/reward_separation.py [--sample 2000] [--checkpoint FILE]
                                                     [--steps N]

The whole method rests on this: a web image's reward (mean cosine similarity to its 15 nearest
target images, METHOD.md step 5) must rank images of the target's kind above the others, or the
policy has nothing to follow. For each built-in benchmark target, this embeds a seeded random
sample of the offline web (the target's own held-out images excluded) and the target, and prints
the reward's AUROC for relevant against other web images (0.5 = no better than chance) in three
feature spaces: the cached base model (``ie pretrain``; or ``--checkpoint``), the same network
with random weights, and 16 x 16 average-pooled pixels (a floor any learned feature should
beat). Needs ``ie corpus build`` and the base model; prints a JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from ie_engine.bench.arms import ArmSettings, arm_config
from ie_engine.bench.targets import BUILTIN_TARGETS, build_builtin_target, relevant_classes
from ie_engine.image_decode import ImageRejected, decode_normalised
from ie_engine.imaging import to_uint8_tensor_batch
from ie_engine.pretrain import PretrainSettings, pretrain_base
from ie_engine.reward import image_rewards
from ie_engine.search import CorpusIndex
from ie_engine.ssl import SSLTrainer
from ie_engine.target import load_target


def pixels16(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.adaptive_avg_pool2d(x.float(), 16).flatten(1), dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path,
                    default=Path.home() / ".cache" / "internet-explorer")
    ap.add_argument("--sample", type=int, default=2000, help="web images per target")
    ap.add_argument("--checkpoint", type=Path, help="a base model file (default: the cached one)")
    ap.add_argument("--steps", type=int, default=400,
                    help="steps of the cached base model (`ie pretrain --steps N`)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    index = CorpusIndex.load(args.data_dir / "corpus")
    specs = {n: build_builtin_target(n, index.items, args.data_dir / "bench-targets" / n)
             for n in BUILTIN_TARGETS}
    held = frozenset().union(*(s.heldout_ids for s in specs.values()))
    base = args.checkpoint or pretrain_base(
        corpus_dir=args.data_dir / "corpus", data_dir=args.data_dir,
        settings=PretrainSettings(steps=args.steps, num_threads=None), exclude_ids=held)
    cfg = arm_config(ArmSettings(), arm="explore", seed=0, init_checkpoint=str(base), host=None)
    size, max_px = cfg.download.stored_size, cfg.download.max_pixels
    nets = {"base model": SSLTrainer(cfg.train, seed=0),
            "random weights": SSLTrainer(
                arm_config(ArmSettings(), arm="explore", seed=0, init_checkpoint=None,
                           host=None).train, seed=0)}
    web_items = [it for it in index.items if it.id not in held]
    out: dict[str, object] = {"base": str(base), "sample": args.sample}
    for name, spec in specs.items():
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        arrays, relevant = [], []
        for i in rng.choice(len(web_items), min(args.sample, len(web_items)), replace=False):
            item = web_items[int(i)]
            try:
                img = decode_normalised(Path(item.path).read_bytes(), max_pixels=max_px,
                                        size=size)[0]
            except (OSError, ImageRejected):
                continue
            arrays.append(np.asarray(img, dtype=np.uint8))
            relevant.append(bool(relevant_classes(item.category, item.also_in, spec.relevance)))
        web = torch.from_numpy(to_uint8_tensor_batch(arrays, size))
        target = torch.from_numpy(to_uint8_tensor_batch(
            load_target(spec.image_dir, max_pixels=max_px, size=size).images, size))
        y = np.array(relevant)
        auroc = {label: round(float(roc_auc_score(
            y, image_rewards(net.embed(web), net.embed(target), k=15).numpy())), 3)
            for label, net in nets.items()}
        auroc["16x16 pixels"] = round(float(roc_auc_score(
            y, image_rewards(pixels16(web), pixels16(target), k=15).numpy())), 3)
        out[name] = {"web_images": len(y), "relevant_share": round(float(y.mean()), 3),
                     "target_images": len(target), "reward_auroc": auroc,
                     "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
