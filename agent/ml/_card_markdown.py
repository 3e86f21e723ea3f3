"""The Markdown of a model card: ``render_markdown`` of the data :func:`agent.ml.card.build_card`
returns (or of a stored ``card.json``).

It works from that data alone, so a stored card re-renders the same Markdown. Every string in
the Markdown is escaped: a class name or config text with ``|`` or a newline cannot break a
table.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any

from agent.ml._card_util import finite, fmt, pct

#: classes shown in the Markdown's top-terms table; the rest are counted
MAX_TERM_CLASSES = 20

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|])")
_BLOCK_START = re.compile(r"^([#+\-=~])")
_NUMBERED = re.compile(r"^(\d+)([.)])")


def render_markdown(card: Mapping[str, Any]) -> str:
    """Readable GitHub Markdown of a card built by ``build_card`` (or read from its JSON)."""
    details = _dict(card.get("model_details"))
    version = _dict(details.get("version")).get("name", "?")
    lines = [f"# Model card: {_cell(details.get('name', '?'))} v{_cell(version)}", ""]
    overview = details.get("overview")
    if overview:
        lines += [_md(overview), ""]
    lines += _md_details(details)
    lines += _md_parameters(_dict(card.get("model_parameters")))
    lines += _md_quantitative(_dict(card.get("quantitative_analysis")))
    lines += _md_considerations(_dict(card.get("considerations")))
    lines += _md_checklist(_list(card.get("responsible_ml")))
    lines += _md_explainability(_dict(card.get("explainability")))
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def _md_details(d: Mapping[str, Any]) -> list[str]:
    version = _dict(d.get("version"))
    rows = [
        ("Version", version.get("name")),
        ("Date", version.get("date")),
        ("Created by", d.get("created_by")),
        ("Owners", ", ".join(str(_dict(o).get("name")) for o in _list(d.get("owners")))),
        ("Licence", "; ".join(str(_dict(x).get("custom_text")) for x in _list(d.get("licenses")))),
        ("Artifact", d.get("path")),
        ("Artifact sha256", d.get("artifact_sha256")),
        ("Code version", d.get("code_version") or "unknown (git commit not recorded)"),
        ("Config sha256", d.get("config_hash")),
        ("Libraries", ", ".join(f"{k} {v}" for k, v in sorted(_dict(d.get("libraries")).items()))),
    ]
    documentation = d.get("documentation")
    if documentation and documentation != d.get("overview"):
        rows.insert(0, ("Description", documentation))
    lines = ["## Model details", ""]
    lines += [f"- **{label}:** {_md(value)}" for label, value in rows if value not in (None, "")]
    for title, key, field in (("References", "references", "reference"),
                              ("Citation", "citations", "citation")):
        entries = [_dict(x).get(field) for x in _list(d.get(key))]
        if entries:
            lines += ["", f"### {title}", ""]
            lines += [f"- {_md(e)}" for e in entries]
    return [*lines, ""]


def _md_parameters(p: Mapping[str, Any]) -> list[str]:
    params = _dict(p.get("params"))
    rows = [
        ("Architecture", p.get("model_architecture")),
        ("Parameters", ", ".join(f"{k}={json.dumps(v, sort_keys=True, ensure_ascii=False)}"
                                 for k, v in sorted(params.items()))),
        ("Input", p.get("input_format")),
        ("Output", p.get("output_format")),
    ]
    lines = ["## Model parameters", ""]
    lines += [f"- **{label}:** {_md(value)}" for label, value in rows if value not in (None, "")]
    data = [_dict(x) for x in _list(p.get("data"))]
    if data:
        lines += ["", "### Data", "", "| Dataset | Link | Rows | Details |", "|---|---|---:|---|"]
        for entry in data:
            lines.append(_row([entry.get("name"), entry.get("link"), _num(entry.get("rows")),
                               _data_details(entry)]))
    return [*lines, ""]


def _data_details(entry: Mapping[str, Any]) -> str:
    parts = []
    if entry.get("content_hash"):
        parts.append(f"content sha256 {entry['content_hash']}")
    if entry.get("labels"):
        parts.append(f"labels {entry['labels']}")
    for key, label in (("train_rows", "training rows"), ("unlabelled_rows", "unlabelled rows")):
        if entry.get(key) is not None:
            parts.append(f"{_num(entry[key])} {label}")
    split = _dict(entry.get("split"))
    if split:
        parts.append(f"{split.get('method', '?')} split, test fraction "
                     f"{split.get('test_fraction', '?')}, seed {split.get('seed', '?')}")
    sensitive = _list(_dict(entry.get("sensitive")).get("sensitive_data"))
    if sensitive:
        parts.append("sensitive: " + ", ".join(str(s) for s in sensitive))
    return "; ".join(parts)


def _md_quantitative(q: Mapping[str, Any]) -> list[str]:
    metrics = [_dict(m) for m in _list(q.get("performance_metrics"))]
    primary = q.get("primary_metric")
    lines = ["## Quantitative analysis", ""]
    overall = [m for m in metrics if m.get("slice") == "overall" and "threshold" not in m]
    if overall:
        lines += ["### Overall", "", "| Metric | Value |", "|---|---:|"]
        for m in overall:
            name = str(m.get("type"))
            lines.append(_row([name + (" (primary)" if name == primary else ""),
                               _num(m.get("value"))]))
        lines.append("")
    by_column: dict[str, dict[str, dict[str, Any]]] = {}
    for m in metrics:
        if "segment" in m:
            values = by_column.setdefault(str(m["segment"]), {})
            values.setdefault(str(m.get("segment_value")), {})[str(m.get("type"))] = m.get("value")
    for column in sorted(by_column):
        values = by_column[column]
        names = sorted({n for stats in values.values() for n in stats} - {"n"})
        lines += [f"### By {_cell(column)}", "",
                  _row([column, "n", *names]), "|---|" + "---:|" * (1 + len(names))]
        for value in sorted(values):
            stats = values[value]
            lines.append(_row([value, _num(stats.get("n")), *(_num(stats.get(n)) for n in names)]))
        lines.append("")
    thresholds: dict[float, dict[str, Any]] = {}
    for m in metrics:
        t = finite(m.get("threshold"))
        if t is not None:
            thresholds.setdefault(t, {})[str(m.get("type")).partition("@")[0]] = m.get("value")
    if thresholds:
        lines += ["### Coverage at confidence thresholds", "",
                  "Evaluation answers at or above the threshold (Rows) are coded "
                  "automatically; the rest go to manual coding.", "",
                  "| Confidence >= | Coded automatically | Accuracy | Rows |",
                  "|---:|---:|---:|---:|"]
        for t in sorted(thresholds):
            row = thresholds[t]
            lines.append(_row([f"{t:g}", pct(row.get("coverage")), pct(row.get("accuracy")),
                               _num(row.get("rows"))]))
        lines.append("")
    if not (overall or by_column or thresholds):
        lines += ["No metrics recorded.", ""]
    return lines


def _md_considerations(c: Mapping[str, Any]) -> list[str]:
    lines = ["## Considerations", ""]
    for title, key in (("Intended users", "users"), ("Use cases", "use_cases"),
                       ("Limitations", "limitations"), ("Trade-offs", "tradeoffs")):
        entries = [_dict(x).get("description") for x in _list(c.get(key))]
        lines += [f"### {title}", ""]
        lines += [f"- {_md(e)}" for e in entries] if entries else ["Not documented."]
        lines.append("")
    ethical = [_dict(x) for x in _list(c.get("ethical_considerations"))]
    lines += ["### Ethical considerations", ""]
    if ethical:
        lines += ["| Risk | Mitigation |", "|---|---|"]
        lines += [_row([e.get("name"), e.get("mitigation_strategy") or "none stated"])
                  for e in ethical]
    else:
        lines.append("Not documented.")
    return [*lines, ""]


def _md_checklist(items: list[Any]) -> list[str]:
    lines = ["## Responsible ML checklist", ""]
    if not items:
        return [*lines, "Not assessed.", ""]
    lines += ["| Principle | Item | Status | Evidence |", "|---|---|---|---|"]
    for raw in items:
        i = _dict(raw)
        lines.append(_row([i.get("principle"), i.get("item"), i.get("status"),
                           i.get("evidence")]))
    return [*lines, ""]


def _md_explainability(e: Mapping[str, Any]) -> list[str]:
    lines = ["## Explainability", ""]
    features = [_dict(x) for x in _list(e.get("influential_features"))]
    lines += ["### Influential features", ""]
    if features:
        lines += ["Permutation importance: how much the primary metric drops when the "
                  "feature's values are shuffled.", "",
                  "| Feature | Importance | Std |", "|---|---:|---:|"]
        lines += [_row([f.get("feature"), _num(f.get("importance")), _num(f.get("std"))])
                  for f in features]
    else:
        lines.append("Not computed.")
    lines.append("")
    terms = _dict(e.get("top_terms"))
    if terms:
        classes = sorted(terms, key=str)
        lines += ["### Top terms per class", "", "| Class | Terms |", "|---|---|"]
        lines += [_row([c, ", ".join(str(t) for t in _list(terms[c]))])
                  for c in classes[:MAX_TERM_CLASSES]]
        if len(classes) > MAX_TERM_CLASSES:
            lines += ["", f"and {len(classes) - MAX_TERM_CLASSES} more classes "
                          "(all are in card.json)"]
        lines.append("")
    return lines


def _row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _cell(value: Any) -> str:
    """``value`` as one line of inline Markdown: no newline, no unescaped ``|``, no HTML."""
    text = "" if value is None else str(value)
    text = " ".join(_CONTROL.sub(" ", text).split())
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md(value: Any) -> str:
    """``value`` as a line of text (paragraph, list item) that cannot open another block."""
    # a leading "#", "-", "1." would turn it into a heading or a (nested) list
    text = _BLOCK_START.sub(r"\\\1", _cell(value))
    return _NUMBERED.sub(r"\1\\\2", text)


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return fmt(value)
    return str(value)


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []
