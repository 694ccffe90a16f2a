"""Label-set mode through ``ie explore``, with a class name WordNet already has as a lemma (it
used to find no class concept and stop with "label-set mode needs at least one class-name
embedding")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ie_engine.cli import main as ie_main
from ie_engine.config import VocabularyConfig
from ie_engine.vocabulary import build_vocabulary
from tests.worker.conftest import world

pytestmark = pytest.mark.slow
__all__ = ["world"]


def test_a_class_name_that_is_a_lemma_steers_the_run(world, tmp_path: Path) -> None:
    vocab = build_vocabulary(VocabularyConfig(max_concepts=150), data_dir=world["cache"])
    name = next(c.lemma for c in vocab.concepts if c.lemma.isalpha() and c.lemma.islower())
    run_dir = tmp_path / "run"
    code = ie_main([
        "--data-dir", str(world["cache"]), "explore", "--target", str(world["target"]),
        "--preset", "tiny", "--iterations", "1", "--max-concepts", "150",
        "--descriptors", "none", "--class-names", name, "--engine-url", world["url"],
        "--run-dir", str(run_dir), "--quiet",
    ])
    assert code == 0
    queries = json.loads((run_dir / "iterations" / "0001.json").read_text())["queries"]
    assert name in [q["concept"] for q in queries], (name, [q["concept"] for q in queries])
