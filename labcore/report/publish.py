"""The notebook side of a report: `publish` leaves the headline metrics and provenance in the executed
notebook (as JSON with MIME type `application/vnd.labcore.result+json`), where the build reads them back.

Notebooks import this module, never the build itself (labcore.report.build); importing it in a kernel shows
labcore's one-line errors as that line (`one_line`).
"""
from __future__ import annotations

import html
import json
import math
from typing import Any

from labcore.text import count, sci

MIME = "application/vnd.labcore.result+json"


def one_line(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> None:
    """IPython's handler for labcore's one-line errors (`_in_kernels`): their line, without the traceback around it
    (a student sees what to do, not fifteen lines of labcore's internals); %tb and %debug still reach it. The cell
    still fails: papermill stops there as before."""
    import sys

    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb
    sys.last_exc = value
    shell._showtraceback(etype, value, [f"{etype.__name__}: {value}"])
    if shell.call_pdb:
        shell.debugger(force=True)


def _in_kernels() -> None:
    """In a notebook kernel (or IPython), show labcore's errors that say in one line what is wrong and what to do
    (ConfigError and its kinds, DataNotFoundError) with `one_line`. Elsewhere nothing (and torch is not imported)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from labcore.core.config import ConfigError
    from labcore.core.decode import DataNotFoundError

    shell.set_custom_exc((ConfigError, DataNotFoundError), one_line)


_in_kernels()


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


def publish(metrics: dict[str, Any], provenance: dict[str, Any], headline: list[tuple[str, str]] | None = None,
            figure: Any = None) -> None:
    """Show the headline as a table and leave metrics, provenance, headline and a summary figure
    machine-readable for the report index.

    `headline`: (human label, text) pairs in the order the index shows them, with denominators where they
    matter ("did not train", "3 of 12 configurations"). `figure`: a small matplotlib Figure for the index.
    """
    from IPython.display import display

    payload = jsonable({"metrics": metrics, "provenance": provenance,
                        "headline": [[str(k), str(v)] for k, v in headline or []]})
    if figure is not None:
        payload["figure_png"] = figure_png(figure)
    shown = payload["headline"] or [[k, format_metric(v)] for k, v in payload["metrics"].items()
                                    if not isinstance(v, (dict, list))]
    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                   for k, v in shown)
    display({MIME: payload, "text/html": f"<table>{rows}</table>",
             "text/plain": json.dumps(payload["metrics"], indent=1)[:2000]}, raw=True)


def call(fn: Any, namespace: dict[str, Any]) -> Any:
    """`fn` called with the notebook variables its parameters name (a notebook's `globals()`). A variable that a
    section left out of this build never made (labcore.report.sections) is passed as its default, else None,
    which `fn` reads as 'not in this build'."""
    import inspect

    kwargs = {}
    for name, param in inspect.signature(fn).parameters.items():
        default = None if param.default is inspect.Parameter.empty else param.default
        kwargs[name] = namespace.get(name, default)
    return fn(**kwargs)


def figure_png(figure: Any, width_inches: float = 5.0) -> str:
    """A Figure as a base64 PNG about `width_inches` wide at 2x density (crisp on high-DPI screens)."""
    import base64
    import io

    buf = io.BytesIO()
    w, h = figure.get_size_inches()
    figure.savefig(buf, format="png", dpi=2 * 100 * width_inches / w, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def format_metric(v: Any) -> str:
    """A metric as plain text (callers escape it for HTML)."""
    return sci(v, 4) if isinstance(v, float) else str(v)


# Columns that count things: shown as integers with thousands separators, whatever their dtype (a count column with
# a missing value becomes float in pandas). Matched as whole words of the column's name, lower-cased.
COUNT_WORDS = {"runs", "seeds", "seed", "epochs", "epoch", "depth", "params", "parameters", "width", "support",
               "count", "steps", "images", "layers", "blocks", "n", "batches", "initialisations", "members"}
DASH = "\u2013"  # a missing value (a failed run, a spread that needs two seeds): explained under the table


def _is_count(column: Any) -> bool:
    """Whether a column holds counts: it names one (runs, epochs, parameters ...), not only beside a number that
    qualifies another quantity ("accuracy after 2 epochs", "mean of 3 seeds", "loss at epoch 5")."""
    words = str(column).lower().replace("_", " ").replace("(", " ").replace(")", " ").replace(",", " ").split()
    numeric = [w.replace(".", "", 1).isdigit() for w in words]
    return any(w in COUNT_WORDS and not (i and numeric[i - 1]) and not (i + 1 < len(words) and numeric[i + 1])
               for i, w in enumerate(words))


def _is_duration(column: Any) -> bool:
    """Whether a column holds wall-clock times (its name says seconds, minutes or hours)."""
    return bool({"seconds", "minutes", "hours"} & set(str(column).lower().replace("_", " ").split()))


def _is_ratio(column: Any) -> bool:
    """Whether a column holds ratios ('residual / plain', 'last/first after training'): three significant digits,
    as the sentences and headlines give them, not three decimals of a single seed's ratio (30,802.479)."""
    return "/" in str(column)


def _scientific(v: float, digits: int = 2) -> str:
    """1.1 x 10^5 as a person writes it (HTML superscript), `digits` significant digits."""
    mantissa, exponent = f"{v:.{digits - 1}e}".split("e")
    return f"{mantissa} \u00d7 10<sup>{int(exponent)}</sup>"


def cell(value: Any, column: Any = "", digits: int = 3) -> str:
    """One table cell as the pages write it: integers (and counts) with thousands separators, ratios at three
    significant digits, other numbers at `digits` decimals, very large or very small ones (p-values, factors) in
    scientific form, booleans as yes/no, a missing value as a dash."""
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, str):
        value = value.item()  # numpy scalars
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isinf(value):
            return "\u221e" if value > 0 else "-\u221e"
        if value.is_integer() and _is_count(column):
            return f"{int(value):,}"
        if _is_duration(column):  # wall-clock time is measured to a tenth at best: 67.9 s, not 67.900
            return f"{value:,.1f}"
        if _is_ratio(column):
            return _scientific(value, 3) if value != 0 and not 1e-3 <= abs(value) < 1e5 else sci(value, 3)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
            return _scientific(value)
        return f"{value:,.{digits}f}"
    return str(value)


HEADER_WORDS = {"n": "", "acc": "accuracy", "val": "validation", "params": "parameters", "std": "(std)",
                "mean": "(mean)"}  # a column name's code words as a header says them


def header(column: Any) -> str:
    """A column name as a table header reads: 'test_acc_mean' -> 'test accuracy (mean)', 'n_params' ->
    'parameters'; a name without underscores is already words and stays as it is."""
    name = str(column)
    if "_" not in name:
        return name
    return " ".join(w for w in (HEADER_WORDS.get(part, part) for part in name.split("_")) if w)


def table(df: Any, digits: int = 3, dash: str | None = None) -> Any:
    """A DataFrame as the pages show every table (one formatter, `cell`): no row numbers (a meaningful index, like
    class names, becomes the first column), headers in words (`header`), long text (the lab's claims) in full, a dash
    for a missing value, explained once under the table (`dash`: what it means there; default the frame's own
    `attrs["dash"]`, as labcore.store.result.class_table sets it, else "no value")."""
    import pandas as pd

    dash = dash or df.attrs.get("dash") or "no value"
    if any(n is not None for n in df.index.names):
        df = df.reset_index()  # a named index is data (seeds 0, 1, 2 are a RangeIndex to pandas, yet a column)
    elif pd.api.types.is_integer_dtype(df.index):
        df = df.reset_index(drop=True)  # unnamed integers are row numbers (0, 1, 0, 1 after a concat): not shown
    else:
        df = df.reset_index(names=[""])  # unnamed labels (class or model names): a first column, no header
    df = df.rename(columns={c: header(c) for c in df.columns})
    assert df.columns.is_unique, f"two columns read alike as headers: {list(df.columns)}"
    missing = bool(df.isna().to_numpy().any())
    styler = df.style.format({c: (lambda v, c=c: cell(v, c, digits)) for c in df.columns}).hide(axis="index")
    if missing:
        styler = styler.set_caption(f"{DASH} {dash}")
    return styler.set_table_styles([{"selector": "caption", "props": "caption-side: bottom; font-size: 0.85em; "
                                                                     "text-align: left; color: #555"}])


def source(obj: Any, why: str, folded: bool | None = None) -> Any:
    """The code of `obj` (a class, function or method) as it ran, from labcore's own source file, with a line saying
    where it lives and `why` it is shown; folded when longer than 30 lines (unless `folded` says). Pages show what
    was measured without copying code into notebooks."""
    import inspect

    from IPython.display import HTML
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    lines, first = inspect.getsourcelines(obj)
    path = inspect.getsourcefile(obj) or "?"
    where = path[path.rfind("labcore/"):] if "labcore/" in path else path
    code = highlight("".join(lines), PythonLexer(), HtmlFormatter(noclasses=True, nobackground=True))
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", "code"))
    label = (f"<code>{html.escape(name)}</code> in <code>{html.escape(where)}</code>, line {first} "
             f"({count(len(lines), 'line')}): {html.escape(why)}")
    fold = len(lines) > 30 if folded is None else folded
    return HTML(f"<details class='lc-source'{'' if fold else ' open'}><summary>{label}</summary>{code}</details>")


def printed(model: Any, why: str) -> Any:
    """A model as PyTorch prints it (its layers and their shapes), under one line saying `why` it is shown."""
    from IPython.display import HTML

    return HTML(f"<p>{html.escape(why)}</p><pre class='lc-printed'>{html.escape(repr(model))}</pre>")
