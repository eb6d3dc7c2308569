"""The chart spec allow-list: a Vega-Lite spec reaches the page only if nothing in it can leave the page.

A model writes the chart, and a dataset can carry instructions to a model, so a spec is untrusted. Allowed:
inline data (`data.values`), the usual marks, encoding channels and transforms, titles, sizes and style.
Refused: any data source but inline values (`url`, named or generated data, `datasets`), `image` marks and
`href`/`url` channels, a `loader`, signals, params and every expression (`expr`, `*Expr`, `calculate`,
string filters, condition tests), `usermeta`, and any URL-like string outside the data itself. The page
restricts vega-embed's loader too, and its CSP allows no connection but to the gateway.
"""

from __future__ import annotations

import re
from typing import Any

SCHEMA_URL = re.compile(r"^https://vega\.github\.io/schema/vega-lite/v[0-9]+(\.[0-9]+)*\.json$")
URL_LIKE = re.compile(r"(^\s*//)|([a-z][a-z0-9+.-]*:\s*//)|(^\s*(javascript|data|blob|file|vbscript):)", re.I)

TOP_LEVEL = {
    "$schema", "title", "description", "width", "height", "autosize", "padding", "background", "data",
    "mark", "encoding", "transform", "layer", "hconcat", "vconcat", "concat", "columns", "facet", "spec",
    "repeat", "resolve", "config", "name", "align", "bounds", "center", "spacing",
}  # fmt: skip
MARKS = {
    "area", "bar", "circle", "line", "point", "rect", "rule", "square", "text", "tick", "trail", "arc",
    "boxplot", "errorband", "errorbar",
}  # fmt: skip
CHANNELS = {
    "x", "y", "x2", "y2", "xOffset", "yOffset", "xError", "xError2", "yError", "yError2", "theta", "theta2",
    "radius", "radius2", "color", "fill", "stroke", "opacity", "fillOpacity", "strokeOpacity", "strokeWidth",
    "strokeDash", "size", "angle", "shape", "text", "tooltip", "detail", "order", "row", "column", "facet",
    "key",
}  # fmt: skip
TRANSFORMS = {
    "aggregate", "bin", "timeUnit", "fold", "window", "joinaggregate", "stack", "density", "regression",
    "loess", "quantile", "flatten", "pivot", "sample", "extent", "filter", "impute",
}  # fmt: skip
# Keys refused wherever they appear: data sources other than inline values, and everything that evaluates.
FORBIDDEN = {
    "url", "href", "loader", "signals", "params", "selection", "expr", "calculate", "test", "usermeta",
    "datasets", "sequence", "sphere", "graticule", "lookup", "on", "update", "bind", "$ref", "image",
}  # fmt: skip


class ChartRefused(ValueError):
    """The spec holds something outside the allow-list (the message says what, for the log)."""


def check_chart(spec: Any) -> dict[str, Any]:
    """The spec unchanged when it is allowed; ChartRefused otherwise."""
    if not isinstance(spec, dict):
        raise ChartRefused("a chart spec must be an object")
    _view(spec, "spec", top=True)
    return spec


def safe_chart(spec: Any) -> dict[str, Any] | None:
    """The spec if allowed, else None (the answer is shown without its chart)."""
    if spec is None:
        return None
    try:
        return check_chart(spec)
    except ChartRefused:
        return None


def _view(spec: dict[str, Any], where: str, top: bool = False) -> None:
    for key, value in spec.items():
        at = f"{where}.{key}"
        if key not in TOP_LEVEL:
            raise ChartRefused(f"{at} is not allowed")
        if key == "$schema":
            if not (isinstance(value, str) and SCHEMA_URL.match(value)):
                raise ChartRefused(f"{at} must be a Vega-Lite schema URL")
        elif key == "data":
            _data(value, at)
        elif key == "mark":
            _mark(value, at)
        elif key == "encoding":
            _encoding(value, at)
        elif key == "transform":
            _transforms(value, at)
        elif key in ("layer", "hconcat", "vconcat", "concat"):
            if not isinstance(value, list):
                raise ChartRefused(f"{at} must be a list of views")
            for i, part in enumerate(value):
                _view(_object(part, f"{at}[{i}]"), f"{at}[{i}]")
        elif key == "spec":
            _view(_object(value, at), at)
        else:
            _plain(value, at)


def _object(value: Any, at: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ChartRefused(f"{at} must be an object")
    return value


def _data(value: Any, at: str) -> None:
    data = _object(value, at)
    if set(data) - {"values", "name", "format"} or "values" not in data:
        raise ChartRefused(f"{at} must be inline: {{'values': [...]}}")
    if not isinstance(data["values"], list):
        raise ChartRefused(f"{at}.values must be a list of records")
    if "format" in data:
        _plain(data["format"], f"{at}.format")
    if "name" in data:
        _plain(data["name"], f"{at}.name")


def _mark(value: Any, at: str) -> None:
    kind = value if isinstance(value, str) else _object(value, at).get("type")
    if kind not in MARKS:
        raise ChartRefused(f"{at}: mark {kind!r} is not allowed")
    if isinstance(value, dict):
        _plain(value, at)


def _encoding(value: Any, at: str) -> None:
    for channel, definition in _object(value, at).items():
        if channel not in CHANNELS:
            raise ChartRefused(f"{at}.{channel} is not an allowed channel")
        _plain(definition, f"{at}.{channel}")


def _transforms(value: Any, at: str) -> None:
    if not isinstance(value, list):
        raise ChartRefused(f"{at} must be a list")
    for i, step in enumerate(value):
        where = f"{at}[{i}]"
        ops = [k for k in _object(step, where) if k in TRANSFORMS]
        if not ops:
            raise ChartRefused(f"{where} is not an allowed transform")
        if "filter" in step and not isinstance(step["filter"], dict):
            raise ChartRefused(f"{where}.filter must be a field predicate, not an expression")
        _plain(step, where)


def _plain(value: Any, at: str) -> None:
    """Anything else: no forbidden key, no expression key, no URL-like string, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key in FORBIDDEN or key.endswith("Expr"):
                raise ChartRefused(f"{at}.{key} is not allowed")
            _plain(item, f"{at}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain(item, f"{at}[{i}]")
    elif isinstance(value, str) and URL_LIKE.search(value):
        raise ChartRefused(f"{at} holds a URL")
