"""The upload form, read as it streams in and bounded while it does.

FastAPI's ``UploadFile`` parsing reads the whole request body (spooling files to disk) before the handler
runs, so a chunked body without ``Content-Length`` was received in full before its size could be refused.
:func:`read_upload_form` reads ``request.stream()`` itself and feeds python-multipart chunk by chunk,
counting the bytes: past ``limit`` it stops reading and raises ``too_large`` (so at most ``limit`` plus one
chunk is ever read), and the parts are kept in memory (bounded by the same limit), never on disk. Part
counts and form-field sizes are bounded too, file names are checked
(:func:`stream.dashboard.uploads.check_filename`: ``bad_filename``, duplicates included) and a malformed or
truncated body is a ``format`` refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from stream.dashboard.uploads import UploadError, check_filename

#: File parts one upload may hold (a WFDB record is a header and a few signal files).
MAX_FILES = 32
#: Form fields (``model``, ``fs``, ``leads``) one upload may hold, and the bytes of one.
MAX_FIELDS = 16
MAX_FIELD_BYTES = 4096
#: The form field that carries the files.
FILES_FIELD = "files"


@dataclass
class UploadForm:
    """A parsed upload: ``files`` name -> bytes (names checked, unique), ``fields`` name -> text (the last
    value of a repeated field), ``received`` bytes of body read."""

    files: dict[str, bytes] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    received: int = 0


class _Parts:
    """python-multipart callbacks collecting the parts of one form."""

    def __init__(self, form: UploadForm) -> None:
        self.form = form
        self.n_files = 0
        self.n_fields = 0
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.name = ""
        self.filename: str | None = None
        self.data = bytearray()
        self.open = False
        self.ended = False

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.disposition, self.name, self.filename = b"", "", None
        self.data = bytearray()
        self.open = True

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.strip().lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        try:
            self.name = options[b"name"].decode()
        except (KeyError, UnicodeDecodeError) as exc:
            raise UploadError(
                "format", "a form part has no (UTF-8) Content-Disposition name"
            ) from exc
        if b"filename" in options:
            if self.name != FILES_FIELD:
                raise UploadError(
                    "format", f"files go in the {FILES_FIELD!r} field, not {self.name[:64]!r}"
                )
            self.n_files += 1
            if self.n_files > MAX_FILES:
                raise UploadError("format", f"more than {MAX_FILES} files in one upload")
            try:
                self.filename = options[b"filename"].decode()
            except UnicodeDecodeError as exc:
                raise UploadError("bad_filename", "a file name is not valid UTF-8") from exc
            if not self.filename:
                return  # a browser's empty file input: ignored if it is empty (on_part_end)
            check_filename(self.filename)
            if self.filename in self.form.files:
                raise UploadError(
                    "bad_filename", f"file {self.filename!r} is uploaded more than once"
                )
        else:
            self.n_fields += 1
            if self.n_fields > MAX_FIELDS:
                raise UploadError("format", f"more than {MAX_FIELDS} form fields in one upload")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.filename is None and len(self.data) + end - start > MAX_FIELD_BYTES:
            raise UploadError(
                "format", f"form field {self.name[:64]!r} is over {MAX_FIELD_BYTES} bytes"
            )
        self.data += data[start:end]

    def on_part_end(self) -> None:
        if self.filename is None:
            try:
                self.form.fields[self.name] = self.data.decode()
            except UnicodeDecodeError as exc:
                raise UploadError(
                    "format", f"form field {self.name[:64]!r} is not UTF-8 text"
                ) from exc
        elif self.filename:
            self.form.files[self.filename] = bytes(self.data)
        elif self.data:  # content under an empty file name (an empty file input is ignored)
            check_filename(self.filename)
        self.data = bytearray()
        self.open = False

    def on_end(self) -> None:
        self.ended = True


async def read_upload_form(request: Request, limit: int) -> UploadForm:
    """The ``multipart/form-data`` body of ``request``, read as it arrives and refused (``too_large``) as
    soon as more than ``limit`` bytes came, declared or not; :class:`UploadError` for anything refused."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError(
            "format", "send the upload as multipart/form-data (files, model, fs, leads)"
        )
    form = UploadForm()
    parts = _Parts(form)
    try:
        parser = MultipartParser(params[b"boundary"], parts.callbacks())
        async for chunk in request.stream():
            form.received += len(chunk)
            if form.received > limit:
                raise UploadError(
                    "too_large", f"upload is over the {limit}-byte limit (read {form.received})"
                )
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise UploadError("format", f"malformed multipart body: {exc}") from exc
    except ClientDisconnect as exc:
        raise UploadError("format", "the client went away before its upload was complete") from exc
    if parts.open or not parts.ended:
        raise UploadError("format", "the multipart body ends before its closing boundary")
    return form
