"""The ``[[monitors]]`` section: what a monitoring run checks, against what, how strictly.

A monitor looks at an input table (schema, data quality, feature drift against a
reference), a predictions table (class and confidence drift) and, when manually coded
labels arrive, the model's accuracy on them. With ``model`` set, everything it needs
comes from the model's champion: the reference is its training data at the recorded
version, the expected schema its signature, the vocabulary its training text.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.config_base import (
    NAME_PATTERN,
    StrictModel,
    check_columns,
    check_lake_table,
    parse_duration,
)
from agent.ml.config import _JobConfig

Severity = Literal["info", "warning", "critical"]
DriftMethod = Literal["auto", "ks", "wasserstein", "psi", "chi2", "jensenshannon", "none"]
ColumnKind = Literal["numeric", "categorical", "text"]
#: the checks a monitor makes; an alert is one check on one target (a column, a metric)
CHECKS = ("schema", "quality", "volume", "freshness", "drift", "prediction_drift",
          "confidence", "performance")
DEFAULT_SEVERITY: dict[str, Severity] = {
    "schema": "critical", "quality": "warning", "volume": "warning", "freshness": "warning",
    "drift": "warning", "prediction_drift": "warning", "confidence": "warning",
    "performance": "critical"}


class ColumnRule(StrictModel):
    """Checks and drift settings of one column."""

    type: str | None = None
    """Expected Arrow type (`string`, `int64`, `double`, `timestamp[us, tz=UTC]`, ...);
    a missing or retyped column is a schema alert (default: the champion's signature)."""
    kind: ColumnKind | None = None
    """How drift treats the column (default: `text` for the model's text features, else
    numeric by type, categorical otherwise)."""
    max_null_rate: float | None = Field(None, ge=0, le=1)
    """Largest share of nulls allowed (default: the monitor's `max_null_rate`)."""
    min: float | None = None
    """Smallest value allowed (numbers)."""
    max: float | None = None
    """Largest value allowed (numbers)."""
    allowed: list[str] | None = None
    """The values allowed (categories, compared as text)."""
    drift: DriftMethod = "auto"
    """auto: KS (p < 0.05) up to 1000 reference rows, normalized Wasserstein (0.1) above;
    chi-square / Jensen-Shannon (0.1) for categories; `psi` on demand (0.1 / 0.2);
    `none` turns drift off for this column."""
    threshold: float | None = Field(None, gt=0)
    """Drift threshold of the method (a p-value for ks and chi2, a distance otherwise)."""
    oov_threshold: float | None = Field(None, gt=0, le=1)
    """Text: largest share of tokens outside the training vocabulary (default 0.1)."""
    token_threshold: float | None = Field(None, gt=0)
    """Text: Jensen-Shannon distance of the token distributions (default 0.1)."""

    @model_validator(mode="after")
    def _range(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class MonitorConfig(_JobConfig):
    """A monitoring run: schema, quality, drift, predictions and accuracy checks."""

    model: Annotated[str | None, Field(pattern=NAME_PATTERN)] = None
    """The `[models.NAME]` watched: its champion gives the reference data, the expected
    schema, the vocabulary, `min_confidence` and the metrics to compare with."""
    input: str | None = None
    """Lake table checked for schema, quality and feature drift (e.g. new answers)."""
    predictions: str | None = None
    """Predictions table checked for class and confidence drift."""
    labels: str | None = None
    """Lake table of manually coded rows, joined on the model's key with the predictions
    to measure accuracy (rows the champion was trained on are left out)."""
    label: str | None = None
    """Column of `labels` with the true code (default: the model's label)."""
    reference: str | None = None
    """`TABLE` or `TABLE@VERSION` to compare with, instead of the champion's training data."""
    window: Literal["new", "all"] = "new"
    """new: the rows added since this monitor's previous run; all: the whole table."""
    drift_columns: list[str] | None = None
    """Columns checked for drift (default: the model's features, else those in `columns`)."""
    columns: dict[str, ColumnRule] = Field(default_factory=dict)
    """Per-column checks: `[monitors.columns.NAME]`."""
    max_null_rate: float | None = Field(None, ge=0, le=1)
    """Largest share of nulls in any checked column (None: only per-column rules)."""
    min_rows: int = Field(30, ge=1)
    """Fewer rows in the window than this: drift and accuracy are not judged (too few to
    tell), and the figures are recorded as insufficient."""
    expect_min_rows: int | None = Field(None, ge=0)
    """A window with fewer rows is a volume alert (e.g. a missing delivery)."""
    expect_max_rows: int | None = Field(None, ge=1)
    """A window with more rows is a volume alert (e.g. a file delivered twice)."""
    max_age: str | None = None
    """Freshness: the input's latest commit older than this (`26h`, `8d`) is an alert."""
    prediction_threshold: float | None = Field(None, gt=0)
    """Threshold of the class-distribution drift (chi-square p-value up to 1000 rows,
    Jensen-Shannon distance above; defaults 0.05 and 0.1)."""
    max_low_confidence_increase: float = Field(0.1, gt=0, le=1)
    """Confidence drift: how much the share of predictions below `min_confidence` may
    rise above the champion's share on its held-out rows."""
    max_metric_drop: float = Field(0.05, gt=0, le=1)
    """Performance: how far accuracy and macro-F1 on the coded rows may fall below the
    champion's held-out figures (overall and per segment)."""
    min_labelled: int = Field(30, ge=1)
    """Fewer coded rows than this: accuracy is not judged."""
    severity: dict[str, Severity] = Field(default_factory=dict)
    """Alert severity per check (`schema`, `quality`, `volume`, `freshness`, `drift`,
    `prediction_drift`, `confidence`, `performance`); defaults: schema and performance
    critical, the others warning."""
    batch_rows: int = Field(262_144, ge=1, le=10_000_000)
    """Rows read per batch (memory is bounded by this and the drift columns)."""

    @field_validator("input", "predictions", "labels")
    @classmethod
    def _tables(cls, v: str | None) -> str | None:
        return None if v is None else check_lake_table(v)

    @field_validator("reference")
    @classmethod
    def _reference(cls, v: str | None) -> str | None:
        if v is None:
            return v
        table, at, version = v.partition("@")
        check_lake_table(table)
        if at and not version.isdigit():
            raise ValueError(f"{v!r}: write `TABLE` or `TABLE@VERSION` (a version number)")
        return v

    @field_validator("drift_columns")
    @classmethod
    def _columns(cls, v: list[str] | None) -> list[str] | None:
        return check_columns(v)

    @field_validator("columns")
    @classmethod
    def _column_names(cls, v: dict[str, ColumnRule]) -> dict[str, ColumnRule]:
        check_columns(list(v))
        return v

    @field_validator("max_age")
    @classmethod
    def _age(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("severity")
    @classmethod
    def _severity(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - set(CHECKS))
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}; checks: {', '.join(CHECKS)}")
        return v

    @model_validator(mode="after")
    def _something(self) -> MonitorConfig:
        if not (self.input or self.predictions):
            raise ValueError("give the table to watch: `input = \"...\"` and/or "
                             "`predictions = \"...\"`")
        if self.labels and not self.predictions:
            raise ValueError("`labels` are compared with predictions: set `predictions`")
        if self.labels and not self.model:
            raise ValueError("`labels` need the `model` whose key and metrics they check")
        if (self.expect_min_rows is not None and self.expect_max_rows is not None
                and self.expect_min_rows > self.expect_max_rows):
            raise ValueError("expect_min_rows is above expect_max_rows")
        return self

    @property
    def max_age_seconds(self) -> float | None:
        return None if self.max_age is None else parse_duration(self.max_age)

    def severity_of(self, check: str) -> Severity:
        return self.severity.get(check, DEFAULT_SEVERITY[check])
