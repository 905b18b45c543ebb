"""A Django form generated from a JSON Schema object: the Run form of a workflow page (its input
schema) and the form of an approval. Each property is a field of the closest kind; what a field
cannot say (patterns, ranges, nested shapes) jsonschema checks, and its errors land on the field
they are about.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django import forms
from jsonschema import Draft202012Validator

JSON_HELP = "JSON"
LINES_HELP = "One per line."


class SchemaForm(forms.Form):
    def __init__(
        self,
        schema: Mapping[str, Any] | None,
        data: Any = None,
        *,
        prefix: str | None = None,
    ) -> None:
        super().__init__(data, prefix=prefix)
        self.schema = dict(schema or {})
        required = set(self.schema.get("required", ()))
        self.kinds: dict[str, str] = {}
        for name, prop in (self.schema.get("properties") or {}).items():
            if isinstance(prop, Mapping):
                self.fields[name], self.kinds[name] = _field(name, prop, name in required)
        self.extra_json = not self.fields and self.schema.get("type") in (None, "object")
        if self.extra_json:
            # No properties to make fields of: the whole input as one JSON document.
            self.fields["input"] = forms.CharField(
                required=False,
                widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
                help_text="The input as a JSON object.",
                initial="{}",
            )
            self.kinds["input"] = "json"

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        value = self.value()
        for error in sorted(Draft202012Validator(self.schema).iter_errors(value), key=str):
            path = list(error.absolute_path)
            field = str(path[0]) if path and str(path[0]) in self.fields else None
            where = "/".join(str(p) for p in path)
            message = (
                error.message if field is None or len(path) == 1 else f"{where}: {error.message}"
            )
            self.add_error(field, message)
        return cleaned

    def value(self) -> Any:
        """The answers as the schema's JSON value; empty optional fields are left out."""
        if self.extra_json:
            return self.cleaned_data.get("input") or {}
        value: dict[str, Any] = {}
        for name, kind in self.kinds.items():
            raw = self.cleaned_data.get(name)
            if kind == "boolean":
                value[name] = bool(raw)
            elif raw not in (None, "", []):
                value[name] = raw
        return value

    def error_list(self) -> list[str]:
        """Every error as one line, naming its field."""
        lines = []
        for field, errors in self.errors.items():
            label = "input" if field == "__all__" else field
            lines.extend(f"{label}: {error}" for error in errors)
        return lines


def _field(name: str, prop: Mapping[str, Any], required: bool) -> tuple[forms.Field, str]:
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    common: dict[str, Any] = {
        "required": required and kind != "boolean",
        "label": prop.get("title") or name,
        "help_text": prop.get("description", ""),
    }
    default = prop.get("default")
    if "enum" in prop:
        choices = [(json.dumps(v) if not isinstance(v, str) else v, str(v)) for v in prop["enum"]]
        if not required:
            choices = [("", "---------"), *choices]
        field = forms.TypedChoiceField(
            choices=choices, coerce=_enum_coercer(prop["enum"]), empty_value=None, **common
        )
        field.initial = default
        return field, "enum"
    if kind == "boolean":
        return forms.BooleanField(initial=bool(default), **common), "boolean"
    if kind == "integer":
        return forms.IntegerField(
            initial=default, min_value=prop.get("minimum"), max_value=prop.get("maximum"), **common
        ), "integer"
    if kind == "number":
        return forms.FloatField(
            initial=default, min_value=prop.get("minimum"), max_value=prop.get("maximum"), **common
        ), "number"
    if kind == "string":
        multiline = prop.get("maxLength", 0) > 200 or prop.get("format") == "textarea"
        widget = forms.Textarea(attrs={"rows": 3}) if multiline else None
        return forms.CharField(
            initial=default,
            max_length=prop.get("maxLength"),
            min_length=prop.get("minLength"),
            strip=False,
            widget=widget,
            **common,
        ), "string"
    items = prop.get("items") if isinstance(prop.get("items"), Mapping) else {}
    if kind == "array" and items.get("type") == "string" and "enum" not in items:
        common["help_text"] = " ".join(filter(None, [common["help_text"], LINES_HELP]))
        return LinesField(
            initial="\n".join(default) if isinstance(default, list) else None,
            widget=forms.Textarea(attrs={"rows": 3}),
            **common,
        ), "array"
    common["help_text"] = " ".join(filter(None, [common["help_text"], JSON_HELP]))
    return JSONValueField(
        initial=json.dumps(default, indent=2) if default is not None else None,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        **common,
    ), "json"


def _enum_coercer(options: list[Any]) -> Any:
    by_text = {json.dumps(v) if not isinstance(v, str) else v: v for v in options}
    return lambda text: by_text[text]


class LinesField(forms.CharField):
    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value)
        return [line.strip() for line in text.splitlines() if line.strip()]


class JSONValueField(forms.CharField):
    def to_python(self, value: Any) -> Any:
        text = super().to_python(value)
        if text in ("", None):
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not JSON: {exc.msg} (line {exc.lineno})") from exc
