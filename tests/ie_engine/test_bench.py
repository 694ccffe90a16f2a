"""The benchmark's parts: targets, metrics against hand-computed figures, the summary's shape,
and one tiny real arm run against a loopback corpus server (marked slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ie_engine.bench.metrics import (
    first_found,
    knn_loo_predictions,
    mcnemar_exact,
    mean_sd,
    relevant_precision,
    reward_auroc,
)
from ie_engine.bench.report import (
    README_END,
    README_START,
    check_targets,
    plot_target,
    readme_section,
    summarise,
    update_readme,
)
from ie_engine.bench.targets import (
    CLIPART_CLASSES,
    TUXPAINT_CLASSES,
    build_clipart_heldout,
    item_id_from_url,
    load_custom_target,
    relevant_classes,
    split_clipart,
    tuxpaint_members,
    under,
)
from ie_engine.evaluate import knn_accuracy
from ie_engine.search.corpus import CorpusItem, item_id

# ------------------------------------------------------------------------------------ targets


def _item(tmp: Path, source: str, rel: str, *, also_in: tuple[str, ...] = (),
          size: tuple[int, int] = (8, 8)) -> CorpusItem:
    """A corpus item whose file is a tiny PNG of a colour unique to its path."""
    path = tmp / source / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    h = int(item_id(source, rel), 16)
    Image.new("RGB", (8, 8), (h % 256, (h >> 8) % 256, (h >> 16) % 256)).save(path)
    category = str(Path(rel).parent)
    return CorpusItem(id=item_id(source, rel), source=source, path=str(path), category=category,
                      title=Path(rel).stem, text=Path(rel).stem, license="x", also_in=also_in,
                      width=size[0], height=size[1])


@pytest.fixture
def fake_items(tmp_path: Path) -> list[CorpusItem]:
    items = []
    for i in range(7):
        items.append(_item(tmp_path, "openclipart", f"animals/birds/b{i}.png"))
    for i in range(6):
        items.append(_item(tmp_path, "openclipart", f"food/fruit/f{i}.png"))
    items.append(_item(tmp_path, "openclipart", "animals/birds/penguin/p.png"))
    # A bird that is also filed under fruit: ambiguous, stays in the web.
    items.append(_item(tmp_path, "openclipart", "animals/birds/amb.png", also_in=("food/fruit",)))
    # A fruit only reachable through its second category.
    items.append(_item(tmp_path, "openclipart", "food/f_alias.png", also_in=("food/fruit",)))
    # A decompression bomb in the bird folder: never in a target.
    items.append(_item(tmp_path, "openclipart", "animals/birds/bomb.png", size=(20_000, 20_000)))
    items.append(_item(tmp_path, "openclipart", "shapes/stars/s.png"))
    items.append(_item(tmp_path, "tuxpaint", "animals/birds/photo.png"))
    return items


CLASSES: dict[str, tuple[str, ...]] = {"bird": ("animals/birds",), "fruit": ("food/fruit",)}


def test_prefixes_match_whole_path_components() -> None:
    assert under("tools/weapons", "tools")
    assert under("tools", "tools/")
    assert not under("toolsets", "tools")
    assert not under("animals", "animals/birds")
    assert relevant_classes("food", ("food/fruit",), CLASSES) == ["fruit"]
    assert relevant_classes("shapes", (), CLASSES) == []
    assert item_id_from_url("http://127.0.0.1:5/images/0123abcd") == "0123abcd"
    assert item_id_from_url("http://127.0.0.1:5/items/0123abcd") is None


def test_clipart_split_is_deterministic_disjoint_and_halves(fake_items: list[CorpusItem]) -> None:
    target, web = split_clipart(fake_items, classes=CLASSES, seed=7)
    again, _ = split_clipart(list(reversed(fake_items)), classes=CLASSES, seed=7)
    assert {c: [i.id for i in v] for c, v in target.items()} == {
        c: [i.id for i in v] for c, v in again.items()}
    other, _ = split_clipart(fake_items, classes=CLASSES, seed=8)
    assert [i.id for i in other["bird"]] != [i.id for i in target["bird"]] or \
        [i.id for i in other["fruit"]] != [i.id for i in target["fruit"]]
    # 8 unambiguous birds (7 + the penguin), 7 fruit (6 + the alias): halves n // 2.
    assert (len(target["bird"]), len(web["bird"])) == (4, 4)
    assert (len(target["fruit"]), len(web["fruit"])) == (3, 4)
    for c in CLASSES:
        assert not {i.id for i in target[c]} & {i.id for i in web[c]}
    pooled = {i.path.rsplit("/", 1)[1] for v in (*target.values(), *web.values()) for i in v}
    assert "amb.png" not in pooled and "bomb.png" not in pooled and "photo.png" not in pooled


def test_built_target_holds_out_exactly_its_own_items(fake_items: list[CorpusItem],
                                                      tmp_path: Path) -> None:
    spec = build_clipart_heldout(fake_items, tmp_path / "t", seed=7, classes=CLASSES)
    target, _ = split_clipart(fake_items, classes=CLASSES, seed=7)
    files = {p.stem for p in (tmp_path / "t" / "images").rglob("*.png")}
    assert spec.heldout_ids == files == {i.id for v in target.values() for i in v}
    assert set(spec.relevance) == set(spec.class_names) == set(CLASSES)
    for cls, ids in spec.members.items():
        assert {p.stem for p in (tmp_path / "t" / "images" / cls).iterdir()} == set(ids)
    # Idempotent: a second build reuses the folder as it is.
    mtime = (tmp_path / "t" / "target.json").stat().st_mtime_ns
    assert build_clipart_heldout(fake_items, tmp_path / "t", seed=7, classes=CLASSES) == spec
    assert (tmp_path / "t" / "target.json").stat().st_mtime_ns == mtime


def test_builtin_relevance_maps_cover_every_class() -> None:
    assert set(CLIPART_CLASSES) == {"bird", "insect", "mammal", "fruit", "dessert", "beverage",
                                    "flower", "music", "vehicle"}
    assert len(TUXPAINT_CLASSES) == 12
    for spec in TUXPAINT_CLASSES.values():
        assert spec.include and spec.relevant


def test_tuxpaint_members_leave_out_cartoons_and_exclusions(tmp_path: Path) -> None:
    items = [
        _item(tmp_path, "tuxpaint", "animals/mammals/dog.png"),
        _item(tmp_path, "tuxpaint", "animals/mammals/bovines/cow.png"),
        _item(tmp_path, "tuxpaint", "animals/mammals/cats/cartoon/cat.png"),
        _item(tmp_path, "openclipart", "animals/mammals/cat.png"),
    ]
    m = tuxpaint_members(items)
    assert [Path(i.path).name for i in m["mammal"]] == ["dog.png"]
    assert [Path(i.path).name for i in m["bovine"]] == ["cow.png"]


def test_custom_target_holds_out_byte_identical_corpus_items(fake_items: list[CorpusItem],
                                                            tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    (folder / "bird").mkdir(parents=True)
    (folder / "fruit").mkdir(parents=True)
    bird, fruit = fake_items[0], fake_items[7]
    (folder / "bird" / "x.png").write_bytes(Path(bird.path).read_bytes())
    (folder / "fruit" / "y.png").write_bytes(Path(fruit.path).read_bytes())
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "fruit" / "new.png")
    rmap = tmp_path / "rel.json"
    rmap.write_text(json.dumps({"bird": ["animals/birds"], "fruit": ["food/fruit"]}))
    spec = load_custom_target(folder, rmap, fake_items)
    assert spec.heldout_ids == {bird.id, fruit.id}
    assert spec.members == {"bird": (bird.id,), "fruit": (fruit.id,)}
    rmap.write_text(json.dumps({"bird": ["animals/birds"]}))
    with pytest.raises(Exception, match="no entry"):
        load_custom_target(folder, rmap, fake_items)


# ------------------------------------------------------------------------------------ metrics


def test_precision_and_auroc_by_hand() -> None:
    assert relevant_precision([True, False, True, True]) == 0.75
    assert relevant_precision([]) is None
    # Pairs (relevant, other): (.9,.8) yes, (.9,.3) yes, (.5,.8) no, (.5,.3) yes -> 3/4.
    assert reward_auroc([0.9, 0.8, 0.3, 0.5], [True, False, False, True]) == 0.75
    assert reward_auroc([0.5, 0.5], [True, False]) == 0.5  # a tie counts half
    assert reward_auroc([0.1, float("nan"), 0.9], [False, True, True]) == 1.0
    assert reward_auroc([0.1, 0.2], [True, True]) is None


def test_mcnemar_exact_by_hand() -> None:
    t = mcnemar_exact([True, True, True, False, False, True],
                      [False, False, True, True, False, False])
    assert (t.a_only, t.b_only, t.both, t.neither) == (3, 1, 1, 1)
    assert t.p_value == pytest.approx(10 / 16)  # P(X>=3) + P(X<=1), X ~ Bin(4, 1/2)
    assert mcnemar_exact([True] * 6, [False] * 6).p_value == pytest.approx(2 / 64)
    assert mcnemar_exact([True, False], [True, False]).p_value == 1.0


def test_first_found_iteration() -> None:
    found = first_found([2, 1, 1, 3], [["bird", "fruit"], [], ["bird"], ["music"]],
                        ["bird", "fruit", "music", "dessert"])
    assert found == {"bird": 1, "fruit": 2, "music": 3, "dessert": None}


def test_mean_sd_skips_missing() -> None:
    assert mean_sd([1.0, 2.0, 3.0, None, float("nan")]) == (2.0, 1.0)
    assert mean_sd([None]) == (None, None)
    assert mean_sd([4.0]) == (4.0, 0.0)


@pytest.mark.parametrize("k", [1, 2, 5, 20])
def test_loo_predictions_agree_with_knn_accuracy(k: int) -> None:
    rng = np.random.default_rng(k)
    # No exact ties: evaluate's argpartition does not rank equal similarities at the k-th place
    # by index (see test_loo_ranks_equal_similarities_by_index).
    x = rng.normal(size=(40, 6)).astype(np.float32)
    labels = [str(i) for i in rng.integers(0, 3, 40)]
    preds = knn_loo_predictions(x, labels, k=k)
    acc = float(np.mean([p == y for p, y in zip(preds, labels, strict=True)]))
    assert acc == pytest.approx(knn_accuracy(x, labels, k=k))


def test_loo_ranks_equal_similarities_by_index() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    # Row 0 is equally (un)like rows 1-3: with k=1 the lowest index (1) votes.
    assert knn_loo_predictions(x, ["a", "b", "c", "d"], k=1)[0] == "b"


def test_loo_tie_goes_to_the_nearest_voter() -> None:
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.0, 1.0]], dtype=np.float32)
    # For row 0 with k=2: neighbours 1 ("b", nearer) and 2 ("c"): a 1-1 tie, "b" wins.
    assert knn_loo_predictions(x, ["a", "b", "c", "d"], k=2)[0] == "b"


# ------------------------------------------------------------------------------------ summary


def _fake_run(arm: str, seed: int, *, init: str = "base", knn: float = 0.5,
              target: str = "clipart-heldout") -> dict[str, Any]:
    web = arm != "target-only"
    prec = {"explore": 0.5, "random": 0.1, "label-set": 0.7}.get(arm)
    its: list[dict[str, Any]] = [
        {"iteration": 0, "knn_loo": 0.4, "knn_splits_mean": 0.38, "knn_splits_sd": 0.01}]
    for i in (1, 2, 3, 4):
        its.append({
            "iteration": i, "knn_loo": knn, "knn_splits_mean": knn - 0.02, "knn_splits_sd": 0.01,
            "precision": prec, "precision_new": prec, "kept_precision": prec,
            "reward_auroc": 0.8 if web else None, "n_images": 10 if web else 0,
            "n_results": 12 if web else 0, "n_leaked": 0, "train_images_per_second": 30.0,
            "seconds": {"train": 2.0, "download": 1.0 if web else 0.0},
        })
    return {
        "fingerprint": {"target": target}, "arm": arm, "seed": seed, "init": init,
        "iterations": its, "final_knn_loo": knn, "final_knn_splits_mean": knn - 0.02,
        "linear_probe_mean": 0.6, "linear_probe_sd": 0.02, "wall_seconds": 10.0,
        "loo_correct": [True, seed % 2 == 0, arm == "explore", False],
        "first_found": {"bird": 1 if web else None, "fruit": 2 if web else None},
        "phase_seconds": {"train": 8.0}, "images_total": 40 if web else 0,
    }


def test_summary_has_the_issue_shape_and_checks(tmp_path: Path) -> None:
    results = [_fake_run(a, s, knn={"explore": 0.6}.get(a, 0.5))
               for a in ("explore", "random", "target-only", "label-set") for s in range(5)]
    results += [_fake_run("explore", 0, init="scratch")]
    meas = {"train": {"ratio": 0.95, "trainer_ips": 30, "bare_ips": 31.6},
            "download": {"ratio": 0.8, "downloader_ips": 300.0, "minimal_ips": 375.0,
                         "minimal_on_white_ips": 330.0, "on_white_ratio": 0.909}}
    summary = json.loads(json.dumps(summarise(results, meas, {"settings_line": "x"})))
    assert summary["train_throughput_ratio_vs_bare"] == 0.95
    assert summary["download_images_per_second"] == 300.0
    assert summary["download_ratio_vs_minimal"] == 0.8
    arms = summary["targets"]["clipart-heldout"]
    assert list(arms) == ["explore", "random", "target-only", "label-set"]
    for data in arms.values():
        for key in ("final_knn_accuracy_mean", "final_knn_accuracy_sd", "final_linear_probe_mean",
                    "relevant_precision_iter3plus_mean", "reward_auroc_last", "wall_seconds"):
            assert key in data
    assert arms["explore"]["final_knn_accuracy_mean"] == pytest.approx(0.6)
    assert arms["explore"]["relevant_precision_iter3plus_mean"] == pytest.approx(0.5)
    assert arms["target-only"]["relevant_precision_iter3plus_mean"] is None
    assert arms["explore"]["first_found_iteration"]["fruit"]["median"] == 2.0
    paired = arms["explore"]["paired_vs_random"]
    # Per seed: explore right on images 0,1?,2; random on 0,1?: explore-only = image 2 x 5 seeds.
    assert (paired["a_only"], paired["b_only"]) == (5, 0)
    assert paired["p_value"] == pytest.approx(2 / 32)
    assert list(summary["from_scratch"]["clipart-heldout"]) == ["explore"]
    held = {c["target"]: c["holds"] for c in check_targets(summary)}
    assert held["clipart-heldout: explore precision (it. 3+) >= 3x random"] is True  # 0.5 >= 0.3
    assert held["clipart-heldout: label-set precision >= explore"] is True
    assert held["training >= 0.85 of the bare loop"] is True
    assert held["downloader >= 0.9 of the minimal loop"] is False
    assert any("kNN >= random + 3 pts" in k and v for k, v in held.items())

    png = plot_target(summary, "clipart-heldout", tmp_path / "p.png")
    assert png.stat().st_size < 200_000
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nintro\n\n## Benchmark\n\nbefore\n{README_START}\nstale table\n"
                      f"{README_END}\nafter\n")
    assert update_readme(readme, readme_section(summary, {"clipart-heldout": "docs/p.png"}))
    text = readme.read_text()
    assert text.startswith("# T\n\nintro\n\n## Benchmark\n\nbefore\n") and text.endswith("after\n")
    assert "| clipart-heldout | base | explore | 5 | 60.0 (0.0)" in text
    assert "stale table" not in text and "![clipart-heldout](docs/p.png)" in text
    assert "against 375.0 for a minimal aiohttp + Pillow loop" in text
    assert "against 330.0 for that loop when it also puts transparent pixels on white" in text
    assert "(ratio 0.909)." in text


def test_a_report_carries_targets_without_runs_from_an_earlier_summary(tmp_path: Path) -> None:
    from ie_engine.bench.suite import write_report
    from ie_engine.errors import ConfigError

    settings = {"plan": {"arm": {"iterations": 5, "steps": 10}, "pretrain": {"steps": 800}}}
    arms = ("explore", "random", "target-only", "label-set")
    earlier = summarise([_fake_run(a, s, knn={"explore": 0.6}.get(a, 0.5))
                         for a in arms for s in range(5)],
                        {}, {"settings": settings, "base_checkpoint": "/old/base.pt"})
    earlier_file = tmp_path / "earlier.json"
    earlier_file.write_text(json.dumps(earlier))
    out = tmp_path / "bench"
    for a in arms:
        for s in range(3):
            run = out / "runs" / "tuxpaint-photos" / "base" / f"{a}-s{s}"
            run.mkdir(parents=True)
            (run / "result.json").write_text(json.dumps(
                _fake_run(a, s, target="tuxpaint-photos", knn=0.45)))
    (out / "bench.json").write_text(json.dumps(
        {"settings": settings, "settings_line": "full", "base_digest": "sha256:" + "ab" * 32,
         "machine": {"cpus": 2, "gpu": None, "torch": "2.x", "python": "3.11",
                     "platform": "Linux", "load_average_at_start": [1.5, 1.0, 1.0]}}))
    said: list[str] = []
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n{README_START}\n{README_END}\n")
    summary = write_report(out, readme=readme, say=said.append, carry=earlier_file)
    assert list(summary["targets"]) == ["clipart-heldout", "tuxpaint-photos"]
    assert summary["targets"]["clipart-heldout"] == earlier["targets"]["clipart-heldout"]
    assert summary["carried"]["clipart-heldout"]["base_checkpoint"] == "/old/base.pt"
    assert "tuxpaint-photos" not in summary.get("carried", {})
    checked = {c["target"].split(":")[0] for c in summary["checks"]}
    assert {"clipart-heldout", "tuxpaint-photos"} <= checked
    assert json.loads((out / "summary.json").read_text())["carried"]
    assert (out / "plots" / "clipart-heldout.png").is_file()
    text = readme.read_text()
    assert "- clipart-heldout: carried over from" in text
    assert "backbone weights `sha256:abababababab" in text
    assert "Machine: 2 CPU cores, GPU none, torch 2.x" in text
    assert "| tuxpaint-photos | base | explore | 3 | 45.0" in text
    assert any("carried over" in m for m in said)
    # Carried again (from the report just made, into a folder of other runs): the target
    # keeps the record of where it first came from.
    again = tmp_path / "again"
    (again / "runs").mkdir(parents=True)
    (again / "bench.json").write_text(json.dumps({"settings": settings, "base_checkpoint": "/x"}))
    twice = write_report(again, readme=None, say=said.append, carry=out / "summary.json")
    assert twice["carried"]["clipart-heldout"] == summary["carried"]["clipart-heldout"]
    assert twice["carried"]["tuxpaint-photos"]["base_digest"] == "sha256:" + "ab" * 32
    # Runs made with other settings are not put in one table with these.
    other = json.loads(earlier_file.read_text())
    other["settings"]["plan"]["arm"]["steps"] = 4
    earlier_file.write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="other settings"):
        write_report(out, readme=None, say=said.append, carry=earlier_file)
    earlier_file.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        write_report(out, readme=None, say=said.append, carry=earlier_file)


# ------------------------------------------------------------------------ one tiny real arm run


@pytest.mark.slow
def test_tiny_real_arms_against_a_loopback_corpus(tmp_path: Path) -> None:
    """Real corpus (three categories), real MiniLM, real server, real ResNet-18: explore,
    label-set and target-only, two iterations of one step each."""
    from ie_engine.bench.arms import ArmSettings, World, run_arm
    from ie_engine.bench.pool import RunJob, WorldSpec, run_jobs
    from ie_engine.bench.suite import _load
    from ie_engine.search import CorpusIndex, build_corpus, serve_in_background
    from ie_engine.vocabulary import MiniLMEmbedder, build_vocabulary, load_or_compute_embeddings

    embedder = MiniLMEmbedder()
    corpus_dir = tmp_path / "data" / "corpus"
    keep = ("animals/birds", "food/fruit", "plants/flowers")
    build_corpus(corpus_dir, embedder=embedder, sources=("openclipart",),
                 exclude=lambda it: not it.category.startswith(keep))
    full = CorpusIndex.load(corpus_dir)
    spec = build_clipart_heldout(full.items, tmp_path / "target", classes=CLASSES)
    settings = ArmSettings(iterations=2, queries=4, per_query=8, steps=1, batch_size=16,
                           max_concepts=150, knn_repeats=2, probe_repeats=2)
    from ie_engine.bench.arms import arm_config

    vocab = build_vocabulary(
        arm_config(settings, arm="explore", seed=0, init_checkpoint=None, host=None).vocabulary,
        data_dir=tmp_path / "data")
    emb = load_or_compute_embeddings(vocab.texts(), embedder, tmp_path / "data" / "emb")
    world = World(index=full, vocab=vocab, embeddings=np.asarray(emb),
                  embed_phrases=embedder.embed)
    target = _load(spec, 96, 40_000_000)
    assert sorted(set(target.labels)) == ["bird", "fruit"]
    handle = serve_in_background(CorpusIndex.load(corpus_dir, exclude_ids=spec.heldout_ids),
                                 embedder)
    try:
        results = {
            arm: run_arm(world, target, arm=arm, seed=1, init="scratch", base_checkpoint=None,
                         settings=settings, run_dir=tmp_path / "runs" / arm,
                         engine_url=handle.url)
            for arm in ("explore", "label-set", "target-only")
        }
        again = run_arm(world, target, arm="explore", seed=1, init="scratch",
                        base_checkpoint=None, settings=settings,
                        run_dir=tmp_path / "runs" / "explore", engine_url=handle.url)
        # The same runs in two worker processes (``ie bench --jobs 2``).
        world_spec = WorldSpec(
            corpus_dir=corpus_dir, data_dir=tmp_path / "data", embeddings_dir=tmp_path / "data"
            / "emb", vocabulary=arm_config(settings, arm="explore", seed=0, init_checkpoint=None,
                                           host=None).vocabulary, targets={spec.name: target})
        jobs = [RunJob(target=spec.name, init="scratch", seed=1, arm=arm, engine_url=handle.url,
                       run_dir=tmp_path / "pool" / arm) for arm in ("explore", "target-only")]
        done: list[str] = []
        pooled = run_jobs(world_spec, jobs, workers=2, base_checkpoint=None, settings=settings,
                          on_done=lambda job, r: done.append(job.arm))
        reused = run_arm(world, target, arm="explore", seed=1, init="scratch",
                         base_checkpoint=None, settings=settings,
                         run_dir=tmp_path / "pool" / "explore", engine_url=handle.url)
    finally:
        handle.stop()
    assert again == results["explore"]  # a finished run is reused, not repeated
    assert sorted(done) == ["explore", "target-only"]
    assert reused == pooled[0]  # what a worker saved is what the parent process would reuse
    for arm, r in zip(("explore", "target-only"), pooled, strict=True):
        assert r["fingerprint"] == results[arm]["fingerprint"]
        for key in ("final_knn_loo", "images_total", "loo_correct"):
            assert r[key] == results[arm][key], (arm, key)  # seeded: same run, other process
    ex = results["explore"]
    assert [r["iteration"] for r in ex["iterations"]] == [0, 1, 2]
    assert ex["images_total"] > 0 and 0.0 <= ex["final_knn_loo"] <= 1.0
    assert len(ex["loo_correct"]) == len(target.labels)
    # The web here is birds, fruit and flowers only: most of what comes back is relevant.
    assert all(r["precision"] is not None for r in ex["iterations"][1:])
    assert set(ex["first_found"]) == {"bird", "fruit"}
    # No run ever downloads one of its own target images.
    for arm in ("explore", "label-set"):
        for line in (tmp_path / "runs" / arm / "iterations" / "0001-images.jsonl").read_text(
        ).splitlines():
            if line.strip():
                assert item_id_from_url(json.loads(line)["image_url"]) not in spec.heldout_ids
    ls = results["label-set"]
    assert ls["allowed_concepts"] is not None and ls["allowed_concepts"] < ls["vocabulary_size"]
    queried = json.loads((tmp_path / "runs" / "label-set" / "iterations" / "0001.json")
                         .read_text())["queries"]
    assert {q["concept"] for q in queried if q["tier"] == -1} <= {"bird", "fruit"}
    assert any(q["tier"] == -1 for q in queried)
    to = results["target-only"]
    assert to["images_total"] == 0 and to["iterations"][1]["precision"] is None
    assert not (tmp_path / "runs" / "explore" / "checkpoint.pt").exists()


def test_bench_refuses_zero_jobs_before_any_work(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from ie_engine.cli import main

    rc = main(["--data-dir", str(tmp_path / "data"), "bench", "--jobs", "0",
               "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


def test_base_digest_reads_a_file_once_and_again_when_it_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import torch

    from ie_engine.bench import arms
    from ie_engine.ssl.model import CheckpointError, backbone_digest, build_backbone

    net, _ = build_backbone("resnet18", 16)
    state = net.state_dict()
    path = tmp_path / "base.pt"
    torch.save(state, path)
    reads: list[str] = []

    def counting(p: Any) -> str:
        reads.append(str(p))
        return backbone_digest(p)

    monkeypatch.setattr(arms, "backbone_digest", counting)
    arms._digest_of.cache_clear()
    first = arms.base_digest(path)
    assert first == backbone_digest(path)
    assert arms.base_digest(str(path)) == first
    assert len(reads) == 1
    changed = {k: v.clone() for k, v in state.items()}
    changed["conv1.weight"][0, 0, 0, 0] += 1.0
    torch.save(changed, path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert arms.base_digest(path) != first
    assert len(reads) == 2
    with pytest.raises(CheckpointError, match="cannot read"):
        arms.base_digest(tmp_path / "missing.pt")


def test_the_machine_line_names_the_cpu_and_the_kernels_torch_picked() -> None:
    from ie_engine.bench.report import _machine_text
    from ie_engine.bench.suite import _machine

    m = _machine()
    assert m["cpus"] >= 1
    assert isinstance(m["cpu_capability"], str) and m["cpu_capability"]  # e.g. AVX2, AVX512
    text = _machine_text({"machine": {**m, "cpu_model": "Xeon X", "cpu_capability": "AVX512"}})
    assert text.startswith(f"{m['cpus']} CPU cores (Xeon X, AVX512), GPU ")
    old = _machine_text({"machine": {"cpus": 2, "gpu": None, "torch": "2.x"}})
    assert old.startswith("2 CPU cores, GPU none, torch 2.x")
