"""The notebook side of a report: `publish` leaves the headline metrics and provenance in the executed
notebook (as JSON with MIME type `application/vnd.labcore.result+json`), where the build reads them back.

Notebooks import this module, never the build itself (labcore.report).
"""
from __future__ import annotations

import html
import json
import math
from typing import Any

MIME = "application/vnd.labcore.result+json"


def jsonable(value: Any) -> Any:
    """Plain JSON: NaN/inf become None, tuples lists, numpy/torch scalars floats."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def publish(metrics: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Show the notebook's headline metrics as a table and leave them machine-readable for the report."""
    from IPython.display import display

    payload = jsonable({"metrics": metrics, "provenance": provenance})
    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(format_metric(v))}</td></tr>"
                   for k, v in payload["metrics"].items() if not isinstance(v, (dict, list)))
    display({MIME: payload, "text/html": f"<table>{rows}</table>",
             "text/plain": json.dumps(payload["metrics"], indent=1)[:2000]}, raw=True)


def format_metric(v: Any) -> str:
    """A metric as plain text (callers escape it for HTML)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)
