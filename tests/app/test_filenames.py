"""Client-given paths: what is refused, what labels they carry, the names we store."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.services.filenames import (
    infer_labels,
    inside,
    label_dirs,
    split_given_path,
    stored_name,
    unique_name,
)
from app.services.staging import FileRefused


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("../../etc/cron.d/evil.png", "path-traversal"),
        ("photos/../../evil.png", "path-traversal"),
        ("photos\\..\\..\\evil.png", "path-traversal"),
        ("/etc/passwd", "absolute-path"),
        ("C:\\Windows\\evil.png", "absolute-path"),
        ("c:evil.png", "absolute-path"),
        ("photos/.DS_Store", "hidden"),
        ("photos/.git/config", "hidden"),
        ("__MACOSX/photos/._a.png", "hidden"),
        ("photos/a\x00.png", "path-traversal"),
        ("./", "path-traversal"),
    ],
)
def test_unsafe_paths_are_refused(given: str, reason: str) -> None:
    with pytest.raises(FileRefused) as caught:
        split_given_path(given)
    assert caught.value.reason == reason


def test_safe_paths_split_into_components() -> None:
    assert split_given_path("photos/birds/parrot.png") == ["photos", "birds", "parrot.png"]
    assert split_given_path("photos//./birds\\parrot.png") == ["photos", "birds", "parrot.png"]


@pytest.mark.parametrize(
    ("paths", "labels", "rests"),
    [
        # a picked folder holding class folders: the folder goes, the classes stay
        (["photos/birds/a.png", "photos/cats/b.png"], ["birds", "cats"], [["a.png"], ["b.png"]]),
        # class folders at the top (a zip without a root folder)
        (["birds/a.png", "cats/x/b.png"], ["birds", "cats"], [["a.png"], ["x", "b.png"]]),
        # a single class folder is no labelling
        (["birds/a.png", "birds/b.png"], [None, None], [["a.png"], ["b.png"]]),
        # one file outside any class folder: no labels at all
        (["photos/birds/a.png", "photos/c.png"], [None, None], [["birds", "a.png"], ["c.png"]]),
        (["a.png"], [None], [["a.png"]]),
    ],
)
def test_labels_are_first_level_folders_when_every_file_has_one(
    paths: list[str], labels: list[str | None], rests: list[list[str]]
) -> None:
    got_labels, got_rests = infer_labels([p.split("/") for p in paths])
    assert got_labels == labels
    assert got_rests == rests


def test_stored_names_are_safe_and_take_the_detected_extension() -> None:
    assert stored_name(["parrot.png"], "jpg") == "parrot.jpg"
    assert stored_name(["x", "Perroquet à tête.PNG"], "png") == "x_Perroquet_a_tete.png"
    assert stored_name(["<script>.png"], "png") == "script.png"
    assert stored_name(["___.png"], "png") == "image.png"
    assert len(stored_name(["a" * 300 + ".png"], "png")) <= 104


def test_label_folders_are_distinct_and_names_unique() -> None:
    dirs = label_dirs(["golden retriever", "golden_retriever", None, "..", "golden retriever"])
    assert dirs == {
        "golden retriever": "golden_retriever",
        "golden_retriever": "golden_retriever-2",
        None: "_",
        "..": "label",
    }
    taken: set[str] = set()
    assert [unique_name(n, taken) for n in ("a.png", "A.png", "a.png")] == [
        "a.png",
        "A-2.png",
        "a-3.png",
    ]


def test_inside_follows_links(tmp_path: Path) -> None:
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "escape").symlink_to(tmp_path)
    assert inside(folder / "a" / "b.png", folder)
    assert not inside(folder / "escape" / "b.png", folder)
    assert not inside(folder / ".." / "b.png", folder)
