"""The concept vocabulary: WordNet nouns, user concepts, descriptors, embeddings, label sets."""

from ie_engine.vocabulary.cache import (
    atomic_write,
    embedding_cache_key,
    embedding_cache_path,
    load_or_compute_embeddings,
)
from ie_engine.vocabulary.concepts import (
    Vocabulary,
    add_concepts,
    build_vocabulary,
    class_name_concepts,
    spread_indices,
)
from ie_engine.vocabulary.descriptors import (
    BUILTIN_DESCRIPTORS,
    BuiltinDescriptors,
    DescriptorSource,
    NoDescriptors,
    compose_query,
    make_descriptor_source,
)
from ie_engine.vocabulary.embedder import MiniLMEmbedder
from ie_engine.vocabulary.labelset import label_set_scores, restrict_to_label_set
from ie_engine.vocabulary.wordnet import (
    DEFAULT_WORDNET_DIR,
    WordNetNouns,
    install_nltk_wordnet,
    load_wordnet_concepts,
    load_wordnet_nouns,
    open_wordnet,
    resolve_synsets,
    synsets_under,
)

__all__ = [
    "BUILTIN_DESCRIPTORS",
    "DEFAULT_WORDNET_DIR",
    "BuiltinDescriptors",
    "DescriptorSource",
    "MiniLMEmbedder",
    "NoDescriptors",
    "Vocabulary",
    "WordNetNouns",
    "add_concepts",
    "atomic_write",
    "build_vocabulary",
    "class_name_concepts",
    "compose_query",
    "embedding_cache_key",
    "embedding_cache_path",
    "install_nltk_wordnet",
    "label_set_scores",
    "load_or_compute_embeddings",
    "load_wordnet_concepts",
    "load_wordnet_nouns",
    "make_descriptor_source",
    "open_wordnet",
    "resolve_synsets",
    "restrict_to_label_set",
    "spread_indices",
    "synsets_under",
]
