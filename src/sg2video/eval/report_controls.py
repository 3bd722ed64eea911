"""The run report's "against the controls" table: the model's compliance beside what its controls score.

A relation accuracy means little alone: the unconditional control (condition dropped) says whether the model
draws the graph's objects at all, the relation control (the same objects, laid out with the relations removed)
what right objects in arbitrary places score (~0.35). The table puts the model (all held-out graphs, seen and
unseen combinations, held-out triples) beside both, with how far above the relation control the model's
relations are on the same graphs. Rows whose figures the run lacks are left out; no eval controls, no table.
"""
from __future__ import annotations

import html
import math
from typing import Any, Mapping

# (label, key prefix in metrics.json's eval section); "" is the headline itself
ROWS = (
    ("held-out graphs without boxes (the model)", ""),
    ("graphs with only seen combinations", "seen/"),
    ("graphs with an unseen combination", "unseen/"),
    ("held-out triples alone", "heldout_triples/"),
    ("relation control: same objects, relations removed before the layout", "control_norel/"),
    ("unconditional control: condition dropped", "control_uncond/"),
)
MARGIN_KEY = "control_norel/relation_margin"


def _cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}"


def controls_rows(eval_metrics: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(label, objects, relations, relations above the relation control) per row the metrics have."""
    rows = []
    for label, prefix in ROWS:
        objects = eval_metrics.get(f"{prefix}object_accuracy")
        relations = eval_metrics.get(f"{prefix}relation_accuracy")
        if objects is None and relations is None:
            continue
        margin = _cell(eval_metrics.get(MARGIN_KEY)) if prefix == "" and MARGIN_KEY in eval_metrics else ""
        rows.append((label, _cell(objects), _cell(relations), margin))
    return rows


def controls_html(metrics: Mapping[str, Any]) -> str:
    """The section's HTML (heading and table), or "" when the run has no eval controls."""
    eval_metrics = metrics.get("eval")
    if not isinstance(eval_metrics, Mapping) or not any(k.startswith("control_") for k in eval_metrics):
        return ""
    head = ("<tr><th>graphs</th><th>objects</th><th>relations</th>"
            "<th>relations above the relation control</th></tr>")
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in controls_rows(eval_metrics))
    return f'<h2>Against the controls</h2>\n<table id="controls">{head}{body}</table>\n'
