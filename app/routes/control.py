"""Driving a run: pause, resume, cancel; veto, unveto or add concepts.

Every action is a POST form that works without JavaScript (the reply is a redirect back to the
dashboard, to the view the form came from) and with htmx (the reply is a one-line message for
the page's message area, plus an ``HX-Trigger`` that makes the affected regions fetch
themselves again). Refusals are the app's errors: 409 for a status that does not allow the
action, 400 for an unusable form, 404 for an unknown run or concept.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from app import forms
from app.deps import FormDep, RunId, SessionDep, SettingsDep
from app.errors import InvalidInput
from app.numbers import ID_MAX, whole_number
from app.services.runs import control_run
from app.services.steering import add_concept, steer_concepts
from app.templating import is_htmx, render_fragment

router = APIRouter(prefix="/runs/{run_id}")

CHANGED: Final = "ie:changed"
"""The event an htmx reply triggers on the page: regions listening to it fetch themselves."""
_BACK = re.compile(r"\?[A-Za-z0-9_.~%+=&-]{0,500}")


def _done(request: Request, run_id: RunId, form: FormData, message: str) -> Response:
    """The reply to a successful action: a message for htmx, a redirect back without it."""
    if is_htmx(request):
        return render_fragment(
            request,
            "partials/_flash.html",
            {"message": message},
            headers={"HX-Trigger": CHANGED},
        )
    back = form.get("back")
    query = back if isinstance(back, str) and _BACK.fullmatch(back) else ""
    url = f"{request.url_for('run', run_id=run_id)}{query}"
    return RedirectResponse(url, status_code=303)


def _indices(values: list[str], field: str) -> list[int]:
    """Concept indices from form values; :class:`InvalidInput` for anything else."""
    indices: list[int] = []
    for value in values:
        index = whole_number(value, ID_MAX)
        if index is None:
            raise InvalidInput(f"{field}: {value.strip()[:40]!r} is not a concept number")
        indices.append(index)
    return indices


@router.post("/vetoes", response_model=None, name="steer_concepts", openapi_extra=forms.STEER)
def steer(
    request: Request, session: SessionDep, settings: SettingsDep, run_id: RunId, form: FormDep
) -> Response:
    """Veto or unveto concepts: the ticked ones (``pick``, with ``action`` = veto or unveto),
    or one (a row's button: ``veto_one`` or ``unveto_one`` = its concept index)."""
    action: Literal["veto", "unveto"]
    one = {
        name: [v for v in form.getlist(name) if isinstance(v, str)]
        for name in ("veto_one", "unveto_one")
        if form.getlist(name)
    }
    if one:
        name, values = next(iter(one.items()))
        action = "veto" if name == "veto_one" else "unveto"
        indices = _indices(values[:1], name)
    else:
        requested = form.get("action", "veto")
        if requested not in ("veto", "unveto"):
            raise InvalidInput(f"action: {str(requested)[:40]!r} is neither veto nor unveto")
        action = "veto" if requested == "veto" else "unveto"
        indices = _indices([v for v in form.getlist("pick") if isinstance(v, str)], "pick")
    vetoes = steer_concepts(session, settings, run_id, action, indices)
    done = "Vetoed" if action == "veto" else "Unvetoed"
    return _done(request, run_id, form, f"{done} {len(vetoes)} concept(s).")


@router.post("/concepts", response_model=None, name="add_concept",
             openapi_extra=forms.ADD_CONCEPT)
def add(
    request: Request, session: SessionDep, settings: SettingsDep, run_id: RunId, form: FormDep
) -> Response:
    """Ask the policy to add a concept (``phrase``) at its next step."""
    phrase = form.get("phrase")
    veto = add_concept(session, settings, run_id, phrase if isinstance(phrase, str) else "")
    return _done(request, run_id, form, f"Asked to add {veto.phrase!r}.")


@router.post("/{action}", response_model=None, name="control_run", openapi_extra=forms.CONTROL)
def control(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    run_id: RunId,
    action: Literal["pause", "resume", "cancel"],
    form: FormDep,
) -> Response:
    """Pause, resume or cancel the run (what each does: :mod:`app.services.runs`)."""
    run = control_run(session, settings, run_id, action)
    note = " (at the end of this iteration)" if run.pause_requested else ""
    return _done(request, run_id, form, f"Run {run_id} is {run.status.value}{note}.")
