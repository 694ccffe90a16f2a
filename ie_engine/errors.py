"""The engine's exception tree.

Every error the engine raises on purpose derives from :class:`ExplorerError`::

    ExplorerError
    ├── ConfigError            a knob has an impossible value, or presets/flags contradict
    ├── VocabularyError        WordNet files missing or unreadable, an empty vocabulary
    ├── EmbeddingError         the text embedder cannot be loaded, or a cache is corrupt
    ├── TargetError            the target folder is missing, empty or has no readable image
    ├── SearchError            a search engine failed as a whole (not one result)
    │   └── CorpusError        the offline corpus is missing, stale or malformed
    ├── DownloadError          raised only for setup problems; per-image failures are *recorded*
    │                          as :class:`ie_engine.types.DownloadFailure`, never raised
    ├── TrainingError          training cannot go on
    │   └── NonFiniteLossError the loss became NaN or infinite: the run stops at once
    ├── CheckpointError        a checkpoint is missing, corrupt or from an incompatible config
    └── Cancelled              a cooperative cancel request was honoured
"""

from __future__ import annotations


class ExplorerError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(ExplorerError):
    """A configuration value is invalid."""


class VocabularyError(ExplorerError):
    """The concept vocabulary cannot be built."""


class EmbeddingError(ExplorerError):
    """Text embeddings cannot be computed or loaded."""


class TargetError(ExplorerError):
    """The target image set is unusable."""


class SearchError(ExplorerError):
    """A search engine failed as a whole."""


class CorpusError(SearchError):
    """The offline corpus is missing or malformed."""


class DownloadError(ExplorerError):
    """The downloader cannot be set up (per-image failures are recorded, not raised)."""


class TrainingError(ExplorerError):
    """Self-supervised training cannot continue."""


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"non-finite loss {value!r} at step {step}; the run stops here")
        self.step = step
        self.value = value


class CheckpointError(ExplorerError):
    """A checkpoint is missing, corrupt or incompatible."""


class Cancelled(ExplorerError):
    """A cooperative cancel request was honoured."""


__all__ = [
    "Cancelled",
    "CheckpointError",
    "ConfigError",
    "CorpusError",
    "DownloadError",
    "EmbeddingError",
    "ExplorerError",
    "NonFiniteLossError",
    "SearchError",
    "TargetError",
    "TrainingError",
    "VocabularyError",
]
