"""Request body parsers that refuse hostile bodies with a clear 400 instead of a 500."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from flows.language.errors import DefinitionError
from flows.language.parse import load_document


def _read(stream: Any) -> bytes:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    data = stream.read(limit + 1) if stream is not None else b""
    if len(data) > limit:
        raise ParseError(f"request body is larger than the limit of {limit:,} bytes")
    return data


def _parse(stream: Any, fmt: str) -> Any:
    data = _read(stream)
    try:
        return load_document(data, fmt=fmt)
    except DefinitionError as exc:
        raise ParseError(f"request body: {exc}") from None


class SafeJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return _parse(stream, "json")


class YAMLParser(BaseParser):
    """`Content-Type: application/yaml`."""

    media_type = "application/yaml"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = _read(stream)
        try:
            doc = load_document(data, fmt="yaml")
        except DefinitionError as exc:
            raise ParseError(f"request body: {exc}") from None
        request = (parser_context or {}).get("request")
        if request is not None:
            # The text as the user wrote it (comments included) is kept with the version.
            request.raw_yaml = data.decode("utf-8")
        return doc


class TextYAMLParser(YAMLParser):
    media_type = "text/yaml"


class XYAMLParser(YAMLParser):
    media_type = "application/x-yaml"
