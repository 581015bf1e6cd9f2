"""``/api/v1/docs``: the OpenAPI document as one plain HTML page, made here.

FastAPI's own page loads Swagger UI from a CDN, so on an exchange's network without the
internet it was blank. This page needs nothing from outside the gateway (no script, no
style sheet, no font): each endpoint with its summary, description, parameters (where,
type, bounds, whether required) and the answers it may give, and each response schema's
fields. The document it shows is the one at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

__all__ = ["api_reference"]

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em;
       color: #1e293b; }
h2 { margin-top: 2em; border-bottom: 1px solid #cbd5e1; }
code, .path { font-family: ui-monospace, monospace; }
.path { font-size: 1.1em; font-weight: bold; }
.verb { background: #1e3a8a; color: white; padding: 0.1em 0.5em; border-radius: 0.3em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #cbd5e1; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
"""


def api_reference(document: dict[str, Any]) -> str:
    """The HTML page of the OpenAPI *document*: endpoints in the document's order, then
    the schemas of their answers."""
    info = document.get("info", {})
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}: API reference</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}: API reference</h1>",
        "<p>Every endpoint is a <code>GET</code> behind HTTP Basic with the exchange's "
        'passwords. The same, as data: <a href="openapi.json"><code>openapi.json</code></a>.'
        "</p>", "<h2>Endpoints</h2>"
    ]
    for path, operations in document.get("paths", {}).items():
        for verb, operation in operations.items():
            parts += _operation(path, verb, operation)
    schemas = document.get("components", {}).get("schemas", {})
    if schemas:
        parts.append("<h2>Schemas</h2>")
        for name, schema in schemas.items():
            parts += _schema(name, schema)
    parts.append("</body></html>")
    return "\n".join(parts)


def _operation(path: str, verb: str, operation: dict[str, Any]) -> list[str]:
    out = [f'<h3 id="{escape(operation.get("operationId", path))}"><span class="verb">'
           f'{escape(verb.upper())}</span> <span class="path">{escape(path)}</span></h3>']
    if operation.get("summary"):
        out.append(f"<p><b>{escape(operation['summary'])}</b></p>")
    if operation.get("description"):
        out.append(f"<p>{_text(operation['description'])}</p>")
    out += _table(("parameter", "in", "type", "required", "what"), [
        (f"<code>{escape(p.get('name', ''))}</code>", escape(p.get("in", "")),
         escape(_type(p.get("schema", {}))), "yes" if p.get("required") else "no",
         escape(p.get("description", ""))) for p in operation.get("parameters", [])])
    out += _table(("status", "answer"), [
        (escape(str(status)), escape(answer.get("description", "")) + _answer_schema(answer))
        for status, answer in operation.get("responses", {}).items()])
    return out


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """An HTML table of *rows* (their cells HTML already) under *head*; none if no rows."""
    if not rows:
        return []
    return (["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
            + ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows]
            + ["</table>"])


def _answer_schema(answer: dict[str, Any]) -> str:
    schema = answer.get("content", {}).get("application/json", {}).get("schema")
    return f": <code>{escape(_type(schema))}</code>" if schema else ""


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    out = [f'<h3 id="schema-{escape(name)}"><code>{escape(name)}</code></h3>']
    if schema.get("description"):
        out.append(f"<p>{_text(schema['description'])}</p>")
    required = set(schema.get("required", []))
    out += _table(("field", "type", "required"), [
        (f"<code>{escape(field)}</code>", escape(_type(spec)), "yes" if field in required else "no")
        for field, spec in schema.get("properties", {}).items()])
    return out


def _text(text: str) -> str:
    """A docstring's text as HTML: escaped, its ``literals`` as code."""
    return re.sub(r"``(.+?)``", r"<code>\1</code>", escape(text))


def _type(schema: dict[str, Any] | None) -> str:
    """A JSON schema in a few words: ``integer (1 to 1000)``, ``array of Trade``..."""
    if not schema:
        return "any"
    if "$ref" in schema:
        return str(schema["$ref"]).rpartition("/")[2]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_type(option) for option in schema[key])
    kind = schema.get("type", "any")
    if kind == "array":
        items = schema.get("items") or schema.get("prefixItems")
        if isinstance(items, list):
            return "array of [" + ", ".join(_type(item) for item in items) + "]"
        return f"array of {_type(items)}"
    if kind == "object" and "additionalProperties" in schema:
        return f"object of {_type(schema['additionalProperties'])}"
    bounds = [f"{word} {schema[key]}" for key, word in (("minimum", "from"), ("maximum", "to"),
                                                       ("minLength", "length from"),
                                                       ("maxLength", "length to"),
                                                       ("pattern", "matching"))
              if key in schema]
    if "enum" in schema:
        bounds.append("one of " + ", ".join(map(str, schema["enum"])))
    return f"{kind} ({', '.join(bounds)})" if bounds else str(kind)
