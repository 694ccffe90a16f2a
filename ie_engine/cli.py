"""The ``ie`` command: explore from a target folder, build and serve the offline web.

    ie explore --target DIR [--iterations N] [--preset cpu-small] [--resume] ...
    ie corpus build [--out DIR]
    ie corpus serve [--corpus DIR] [--port N]
    ie vocab embed [--concrete-only] [--roots SYNSETS]  (embed the vocabulary ahead of a run)
    ie pretrain [--steps N]               (the benchmark's base model)
    ie bench [--quick] [--target NAME]    (explore vs random vs target-only vs label-set)
    ie export model|dataset|report|compare  (take-aways of a run folder)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ie_engine.errors import ExplorerError

DEFAULT_DATA_DIR = Path.home() / ".cache" / "internet-explorer"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ie", description=__doc__.split("\n")[0] if __doc__ else "")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="caches: WordNet, embeddings, the offline corpus (default: %(default)s)")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("explore", help="run an exploration from a folder of target images")
    e.add_argument("--target", type=Path, required=True,
                   help="folder of target images (subfolders = classes, for evaluation only)")
    e.add_argument("--run-dir", type=Path, default=None,
                   help="where the run is written (default: runs/<target>-<time>)")
    e.add_argument("--preset", choices=["cpu-small", "gpu-paper", "tiny"], default="cpu-small")
    e.add_argument("--iterations", type=int, default=None)
    e.add_argument("--queries", type=int, default=None, help="queries per iteration (M)")
    e.add_argument("--per-query", type=int, default=None, help="results kept per query (Q)")
    e.add_argument("--steps", type=int, default=None, help="training steps per iteration")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--mode", choices=["explore", "random", "target-only"], default="explore")
    e.add_argument("--concrete-only", action="store_true", help="physical-entity nouns only")
    e.add_argument("--max-concepts", type=int, default=None,
                   help="use N concepts spread over WordNet (quick trials)")
    e.add_argument("--roots", default="", metavar="SYNSETS",
                   help="only nouns under these WordNet synsets, comma-separated "
                        "(e.g. bird.n.01,fruit.n.01)")
    e.add_argument("--concept", action="append", default=[], help="add a concept (repeatable)")
    e.add_argument("--class-names", default="",
                   help="comma-separated class names: label-set mode")
    e.add_argument("--descriptors", choices=["builtin", "none"], default="builtin")
    e.add_argument("--eval-dir", type=Path, default=None,
                   help="separate labelled folder for evaluation (default: the target's classes)")
    e.add_argument("--engine-url", default=None,
                   help="search service URL (default: start the offline web on loopback)")
    e.add_argument("--engine", default="offline",
                   help="offline (default), or web engines, comma-separated: openverse, "
                        "wikimedia, flickr, searxng, clip-retrieval, brave")
    e.add_argument("--engine-config", type=Path, default=None,
                   help="web engine configuration, JSON or TOML (README: Real web engines)")
    e.add_argument("--licenses", default=None,
                   help="web engines: keep only these licenses, e.g. cc0,pd,by (before download)")
    e.add_argument("--replay", type=Path, default=None, metavar="RUN_DIR",
                   help="web engines: answer every search and every image download from "
                        "RUN_DIR's cache, never online")
    e.add_argument("--base", default=None, metavar="NAME",
                   help="where the backbone starts (`ie bases` lists them; default: the "
                        "preset's); a base published online is fetched once into the cache")
    e.add_argument("--init-checkpoint", default=None,
                   help="backbone weights to start from (the same as --base file:PATH)")
    e.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    e.add_argument("--quiet", action="store_true", help="no progress bars")

    from ie_engine.bench.command import add_parsers as add_bench_parsers

    add_bench_parsers(sub)  # ie pretrain, ie bench

    from ie_engine.export.command import add_parsers as add_export_parsers

    add_export_parsers(sub)  # ie export model|dataset|report|compare

    bs = sub.add_parser("bases", help="the bases a run can start from, and whether each is here")
    bsub = bs.add_subparsers(dest="bases_command")
    bf = bsub.add_parser("fetch", help="download a base's weights into the cache (online)")
    bf.add_argument("name")

    d = sub.add_parser("demo-target", help="make the demo target folder (Tux Paint photos)")
    d.add_argument("--out", type=Path, required=True)

    v = sub.add_parser("vocab", help="the concept vocabulary")
    vsub = v.add_subparsers(dest="vocab_command", required=True)
    ve = vsub.add_parser("embed", help="embed the vocabulary once (cached; later runs load it)")
    ve.add_argument("--concrete-only", action="store_true", help="physical-entity nouns only")
    ve.add_argument("--roots", default="", metavar="SYNSETS",
                    help="only nouns under these WordNet synsets, comma-separated")
    ve.add_argument("--quiet", action="store_true", help="no progress bar")

    c = sub.add_parser("corpus", help="the offline web")
    csub = c.add_subparsers(dest="corpus_command", required=True)
    b = csub.add_parser("build", help="build the corpus from Debian's image packages")
    b.add_argument("--out", type=Path, default=None)
    b.add_argument("--force", action="store_true", help="rebuild even if present")
    s = csub.add_parser("serve", help="serve the corpus as a search service on loopback")
    s.add_argument("--corpus", type=Path, default=None)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "explore":
            return _explore(args)
        if args.command in ("pretrain", "bench"):
            from ie_engine.bench.command import run_bench_command, run_pretrain

            return run_pretrain(args) if args.command == "pretrain" else run_bench_command(args)
        if args.command == "export":
            from ie_engine.export.command import run_export_command

            return run_export_command(args)
        if args.command == "bases":
            return _bases(args)
        if args.command == "demo-target":
            from ie_engine.demo_targets import make_tuxpaint_target

            counts = make_tuxpaint_target(args.out)
            _say(f"demo target in {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            return 0
        if args.command == "vocab":
            info = embed_vocabulary(args.data_dir, concrete_only=args.concrete_only,
                                    roots=_synsets(args.roots), quiet=args.quiet)
            print(json.dumps(info, indent=1))
            return 0
        if args.command == "corpus" and args.corpus_command == "build":
            info = ensure_corpus(args.out or args.data_dir / "corpus", force=args.force)
            print(json.dumps(info, indent=1))
            return 0
        if args.command == "corpus" and args.corpus_command == "serve":
            from ie_engine.search import run_server

            corpus = args.corpus or args.data_dir / "corpus"
            ensure_corpus(corpus)
            print(f"offline web: http://{args.host}:{args.port}/search?q=parrot", flush=True)
            run_server(corpus, args.host, args.port)
            return 0
    except ExplorerError as exc:
        print(f"ie: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ie: interrupted; resume with --resume", file=sys.stderr)
        return 130
    return 1


def ensure_corpus(out: Path, *, force: bool = False) -> dict[str, Any]:
    """Build the offline corpus at ``out`` unless it is already there."""
    from ie_engine.progress import TqdmProgress
    from ie_engine.search import build_corpus
    from ie_engine.vocabulary import MiniLMEmbedder

    marker = out / "corpus.json"
    if marker.exists() and not force:
        return dict(json.loads(marker.read_text()))
    print(f"building the offline web in {out} ...", file=sys.stderr)
    build_corpus(out, embedder=MiniLMEmbedder(), progress=TqdmProgress())
    return dict(json.loads(marker.read_text()))


def _synsets(text: str) -> tuple[str, ...]:
    """The synset names of a comma-separated flag (blanks and repeats out)."""
    return tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def embed_vocabulary(data_dir: Path, *, concrete_only: bool = False, roots: tuple[str, ...] = (),
                     quiet: bool = False) -> dict[str, Any]:
    """Build the WordNet vocabulary and its MiniLM embeddings under ``data_dir`` (cached), so
    that the first run does not spend its first minutes embedding."""
    from ie_engine.config import VocabularyConfig
    from ie_engine.progress import TqdmProgress
    from ie_engine.vocabulary import (
        MiniLMEmbedder,
        build_vocabulary,
        embedding_cache_path,
        load_or_compute_embeddings,
    )

    t0 = time.perf_counter()
    vocab = build_vocabulary(VocabularyConfig(concrete_only=concrete_only, roots=roots),
                             data_dir=data_dir)
    embedder = MiniLMEmbedder()
    cache_dir = data_dir / "embeddings"
    path = embedding_cache_path(vocab.texts(), embedder, cache_dir)
    cached = path.exists()
    if not cached:
        _say(f"embedding {len(vocab)} concepts once (cached in {cache_dir}; on two CPU cores "
             "the whole vocabulary takes a quarter of an hour, later loads take a fraction of a "
             "second)")
    emb = load_or_compute_embeddings(vocab.texts(), embedder, cache_dir,
                                     progress=TqdmProgress(quiet=quiet))
    return {"concepts": len(vocab), "dim": int(emb.shape[1]), "cache": str(path),
            "was_cached": cached, "seconds": round(time.perf_counter() - t0, 1)}


def _explore(args: argparse.Namespace) -> int:
    import torch

    from ie_engine.bases import with_base
    from ie_engine.config import make_config
    from ie_engine.evaluate import knn_accuracy, linear_probe_accuracy
    from ie_engine.explorer import Explorer
    from ie_engine.imaging import to_uint8_tensor_batch
    from ie_engine.plots import plot_curves, plot_top_concepts
    from ie_engine.progress import TqdmProgress
    from ie_engine.search import HttpSearchEngine
    from ie_engine.target import load_target
    from ie_engine.vocabulary import (
        MiniLMEmbedder,
        add_concepts,
        build_vocabulary,
        class_name_concepts,
        load_or_compute_embeddings,
        make_descriptor_source,
        restrict_to_label_set,
    )

    cfg = make_config(args.preset, seed=args.seed, mode=args.mode)
    class_names = tuple(n.strip() for n in args.class_names.split(",") if n.strip())
    cfg = replace(
        cfg,
        iterations=args.iterations or cfg.iterations,
        vocabulary=replace(
            cfg.vocabulary,
            concrete_only=args.concrete_only,
            roots=_synsets(args.roots),
            max_concepts=args.max_concepts,
            extra_concepts=tuple(args.concept),
            class_names=class_names,
            descriptors=args.descriptors,
        ),
        policy=replace(cfg.policy, queries_per_iteration=args.queries
                       or cfg.policy.queries_per_iteration),
        search=replace(cfg.search, results_per_query=args.per_query
                       or cfg.search.results_per_query),
        train=replace(cfg.train, steps_per_iteration=args.steps or cfg.train.steps_per_iteration),
    ).validate()
    if args.init_checkpoint and args.base:
        raise ExplorerError("give --base or --init-checkpoint, not both")
    base = f"file:{args.init_checkpoint}" if args.init_checkpoint else args.base
    cfg = with_base(cfg, base, data_dir=args.data_dir)
    _say(f"base: {cfg.train.base} ({cfg.train.arch}, {cfg.train.image_size} px)")

    run_dir = args.run_dir or Path("runs") / f"{args.target.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.resume and not (run_dir / "checkpoint.pt").exists():
        raise ExplorerError(f"--resume: no checkpoint in {run_dir}")
    progress = TqdmProgress(quiet=args.quiet)
    data_dir: Path = args.data_dir
    size = cfg.download.stored_size

    # ------------------------------------------------------------------ target (labels aside)
    target = load_target(args.target, max_pixels=cfg.download.max_pixels, size=size)
    _say(f"target: {len(target.images)} images from {args.target}"
         + (f", {len(target.class_names)} classes (evaluation only)" if target.labels else "")
         + (f", {len(target.rejected)} refused" if target.rejected else ""))
    target_pixels = to_uint8_tensor_batch(target.images, size)
    eval_pixels, eval_labels = target_pixels, target.labels
    if args.eval_dir is not None:
        ev = load_target(args.eval_dir, max_pixels=cfg.download.max_pixels, size=size,
                         labelled="yes")
        eval_pixels, eval_labels = to_uint8_tensor_batch(ev.images, size), ev.labels

    # ------------------------------------------------------------------ vocabulary
    t0 = time.perf_counter()
    vocab = build_vocabulary(cfg.vocabulary, data_dir=data_dir)
    embedder = MiniLMEmbedder()
    class_concepts: list[int] = []
    allowed = None
    if class_names:
        vocab = add_concepts(vocab, list(class_names), source="class-name")
        class_concepts = class_name_concepts(vocab, class_names)
    embeddings = load_or_compute_embeddings(vocab.texts(), embedder, data_dir / "embeddings",
                                            progress=progress)
    if class_names:
        allowed = restrict_to_label_set(
            vocab, embeddings, embeddings[class_concepts],
            fraction=cfg.vocabulary.label_set_fraction,
        )
    _say(f"vocabulary: {len(vocab)} concepts ({time.perf_counter() - t0:.1f} s)")

    # ------------------------------------------------------------------ the web
    handle = None
    engine_url = args.engine_url
    from ie_engine.search.engines.cli_support import engine_from_options

    web_engine = engine_from_options(
        engine=args.engine, engine_config=args.engine_config, licenses=args.licenses,
        replay=args.replay, run_dir=run_dir, data_dir=data_dir)
    if web_engine is not None and engine_url is not None:
        raise ExplorerError("give --engine-url or web engines, not both")
    if cfg.mode != "target-only" and engine_url is None and web_engine is None:
        from ie_engine.search import CorpusIndex, serve_in_background

        corpus_dir = data_dir / "corpus"
        ensure_corpus(corpus_dir)
        handle = serve_in_background(CorpusIndex.load(corpus_dir), embedder)
        engine_url = handle.url
        _say(f"offline web serving on {engine_url}")
    if engine_url is not None:
        from urllib.parse import urlsplit

        host = urlsplit(engine_url).netloc
        cfg = replace(cfg, download=replace(
            cfg.download, allowed_private_hosts=(*cfg.download.allowed_private_hosts, host)))
    engine = web_engine or (HttpSearchEngine(engine_url) if engine_url else None)

    # ------------------------------------------------------------------ evaluation hook
    eval_tensor = torch.from_numpy(eval_pixels)

    def evaluate(_target_feats: torch.Tensor, it: int) -> dict[str, float]:
        if not eval_labels:
            return {}
        feats = explorer.trainer.embed(eval_tensor).numpy()
        return {"knn_accuracy": knn_accuracy(feats, eval_labels, k=cfg.eval_knn_k)}

    explorer = Explorer(
        config=cfg, run_dir=run_dir, vocabulary=vocab, concept_embeddings=embeddings,
        target_images=target_pixels, target_hashes=target.dhashes, engine=engine,
        descriptors=make_descriptor_source(cfg.vocabulary), class_concepts=class_concepts,
        allowed=allowed, evaluate=evaluate if eval_labels else None, progress=progress,
        download_cache=web_engine.download_cache if web_engine is not None else None,
    )
    if args.resume:
        explorer.resume()
        _say(f"resumed {run_dir} after iteration {explorer.iteration}")
    _say(f"run folder: {run_dir}")
    try:
        if explorer.iteration == 0 and not explorer.history:
            explorer.run(0)
        while explorer.iteration < cfg.iterations:
            s = explorer.step()
            top = sorted(s.queries, key=lambda q: -(q["observed_reward"] or -1e9))[:3]
            _say(
                f"iteration {s.iteration}: {len(s.queries)} queries, {s.n_images} images "
                f"({s.n_failures} refused, {s.n_leaked} target leaks), "
                f"reward {s.mean_concept_reward:.3f}"
                + (f", kNN {s.metrics['knn_accuracy']:.3f}" if "knn_accuracy" in s.metrics else "")
                + "; best: " + ", ".join(f"{q['concept']} ({q['observed_reward']:.3f})"
                                         for q in top)
                + "; " + ", ".join(f"{k} {v:.1f}s" for k, v in s.seconds.items())
            )
    finally:
        explorer.close()
        if handle is not None:
            handle.stop()

    # ------------------------------------------------------------------ final figures, plots
    final: dict[str, Any] = {"iterations": explorer.iteration, "images": len(explorer.images)}
    if eval_labels:
        feats = explorer.trainer.embed(eval_tensor).numpy()
        mean, sd = linear_probe_accuracy(feats, eval_labels, seed=cfg.seed)
        final["linear_probe_accuracy"] = mean
        final["linear_probe_sd"] = sd
        final["knn_accuracy"] = explorer.history[-1].get("knn_accuracy")
    (run_dir / "final.json").write_text(json.dumps(final, indent=1))
    plot_curves(explorer.history, run_dir / "plots" / "curves.png")
    plot_top_concepts(run_dir, run_dir / "plots" / "top_concepts.png")
    _say(f"done: {json.dumps(final)}")
    print(f"run folder: {run_dir.resolve()}")
    return 0


def _bases(args: argparse.Namespace) -> int:
    from ie_engine.bases import (
        fetch_base,
        latest_offline_ssl,
        list_bases,
        resolve_base,
        spec_of,
    )

    if args.bases_command == "fetch":
        spec = spec_of(args.name)
        path = fetch_base(spec, data_dir=args.data_dir)
        resolve_base(args.name, data_dir=args.data_dir)  # checks the file reads as weights
        print(path)
        return 0
    rows = list_bases(data_dir=args.data_dir, offline_ssl=latest_offline_ssl(args.data_dir))
    width = max(len(r.spec.name) for r in rows)
    for row in rows:
        state = "available" if row.available else "missing"
        print(f"{row.spec.name:<{width}}  {state:<9}  {row.spec.arch:<12}  {row.spec.summary}")
        print(f"{'':<{width}}  {row.reason}" + (f" ({row.path})" if row.available and row.path
                                                 else ""))
    print(f"{'file:PATH':<{width}}  {'':<9}  {'':<12}  a local weights file in any layout "
          "(ours, MoCo v3, torchvision, EfficientNet-Lite)")
    return 0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
