"""The request bodies of the app's forms, as ``/openapi.json`` describes them.

The routes read their forms themselves: :data:`app.deps.FormDep` hands them the fields, and
each handler refuses an unusable one with the app's own error, a 400 naming the field (the
launch form comes back listing every field to fix); the upload streams its multipart body to
disk (:mod:`app.services.multipart`). FastAPI therefore validates none of these bodies: an
``openapi_extra`` on each route only *describes* the fields its handler reads, with the
constraints the handler enforces, so that clients and schemathesis know what to send. The
numbers and choices come from the constants the handlers check against.

Every URL-encoded form of a logged-in browser also carries ``csrf_token`` (:mod:`app.access`);
the upload form carries it in its URL. Requests with ``Authorization: Bearer`` need neither.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any, Final, get_args

from app.access import CSRF_FIELD
from app.numbers import ID_MAX
from app.services.engines import LICENSE_CHOICES, OFFLINE, WEB
from app.services.exports import MAX_TOP
from app.services.multipart import MAX_FIELD_BYTES
from app.services.runs import BOUNDS, MAX_ROOTS, MAX_ROOTS_CHARS, PRESETS
from app.services.steering import MAX_AT_ONCE, MAX_PHRASE
from app.services.uploads import ARCHIVE_FIELD, FILES_FIELD
from ie_engine.bases import BASES
from ie_engine.export.dataset import Selection

Schema = dict[str, Any]
URLENCODED: Final = "application/x-www-form-urlencoded"
MULTIPART: Final = "multipart/form-data"
MAX_FORM_FIELDS: Final = 1000
"""The most fields ``request.form()`` reads from one URL-encoded form (Starlette's default); a
form with more is a 400."""


def text(description: str, *, max_length: int | None = None, min_length: int | None = None,
         pattern: str | None = None) -> Schema:
    schema: Schema = {"type": "string", "description": description}
    if min_length is not None:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    if pattern is not None:
        schema["pattern"] = pattern
    return schema


def choice(values: Iterable[str], description: str, default: str | None = None) -> Schema:
    schema: Schema = {"type": "string", "enum": list(values), "description": description}
    if default is not None:
        schema["default"] = default
    return schema


def whole(low: int, high: int, description: str, *, blank: bool = False) -> Schema:
    """A whole number from ``low`` to ``high``; with ``blank``, an empty field too (a number
    input left empty)."""
    number: Schema = {"type": "integer", "minimum": low, "maximum": high}
    if not blank:
        return {**number, "description": description}
    return {"anyOf": [number, {"type": "string", "const": ""}], "description": description}


def many(item: Schema, description: str, *, max_items: int | None = None) -> Schema:
    """A field sent once per value (``pick=1&pick=2``: ticked boxes)."""
    schema: Schema = {"type": "array", "items": item, "description": description}
    if max_items is not None:
        schema["maxItems"] = max_items
    return schema


def file(description: str) -> Schema:
    return {"type": "string", "contentMediaType": "application/octet-stream",
            "description": description}


def form_body(fields: dict[str, Schema], *, required: Sequence[str] = (),
              body_required: bool | None = None, media_type: str = URLENCODED,
              csrf: bool = True, parameters: Sequence[Schema] = ()) -> dict[str, Any]:
    """An ``openapi_extra`` that describes a route's form: ``fields`` (plus ``csrf_token`` for a
    URL-encoded form of a logged-in browser), ``required`` ones among them, and query
    ``parameters`` the route's own parameters do not declare. The body is required when a
    field is, unless ``body_required`` says otherwise."""
    properties = copy.deepcopy(fields)  # one route's description shares nothing with another's
    if csrf and media_type == URLENCODED:
        properties[CSRF_FIELD] = copy.deepcopy(CSRF_TOKEN)
    if media_type == URLENCODED:
        room = MAX_FORM_FIELDS - (len(properties) - 1)  # the other fields sent once each
        for prop in properties.values():
            if prop.get("type") == "array":
                prop["maxItems"] = min(prop.get("maxItems", room), room)
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    needed = bool(required) if body_required is None else body_required
    extra: dict[str, Any] = {
        "requestBody": {"required": needed, "content": {media_type: {"schema": schema}}}
    }
    if parameters:
        extra["parameters"] = copy.deepcopy(list(parameters))
    return extra


CSRF_TOKEN: Final = text("The session's CSRF token, for a form sent with the session cookie "
                         "(or send it as the X-CSRF-Token header); not needed with "
                         "`Authorization: Bearer`.")
BACK: Final = text("Where a form sent without htmx returns: the dashboard's query string "
                   "(`?sort=reward&page=2`, at most 500 characters); anything else returns to "
                   "the dashboard as it opens.")
CONCEPT: Final = whole(0, ID_MAX, "A concept's number (its index in the run's vocabulary).")

LOGIN: Final = form_body({
    "token": text("The access token."),
    "next": text("Where to go once logged in: a path of this site; anything else goes to `/`."),
}, required=["token"], csrf=False)

LOGOUT: Final = form_body({})

UPLOAD: Final = form_body({
    FILES_FIELD: many(file("An image of a picked folder; its file name is its path in the "
                           "folder (`parrot/1.jpg`: the first folder names its class)."),
                      "The images of a picked folder (at most IE_MAX_FILES files of at most "
                      "IE_MAX_FILE_BYTES each, IE_MAX_UPLOAD_BYTES in all)."),
    ARCHIVE_FIELD: file("A zip archive of images (folders inside name the classes; at most "
                        "IE_MAX_UPLOAD_BYTES)."),
    "name": text(f"The upload's name (at most {MAX_FIELD_BYTES:,} bytes sent; 255 characters "
                 "kept); empty: the folder's or the archive's name.",
                 max_length=MAX_FIELD_BYTES),
    "class_names": text(f"The class names, one per line or comma-separated (at most "
                        f"{MAX_FIELD_BYTES:,} bytes); empty: the folder names.",
                        max_length=MAX_FIELD_BYTES),
}, media_type=MULTIPART, body_required=True, parameters=[{
    "name": CSRF_FIELD, "in": "query", "required": False, "schema": {"type": "string"},
    "description": "The session's CSRF token, for an upload sent with the session cookie (or "
                   "send it as the X-CSRF-Token header); not needed with `Authorization: "
                   "Bearer`. In the URL: the body is streamed to disk, not read before the check.",
}])
"""The upload form: at least one file (or the answer is a 400)."""


def _launch_number(field: str, what: str) -> Schema:
    low, high = BOUNDS[field]
    return whole(low, high, f"{what}; empty: the preset's.", blank=True)


LAUNCH: Final = form_body({
    "upload_id": whole(1, ID_MAX, "The upload to explore for (one with accepted images)."),
    "name": text("The run's name (runs of white space count as one); empty: the upload's name "
                 "and the preset.", max_length=255),
    "search_engine": choice((OFFLINE, WEB), "The image web: the built-in offline corpus, or "
                            "the web engines of IE_ENGINE_CONFIG (`web` only when it names "
                            "some).", default=OFFLINE),
    "engines": many(text("A web engine's name in IE_ENGINE_CONFIG."),
                    "The web engines to search (with `web`: at least one)."),
    "license_filter": choice(LICENSE_CHOICES, "Which licenses the web engines may return "
                             "(`any` with the offline web).", default="any"),
    "license_codes": text("With `custom`: license codes, comma-separated (cc0, pd, by, by-sa, "
                          "by-nd, by-nc, ...)."),
    "preset": choice(PRESETS, "The engine's preset.", default=PRESETS[0]),
    "base": choice(("", *BASES), "Where the backbone's weights start (`ie bases`); empty: "
                   "the preset's own. One whose weights this machine lacks is refused, saying "
                   "which file to put where.", default=""),
    "iterations": _launch_number("iterations", "Iterations"),
    "queries_per_iteration": _launch_number("queries_per_iteration",
                                            "Search queries per iteration"),
    "images_per_query": _launch_number("images_per_query", "Images kept per query"),
    "seed": whole(*BOUNDS["seed"], "The random seed; empty: 0.", blank=True),
    "class_names": text("Class names for label-set mode, one per line or comma-separated; "
                        "empty: explore the whole vocabulary."),
    "roots": text(f"Only concepts under these WordNet noun synsets (`bird.n.01, fruit.n.01`: "
                  f"at most {MAX_ROOTS}, comma- or space-separated, each one WordNet has); "
                  "empty: every noun.", max_length=MAX_ROOTS_CHARS),
}, required=["upload_id"])

STEER: Final = form_body({
    "pick": many(CONCEPT, "The ticked concepts, vetoed or unvetoed by `action` (at most "
                 f"{MAX_AT_ONCE:,}; a form holds at most {MAX_FORM_FIELDS:,} fields in all).",
                 max_items=MAX_AT_ONCE),
    "action": choice(("veto", "unveto"), "What to do with the ticked concepts.",
                     default="veto"),
    "veto_one": {**CONCEPT, "description": "One concept to veto (a row's button); "
                 "`pick` and `action` are then ignored."},
    "unveto_one": {**CONCEPT, "description": "One concept to unveto (a row's button); "
                   "`pick` and `action` are then ignored."},
    "back": BACK,
}, body_required=True)
"""Vetoes: ``veto_one``, ``unveto_one`` or at least one ``pick`` (or the answer is a 400)."""

ADD_CONCEPT: Final = form_body({
    "phrase": text(f"The concept to add (at most {MAX_PHRASE} characters once runs of white "
                   "space count as one).", min_length=1, max_length=MAX_PHRASE,
                   pattern=r"\S"),
    "back": BACK,
}, required=["phrase"])

CONTROL: Final = form_body({"back": BACK})

EXPORT: Final = form_body({
    "select": choice(get_args(Selection), "`dataset`: the kept images, the top N by "
                     "relevance, or every image.", default="kept"),
    "top": whole(1, MAX_TOP, "`dataset` with `top`: N; empty: 500.", blank=True),
    "license": many(text("A license code of the run's images, exactly as stored; empty: the "
                         "images stored without a license (the \"no license\" box)."),
                    "`dataset`: keep only images under these licenses (the ticked boxes). "
                    "None: every license, unless `license_boxes` is sent."),
    "license_boxes": text("`dataset`: sent (any value) by the dashboard's form when it shows "
                          "license boxes, so that `license` is the whole filter: with no "
                          "`license` the answer is a 400 (choose at least one license)."),
})
