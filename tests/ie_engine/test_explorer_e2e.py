"""End to end: tiny explorations on CPU against a real loopback corpus server.

The web is a real (small) corpus built from Debian's OpenClipart and Tux Paint packages and
embedded with the real MiniLM model; the target is Tux Paint photographs. One run is killed with
SIGKILL in the middle of its second iteration and resumed; its second iteration must equal that
of a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ie_engine.checkpoint import load_checkpoint
from ie_engine.config import VocabularyConfig, make_config
from ie_engine.demo_targets import make_tuxpaint_target
from ie_engine.explorer import Explorer
from ie_engine.imaging import to_uint8_tensor_batch
from ie_engine.search import CorpusIndex, HttpSearchEngine, build_corpus, serve_in_background
from ie_engine.target import load_target
from ie_engine.vocabulary import (
    MiniLMEmbedder,
    build_vocabulary,
    load_or_compute_embeddings,
    make_descriptor_source,
)

pytestmark = pytest.mark.slow

WEB_CATEGORIES = ("animals/birds", "food/fruit", "plants/flowers", "recreation/music",
                  "transportation")
VOCAB = VocabularyConfig(max_concepts=150, extra_concepts=("bird", "strawberry", "tulip"),
                         descriptors="none")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data dir with a small corpus and vocabulary, a live corpus server, and a photo target."""
    root = tmp_path_factory.mktemp("world")
    embedder = MiniLMEmbedder()
    corpus_dir = root / "data" / "corpus"
    build_corpus(corpus_dir, embedder=embedder,
                 exclude=lambda item: not item.category.startswith(WEB_CATEGORIES))
    handle = serve_in_background(CorpusIndex.load(corpus_dir), embedder)
    vocab = build_vocabulary(VOCAB, data_dir=root / "data")
    embeddings = load_or_compute_embeddings(vocab.texts(), embedder, root / "data" / "embeddings")
    target_dir = root / "target"
    make_tuxpaint_target(target_dir, classes={"bird": ("animals/birds",),
                                              "fruit": ("food/fruit",)})
    yield {
        "root": root, "url": handle.url, "vocab": vocab, "embeddings": np.asarray(embeddings),
        "target_dir": target_dir,
    }
    handle.stop()


def tiny_config(url: str, **overrides):
    cfg = make_config("tiny", seed=3, iterations=2, vocabulary=VOCAB, **overrides)
    host = url.split("//", 1)[1]
    return replace(cfg, download=replace(cfg.download, allowed_private_hosts=(host,)))


def make_explorer(world, run_dir: Path, evaluate=None) -> Explorer:
    cfg = tiny_config(world["url"])
    target = load_target(world["target_dir"], max_pixels=cfg.download.max_pixels,
                         size=cfg.download.stored_size, labelled="no")
    return Explorer(
        config=cfg, run_dir=run_dir, vocabulary=world["vocab"],
        concept_embeddings=world["embeddings"],
        target_images=to_uint8_tensor_batch(target.images, cfg.download.stored_size),
        target_hashes=target.dhashes, engine=HttpSearchEngine(world["url"]),
        descriptors=make_descriptor_source(cfg.vocabulary), evaluate=evaluate,
    )


def test_two_iterations_write_a_complete_run_folder(world, tmp_path):
    with make_explorer(world, tmp_path / "run") as explorer:
        history = explorer.run()
    assert [h["iteration"] for h in history] == [0, 1, 2]
    run = tmp_path / "run"
    for it in (1, 2):
        summary = json.loads((run / "iterations" / f"{it:04d}.json").read_text())
        assert summary["iteration"] == it
        assert len(summary["queries"]) == 4
        q = summary["queries"][0]
        for key in ("concept", "text", "predicted_mu", "predicted_sigma", "probability", "tier",
                    "observed_reward", "n_results"):
            assert key in q
        assert summary["n_results"] > 0
        lines = (run / "iterations" / f"{it:04d}-images.jsonl").read_text().split("\n")
        records = [json.loads(x) for x in lines if x.strip()]
        assert len(records) == summary["n_images"]
        for rec in records:
            assert (run / rec["path"]).is_file()
            assert rec["image_url"].startswith(world["url"])
            assert rec["license"] in ("public-domain", "GPL-2.0")
            assert np.isfinite(rec["reward"])
    # The second iteration is predicted by a fitted model, not the prior.
    assert json.loads((run / "iterations" / "0002.json").read_text())["model"] in ("gp", "prior")
    assert len(explorer.policy.observations) >= 4
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["iteration"] == 2
    assert len(state["images"]) == len(explorer.images)


def test_labels_never_reach_the_loop(world, tmp_path):
    """Two runs whose evaluation hooks hold different labels (and one with none) explore
    identically: the same queries, the same images, the same weights."""
    n = len(load_target(world["target_dir"], max_pixels=40_000_000, size=48).images)
    rng = np.random.default_rng(0)
    seen: list[int] = []

    def hook_with(labels):
        def evaluate(feats: torch.Tensor, it: int) -> dict[str, float]:
            assert feats.shape[0] == len(labels)
            seen.append(it)
            return {"knn_accuracy": float(np.mean(labels))}
        return evaluate

    runs = [
        make_explorer(world, tmp_path / "a", evaluate=hook_with(rng.integers(0, 2, n))),
        make_explorer(world, tmp_path / "b", evaluate=hook_with(rng.integers(0, 5, n))),
        make_explorer(world, tmp_path / "c"),
    ]
    for e in runs:
        with e:
            e.run(1)
    assert seen == [0, 1, 0, 1]  # the hooks ran, with features only
    first = runs[0]
    for other in runs[1:]:
        assert [i.sha256 for i in other.images] == [i.sha256 for i in first.images]
        assert other.policy.observations == first.policy.observations
        for p, q in zip(other.trainer.model.parameters(), first.trainer.model.parameters(),
                        strict=True):
            assert torch.equal(p, q)


def _cli(world, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "ie_engine.cli", "--data-dir", str(world["root"] / "data"),
        "explore", "--target", str(world["target_dir"]), "--run-dir", str(run_dir),
        "--preset", "tiny", "--iterations", "2", "--seed", "3", "--max-concepts", "150",
        "--concept", "bird", "--concept", "strawberry", "--concept", "tulip",
        "--descriptors", "none", "--steps", "12", "--engine-url", world["url"], "--quiet",
        *extra,
    ]


def test_resume_after_sigkill_gives_the_same_next_iteration(world, tmp_path):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    straight = tmp_path / "straight"
    subprocess.run(_cli(world, straight), check=True, env=env, timeout=600)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(world, killed), env=env)
    deadline = time.monotonic() + 600
    marker = killed / "run.json"

    def done() -> int:
        try:
            return int(json.loads(marker.read_text())["iterations_done"])
        except (OSError, ValueError, KeyError):
            return -1

    while done() < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # Iteration 1 is checkpointed; let iteration 2 get under way, then kill without warning.
    time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(killed / "checkpoint.pt")["iteration"] == 1
    subprocess.run(_cli(world, killed, "--resume"), check=True, env=env, timeout=600)

    a = json.loads((straight / "iterations" / "0002.json").read_text())
    b = json.loads((killed / "iterations" / "0002.json").read_text())
    assert [q["text"] for q in a["queries"]] == [q["text"] for q in b["queries"]]
    assert a["n_images"] == b["n_images"]
    ra = [q["observed_reward"] for q in a["queries"]]
    rb = [q["observed_reward"] for q in b["queries"]]
    np.testing.assert_allclose(ra, rb, rtol=0, atol=1e-5)
    imgs_a = (straight / "iterations" / "0002-images.jsonl").read_text()
    imgs_b = (killed / "iterations" / "0002-images.jsonl").read_text()
    sha_a = [json.loads(x)["sha256"] for x in imgs_a.splitlines() if x]
    sha_b = [json.loads(x)["sha256"] for x in imgs_b.splitlines() if x]
    assert sha_a == sha_b
    sa = load_checkpoint(straight / "checkpoint.pt")
    sb = load_checkpoint(killed / "checkpoint.pt")
    assert sa["policy"]["observations"].keys() == sb["policy"]["observations"].keys()
    assert sa["replay"] == sb["replay"] or np.allclose(
        [e["reward"] for e in sa["replay"]["entries"]],
        [e["reward"] for e in sb["replay"]["entries"]], atol=1e-5)


def test_fetch_and_learn_can_run_in_different_processes(world, tmp_path):
    """The network half is checkpointed and the compute half resumed from it (as two worker
    processes would), giving the same iteration as one uninterrupted step."""
    with make_explorer(world, tmp_path / "one") as one:
        one.run(0)
        straight = one.step()
    with make_explorer(world, tmp_path / "two") as two:
        two.run(0)
        fetched = two.fetch()
        two.save()
    with make_explorer(world, tmp_path / "two") as three:
        three.resume()
        assert three.pending is not None
        assert three.pending.new_ids == fetched.new_ids
        split = three.step()  # learns the pending fetch, fetches nothing new
    assert [q["text"] for q in split.queries] == [q["text"] for q in straight.queries]
    np.testing.assert_allclose(
        [q["observed_reward"] for q in split.queries],
        [q["observed_reward"] for q in straight.queries], atol=1e-5)
    assert three.pending is None and three.iteration == 1


def test_veto_and_added_concepts_mid_run(world, tmp_path):
    embedder = MiniLMEmbedder()
    with make_explorer(world, tmp_path / "run") as e:
        e.run(1)
        # The concept with the most images in the replay buffer.
        counts: dict[int, int] = {}
        for entry in e.replay.entries:
            counts[entry.concept_index] = counts.get(entry.concept_index, 0) + 1
        victim = max(counts, key=lambda c: counts[c])
        assert e.veto([victim]) == counts[victim]
        assert all(r.concept_index != victim for r in e.replay.entries)
        new = e.add_concepts(["violin", "bird"], embedder.embed(["violin", "bird"]))
        assert len(new) == 1  # "bird" is already in the vocabulary
        assert e.vocabulary.concepts[new[0]].lemma == "violin"
        dist = e.policy.distribution()
        assert dist.probability[victim] == 0
        assert dist.probability.shape[0] == len(e.vocabulary)
        e.step()
        summary = json.loads((tmp_path / "run" / "iterations" / "0002.json").read_text())
        assert victim not in [q["concept_index"] for q in summary["queries"]]
    # The added concept survives a resume.
    with make_explorer(world, tmp_path / "run") as again:
        again.resume()
        assert again.vocabulary.concepts[-1].lemma == "violin"
        assert victim in again.policy.vetoed


def _iteration_rewards(explorer: Explorer, it: int) -> tuple[list[int], torch.Tensor]:
    ids = [r.id for r in explorer.images if r.iteration == it]
    return ids, torch.tensor([explorer.images[i].reward for i in ids])


@pytest.mark.parametrize("whiten", [True, False])
def test_rewards_are_scored_in_features_whitened_on_the_first_downloads(world, tmp_path, whiten):
    """RewardConfig.whiten: the reward's features are whitened on a sample of the first
    iteration's downloads (kept in the checkpoint); without it, plain cosine similarity."""
    from ie_engine.reward import image_rewards, whitener

    explorer = make_explorer(world, tmp_path / "run")
    rc = explorer.config.reward
    # The tiny preset's first iteration brings a few dozen images: a reference of 16 is full
    # after it; one of a million never fills (no whitening).
    rc = replace(rc, min_reference=16) if whiten else replace(
        rc, min_reference=10**6, reference_images=10**6)
    explorer.config = replace(explorer.config, reward=rc)
    with explorer:
        explorer.run()
        ids, got = _iteration_rewards(explorer, 2)
        web = explorer.trainer.embed(explorer._stack(ids))
        target = explorer.trainer.embed(explorer.target)
        plain = image_rewards(web, target, k=rc.k)
        reference = explorer.reward_reference
        if whiten:
            first = {r.id for r in explorer.images if r.iteration == 1}
            assert len(reference) >= rc.min_reference
            assert set(reference) == first  # fewer than reference_images: all of them
            white = whitener(explorer.trainer.embed(explorer._stack(reference)),
                             shrink=rc.whiten_shrink)
            torch.testing.assert_close(got, image_rewards(white(web), white(target), k=rc.k),
                                       atol=1e-4, rtol=0)
            assert (got - plain).abs().max() > 1e-2
            state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
            assert state["reward_reference"] == reference
        else:
            assert reference == [] or len(reference) < rc.min_reference
            torch.testing.assert_close(got, plain, atol=1e-4, rtol=0)


def test_a_query_that_finds_earlier_downloads_again_is_scored_on_them_too(world, tmp_path):
    """RewardConfig.count_repeats: results the downloader drops as repeats of earlier images
    still belong to the query that found them; its concept reward counts them, re-scored.
    Two runs with the same seed sample the same first queries (the policy has seen nothing
    yet); only concepts whose queries found repeats may observe a different reward. In one
    batch, repeats are of images another query of the same batch brought first."""
    observed = {}
    repeats: dict[int, int] = {}
    for count in (True, False):
        explorer = make_explorer(world, tmp_path / f"run-{count}")
        explorer.config = replace(explorer.config, reward=replace(
            explorer.config.reward, count_repeats=count))
        with explorer:
            explorer.run(1)
            observed[count] = {c: list(v) for c, v in explorer.policy.observations.items()}
            if count:
                lines = (tmp_path / "run-True" / "iterations" / "0001-failures.jsonl")\
                    .read_text().split("\n")
                fails = [json.loads(x) for x in lines if x.strip()]
                keys = {k for r in explorer.images for k in (
                    f"url:{r.image_url}", f"sha256:{r.sha256}", f"dhash:{r.dhash}")}
                for f in fails:
                    if f["reason"] in ("duplicate", "near-duplicate"):
                        assert f["duplicate_of"] in keys and f["concept_index"] is not None
                        repeats[f["concept_index"]] = repeats.get(f["concept_index"], 0) + 1
    assert observed[True].keys() == observed[False].keys()
    assert repeats, "the tiny web's queries should repeat each other's images"
    changed = {c for c in observed[True] if observed[True][c] != observed[False][c]}
    assert changed, (repeats, observed)
    assert changed <= set(repeats)
