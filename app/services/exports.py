"""Take-aways of a run from the web app: the model, the dataset, the report, a comparison.

The dataset's manifest is built from the store's image rows (one manifest row per stored row
that the selection keeps, with the concept's lemma from the store), so what a person downloads
says exactly what the dashboard showed. The model and the report read the run folder the
worker wrote (``{data_dir}/runs/{id}/``: checkpoint, curves, iteration summaries).

Every file is written under the run folder's ``exports/`` and served only from there
(:func:`export_file`). The engine's export code is imported when an export is made, never at
start-up: the model export loads torch, which the app process otherwise never does.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidInput, NotFound
from app.numbers import whole_number
from app.services.images import resolve_data_file
from app.settings import Settings
from app.store.concepts import concepts_by_index
from app.store.models import Event, Image, Run, Upload, Veto, VetoAction
from app.store.runs import get_run
from ie_engine.export.dataset import DatasetOptions, Selection
from ie_engine.export.records import ExportImage, RunData, VetoNote, load_run

ExportKind = Literal["model", "dataset", "report"]
FILE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}")
MAX_COMPARED: Final = 8
MAX_TOP: Final = 1_000_000
"""The largest N of a dataset of the top N images."""
OUTPUTS: Final[dict[str, str]] = {
    "model": "model.zip", "dataset": "dataset.zip", "report": "report.html",
}


def run_folder(settings: Settings, run_id: int) -> Path:
    return settings.runs_dir / str(run_id)


def exports_folder(settings: Settings, run_id: int) -> Path:
    return run_folder(settings, run_id) / "exports"


def list_exports(settings: Settings, run_id: int) -> list[dict[str, Any]]:
    """The files made so far: name, size in bytes, modification time."""
    folder = exports_folder(settings, run_id)
    if not folder.is_dir():
        return []
    return [
        {"name": p.name, "bytes": p.stat().st_size, "mtime": p.stat().st_mtime}
        for p in sorted(folder.iterdir())
        if p.is_file() and FILE_NAME.fullmatch(p.name)
    ]


def license_counts(session: Session, run_id: int) -> dict[str, int]:
    """How many of the run's stored images carry each license (the dataset form's filter)."""
    stmt = (select(Image.license, func.count()).where(Image.run_id == run_id)
            .group_by(Image.license).order_by(Image.license))
    return {str(lic): int(n) for lic, n in session.execute(stmt)}


def export_file(settings: Settings, run_id: int, name: str) -> Path:
    """The export ``name`` of run ``run_id``: a regular file directly inside its exports
    folder (links resolved); :class:`NotFound` for anything else."""
    folder = exports_folder(settings, run_id)
    if not FILE_NAME.fullmatch(name):
        raise NotFound(f"run {run_id} has no export named {name[:60]!r}")
    try:
        root = folder.resolve(strict=True)
        path = (folder / name).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise NotFound(f"run {run_id} has no export named {name!r}") from exc
    if path.parent != root or not path.is_file():
        raise NotFound(f"run {run_id} has no export named {name!r}")
    return path


def _images(session: Session, settings: Settings, run_id: int) -> list[ExportImage]:
    rows = list(session.scalars(select(Image).where(Image.run_id == run_id).order_by(Image.id)))
    lemmas = {i: c.lemma for i, c in concepts_by_index(
        session, run_id, {r.concept_index for r in rows}).items()}
    out = []
    for row in rows:
        file = resolve_data_file(settings.data_dir, row.path)
        if file is None:  # a row whose file is gone or lies outside the data folder
            continue
        out.append(ExportImage(
            file=file, sha256=row.sha256, dhash=row.dhash, iteration=row.iteration,
            concept_index=row.concept_index, concept=lemmas.get(row.concept_index, ""),
            query=row.query, image_url=row.image_url, page_url=row.page_url, title=row.title,
            license=row.license, creator=row.creator, engine=row.engine, category=row.category,
            relevance=row.reward, kept=row.kept,
        ))
    return out


def _vetoes(session: Session, run_id: int) -> list[VetoNote]:
    asked = list(session.scalars(
        select(Veto).where(Veto.run_id == run_id, Veto.action != VetoAction.ADD)
        .order_by(Veto.id)))
    lemmas = {i: c.lemma for i, c in concepts_by_index(
        session, run_id, {v.concept_index for v in asked if v.concept_index is not None}).items()}
    applied: dict[int, dict[str, Any]] = {}
    for event in session.scalars(select(Event).where(
            Event.run_id == run_id, Event.kind == "veto-applied").order_by(Event.id)):
        for c in event.payload.get("vetoed", []):
            applied.setdefault(int(c), event.payload)
    notes = []
    for v in asked:
        if v.concept_index is None:
            continue
        payload = applied.get(v.concept_index) if v.action == VetoAction.VETO else None
        detail = ("waiting for the next fetch" if not v.applied else
                  f"applied from iteration {payload.get('iteration')}; "
                  f"{payload.get('replay_removed', 0)} image(s) left the replay buffer"
                  if payload else "applied")
        notes.append(VetoNote(concept_index=v.concept_index,
                              concept=lemmas.get(v.concept_index, f"concept {v.concept_index}"),
                              action=v.action.value, iteration=v.iteration, detail=detail))
    return notes


def run_data(session: Session, settings: Settings, run_id: int) -> RunData:
    """The run as the engine's exports see it: the folder's curves, the store's images,
    vetoes and target."""
    run = get_run(session, run_id)
    folder = run_folder(settings, run_id)
    if not (folder / "iterations").is_dir():
        raise Conflict(f"run {run_id} has no run folder yet: nothing to export")
    data = load_run_folder(folder, run)
    data.images = _images(session, settings, run_id)
    data.vetoes = _vetoes(session, run_id)
    upload = session.get(Upload, run.upload_id) if run.upload_id is not None else None
    if upload is not None:
        data.target = {"name": upload.name or f"upload {upload.id}", "images": upload.n_accepted,
                       "classes": list(upload.class_names)}
    return data


def load_run_folder(folder: Path, run: Run) -> RunData:
    """The folder's curves and summaries, without its checkpoint (which the report and the
    dataset do not need, and whose loading needs torch)."""
    data = load_run(folder, name=run.name or f"Run #{run.id}", read_checkpoint=False)
    data.config = dict(run.config)
    return data


def target_hashes(session: Session, settings: Settings, run_id: int) -> list[int] | None:
    """dHashes of the run's target images (its upload), for the leakage check."""
    from ie_engine.target import load_target

    run = get_run(session, run_id)
    upload = session.get(Upload, run.upload_id) if run.upload_id is not None else None
    if upload is None or not (settings.data_dir / upload.folder).is_dir():
        return None
    size = int(run.config.get("download", {}).get("stored_size", 128))
    return list(load_target(settings.data_dir / upload.folder, max_pixels=settings.max_pixels,
                            size=size, labelled="no").dhashes)


NO_LICENSE_CHOSEN: Final = ("license: choose at least one license, or tick them all to "
                            "export every license")


def dataset_options(form: dict[str, Any]) -> DatasetOptions:
    """Dataset options from the dashboard's form: ``select``, ``top``, ``license`` (a list).

    ``license`` holds the ticked boxes, each exactly as its box says: the "no license" box
    sends ``""`` and keeps the images stored without a license. ``license_boxes`` (true when
    the form carries that field, as the dashboard's does whenever it shows boxes) makes those
    the whole filter, so a form with every box unticked is refused rather than taken as every
    license; a request with neither field keeps every license.
    """
    select_value = str(form.get("select") or "kept")
    if select_value not in ("kept", "top", "all"):
        raise InvalidInput(f"select: {select_value[:20]!r} is not kept, top or all")
    selection: Selection = select_value  # type: ignore[assignment]
    top_text = str(form.get("top") or "500").strip()
    top_n = whole_number(top_text, MAX_TOP)
    if top_n is None or top_n < 1:
        raise InvalidInput(f"top: {top_text[:20]!r} is not a number from 1 to {MAX_TOP:,}")
    licenses = frozenset(str(v) for v in form.get("license") or [])
    if not licenses and form.get("license_boxes"):
        raise InvalidInput(NO_LICENSE_CHOSEN)
    return DatasetOptions(selection=selection, top_n=top_n, licenses=licenses or None,
                          archive=True)


def make_export(session: Session, settings: Settings, run_id: int, kind: ExportKind,
                options: DatasetOptions | None = None) -> Path:
    """Make export ``kind`` of run ``run_id`` under its exports folder; return the file."""
    data = run_data(session, settings, run_id)
    folder = exports_folder(settings, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "report":
        from ie_engine.export.report import write_report

        return write_report(data, folder / OUTPUTS["report"])
    if kind == "dataset":
        from ie_engine.export.command import dataset_meta
        from ie_engine.export.dataset import export_dataset

        opts = options or DatasetOptions(archive=True)
        threshold = int(data.config.get("download", {}).get("dhash_threshold", 4))
        opts = DatasetOptions(selection=opts.selection, top_n=opts.top_n,
                              licenses=opts.licenses, archive=True, leak_threshold=threshold)
        return export_dataset(data.images, folder / OUTPUTS["dataset"], opts,
                              meta=dataset_meta(data),
                              target_hashes=target_hashes(session, settings, run_id))
    if kind == "model":
        if not (run_folder(settings, run_id) / "checkpoint.pt").exists():
            raise Conflict(f"run {run_id} has no checkpoint yet: no model to export")
        from ie_engine.export.model import export_model

        work = Path(tempfile.mkdtemp(prefix=".model-", dir=folder))
        try:
            export_model(run_folder(settings, run_id), work, run=data)
            return _zip_folder(work, folder / OUTPUTS["model"])
        finally:
            shutil.rmtree(work, ignore_errors=True)
    raise InvalidInput(f"unknown export {kind!r}: choose model, dataset or report")


def _zip_folder(folder: Path, path: Path) -> Path:
    """Zip ``folder``'s files under ``model/`` into ``path`` (written aside, then renamed)."""
    tmp = folder / path.name
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.iterdir()):
            if file.is_file() and file != tmp:
                zf.write(file, f"model/{file.name}")
    tmp.replace(path)
    return path


def comparison_html(session: Session, settings: Settings, run_ids: list[int]) -> str:
    """The comparison page of runs ``run_ids`` (two to :data:`MAX_COMPARED`, in order)."""
    from ie_engine.export.compare import build_comparison

    ids = list(dict.fromkeys(run_ids))
    if not 2 <= len(ids) <= MAX_COMPARED:
        raise InvalidInput(f"compare two to {MAX_COMPARED} different runs (got {len(ids)})")
    runs = []
    for run_id in ids:
        run = get_run(session, run_id)
        folder = run_folder(settings, run_id)
        if not (folder / "iterations").is_dir():
            raise Conflict(f"run {run_id} has no run folder yet: nothing to compare")
        data = load_run_folder(folder, run)
        data.name = f"#{run.id} {run.name}".strip()
        data.images = _images(session, settings, run_id)
        upload = session.get(Upload, run.upload_id) if run.upload_id is not None else None
        if upload is not None:
            data.target = {"name": upload.name or f"upload {upload.id}"}
        runs.append(data)
    return build_comparison(runs, title="Runs compared: " + ", ".join(f"#{i}" for i in ids))

