"""Tests of the concept vocabulary, on the real WordNet files of /usr/share/wordnet."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ie_engine.cli import _parser, _synsets, main
from ie_engine.config import ExplorerConfig, VocabularyConfig, make_config
from ie_engine.errors import ConfigError, EmbeddingError, VocabularyError
from ie_engine.types import Concept, ProgressSink
from ie_engine.vocabulary import (
    BUILTIN_DESCRIPTORS,
    DEFAULT_WORDNET_DIR,
    BuiltinDescriptors,
    DescriptorSource,
    MiniLMEmbedder,
    NoDescriptors,
    Vocabulary,
    add_concepts,
    build_vocabulary,
    class_name_concepts,
    compose_query,
    embedding_cache_path,
    install_nltk_wordnet,
    load_or_compute_embeddings,
    make_descriptor_source,
    resolve_synsets,
    restrict_to_label_set,
    spread_indices,
    synsets_under,
)

needs_wordnet = pytest.mark.skipif(
    not (DEFAULT_WORDNET_DIR / "data.noun").is_file(),
    reason="apt-get install wordnet-base wordnet-sense-index",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vocab-data")


@pytest.fixture(scope="module")
def full_vocab(data_dir: Path) -> Vocabulary:
    """The whole WordNet noun vocabulary, built once for the module (several seconds)."""
    return build_vocabulary(VocabularyConfig(), data_dir=data_dir)


@pytest.fixture(scope="module")
def concrete_vocab(data_dir: Path, full_vocab: Vocabulary) -> Vocabulary:
    return build_vocabulary(VocabularyConfig(concrete_only=True), data_dir=data_dir)


def _get(vocab: Vocabulary, lemma: str) -> Concept:
    index = vocab.index_of(lemma)
    assert index is not None, lemma
    return vocab[index]


def _small_vocab(*lemmas: str) -> Vocabulary:
    return Vocabulary.from_concepts(Concept(0, lemma, f"{lemma}: text") for lemma in lemmas)


# --- WordNet -----------------------------------------------------------------------------


@needs_wordnet
def test_full_vocabulary_has_every_noun_lemma(full_vocab: Vocabulary) -> None:
    assert 100_000 < len(full_vocab) < 150_000
    assert [c.index for c in full_vocab.concepts[:5]] == [0, 1, 2, 3, 4]
    assert full_vocab[len(full_vocab) - 1].index == len(full_vocab) - 1
    lemmas = full_vocab.lemmas()
    assert len(set(lemmas)) == len(lemmas)
    assert all("_" not in lemma for lemma in lemmas)
    assert all(c.source == "wordnet" and c.synset for c in full_vocab)


@needs_wordnet
def test_dog_text_uses_first_synset_and_first_hypernym(full_vocab: Vocabulary) -> None:
    dog = _get(full_vocab, "dog")
    assert dog.synset == "dog.n.01"
    # data.noun lists canine.n.02 before domestic_animal.n.01 as dog's hypernyms.
    assert dog.text.startswith("dog (canine): a member of the genus Canis")
    hot_dog = _get(full_vocab, "hot dog")
    assert hot_dog.lemma == "hot dog"
    assert hot_dog.text.startswith("hot dog (")


@needs_wordnet
def test_case_variants_are_distinct_and_root_has_no_parenthesis(full_vocab: Vocabulary) -> None:
    element = _get(full_vocab, "mercury")
    deity = _get(full_vocab, "Mercury")
    assert element.synset == "mercury.n.01"
    assert deity.lemma == "Mercury" and deity.index != element.index
    entity = _get(full_vocab, "entity")
    assert entity.text.startswith("entity: that which is perceived")
    assert full_vocab.index_of("no such concept xyz") is None


@needs_wordnet
def test_concrete_only_is_a_strict_subset(
    full_vocab: Vocabulary, concrete_vocab: Vocabulary
) -> None:
    concrete = set(concrete_vocab.lemmas())
    assert concrete < set(full_vocab.lemmas())
    assert 30_000 < len(concrete_vocab) < len(full_vocab)
    assert "dog" in concrete and "carburetor" in concrete and "water" in concrete
    assert "happiness" not in concrete and "entity" not in concrete
    assert concrete_vocab[0].index == 0
    dog = _get(concrete_vocab, "dog")
    assert dog == Concept(dog.index, "dog", _get(full_vocab, "dog").text, "wordnet", "dog.n.01")


@needs_wordnet
def test_nltk_folder_is_plain_files_and_install_is_idempotent(
    data_dir: Path, full_vocab: Vocabulary
) -> None:
    corpus = data_dir / "nltk_data" / "corpora" / "wordnet"
    lexnames = (corpus / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45
    assert lexnames[0] == "00\tadj.all\t3" and lexnames[5] == "05\tnoun.animal\t1"
    assert lexnames[28] == "28\tnoun.time\t1" and lexnames[44] == "44\tadj.ppl\t3"
    assert not any(p.is_symlink() for p in corpus.iterdir())
    before = (corpus / "data.noun").stat().st_mtime_ns
    assert install_nltk_wordnet(DEFAULT_WORDNET_DIR, data_dir) == corpus
    assert (corpus / "data.noun").stat().st_mtime_ns == before
    assert not list(corpus.parent.glob(".wordnet-*"))


@needs_wordnet
def test_install_repairs_an_incomplete_folder_and_drops_old_staging(tmp_path: Path) -> None:
    corpus = install_nltk_wordnet(DEFAULT_WORDNET_DIR, tmp_path)
    (corpus / "data.noun").unlink()
    crashed = corpus.parent / ".wordnet-staging-crashed"
    crashed.mkdir()
    os.utime(crashed, (0, 0))  # a leftover from long ago
    assert install_nltk_wordnet(DEFAULT_WORDNET_DIR, tmp_path) == corpus
    source = DEFAULT_WORDNET_DIR / "data.noun"
    assert (corpus / "data.noun").stat().st_size == source.stat().st_size
    assert not crashed.exists()


@needs_wordnet
def test_second_load_reads_the_cache_without_nltk(
    data_dir: Path, full_vocab: Vocabulary, tmp_path: Path
) -> None:
    for cache in data_dir.glob("wordnet-nouns-*.json"):
        shutil.copy(cache, tmp_path / cache.name)
    again = build_vocabulary(VocabularyConfig(), data_dir=tmp_path)
    assert again == full_vocab
    assert not (tmp_path / "nltk_data").exists()  # nothing was rebuilt


def test_missing_wordnet_files_give_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "wn").mkdir()
    with pytest.raises(VocabularyError, match="apt-get install wordnet-base wordnet-sense-index"):
        build_vocabulary(VocabularyConfig(), data_dir=tmp_path, wordnet_dir=tmp_path / "wn")


@needs_wordnet
def test_max_concepts_spreads_over_the_whole_vocabulary_then_extras(
    data_dir: Path, full_vocab: Vocabulary
) -> None:
    expected = [full_vocab[int(i)].lemma for i in spread_indices(len(full_vocab), 40)]
    extras = ("garden gnome", "Garden  Gnome", expected[7].upper())  # two repeats
    config = VocabularyConfig(max_concepts=40, extra_concepts=extras)
    small = build_vocabulary(config, data_dir=data_dir)
    assert len(small) == 41
    assert [c.index for c in small] == list(range(41))
    assert small.lemmas()[:40] == expected
    assert small[0].lemma == full_vocab[0].lemma
    initials = {lemma[0].lower() for lemma in small.lemmas()}
    assert len(initials) >= 12  # not just the first letters of the alphabet
    assert small[40] == Concept(40, "garden gnome", "garden gnome", "user", None)
    with pytest.raises(ConfigError):
        build_vocabulary(VocabularyConfig(max_concepts=0), data_dir=data_dir)


ROOTS = ("bird.n.01", "fruit.n.01")


@needs_wordnet
def test_roots_keep_only_the_nouns_under_them(data_dir: Path, full_vocab: Vocabulary) -> None:
    rooted = build_vocabulary(VocabularyConfig(roots=ROOTS), data_dir=data_dir)
    lemmas = set(rooted.lemmas())
    assert lemmas < set(full_vocab.lemmas())
    assert 1_000 < len(rooted) < 3_000
    assert [c.index for c in rooted] == list(range(len(rooted)))
    for member in ("bird", "robin", "eagle", "penguin", "fruit", "strawberry", "apple"):
        assert member in lemmas, member
        assert _get(rooted, member) == replace(_get(full_vocab, member),
                                               index=_get(rooted, member).index)
    # A noun is judged by its first (most frequent) sense: a cardinal is first a bishop.
    for outsider in ("dog", "carburetor", "happiness", "cardinal", "animal", "tulip"):
        assert outsider not in lemmas, outsider
    under = synsets_under(ROOTS)
    assert {"bird.n.01", "robin.n.01", "robin.n.02", "fruit.n.01"} <= under
    assert "animal.n.01" not in under and "bird.n.02" not in under  # bird.n.02: the meat
    assert all(c.synset in under for c in rooted)
    assert synsets_under(("Bird.N.01",)) == synsets_under(("bird.n.01",))


@needs_wordnet
def test_roots_combine_with_concrete_only_max_concepts_and_extras(
    data_dir: Path, full_vocab: Vocabulary
) -> None:
    rooted = build_vocabulary(VocabularyConfig(roots=ROOTS), data_dir=data_dir)
    both = build_vocabulary(VocabularyConfig(roots=ROOTS, concrete_only=True), data_dir=data_dir)
    assert both == rooted  # birds and fruit are physical entities
    config = VocabularyConfig(roots=ROOTS, max_concepts=30, extra_concepts=("tulip",))
    small = build_vocabulary(config, data_dir=data_dir)
    expected = [rooted[int(i)].lemma for i in spread_indices(len(rooted), 30)]
    assert small.lemmas() == [*expected, "tulip"]
    assert small[30].source == "user"


@needs_wordnet
def test_an_unknown_or_misspelled_root_is_refused_naming_it(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("WordNet has no noun synset 'birb.n.01'")):
        build_vocabulary(VocabularyConfig(roots=("bird.n.01", "birb.n.01")), data_dir=data_dir)
    with pytest.raises(ConfigError, match=re.escape("no noun synset 'bird.n.09'")):
        build_vocabulary(VocabularyConfig(roots=("bird.n.09",)), data_dir=data_dir)
    with pytest.raises(ConfigError, match="'bird' is not a WordNet noun synset name"):
        build_vocabulary(VocabularyConfig(roots=("bird",)), data_dir=data_dir)
    misspelled = re.escape("'fly.v.01', 'x.n.0' are not WordNet noun synset names")
    with pytest.raises(ConfigError, match=misspelled):
        resolve_synsets(("fly.v.01", "x.n.0"))
    # The configuration itself refuses a misspelled name, before any file is read.
    with pytest.raises(ConfigError, match="'bird' is not"):
        make_config("tiny", vocabulary=VocabularyConfig(roots=("bird",)))
    config = make_config("tiny", vocabulary=VocabularyConfig(roots=ROOTS))
    assert ExplorerConfig.from_dict(config.to_dict()).vocabulary.roots == ROOTS


@needs_wordnet
def test_the_cli_takes_roots_and_names_an_unknown_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parser().parse_args(["explore", "--target", "t", "--roots", " bird.n.01,fruit.n.01,"])
    assert _synsets(args.roots) == ROOTS
    argv = ["--data-dir", str(tmp_path), "vocab", "embed", "--roots", "birb.n.01", "--quiet"]
    assert main(argv) == 2  # refused before anything is read or embedded
    assert "WordNet has no noun synset 'birb.n.01'" in capsys.readouterr().err


# --- Vocabulary ------------------------------------------------------------------------------


def test_spread_indices() -> None:
    assert spread_indices(10, 5).tolist() == [0, 2, 4, 6, 8]
    assert spread_indices(10, 3).tolist() == [0, 3, 6]
    assert spread_indices(3, 10).tolist() == [0, 1, 2]
    picked = spread_indices(119_034, 1000)
    assert len(set(picked.tolist())) == 1000 and picked.max() > 118_000


def test_vocabulary_basics_and_subset() -> None:
    vocab = _small_vocab("cat", "dog", "Dog", "red fox")
    assert len(vocab) == 4
    assert vocab.texts()[0] == "cat: text"
    assert vocab.index_of("Dog") == 2 and vocab.index_of("dog") == 1
    assert vocab.index_of("RED FOX") == 3
    sub = vocab.subset(np.array([3, 0]))
    assert sub.lemmas() == ["red fox", "cat"]
    assert [c.index for c in sub] == [0, 1]
    assert sub.index_of("dog") is None
    with pytest.raises(VocabularyError):
        vocab.subset([4])
    with pytest.raises(VocabularyError):
        vocab.subset([1, 1])
    with pytest.raises(VocabularyError):
        Vocabulary((Concept(1, "a", "a"),))


def test_add_concepts_skips_duplicates_case_insensitively() -> None:
    vocab = _small_vocab("cat", "dog")
    out = add_concepts(vocab, ["Dog", " red   panda ", "red panda", "", "RED PANDA", "Ibex"])
    assert out.lemmas() == ["cat", "dog", "red panda", "Ibex"]
    assert out[2] == Concept(2, "red panda", "red panda", "user", None)
    assert out[3].index == 3
    assert vocab.lemmas() == ["cat", "dog"]  # unchanged
    assert add_concepts(vocab, ["CAT"]) is vocab
    assert add_concepts(vocab, ["kiwi"], source="class-name")[2].source == "class-name"


def test_class_names_that_are_lemmas_are_class_concepts_too() -> None:
    """Label-set mode: "bird" is already a WordNet lemma, so add_concepts adds nothing for it;
    it must still be a class concept (it used to be missed, and the restriction dropped)."""
    vocab = _small_vocab("cat", "bird", "dog")
    names = ("Bird", "space  rocket", "bird", "", "dog")
    vocab = add_concepts(vocab, list(names), source="class-name")
    assert vocab.lemmas() == ["cat", "bird", "dog", "space rocket"]
    assert class_name_concepts(vocab, names) == [1, 3, 2]
    assert class_name_concepts(_small_vocab("cat"), ["fish"]) == []


# --- Embedding cache -------------------------------------------------------------------------


class HashEmbedder:
    """A tiny deterministic embedder: unit vectors derived from each text's sha256."""

    name = "hash-embedder/test"
    dim = 8

    def __init__(self) -> None:
        self.calls = 0
        self.embedded: list[str] = []

    def embed(self, texts: list[str], *, progress: ProgressSink | None = None) -> np.ndarray:
        self.calls += 1
        self.embedded += texts
        rows = []
        for text in texts:
            digest = hashlib.sha256(text.encode()).digest()[: self.dim]
            rows.append(np.frombuffer(digest, dtype=np.uint8).astype(np.float32) - 127.5)
        out = np.stack(rows)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_embedding_cache_roundtrip(tmp_path: Path) -> None:
    embedder = HashEmbedder()
    texts = ["a red fox", "dog", "a cat"]  # embedded shortest first, returned in this order
    first = load_or_compute_embeddings(texts, embedder, tmp_path)
    assert first.shape == (3, 8) and first.dtype == np.float32
    assert embedder.calls == 1
    np.testing.assert_array_equal(first, HashEmbedder().embed(texts))
    path = embedding_cache_path(texts, embedder, tmp_path)
    assert path.is_file() and path.suffix == ".npy"
    second = load_or_compute_embeddings(texts, embedder, tmp_path)
    assert embedder.calls == 1
    np.testing.assert_array_equal(first, second)
    assert not second.flags.writeable
    other = load_or_compute_embeddings(["a cat", "a red fox"], embedder, tmp_path)
    assert embedder.calls == 1  # a subset of a cached list: its rows are reused
    np.testing.assert_array_equal(other, first[[2, 0]])
    assert embedding_cache_path(["dog", "cat"], embedder, tmp_path) != path
    assert embedding_cache_path(["dogc", "at"], embedder, tmp_path) != embedding_cache_path(
        ["dog", "cat"], embedder, tmp_path
    )
    assert not list(tmp_path.glob("*.tmp"))


def test_a_superset_embeds_only_its_new_texts(tmp_path: Path) -> None:
    embedder = HashEmbedder()
    base = [f"concept {i}" for i in range(40)]
    load_or_compute_embeddings(base, embedder, tmp_path)
    embedder.embedded.clear()
    bigger = ["user phrase", *base[::3], "another one"]
    got = load_or_compute_embeddings(bigger, embedder, tmp_path)
    assert sorted(embedder.embedded) == ["another one", "user phrase"]
    np.testing.assert_allclose(got, HashEmbedder().embed(bigger), atol=1e-7)
    # And the new file is itself reusable.
    embedder.embedded.clear()
    load_or_compute_embeddings(["another one", "concept 3"], embedder, tmp_path)
    assert embedder.embedded == []


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_corrupt_embedding_cache_is_recomputed(tmp_path: Path, damage: str) -> None:
    embedder = HashEmbedder()
    texts = [f"concept {i}" for i in range(50)]
    good = np.array(load_or_compute_embeddings(texts, embedder, tmp_path))
    path = embedding_cache_path(texts, embedder, tmp_path)
    if damage == "garbage":
        path.write_bytes(b"not a numpy file at all")
    else:
        path.write_bytes(path.read_bytes()[:200])
    again = load_or_compute_embeddings(texts, embedder, tmp_path)
    assert embedder.calls == 2
    np.testing.assert_array_equal(again, good)
    np.testing.assert_array_equal(np.load(path), good)  # the file was repaired


def test_embedding_cache_rejects_a_wrong_shape(tmp_path: Path) -> None:
    class Broken(HashEmbedder):
        def embed(self, texts: list[str], *, progress: ProgressSink | None = None) -> np.ndarray:
            return super().embed(texts)[:, :5]  # 5 columns where 8 were promised

    with pytest.raises(EmbeddingError):
        load_or_compute_embeddings(["dog"], Broken(), tmp_path)
    assert load_or_compute_embeddings([], HashEmbedder(), tmp_path).shape == (0, 8)


def test_minilm_puts_dog_nearer_puppy_than_carburetor() -> None:
    vectors = MiniLMEmbedder().embed(["dog", "puppy", "carburetor"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.1


# --- Descriptors -----------------------------------------------------------------------------


def test_builtin_descriptors_are_deterministic_and_follow_the_probability() -> None:
    assert 35 <= len(BUILTIN_DESCRIPTORS) <= 50
    assert len(set(BUILTIN_DESCRIPTORS)) == len(BUILTIN_DESCRIPTORS)
    concept = Concept(0, "dog", "dog")
    source = BuiltinDescriptors(0.3)
    draws = [source.choose(concept, rng) for rng in [np.random.default_rng(7)] for _ in range(4000)]
    again = [source.choose(concept, rng) for rng in [np.random.default_rng(7)] for _ in range(4000)]
    assert draws == again
    given = [d for d in draws if d is not None]
    assert abs(len(given) / len(draws) - 0.3) < 0.04
    assert set(given) <= set(BUILTIN_DESCRIPTORS)
    assert len(set(given)) > 30  # the whole list gets used
    rng = np.random.default_rng(0)
    assert all(BuiltinDescriptors(0.0).choose(concept, rng) is None for _ in range(100))
    assert all(BuiltinDescriptors(1.0).choose(concept, rng) is not None for _ in range(100))
    with pytest.raises(ConfigError):
        BuiltinDescriptors(1.5)


def test_make_descriptor_source_and_compose_query() -> None:
    none = make_descriptor_source(VocabularyConfig(descriptors="none"))
    assert isinstance(none, NoDescriptors)
    assert none.choose(Concept(0, "dog", "dog"), np.random.default_rng(0)) is None
    builtin = make_descriptor_source(VocabularyConfig(descriptor_probability=0.25))
    assert isinstance(builtin, BuiltinDescriptors) and builtin.probability == 0.25
    assert isinstance(builtin, DescriptorSource)
    assert compose_query("vintage", "sewing machine") == "vintage sewing machine"
    assert compose_query(None, "dog") == "dog"
    assert compose_query("", "dog") == "dog"


# --- Label-set mode --------------------------------------------------------------------------


def _brute_force_label_set(emb: np.ndarray, classes: np.ndarray, fraction: float) -> list[int]:
    scores = []
    for i, row in enumerate(emb):
        best = max(float(row @ c) / (np.linalg.norm(row) * np.linalg.norm(c)) for c in classes)
        scores.append((-best, i))
    keep = max(1, round(fraction * len(emb)))
    return sorted(i for _, i in sorted(scores)[:keep])


@pytest.mark.parametrize("fraction", [0.1, 0.25, 1.0, 0.001])
def test_restrict_to_label_set_matches_brute_force(fraction: float) -> None:
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(200, 16)).astype(np.float32)
    classes = rng.normal(size=(3, 16)).astype(np.float32)
    vocab = _small_vocab(*[f"c{i}" for i in range(200)])
    kept = restrict_to_label_set(vocab, emb, classes, fraction=fraction)
    assert kept.tolist() == _brute_force_label_set(emb, classes, fraction)
    assert len(kept) == max(1, round(fraction * 200))


def test_restrict_to_label_set_breaks_ties_by_index_and_validates() -> None:
    emb = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    classes = np.array([[1.0, 0.0]], dtype=np.float32)
    vocab = _small_vocab("a", "b", "c", "d")
    assert restrict_to_label_set(vocab, emb, classes, fraction=0.5).tolist() == [1, 2]
    with pytest.raises(ConfigError):
        restrict_to_label_set(vocab, emb, classes, fraction=0.0)
    with pytest.raises(VocabularyError):
        restrict_to_label_set(vocab, emb[:3], classes, fraction=0.5)
