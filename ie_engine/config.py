"""Engine configuration: frozen dataclasses, every knob documented where it is defined.

The engine never reads environment variables; the CLI and the worker build these objects.
Numbers in brackets are the paper's (Li et al., ICML 2023) where ours differ for CPU scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from ie_engine.errors import ConfigError

Preset = Literal["cpu-small", "gpu-paper", "tiny"]


@dataclass(frozen=True)
class VocabularyConfig:
    """Which concepts the policy may query."""

    concrete_only: bool = False
    """Keep only nouns under ``physical_entity.n.01`` (objects, organisms, substances)."""
    roots: tuple[str, ...] = ()
    """Keep only nouns under these WordNet synsets (``bird.n.01``, ``fruit.n.01``): a noun
    stays when its first synset is one of them or one of their hyponyms, transitively. Empty =
    every noun. Applied before ``max_concepts``; an unknown synset is a :class:`ConfigError`."""
    extra_concepts: tuple[str, ...] = ()
    """Concepts of the user's own, added to WordNet's (embedded as the bare phrase)."""
    class_names: tuple[str, ...] = ()
    """Label-set mode when non-empty: the target's class names."""
    label_set_fraction: float = 0.10
    """Label-set mode keeps this share of the vocabulary nearest the class names [paper: 10%]."""
    class_name_query_share: float = 0.5
    """Label-set mode: share of queries that are the class names themselves [paper: half]."""
    max_concepts: int | None = None
    """Keep only the first N concepts (by WordNet order) - for tests and quick trials."""
    descriptors: Literal["none", "builtin"] = "builtin"
    """Descriptor source: ``none`` or the built-in offline list of visual adjectives."""
    descriptor_probability: float = 0.5
    """Chance that a query gets a descriptor in front of the concept (``builtin`` only)."""


@dataclass(frozen=True)
class PolicyConfig:
    """How concept rewards become a sampling distribution (METHOD.md, steps 7-8)."""

    queries_per_iteration: int = 256
    """M: concepts sampled per iteration [paper: 256]."""
    gp_max_observations: int = 2560
    """Above this many distinct observed concepts the GP gives way to ridge regression
    [paper: after 10 iterations of 256]."""
    gp_exact_variance_max: int = 512
    """Past this many distinct observed concepts, sigma is computed from a seeded subset of this
    size (an upper bound of the exact variance: see ``policy.gp.predict_gp``); the mean always
    uses every observation. The variance costs N x m^2: at m = 1,024 it took as long as the
    mean over all 2,560 observations; 512 keeps a full-vocabulary update within seconds on 2
    CPU cores (README, "Policy timings")."""
    gp_refit_growth: float = 0.25
    """The GP's hyper-parameters are fitted again once the live observed concepts have grown by
    this share since the last fit (0 = whenever they grew). In between, the GP is conditioned on
    every observation with the last fitted ones: at 2,560 observations the fit is about a fifth
    of an update (README, "Policy timings"), and a few hundred more rewards move it little."""
    ridge_alpha: float = 1.0
    """Ridge regularisation once the GP is retired."""
    gp_noise: float = 1e-2
    """Initial white-noise level of the GP kernel (fitted by marginal likelihood)."""
    gp_min_length_scale: float | None = None
    """Lower bound of the GP's fitted RBF length-scale. None: the median distance from a concept
    to its nearest neighbour in the vocabulary's embedding space (0.52 for MiniLM over all of
    WordNet's nouns). Fitted on a few dozen noisy rewards, the marginal likelihood often prefers a
    length-scale far shorter than that, at which a reward informs no other concept: the GP then
    predicts its prior for every unqueried concept, exploration falls back to chance, and a
    veto's negative observation reaches none of its neighbours (README, "What a veto does")."""
    softmax_range: float = 3.0
    """SMR: log of the ratio of the largest to the smallest probability [paper: 3]."""
    tier_sizes: tuple[int, int] = (250, 750)
    """Sizes of the top two tiers for the paper's 146,347-concept vocabulary and 256 queries;
    scaled linearly to smaller vocabularies, but never below the paper's ratio to the queries
    per iteration (``policy.sampler.scaled_tier_sizes``)."""
    tier_mass: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Probability mass of the top tier, the middle tier and the rest [paper: 80/10/10]."""
    reference_vocabulary_size: int = 146_347
    """The vocabulary size the tier sizes were chosen for."""
    reference_queries_per_iteration: int = 256
    """The queries per iteration the tier sizes were chosen for (the tiers scale with the larger
    of the two shares: ``policy.sampler.scaled_tier_sizes``)."""
    veto_reward: float | None = None
    """Reward fed to the policy for a vetoed concept; None = the lowest reward observed."""
    prior_reward: float = 0.0
    """Prior mean used before any observation (the first iteration samples uniformly)."""


@dataclass(frozen=True)
class SearchConfig:
    """How queries are sent to the engine."""

    results_per_query: int = 100
    """Q: results kept per query [paper: 100]."""
    min_results: int = 10
    """A query with fewer usable images than this scores as empty [paper: 10]."""
    concurrency: int = 8
    """Queries in flight at once."""


@dataclass(frozen=True)
class DownloadConfig:
    """Downloader limits and guards."""

    concurrency: int = 32
    """Downloads in flight at once."""
    per_host: int = 8
    """Downloads in flight per host."""
    timeout_s: float = 20.0
    """Total time allowed for one download, connection included."""
    retries: int = 2
    """Extra attempts after a timeout, a connection error or a 429/5xx."""
    backoff_s: float = 0.5
    """First retry delay; doubled at each further attempt (with jitter)."""
    max_bytes: int = 20 * 1024 * 1024
    """Byte cap, enforced while streaming."""
    max_pixels: int = 40_000_000
    """Decompression-bomb guard: images with more pixels are refused unread."""
    decode_pixel_budget: int = 48_000_000
    """Pixels being decoded at once across the decoding threads (bounds memory: a decoded
    RGBA pixel takes 4 bytes, several times that while it is flattened and resized)."""
    stored_size: int = 128
    """Longest side of the stored, resized image (pixels)."""
    dhash_threshold: int = 4
    """Hamming distance at or under which two dHashes count as near-duplicates."""
    user_agent: str = "internet-explorer/0.1 (+targeted representation learning)"
    """Sent with every download; its first word is the crawler name ``X-Robots-Tag`` scopes
    (``internet-explorer: noai``) are matched against."""
    honour_noai: bool = True
    """Refuse images served with ``X-Robots-Tag: noai`` or ``noimageai`` (``robots-noai``)."""
    allowed_private_hosts: tuple[str, ...] = ()
    """Hosts on loopback/private networks that may be fetched (the offline web)."""


@dataclass(frozen=True)
class TrainConfig:
    """Self-supervised training (MoCo v3 style)."""

    arch: Literal["resnet18", "resnet50", "effnet-lite0"] = "resnet18"
    """The backbone (``ssl.model.build_backbone``); a base fixes it (``ssl.bases``)."""
    base: str = "scratch"
    """Where the backbone's weights start: a name of ``ssl.bases.BASES`` (``scratch``: random
    weights; ``imagenet-effnet-lite0``: the packaged ImageNet weights; ``moco-v3-resnet50``,
    ``torchvision-*``, ``offline-ssl``: a file that ``init_checkpoint`` names once the base is
    resolved) or ``file:PATH``. Recorded in the run's files as it is."""
    input_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    """Per-channel mean subtracted from [0, 1] pixels before the backbone (the base's own:
    ImageNet's for ResNets, 0.5 for EfficientNet-Lite, trained on [-1, 1] inputs)."""
    input_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    """Per-channel standard deviation the pixels are divided by (the base's own)."""
    image_size: int = 64
    """Crop size fed to the network (pixels)."""
    frozen_stages: int = 0
    """Leading backbone stages kept as the base made them (no gradient, BatchNorm statistics
    fixed): 1 = the stem, 2 = the stem and the first stage of blocks, ...
    (``ssl.model.backbone_stages``). On a CPU most of a step's time is the backward pass through
    the early, high-resolution stages; a base that already sees well keeps them."""
    batch_size: int = 64
    steps_per_iteration: int = 60
    """Optimiser steps per exploration iteration [paper: 10 epochs]."""
    lr: float = 0.05
    """Base learning rate (SGD/LARS scaled by batch/256 inside the trainer)."""
    weight_decay: float = 1e-6
    momentum_encoder: float = 0.99
    """EMA factor of the momentum encoder [paper: 0.9985]."""
    temperature: float = 0.2
    """InfoNCE temperature [MoCo v3: 0.2]."""
    proj_dim: int = 256
    hidden_dim: int = 1024
    min_crop_area: float = 0.2
    """RandomResizedCrop's smallest area [paper: 0.2]."""
    optimizer: Literal["sgd", "lars"] = "sgd"
    amp: bool = False
    """Mixed precision (CUDA only)."""
    channels_last: bool = False
    device: str = "auto"
    """``auto`` picks CUDA when present."""
    init_checkpoint: str | None = None
    """Optional local file with backbone weights to start from."""
    num_threads: int | None = None
    """torch CPU threads; None leaves torch's default."""


@dataclass(frozen=True)
class RewardConfig:
    """Image and concept rewards, replay (METHOD.md, steps 4-6)."""

    k: int = 15
    """Image reward averages cosine similarity to this many nearest target images [paper: 15]."""
    top_images: int = 10
    """Concept reward averages this many best image rewards of its query [paper: 10]."""
    replay_keep_fraction: float = 0.5
    """Share of each iteration's images kept in the replay buffer [paper: 50%]."""
    pcr: float = 2.0
    """Old (replay) data sampled at PCR times the new candidates [paper: 2]."""
    whiten: bool = True
    """Score images in features whitened against a reference sample of the web: the first
    iteration's downloads (PCA whitening with shrinkage, refitted in the current features every
    iteration). Raw backbone features share a large common component, so plain cosine
    similarity rewards what looks like *any* web image; whitened, it rewards what looks like the
    target *rather than* the web (README, "What the figures say"). [paper: not used]"""
    whiten_shrink: float = 0.3
    """Shrinkage of the whitening: each principal direction is divided by its singular value
    plus this share of their mean (small: full whitening, noisy on a small reference; large:
    closer to plain centring)."""
    reference_images: int = 2000
    """At most this many images (a seeded sample of the first iteration's) in the reference."""
    count_repeats: bool = False
    """A query's concept reward also counts its results that repeat an image the run had
    already downloaded (the downloader drops them as duplicates), scored again in the current
    features; off: only its new images count, and a query left with fewer than
    ``SearchConfig.min_results`` new ones scores as empty. [paper: not described; its web
    rarely repeats] Off by default until its interaction with vetoes is settled: with it on, the
    browser test's vetoed concept had a concept reward below the mean, and since the GP's
    normalisation is taken over live observations only, removing that observation raised the
    prior mean, so the vetoed concept's far neighbours (at the prior) rose by 0.0014 (README,
    "What a veto does")."""
    min_reference: int = 64
    """Fewer reference images than this: no whitening yet (the next iterations' downloads fill
    the reference up to it)."""


@dataclass(frozen=True)
class ExplorerConfig:
    """One exploration run."""

    iterations: int = 3
    seed: int = 0
    preset: Preset = "cpu-small"
    vocabulary: VocabularyConfig = field(default_factory=VocabularyConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    mode: Literal["explore", "random", "target-only"] = "explore"
    """``explore``: the method. ``random``: concepts drawn uniformly from the same vocabulary
    (the paper's baseline). ``target-only``: no web at all, same training on the target."""
    target_fraction: float = 0.5
    """Share of each training batch drawn from the target images. Web images fill the rest;
    the target-only arm trains on the target share alone, so every arm sees the same number
    of target samples (web images are added, never substituted)."""
    target_warmup_steps: int = 0
    """Steps on target images alone before the first iteration [paper: tuned on the target]."""
    eval_knn_k: int = 5
    """k of the kNN accuracy reported when labels exist."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplorerConfig:
        """Rebuild a config written by :meth:`to_dict` (checkpoints, run folders)."""
        d = dict(data)
        sub = {
            "vocabulary": VocabularyConfig,
            "policy": PolicyConfig,
            "search": SearchConfig,
            "download": DownloadConfig,
            "train": TrainConfig,
            "reward": RewardConfig,
        }
        for key, klass in sub.items():
            if key in d and isinstance(d[key], dict):
                fields = {k: tuple(v) if isinstance(v, list) else v for k, v in d[key].items()}
                d[key] = klass(**fields)
        return cls(**d)

    def validate(self) -> ExplorerConfig:
        """Raise :class:`ConfigError` on an impossible combination; return self."""
        if self.iterations < 1:
            raise ConfigError("iterations must be at least 1")
        if self.policy.queries_per_iteration < 1:
            raise ConfigError("queries_per_iteration must be at least 1")
        if self.search.results_per_query < 1:
            raise ConfigError("results_per_query must be at least 1")
        if not 0 < self.reward.replay_keep_fraction <= 1:
            raise ConfigError("replay_keep_fraction must be in (0, 1]")
        if self.reward.whiten_shrink <= 0:
            raise ConfigError("whiten_shrink must be positive")
        if not 2 <= self.reward.min_reference <= self.reward.reference_images:
            raise ConfigError("min_reference must be at least 2 and at most reference_images")
        if abs(sum(self.policy.tier_mass) - 1.0) > 1e-6:
            raise ConfigError("tier_mass must sum to 1")
        floor = self.policy.gp_min_length_scale
        if floor is not None and not 0 < floor <= 10:
            raise ConfigError("gp_min_length_scale must be in (0, 10], or None (automatic)")
        if self.train.batch_size < 2:
            raise ConfigError("batch_size must be at least 2 (contrastive loss)")
        if not 0 < self.target_fraction <= 1:
            raise ConfigError("target_fraction must be in (0, 1]")
        if self.train.amp and self.train.device == "cpu":
            raise ConfigError("amp needs a CUDA device")
        if self.vocabulary.roots:
            # The spelling only: whether WordNet has them is checked as the vocabulary is built.
            from ie_engine.vocabulary.wordnet import check_synset_names

            check_synset_names(self.vocabulary.roots)
        return self


def train_preset(name: Preset) -> TrainConfig:
    """The trainer settings of a named preset."""
    if name == "cpu-small":
        return TrainConfig(arch="resnet18", image_size=64, batch_size=64, steps_per_iteration=60)
    if name == "gpu-paper":
        return TrainConfig(
            arch="resnet50",
            base="moco-v3-resnet50",  # the paper's start: its file is found or fetched by name
            image_size=224,
            batch_size=224,
            steps_per_iteration=1000,
            lr=0.8,
            optimizer="lars",
            momentum_encoder=0.9985,
            amp=True,
            channels_last=True,
            device="cuda",
        )
    if name == "tiny":
        return TrainConfig(
            arch="resnet18", image_size=32, batch_size=16, steps_per_iteration=2, hidden_dim=128,
            proj_dim=64,
        )
    raise ConfigError(f"unknown preset {name!r}; choose cpu-small, gpu-paper or tiny")


def make_config(preset: Preset = "cpu-small", **overrides: Any) -> ExplorerConfig:
    """An :class:`ExplorerConfig` with the preset's trainer and scale, then ``overrides``."""
    base = ExplorerConfig(preset=preset, train=train_preset(preset))
    if preset == "cpu-small":
        base = replace(
            base,
            policy=replace(base.policy, queries_per_iteration=32),
            search=replace(base.search, results_per_query=30),
            download=replace(base.download, stored_size=96),
        )
    elif preset == "tiny":
        base = replace(
            base,
            iterations=2,
            policy=replace(base.policy, queries_per_iteration=4),
            search=replace(base.search, results_per_query=8, min_results=2),
            download=replace(base.download, stored_size=48),
            reward=replace(base.reward, k=3, top_images=3),
        )
    return replace(base, **overrides).validate()
