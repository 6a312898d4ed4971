"""Sections a build leaves out: a notebook cell tagged `needs:<group>` runs only where its plan has that group.

A profile of the lab's own runs (`lab`) has no VGG study, and `make report STUDIES=lab_cnn` selects one study of a
profile: the sections about the others have nothing to show. Before papermill executes a notebook, the build
replaces each run of consecutive cells whose `needs:` tags name no group the plan holds (labcore.exercises.exercise
`present`) with one markdown cell that names the section and says why it is empty. Tags: `needs:vgg` (that group),
`needs:vgg|resnet` (either), several `needs:` tags (all of them).
"""
from __future__ import annotations

import copy
from typing import Any

PREFIX = "needs:"


def needs(cell: dict[str, Any]) -> list[set[str]]:
    """The cell's requirements: one set of alternatives per `needs:` tag (empty: always runs)."""
    tags = cell.get("metadata", {}).get("tags", [])
    return [set(t[len(PREFIX):].split("|")) for t in tags if t.startswith(PREFIX)]


def runs_here(cell: dict[str, Any], present: set[str]) -> bool:
    """Whether every `needs:` tag of the cell names at least one group in `present`."""
    return all(alternatives & present for alternatives in needs(cell))


def _heading(cells: list[dict[str, Any]]) -> str | None:
    """The first markdown heading among `cells` (without its #s), or None."""
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return None


def _note(cells: list[dict[str, Any]], present: set[str], why: str) -> dict[str, Any]:
    """The markdown cell that stands for left-out `cells`: their heading, the groups they need, and `why`."""
    missing = sorted({" or ".join(sorted(alt)) for c in cells for alt in needs(c) if not alt & present})
    heading = _heading(cells)
    what = "this section needs" if heading else "the rest of this section needs"
    return {"cell_type": "markdown", "metadata": {"tags": ["left-out"]}, "id": f"left-out-{cells[0].get('id', '0')}",
            "source": (f"### {heading}\n\n" if heading else "") + f"*Left out of this build:* {what} the runs of "
                      f"{', '.join(f'`{m}`' for m in missing)}, which {why}."}


def leave_out(nb: dict[str, Any], present: set[str], why: str) -> tuple[dict[str, Any], list[str]]:
    """A copy of notebook `nb` (nbformat's JSON) without the cells whose groups are absent, each run of them replaced
    by one note (`why`: e.g. "profile lab does not train"), and the headings of the sections left out."""
    out, removed, left = copy.deepcopy(nb), [], []
    cells: list[dict[str, Any]] = []
    for cell in out["cells"] + [None]:  # None flushes the last run
        gone = cell is not None and not runs_here(cell, present)
        if gone and not (removed and _heading([cell])):  # a new heading starts its own note
            removed.append(cell)
            continue
        if removed:
            cells.append(_note(removed, present, why))
            left.append(_heading(removed) or f"part of {_heading(cells[::-1]) or 'the page'}")
            removed = []
        if gone:
            removed.append(cell)
        elif cell is not None:
            cells.append(cell)
    out["cells"] = cells
    return out, left
