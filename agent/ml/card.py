"""Model cards: what Silta knows about a model version, as JSON and as Markdown.

A card follows the sections and field names of Google's Model Card Toolkit schema
(``model_details``, ``model_parameters``, ``quantitative_analysis``, ``considerations``)
and adds ``responsible_ml``, a checklist after Statistics Canada's "Framework for
Responsible Machine Learning Processes" (respect for people, respect for data, sound
methods, sound application), and ``explainability``. Measured facts (data versions,
metrics per segment, coverage at a confidence threshold, influential features) come from
the training run; free text comes from the config's ``[models.NAME.card]`` section.

``build_card`` returns plain JSON data (NaN and infinities become ``None``), and
``render_markdown`` (in :mod:`agent.ml._card_markdown`, re-exported here) works from
that data alone, so a stored ``card.json`` re-renders the same Markdown.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.ml._card_markdown import MAX_TERM_CLASSES, render_markdown
from agent.ml._card_util import finite, fmt, pct
from connectors.errors import UsageError

SCHEMA_VERSION = "silta-model-card/1"
#: a segment evaluated on fewer rows than this gets a limitation and an "attention"
MIN_SEGMENT_ROWS = 20
#: a class seen fewer times than this in training gets a limitation
MIN_CLASS_ROWS = 5

MET = "met"
ATTENTION = "attention"
NOT_ASSESSED = "not assessed"

_TEXT_CLASSIFIER = "text-classifier"
# float noise (0.87 - 0.77 = 0.10000000000000009) must not push a gap over the threshold
_GAP_TOLERANCE = 1e-9


@dataclass(frozen=True)
class CardText:
    """Free text from the config's [models.NAME.card] section (all optional)."""

    overview: str = ""
    owners: tuple[str, ...] = ()
    license: str = ""
    references: tuple[str, ...] = ()
    citation: str = ""
    users: tuple[str, ...] = ()          # intended users
    use_cases: tuple[str, ...] = ()
    out_of_scope: tuple[str, ...] = ()   # uses it is not meant for
    limitations: tuple[str, ...] = ()
    tradeoffs: tuple[str, ...] = ()
    ethical_considerations: tuple[tuple[str, str], ...] = ()   # (risk, mitigation)
    privacy: str = ""                    # how personal data is handled
    human_oversight: str = ""            # e.g. how manual coding reviews low-confidence rows


@dataclass(frozen=True)
class CardFacts:
    """What Silta knows about one registered model version.

    ``training_data`` may also hold ``class_counts`` (class -> training rows); classes
    seen fewer than ``MIN_CLASS_ROWS`` times then get a limitation.
    """

    model: str
    version: int
    description: str
    created_at: dt.datetime              # UTC
    created_by: str
    flavor: str                          # "sklearn"
    estimator: str                       # "text-classifier" or an import path
    params: dict[str, Any]
    features: dict[str, list[str]]       # {"text": [...], "numeric": [...], "categorical": [...]}
    label: str
    classes: list[str]
    signature: dict[str, Any]            # {"inputs": [{"name", "type"}], "outputs": {...}}
    training_data: dict[str, Any]        # table, version, rows, content_hash, labels, ..._rows
    split: dict[str, Any]                # {"method": "hash", "test_fraction": 0.2, "seed": 7}
    metrics: dict[str, Any]              # overall, segments, coverage, primary_metric
    segment_gaps: list[dict[str, Any]]   # segment, metric, best(_value), worst(_value), gap
    influential_features: list[dict[str, Any]]   # feature, importance, std
    top_terms: dict[str, list[str]]      # class -> most indicative terms (may be empty)
    code_version: str | None             # "silta 0.1.0 (git 1a2b3c4)" or None
    libraries: dict[str, str]
    config_hash: str
    artifact_uri: str
    artifact_sha256: str
    promotion: str                       # "manual" | "auto"
    min_confidence: float | None         # threshold for automated coding, if configured
    text: CardText
    fairness_gap_threshold: float = 0.1  # a segment gap above this needs attention


# --- building the card ---------------------------------------------------------------

def build_card(facts: CardFacts) -> dict[str, Any]:
    """The model card of ``facts`` as plain JSON data (``json.dumps(allow_nan=False)`` safe)."""
    card = {
        "schema_version": SCHEMA_VERSION,
        "model_details": _model_details(facts),
        "model_parameters": _model_parameters(facts),
        "quantitative_analysis": _quantitative_analysis(facts),
        "considerations": _considerations(facts),
        "responsible_ml": _checklist(facts),
        "explainability": {
            "influential_features": _ranked_features(facts.influential_features),
            "top_terms": {str(c): list(t) for c, t in
                          sorted(facts.top_terms.items(), key=lambda kv: str(kv[0]))},
        },
    }
    plain: dict[str, Any] = _plain(card)
    return plain


def _model_details(f: CardFacts) -> dict[str, Any]:
    t = f.text
    return {
        "name": f.model,
        "overview": t.overview or f.description,
        "documentation": f.description,
        "version": {"name": str(f.version), "date": _utc(f.created_at).isoformat()},
        "owners": [{"name": o} for o in t.owners],
        "licenses": [{"custom_text": t.license}] if t.license else [],
        "references": [{"reference": r} for r in t.references],
        "citations": [{"citation": t.citation}] if t.citation else [],
        "path": f.artifact_uri,
        "created_by": f.created_by,
        "artifact_sha256": f.artifact_sha256,
        "code_version": f.code_version,
        "libraries": dict(sorted(f.libraries.items())),
        "config_hash": f.config_hash,
    }


def _architecture(f: CardFacts) -> str:
    if f.estimator == _TEXT_CLASSIFIER:
        classifier = f.params.get("classifier")
        tail = "logistic regression" if classifier is None else str(classifier)
        return f"{_TEXT_CLASSIFIER}: TF-IDF character and word n-grams + {tail}"
    return f"{f.estimator} ({f.flavor})"


def _model_parameters(f: CardFacts) -> dict[str, Any]:
    td = f.training_data
    labels = td.get("labels")
    text_cols = list(f.features.get("text", []))
    training = {
        "name": "training",
        "link": _table_link(td),
        "rows": td.get("rows"),
        "content_hash": td.get("content_hash"),
        "labels": _table_link(labels) if isinstance(labels, Mapping) else None,
        "train_rows": td.get("train_rows"),
        "unlabelled_rows": td.get("unlabelled_rows"),
        # free-text answers are where personal data hides (names, employers, places)
        "sensitive": {"sensitive_data": text_cols},
    }
    evaluation = {
        "name": "evaluation",
        "link": _table_link(td),
        "rows": td.get("eval_rows"),
        "split": dict(f.split),
    }
    return {
        "model_architecture": _architecture(f),
        "flavor": f.flavor,
        "estimator": f.estimator,
        "params": dict(sorted(f.params.items())),
        "data": [training, evaluation],
        "input_format": _input_format(f),
        "output_format": (f"{f.label}: one of {len(f.classes)} classes; "
                          "predicted code, confidence and top-k"),
        "label": f.label,
        "classes": list(f.classes),
    }


def _input_format(f: CardFacts) -> str:
    roles = {col: role for role, cols in f.features.items() for col in cols}
    inputs = f.signature.get("inputs")
    if isinstance(inputs, list) and inputs:
        parts = []
        for item in inputs:
            name = str(item.get("name", "?")) if isinstance(item, Mapping) else str(item)
            kind = item.get("type", "?") if isinstance(item, Mapping) else "?"
            role = roles.get(name)
            parts.append(f"{name} ({kind}, {role})" if role else f"{name} ({kind})")
        return "; ".join(parts)
    return "; ".join(f"{col} ({role})" for col, role in sorted(roles.items()))


def _quantitative_analysis(f: CardFacts) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for name, value in sorted(_overall(f).items()):
        if _is_metric(value):
            out.append({"type": name, "value": value, "slice": "overall"})
    for column, values in _segments(f):
        for value, stats in values:
            for name, v in sorted(stats.items()):
                if _is_metric(v):
                    out.append({"type": name, "value": v, "slice": f"{column}={value}",
                                "segment": column, "segment_value": value})
    for row in _coverage(f):
        t = row["threshold"]
        for name in ("coverage", "accuracy", "rows"):
            if _is_metric(row.get(name)):
                out.append({"type": f"{name}@{t:g}", "value": row.get(name),
                            "slice": "overall", "threshold": t})
    return {"primary_metric": _primary(f), "performance_metrics": out}


def _considerations(f: CardFacts) -> dict[str, Any]:
    t = f.text
    limitations = [*t.limitations, *(f"not intended for: {u}" for u in t.out_of_scope),
                   *_generated_limitations(f)]
    return {
        "users": [{"description": u} for u in t.users],
        "use_cases": [{"description": u} for u in t.use_cases],
        "limitations": [{"description": x} for x in limitations],
        "tradeoffs": [{"description": x} for x in t.tradeoffs],
        "ethical_considerations": [{"name": risk, "mitigation_strategy": mitigation}
                                   for risk, mitigation in t.ethical_considerations],
    }


def _generated_limitations(f: CardFacts) -> list[str]:
    out = []
    for column, values in _segments(f):
        for value, stats in values:
            n = _count(stats.get("n"))
            if n is not None and n < MIN_SEGMENT_ROWS:
                out.append(f"metrics for {column}={value} rest on {n} evaluation rows")
    for g in _wide_gaps(f):
        out.append(f"{g.get('metric')} for {g.get('segment')}={g.get('worst')} is "
                   f"{fmt(g.get('gap'))} below {g.get('segment')}={g.get('best')} "
                   f"({fmt(g.get('worst_value'))} vs {fmt(g.get('best_value'))})")
    counts = f.training_data.get("class_counts")
    if isinstance(counts, Mapping):
        rare = sorted(str(c) for c, n in counts.items()
                      if (seen := _count(n)) is not None and seen < MIN_CLASS_ROWS)
        if rare:
            shown = ", ".join(rare[:10]) + (f" and {len(rare) - 10} more" if len(rare) > 10
                                            else "")
            were = "class was" if len(rare) == 1 else "classes were"
            out.append(f"{len(rare)} {were} seen fewer than {MIN_CLASS_ROWS} times in "
                       f"training ({shown}): predictions of them are unreliable")
    return out


# --- the responsible-ML checklist ----------------------------------------------------

def _item(principle: str, item: str, status: str, evidence: str) -> dict[str, str]:
    return {"principle": principle, "item": item, "status": status, "evidence": evidence}


def _checklist(f: CardFacts) -> list[dict[str, str]]:
    return [
        _fairness(f), _human_oversight(f), _privacy(f), _representativeness(f),
        _held_out(f), _explainability(f), _reproducibility(f), _transparency(f),
    ]


def _fairness(f: CardFacts) -> dict[str, str]:
    principle, item = "Respect for people", "Fairness across segments"
    gaps = [g for g in f.segment_gaps if finite(g.get("gap")) is not None]
    if not gaps:
        columns = [c for c, _ in _segments(f)]
        why = (f"segments {', '.join(columns)} have no gap to compare" if columns
               else f"no segment columns are evaluated (set segments in [models.{f.model}])")
        return _item(principle, item, NOT_ASSESSED, why)
    wide = _wide_gaps(f)
    limit = fmt(f.fairness_gap_threshold)
    if wide:
        text = "; ".join(
            f"{g.get('metric')} by {g.get('segment')}: {g.get('worst')} "
            f"{fmt(g.get('worst_value'))} vs {g.get('best')} {fmt(g.get('best_value'))}, "
            f"gap {fmt(g.get('gap'))} > {limit}{_compared(g)}"
            for g in wide)
        return _item(principle, item, ATTENTION, text)
    widest = max(gaps, key=lambda g: float(g["gap"]))
    return _item(principle, item, MET,
                 f"{len(gaps)} segment gap(s) within {limit}; widest: {widest.get('metric')} "
                 f"by {widest.get('segment')}, {fmt(widest['gap'])}{_compared(widest)}")


def _compared(gap: Mapping[str, Any]) -> str:
    # values with fewer rows are left out of the gap: say so, or a reader thinks they passed
    n = _count(gap.get("min_rows"))
    return f" (values with {n}+ evaluation rows compared)" if n is not None else ""


def _wide_gaps(f: CardFacts) -> list[dict[str, Any]]:
    limit = f.fairness_gap_threshold + _GAP_TOLERANCE
    return [g for g in f.segment_gaps
            if (gap := finite(g.get("gap"))) is not None and gap > limit]


def _human_oversight(f: CardFacts) -> dict[str, str]:
    principle, item = "Respect for people", "Human oversight"
    parts: list[str] = []
    status = ATTENTION
    if f.min_confidence is None:
        parts.append("no min_confidence: every answer is coded automatically, none goes "
                     "to manual coding")
    else:
        row = next((r for r in _coverage(f)
                    if math.isclose(r["threshold"], f.min_confidence, abs_tol=1e-9)), None)
        cov = finite(row.get("coverage")) if row else None
        acc = finite(row.get("accuracy")) if row else None
        if cov is not None and acc is not None:
            status = MET
            parts.append(f"at confidence >= {f.min_confidence:g}: {pct(cov)} of evaluation "
                         f"answers coded automatically at {pct(acc)} accuracy; the rest "
                         "to manual coding")
        else:
            parts.append(f"min_confidence {f.min_confidence:g} is set but coverage at it "
                         "was not evaluated")
    if f.promotion == "manual":
        parts.append("promotion manual: a person approves each champion")
    elif f.promotion == "auto":
        parts.append("promotion auto: a version that beats the champion on the primary "
                     "metric becomes champion without a person approving it")
    else:
        parts.append(f"promotion {f.promotion}")
    if f.text.human_oversight:
        status = MET
        parts.append(f.text.human_oversight)
    return _item(principle, item, status, "; ".join(parts))


def _privacy(f: CardFacts) -> dict[str, str]:
    principle, item = "Respect for data", "Privacy and confidentiality"
    text_cols = list(f.features.get("text", []))
    stated = f.text.privacy
    if text_cols:
        cols = ", ".join(text_cols)
        if stated:
            return _item(principle, item, MET, f"{stated} (text features: {cols})")
        return _item(principle, item, ATTENTION,
                     f"text features {cols}: the fitted vocabulary holds words from training "
                     "answers, which may contain personal data: handle the artifact as "
                     f"confidential and say how in [models.{f.model}.card] privacy")
    if stated:
        return _item(principle, item, MET, stated)
    return _item(principle, item, NOT_ASSESSED,
                 f"no privacy statement in [models.{f.model}.card]")


def _representativeness(f: CardFacts) -> dict[str, str]:
    principle, item = "Sound methods", "Representative evaluation data"
    sizes = [(n, column, value) for column, values in _segments(f) for value, stats in values
             if (n := _count(stats.get("n"))) is not None]
    if not sizes:
        return _item(principle, item, NOT_ASSESSED, "no evaluated segments with row counts")
    n, column, value = min(sizes, key=lambda s: (s[0], s[1], s[2]))
    small = sum(1 for s in sizes if s[0] < MIN_SEGMENT_ROWS)
    total = _count(f.training_data.get("eval_rows"))
    of = f" of {total}" if total is not None else ""
    text = f"smallest evaluated segment: {column}={value} with {n}{of} evaluation rows"
    if small:
        return _item(principle, item, ATTENTION,
                     f"{text}; {small} segment(s) under {MIN_SEGMENT_ROWS} rows")
    return _item(principle, item, MET, f"{text}; every segment has {MIN_SEGMENT_ROWS}+ rows")


def _held_out(f: CardFacts) -> dict[str, str]:
    principle, item = "Sound methods", "Evaluation on held-out rows"
    eval_rows = _count(f.training_data.get("eval_rows"))
    primary = _primary(f)
    split = f.split
    parts = [f"{eval_rows if eval_rows is not None else 'unknown'} held-out rows "
             f"({split.get('method', 'unknown')} split, test fraction "
             f"{split.get('test_fraction', 'unknown')}, seed {split.get('seed', 'unknown')})"]
    ok = bool(eval_rows)
    overall = finite(_overall(f).get(primary))
    parts.append(f"{primary} {fmt(overall)} overall")
    ok = ok and overall is not None
    columns = [c for c, _ in _segments(f)]
    if columns:
        missing = [c for c, values in _segments(f)
                   if not any(primary in stats for _, stats in values)]
        if missing:
            ok = False
            parts.append(f"{primary} not reported per segment for {', '.join(missing)}")
        else:
            parts.append(f"reported per segment of {', '.join(columns)}")
    else:
        parts.append("no segments: reported overall only")
    return _item(principle, item, MET if ok else ATTENTION, "; ".join(parts))


def _explainability(f: CardFacts) -> dict[str, str]:
    principle, item = "Sound methods", "Explainability"
    ranked = _ranked_features(f.influential_features)
    if not ranked:
        return _item(principle, item, NOT_ASSESSED, "no feature importance was computed")
    top = ", ".join(f"{r.get('feature')} {fmt(finite(r.get('importance')))}"
                    for r in ranked[:3])
    text = f"most influential features (permutation importance): {top}"
    if f.top_terms:
        text += f"; top terms per class for {len(f.top_terms)} classes are in this card"
    return _item(principle, item, MET, text)


def _reproducibility(f: CardFacts) -> dict[str, str]:
    principle, item = "Sound application", "Reproducibility"
    td = f.training_data
    seed = f.split.get("seed")
    missing = [what for what, value in (
        ("training table", td.get("table")), ("table version", td.get("version")),
        ("content hash", td.get("content_hash")),
        ("code version (git commit unknown)", f.code_version), ("split seed", seed))
        if value is None or value == ""]
    known = [f"training data {_table_link(td)}"]
    if td.get("content_hash"):
        known.append(f"content sha256 {str(td['content_hash'])[:12]}")
    labels = td.get("labels")
    if isinstance(labels, Mapping):
        known.append(f"labels {_table_link(labels)}")
    if f.code_version:
        known.append(f"code {f.code_version}")
    if seed is not None:
        known.append(f"seed {seed}")
    known.append(f"config sha256 {f.config_hash[:12]}")
    if f.libraries:
        known.append("libraries " + ", ".join(f"{k} {v}" for k, v in sorted(f.libraries.items())))
    run = td.get("run_id") or "RUN_ID"
    if f.code_version and "uncommitted" in f.code_version:
        # the commit alone does not hold the code that made this version
        missing.append("the code's uncommitted changes")
    replay = f"`silta runs replay {run}` re-runs it"
    if missing:
        return _item(principle, item, ATTENTION,
                     f"unknown: {', '.join(missing)}; known: {', '.join(known)}"
                     + (f"; {replay} and says whether the result is the same"
                        if td.get("content_hash") and seed is not None else ""))
    return _item(principle, item, MET, f"{', '.join(known)}; {replay}")


def _transparency(f: CardFacts) -> dict[str, str]:
    principle, item = "Sound application", "Intended use documented"
    t = f.text
    if not t.use_cases and not t.users:
        return _item(principle, item, ATTENTION,
                     f"no intended users or use cases: add users and use_cases to "
                     f"[models.{f.model}.card]")
    generated = len(_generated_limitations(f))
    return _item(principle, item, MET,
                 f"{len(t.users)} intended user group(s), {len(t.use_cases)} use case(s), "
                 f"{len(t.out_of_scope)} out-of-scope use(s), {len(t.limitations)} stated "
                 f"and {generated} measured limitation(s)")


# --- helpers over facts --------------------------------------------------------------

def _primary(f: CardFacts) -> str:
    return str(f.metrics.get("primary_metric") or "macro_f1")


def _overall(f: CardFacts) -> Mapping[str, Any]:
    overall = f.metrics.get("overall")
    return overall if isinstance(overall, Mapping) else {}


def _segments(f: CardFacts) -> list[tuple[str, list[tuple[str, Mapping[str, Any]]]]]:
    """Segment columns and their values, sorted, each value with its stats."""
    segments = f.metrics.get("segments")
    if not isinstance(segments, Mapping):
        return []
    out = []
    for column in sorted(segments, key=str):
        values = segments[column]
        if isinstance(values, Mapping):
            out.append((str(column), [(str(v), values[v]) for v in sorted(values, key=str)
                                      if isinstance(values[v], Mapping)]))
    return out


def _coverage(f: CardFacts) -> list[dict[str, Any]]:
    rows = f.metrics.get("coverage")
    if not isinstance(rows, list):
        return []
    valid = [dict(r) for r in rows
             if isinstance(r, Mapping) and finite(r.get("threshold")) is not None]
    for r in valid:
        r["threshold"] = float(r["threshold"])
    return sorted(valid, key=lambda r: float(r["threshold"]))


def _ranked_features(features: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    # unknown importance sorts last; ties by name so the order is stable
    def key(r: Mapping[str, Any]) -> tuple[bool, float, str]:
        imp = finite(r.get("importance"))
        return (imp is None, -(imp or 0.0), str(r.get("feature")))
    return [dict(r) for r in sorted(features, key=key)]


def _table_link(data: Mapping[str, Any]) -> str:
    return f"{data.get('table')}@{data.get('version')}"


def _utc(when: dt.datetime) -> dt.datetime:
    # a naive time is taken to be UTC already, as the registry stores it
    if when.tzinfo is None:
        return when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


def _is_metric(value: Any) -> bool:
    return value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool))


def _count(value: Any) -> int | None:
    number = finite(value)
    return int(number) if number is not None else None


def _plain(value: Any) -> Any:
    """``value`` as JSON data: NaN and infinities become None, tuples lists, keys strings."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return finite(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_plain(v) for v in items]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    # an estimator object among params, a Path: its text is what a reader needs
    return str(value)


# --- config text ---------------------------------------------------------------------

_STR_FIELDS = ("overview", "license", "citation", "privacy", "human_oversight")
_LIST_FIELDS = ("owners", "references", "users", "use_cases", "out_of_scope", "limitations",
                "tradeoffs")
_KNOWN = sorted((*_STR_FIELDS, *_LIST_FIELDS, "ethical_considerations"))


def card_text_from_config(section: Mapping[str, Any] | None) -> CardText:
    """The card text of a ``[models.NAME.card]`` section given as a plain dict.

    ``ethical_considerations`` items are ``{"risk": ..., "mitigation": ...}`` tables or plain
    text (a risk without a stated mitigation). Raises UsageError for an unknown key or a
    value of the wrong type.
    """
    if section is None:
        return CardText()
    if not isinstance(section, Mapping):
        raise UsageError(f"model card text must be a table, not {type(section).__name__}")
    unknown = sorted(str(k) for k in section if k not in _KNOWN)
    if unknown:
        raise UsageError(f"model card text: unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"known keys: {', '.join(_KNOWN)}")
    values: dict[str, Any] = {}
    for key in _STR_FIELDS:
        if key in section:
            if not isinstance(section[key], str):
                raise UsageError(f"model card text: {key!r} must be text")
            values[key] = section[key]
    for key in _LIST_FIELDS:
        if key in section:
            values[key] = _strings(key, section[key])
    if "ethical_considerations" in section:
        values["ethical_considerations"] = _ethical(section["ethical_considerations"])
    return CardText(**values)


def _strings(key: str, value: Any) -> tuple[str, ...]:
    # a lone string would otherwise be split into characters by tuple()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"model card text: {key!r} must be a list of texts, "
                         f'e.g. {key} = ["..."]')
    return tuple(value)


def _ethical(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, (list, tuple)):
        raise UsageError("model card text: 'ethical_considerations' must be a list")
    out = []
    for entry in value:
        if isinstance(entry, str):
            out.append((entry, ""))
            continue
        if not isinstance(entry, Mapping):
            raise UsageError("model card text: each ethical consideration is text or "
                             '{ risk = "...", mitigation = "..." }')
        extra = sorted(str(k) for k in entry if k not in ("risk", "mitigation"))
        if extra:
            raise UsageError(f"model card text: unknown key(s) "
                             f"{', '.join(map(repr, extra))} in an ethical consideration; "
                             "known keys: mitigation, risk")
        risk, mitigation = entry.get("risk"), entry.get("mitigation", "")
        if not isinstance(risk, str) or not risk or not isinstance(mitigation, str):
            raise UsageError("model card text: an ethical consideration needs a `risk` text "
                             "(and optionally a `mitigation` text)")
        out.append((risk, mitigation))
    return tuple(out)


__all__ = ["ATTENTION", "MAX_TERM_CLASSES", "MET", "MIN_CLASS_ROWS", "MIN_SEGMENT_ROWS",
           "NOT_ASSESSED", "SCHEMA_VERSION", "CardFacts", "CardText", "build_card",
           "card_text_from_config", "render_markdown"]
