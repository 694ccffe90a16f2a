"""Engine figures: vocabulary embedding, policy update at full scale, one cpu-small iteration.

    .venv/bin/python benchmarks/engine_figures.py [--data-dir DIR] [--skip-run]

Prints a JSON object. Figures are wall-clock on whatever else the machine is doing: run it on an
idle machine to quote them. The load average is printed alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ie_engine.config import PolicyConfig, VocabularyConfig
from ie_engine.policy import ConceptPolicy
from ie_engine.vocabulary import (
    MiniLMEmbedder,
    build_vocabulary,
    embedding_cache_path,
    load_or_compute_embeddings,
)


def policy_figures(embeddings: np.ndarray, n_obs: int, seed: int = 0) -> dict[str, object]:
    """GP fit + prediction over the whole vocabulary + sampling, with ``n_obs`` distinct
    observed concepts whose rewards are a smooth function of the embedding plus noise.

    ``cold_s``: the first update (hyper-parameters fitted from the defaults). ``update_s``: the
    update a run makes at that point, the policy having already seen all but the last
    iteration's 256 concepts (its last kernel is the optimiser's start, or is reused when the
    observations grew by less than ``gp_refit_growth``: ``refitted`` says which)."""
    rng = np.random.default_rng(seed)
    direction = np.asarray(rng.normal(size=embeddings.shape[1]), dtype=np.float32)
    direction /= np.linalg.norm(direction)
    idx = rng.choice(embeddings.shape[0], n_obs, replace=False)
    rewards = embeddings[idx] @ direction + 0.05 * rng.normal(size=n_obs)
    policy = ConceptPolicy(embeddings, PolicyConfig(), seed=seed)
    policy.observe(idx.tolist(), rewards.tolist())
    t0 = time.perf_counter()
    dist = policy.distribution()
    t1 = time.perf_counter()
    policy.sample(dist, 256, np.random.default_rng(1))
    t2 = time.perf_counter()
    out: dict[str, object] = {"observations": n_obs, "model": dist.model,
                              "cold_s": round(t1 - t0, 2), "sample_s": round(t2 - t1, 4)}
    if n_obs > 256:
        run = ConceptPolicy(embeddings, PolicyConfig(), seed=seed)
        run.observe(idx[:-256].tolist(), rewards[:-256].tolist())
        run.distribution()
        fitted_on = run.state_dict()["gp_fitted_on"]
        run.observe(idx[-256:].tolist(), rewards[-256:].tolist())
        t0 = time.perf_counter()
        run.sample(run.distribution(), 256, np.random.default_rng(1))
        out["update_s"] = round(time.perf_counter() - t0, 2)
        out["refitted"] = run.state_dict()["gp_fitted_on"] != fitted_on
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path,
                    default=Path.home() / ".cache" / "internet-explorer")
    ap.add_argument("--skip-run", action="store_true", help="no cpu-small iteration")
    args = ap.parse_args()
    out: dict[str, object] = {"load_average_start": os.getloadavg()[0], "cores": os.cpu_count()}

    # -- vocabulary ------------------------------------------------------------------------
    t0 = time.perf_counter()
    vocab = build_vocabulary(VocabularyConfig(), data_dir=args.data_dir)
    out["vocabulary_size"] = len(vocab)
    out["vocabulary_load_s"] = round(time.perf_counter() - t0, 2)
    embedder = MiniLMEmbedder()
    cached = embedding_cache_path(vocab.texts(), embedder, args.data_dir / "embeddings").exists()
    t0 = time.perf_counter()
    emb = np.asarray(load_or_compute_embeddings(vocab.texts(), embedder,
                                                args.data_dir / "embeddings"))
    key = "embedding_cache_load_s" if cached else "embedding_compute_s"
    out[key] = round(time.perf_counter() - t0, 2)
    if cached:  # time a sample to estimate the full computation
        sample = vocab.texts()[:5000]
        embedder.embed(sample[:64])  # load the model first
        t0 = time.perf_counter()
        embedder.embed(sample)
        rate = len(sample) / (time.perf_counter() - t0)
        out["embedding_texts_per_s"] = round(rate, 1)
        out["embedding_full_estimate_s"] = round(len(vocab) / rate, 1)

    # -- policy at full scale ----------------------------------------------------------------
    out["policy"] = [policy_figures(emb, n) for n in (256, 1024, 2560)]

    # -- one cpu-small iteration, peak memory ------------------------------------------------
    if not args.skip_run:
        root = Path(__file__).resolve().parent.parent
        target = args.data_dir / "demo-target"
        run_dir = args.data_dir / "figures-run"
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time
        ie = [sys.executable, "-m", "ie_engine.cli", "--data-dir", str(args.data_dir)]
        subprocess.run([*ie, "demo-target", "--out", str(target)], check=True, cwd=root,
                       stdout=sys.stderr)
        t0 = time.perf_counter()
        subprocess.run([*ie, "explore", "--target", str(target), "--run-dir", str(run_dir),
                        "--preset", "cpu-small", "--iterations", "1", "--quiet"],
                       check=True, cwd=root, stdout=sys.stderr)
        out["cpu_small_run_s"] = round(time.perf_counter() - t0, 1)
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out["cpu_small_peak_rss_gib"] = round(peak_kib / 2**20, 2)
        it1 = json.loads((run_dir / "iterations" / "0001.json").read_text())
        out["cpu_small_iteration_phase_s"] = {k: round(v, 1) for k, v in it1["seconds"].items()}
        out["cpu_small_images"] = it1["n_images"]
        out["cpu_small_train_images_per_s"] = round(it1["train_images_per_second"], 1)
    out["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
