"""The ML sections of the config: ``[models.NAME]``, ``[[trainings]]``, ``[[predictions]]``.

A model says what to learn (tables, features, label, estimator, evaluation, promotion
policy, model card text); a training says when to fit it; a prediction says which
model@alias codes which input table into which predictions table, and when.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.config_base import (
    IDENT,
    NAME_PATTERN,
    StrictModel,
    check_columns,
    check_cron,
    check_lake_table,
)

MetricName = Literal["accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall"]
TEXT_CLASSIFIER = "text-classifier"
#: predictions below this confidence count as uncertain when a model sets no min_confidence
DEFAULT_MIN_CONFIDENCE = 0.5
RetrainTrigger = Literal["drift", "performance", "schedule", "new_data"]
#: the fields of a model's config that govern promotion and retraining, not the fit
POLICY_FIELDS = frozenset({"description", "card", "promotion", "min_improvement",
                           "min_confidence", "retrain_on", "max_segment_drop",
                           "segment_min_rows"})


def _default_metrics() -> list[MetricName]:
    return ["accuracy", "macro_f1"]


def _default_retrain_on() -> list[RetrainTrigger]:
    return ["schedule", "new_data"]


class SplitSection(StrictModel):
    """How labelled rows are held out for evaluation."""

    test_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of labelled rows held out. Rows are chosen by a hash of their key and the seed,
    so a row stays held out across versions and a champion and a challenger are compared
    on rows neither trained on."""


class EthicalItem(StrictModel):
    """A risk and how it is mitigated."""

    risk: str
    """What could go wrong, and for whom."""
    mitigation: str = ""
    """What is done about it."""


def _or_plain_text(schema: dict[str, Any]) -> None:
    """In the JSON schema an item is a risk table or plain text, as the config accepts."""
    schema["items"] = {"anyOf": [schema["items"], {"type": "string"}]}


class CardSection(StrictModel):
    """Free text for the model card; what Silta measures is filled in by itself."""

    overview: str = ""
    """What the model does, in a few sentences (default: the model's description)."""
    owners: list[str] = Field(default_factory=list)
    """Teams or people responsible for the model."""
    license: str = ""
    """Licence of the model, if it is shared."""
    references: list[str] = Field(default_factory=list)
    """Links to methods documentation, classifications, papers."""
    citation: str = ""
    """How to cite the model."""
    users: list[str] = Field(default_factory=list)
    """Intended users."""
    use_cases: list[str] = Field(default_factory=list)
    """What the model is for."""
    out_of_scope: list[str] = Field(default_factory=list)
    """Uses the model is not meant for."""
    limitations: list[str] = Field(default_factory=list)
    """Known limitations."""
    tradeoffs: list[str] = Field(default_factory=list)
    """Trade-offs made (e.g. coverage against accuracy)."""
    ethical_considerations: list[EthicalItem] = Field(
        default_factory=list,
        json_schema_extra=_or_plain_text)
    """Risks and their mitigations: `{ risk = "...", mitigation = "..." }` or plain text."""
    privacy: str = ""
    """How personal data in the training data and the artifact is handled."""
    human_oversight: str = ""
    """How people review the model's output (e.g. manual coding of uncertain rows)."""

    @field_validator("ethical_considerations", mode="before")
    @classmethod
    def _plain_text(cls, v: Any) -> Any:
        # plain text is a risk without a stated mitigation; a union would report a
        # mistyped key twice, once per branch
        return [{"risk": x} if isinstance(x, str) else x for x in v] if isinstance(v, list) \
            else v


class ModelConfig(StrictModel):
    """A model: what it learns from, how it is evaluated, when it may become champion."""

    description: str = ""
    """Free text for operators and the model card."""
    training_table: str
    """Lake table with the features (read at a pinned version)."""
    labels_table: str | None = None
    """Lake table with the labels (e.g. a manually coded sample), joined on `key`; without
    it the label is a column of `training_table`."""
    key: list[str] = Field(min_length=1)
    """Columns that identify a row (joins, the evaluation split, predictions)."""
    label: str
    """Column to predict (e.g. an occupation code)."""
    text_features: list[str] = Field(default_factory=list)
    """Free-text columns (e.g. a job title)."""
    features: list[str] = Field(default_factory=list)
    """Tabular columns: numeric by type, categorical otherwise."""
    estimator: str = TEXT_CLASSIFIER
    """`text-classifier` (TF-IDF n-grams + logistic regression, for coding free text), or
    a scikit-learn classifier or pipeline by import path, e.g.
    `sklearn.ensemble:RandomForestClassifier`."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Parameters of the estimator (for text-classifier: classifier, C, alpha, max_iter,
    char_ngrams, word_ngrams, min_df, max_features, class_weight)."""
    preprocess: bool = True
    """Wrap an import-path estimator in Silta's feature preprocessing (TF-IDF for text,
    one-hot for categories, scaling for numbers); false hands it the feature columns."""
    split: SplitSection = Field(default_factory=SplitSection)
    """The held-out evaluation split."""
    seed: int = 0
    """Seed of the split and of the estimator: the same seed, data and code give the
    same model (`silta runs replay`)."""
    metrics: list[MetricName] = Field(default_factory=_default_metrics)
    """Metrics computed on the held-out rows, overall and per segment."""
    primary_metric: MetricName = "macro_f1"
    """The metric a challenger must improve to replace the champion."""
    segments: list[str] = Field(default_factory=list)
    """Columns whose values are evaluated separately (e.g. language, region)."""
    promotion: Literal["manual", "auto"] = "manual"
    """auto: a better version becomes champion by itself; manual: an operator approves
    (`silta models promote`)."""
    min_improvement: float = Field(0.0, ge=0, le=1)
    """How much a challenger must beat the champion by on the primary metric."""
    max_segment_drop: float | None = Field(0.05, ge=0, le=1)
    """A challenger whose primary metric falls by more than this in any segment (against
    the champion on the same held-out rows) is not promoted, however good overall;
    None turns the segment gate off."""
    segment_min_rows: int = Field(20, ge=1)
    """Segments with fewer held-out rows than this are too small to gate promotion."""
    retrain_on: list[RetrainTrigger] = Field(default_factory=_default_retrain_on)
    """What starts a training of this model: `schedule` (the training's cron),
    `new_data` (its `after` links), `drift` and `performance` (a firing alert of a
    monitor of this model: continuous training)."""
    min_training_rows: int = Field(20, ge=2)
    """Fewer labelled rows than this is an error, not a model."""
    min_confidence: float | None = Field(None, ge=0, le=1)
    """Rows predicted below this confidence are flagged for manual coding (the default
    of every prediction of this model)."""
    trusted_types: list[str] = Field(default_factory=list)
    """Types outside scikit-learn, numpy and scipy that a custom estimator's artifact
    may hold (skops refuses any other)."""
    card: CardSection = Field(default_factory=CardSection)
    """Text of the model card."""

    @field_validator("training_table", "labels_table")
    @classmethod
    def _tables(cls, v: str | None) -> str | None:
        return None if v is None else check_lake_table(v)

    @field_validator("key", "text_features", "features", "segments")
    @classmethod
    def _columns(cls, v: list[str]) -> list[str]:
        check_columns(v)
        return v

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        if not IDENT.match(v):
            raise ValueError(f"column {v!r} is not a plain column name")
        return v

    @field_validator("estimator")
    @classmethod
    def _estimator(cls, v: str) -> str:
        if v == TEXT_CLASSIFIER:
            return v
        module, sep, attr = v.partition(":") if ":" in v else v.rpartition(".")
        parts = [*module.split("."), attr]
        if not sep or not all(p.isidentifier() for p in parts):
            raise ValueError(f"{v!r} is neither `text-classifier` nor an import path like "
                             "`sklearn.ensemble:RandomForestClassifier`")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if not self.text_features and not self.features:
            raise ValueError("give at least one feature: `text_features = [...]` and/or "
                             "`features = [...]`")
        used = [*self.key, *self.text_features, *self.features]
        twice = sorted({c for c in used if used.count(c) > 1})
        if twice:
            raise ValueError(f"column(s) {twice} are listed more than once among key, "
                             "text_features and features")
        if self.label in used:
            raise ValueError(f"the label {self.label!r} cannot also be a key or a feature")
        if self.primary_metric not in self.metrics:
            raise ValueError(f"primary_metric {self.primary_metric!r} must be one of "
                             f"`metrics` ({', '.join(self.metrics)})")
        return self

    def config_hash(self) -> str:
        """sha256 of what shapes the fitted model (not the card text or the promotion)."""
        shaping = self.model_dump(mode="json", exclude=set(POLICY_FIELDS))
        text = json.dumps(shaping, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


class _JobConfig(StrictModel):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Unique name among syncs, trainings and predictions."""
    description: str = ""
    """Free text for operators."""
    schedule: str | None = None
    """Cron expression (5 fields, the agent's local time)."""
    after: list[str] = Field(default_factory=list)
    """Jobs this one follows, as `sync:NAME`, `train:NAME` or `predict:NAME`: it runs when
    one of them committed something new (and after them in `silta agent run --once`)."""
    enabled: bool = True
    """A disabled job is kept in config but never runs."""

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return check_cron(v)

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v  # `after = "sync:x"` reads naturally too


class TrainingConfig(_JobConfig):
    """When to fit a model: on a schedule and/or after new data."""

    model: Annotated[str, Field(pattern=NAME_PATTERN)]
    """The `[models.NAME]` to fit."""


class PredictionConfig(_JobConfig):
    """Which model codes which input table into which predictions table."""

    model: str
    """`MODEL@ALIAS` (resolved at each run; `MODEL` alone means `MODEL@champion`) or
    `MODEL@VERSION` to pin one version."""
    input: str
    """Lake table whose new rows are predicted (incrementally, by Delta version)."""
    output: str
    """Lake table the predictions are appended to."""
    passthrough: list[str] = Field(default_factory=list)
    """Input columns copied to the predictions next to the key."""
    min_confidence: float | None = Field(None, ge=0, le=1)
    """Rows below this confidence get `needs_review = true` (default: the model's)."""
    top_k: int = Field(3, ge=1, le=50)
    """How many most likely classes each row keeps, with their probabilities."""
    batch_rows: int = Field(65_536, ge=1, le=10_000_000)
    """Rows predicted per batch (memory is bounded by this, not by the table)."""

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(@[A-Za-z0-9_-]{1,64})?", v):
            raise ValueError(f"{v!r} is not `MODEL`, `MODEL@ALIAS` or `MODEL@VERSION`")
        return v

    @field_validator("input")
    @classmethod
    def _input(cls, v: str) -> str:
        return check_lake_table(v)

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        return check_lake_table(v, writable=True)

    @field_validator("passthrough")
    @classmethod
    def _passthrough(cls, v: list[str]) -> list[str]:
        check_columns(v)
        return v

    @property
    def model_name(self) -> str:
        return self.model.partition("@")[0]

    @property
    def model_ref(self) -> str:
        """The reference resolved at run time: an alias (champion by default) or a version."""
        return self.model if "@" in self.model else f"{self.model}@champion"
