"""A streaming ``multipart/form-data`` receiver that writes each file straight to disk.

Why not Starlette's ``request.form()``: it keeps every file under 1 MB in memory until the whole
form is parsed, so a folder of 20,000 small images would sit in RAM at once (up to the 2 GB
request cap), and files over 1 MB each hold an open temporary file. Here each file part goes to
its own staging file while it arrives, one open file at a time, and the caps are enforced as
bytes come: the body cap (:class:`UploadTooLarge`, the request stops), the per-file cap (the
file is refused ``too-large`` and the rest of its bytes are dropped), the file count and the
size of text fields.

The parser is python-multipart's (the one Starlette uses), fed chunk by chunk. Writes happen
on the event loop: one chunk (at most 64 kB from the server) at a time, which costs microseconds;
the slow part of an upload, decoding every image, runs in a worker thread afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.errors import InvalidInput, UploadRefused, UploadTooLarge
from app.services.staging import FileRefused, StagedFile

MAX_FIELD_BYTES: Final = 64 * 1024
"""Largest text field (class names, a name)."""
MAX_FIELDS: Final = 50
"""Most text fields in one form."""


@dataclass(frozen=True)
class FormLimits:
    """The caps one form is held to."""

    max_body_bytes: int
    max_files: int
    file_caps: Mapping[str, int]
    """Largest file per field name; fields not named here get ``default_file_cap``."""
    default_file_cap: int


@dataclass
class ReceivedForm:
    """A parsed form: text fields by name, and file parts in arrival order."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[StagedFile] = field(default_factory=list)

    def text(self, name: str) -> str:
        """The first value of text field ``name``, or ``""``."""
        values = self.fields.get(name)
        return values[0] if values else ""


class _Receiver:
    """python-multipart callbacks that route each part to a file or a text field."""

    def __init__(self, staging: Path, limits: FormLimits) -> None:
        self.staging = staging
        self.limits = limits
        self.form = ReceivedForm()
        self.n_files = 0
        self.n_fields = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_name = b""
        self._header_value = b""
        self._reset_part()

    def _reset_part(self) -> None:
        self.name = ""
        self.filename: str | None = None
        self.out: IO[bytes] | None = None
        self.path: Path | None = None
        self.size = 0
        self.cap = 0
        self.refusal: FileRefused | None = None
        self.text = bytearray()

    # -- headers ---------------------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._headers = []
        self._reset_part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers.append((self._header_name.lower(), self._header_value))
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        disposition = next((v for k, v in self._headers if k == b"content-disposition"), b"")
        _, options = parse_options_header(disposition)
        if b"name" not in options:
            raise InvalidInput("a form part has no field name")
        self.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" not in options:
            self.n_fields += 1
            if self.n_fields > MAX_FIELDS:
                raise InvalidInput(f"the form has more than {MAX_FIELDS} text fields")
            return
        self.filename = options[b"filename"].decode("utf-8", "replace")
        if not self.filename:
            return  # an empty file input: browsers send a nameless, empty part
        self.n_files += 1
        if self.n_files > self.limits.max_files:
            raise UploadRefused(
                f"the upload has more than {self.limits.max_files:,} files; upload fewer at once"
            )
        self.cap = self.limits.file_caps.get(self.name, self.limits.default_file_cap)
        self.path = self.staging / f"{self.n_files:06d}.part"
        self.out = self.path.open("xb")

    # -- data ------------------------------------------------------------------------------
    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        length = end - start
        if self.filename is None:
            if len(self.text) + length > MAX_FIELD_BYTES:
                raise InvalidInput(
                    f"the field {self.name!r} is longer than {MAX_FIELD_BYTES:,} bytes"
                )
            self.text += data[start:end]
            return
        self.size += length
        if self.out is None:
            return  # refused already, or an empty file input: drop the bytes
        if self.size > self.cap:
            limit = f"the file is over the limit of {self.cap:,} bytes"
            self._drop(FileRefused("too-large", limit))
            return
        self.out.write(data[start:end])

    def on_part_end(self) -> None:
        if self.filename is None:
            self.form.fields.setdefault(self.name, []).append(self.text.decode("utf-8", "replace"))
        elif self.filename:
            if self.out is not None:
                self.out.close()
                self.out = None
            staged = None if self.refusal else self.path
            self.form.files.append(
                StagedFile(self.filename, staged, self.size, self.name, self.refusal)
            )
        self._reset_part()

    def _drop(self, refusal: FileRefused) -> None:
        """Stop keeping the current file: close and delete what was written."""
        if self.out is not None:
            self.out.close()
            self.out = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.refusal = refusal

    def close(self) -> None:
        """Close a file left open by an interrupted request."""
        if self.out is not None:
            self.out.close()
            self.out = None


async def receive_form(
    chunks: AsyncIterable[bytes], content_type: str, *, staging: Path, limits: FormLimits
) -> ReceivedForm:
    """Parse a multipart body arriving as ``chunks`` into ``staging``; see the module docstring.

    Raises :class:`InvalidInput` for a body that is not multipart form data,
    :class:`UploadTooLarge` past ``max_body_bytes`` and :class:`UploadRefused` past
    ``max_files``. Files written before an error stay in ``staging`` for the caller to remove.
    """
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise InvalidInput("send the files as multipart/form-data (a form with a file input)")
    receiver = _Receiver(staging, limits)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin", "on_part_data", "on_part_end", "on_header_field",
            "on_header_value", "on_header_end", "on_headers_finished",
        )
    }
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > limits.max_body_bytes:
                raise UploadTooLarge(
                    f"the upload is over the limit of {limits.max_body_bytes:,} bytes"
                )
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise InvalidInput(f"the form data is malformed: {exc}") from exc
    finally:
        receiver.close()
    return receiver.form
