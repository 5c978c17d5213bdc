"""The model card: one typed contract between training, export and the stream runtime.

``models/export.py`` writes it beside each ONNX file (``<name>.card.json``); the runtime reads it with
:func:`load_card`. A card says what the model is (name, version, role, the runtime class that serves it),
what it takes (input and output tensors, sampling rate, and its preprocessing as data: filter band, window,
normalisation), how it decides (threshold and how it was chosen), how good it is (metrics), what it was
trained on (data and split), and where it came from (sha256 of the ONNX file, the command that made it).
Model-specific sections (a scoring rule, a rhythm weight, a blend weight, ...) stay as extra keys, read
with :meth:`ModelCard.get`.

No torch, no stream imports: this is the bottom layer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import ModelError
from models.preprocessing.leads import TWELVE_LEADS

log = logging.getLogger(__name__)

#: The committed artifacts (ONNX files and their cards).
DEFAULT_ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
#: Version of the card format written by this code.
CARD_VERSION = 2
CARD_SUFFIX = ".card.json"

Role = Literal["scorer", "recoverer", "component", "classifier"]
WindowKind = Literal["beat", "cycle", "leads"]


class TensorSpec(BaseModel):
    """One input or output tensor of the ONNX graph (symbolic dims as strings)."""

    model_config = ConfigDict(frozen=True)

    name: str
    shape: list[int | str]
    dtype: str = "float32"


class FilterSpec(BaseModel):
    """The band-pass the stream applies before a window is cut (causal Butterworth, state carried)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["causal_butterworth_bandpass"] = "causal_butterworth_bandpass"
    highpass_hz: float = 0.5
    lowpass_hz: float = 40.0


class WindowSpec(BaseModel):
    """The window a model takes, as data: the stream cuts exactly the windows its loaded cards declare.

    - ``beat``: ``samples`` at ``fs`` of the beat lead, centred on each detected beat;
    - ``cycle``: one cardiac cycle, ``before_s`` before to ``after_s`` after the beat, resampled to
      ``samples`` (so ``fs`` = samples / (before_s + after_s));
    - ``leads``: consecutive, non-overlapping ``samples`` at ``fs`` of the named ``leads`` (all must be in
      the stream).

    ``name`` is the window's label on the scores topic (e.g. ``beat_720``); two cards declaring the same
    name must declare the same window.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    kind: WindowKind
    fs: float = Field(gt=0)
    samples: int = Field(gt=0)
    before_s: float | None = None
    after_s: float | None = None
    leads: tuple[str, ...] | None = None
    damaged: bool = Field(
        True,
        description="windows with missing samples are cut too (NaN kept) for a recoverer to fill",
    )

    def model_post_init(self, __context: Any) -> None:
        if self.kind == "cycle" and (self.before_s is None or self.after_s is None):
            raise ValueError(f"cycle window {self.name!r} needs before_s and after_s")
        if self.kind == "leads" and not self.leads:
            raise ValueError(f"leads window {self.name!r} needs its leads")

    @property
    def seconds(self) -> float:
        """Duration of the window in seconds."""
        return self.samples / self.fs


class Normalisation(BaseModel):
    """How a window is normalised before the graph: ``where`` the runtime does it (``runtime``), the ONNX
    graph does it (``graph``, statistics inside the graph), or ``none``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    method: str = "none"
    where: Literal["runtime", "graph", "none"] = "none"
    eps: float | None = None
    description: str = ""


class Preprocessing(BaseModel):
    """Everything between the raw stream (mV) and the graph's input."""

    model_config = ConfigDict(frozen=True)

    filter: FilterSpec = Field(default_factory=FilterSpec)
    window: WindowSpec
    normalisation: Normalisation = Field(default_factory=Normalisation)
    description: str = ""


class Threshold(BaseModel):
    """The decision threshold (``score > value`` is anomalous) and how it was chosen."""

    model_config = ConfigDict(frozen=True, extra="allow")

    value: float | None = None
    rule: str = ""


class DataSpec(BaseModel):
    """What the model was trained and selected on."""

    model_config = ConfigDict(frozen=True, extra="allow")

    dataset: str = ""
    split: str = ""
    details: Any = None


class ModelCard(BaseModel):
    """The typed model card (see the module docstring); unknown keys are kept as model-specific extras."""

    model_config = ConfigDict(frozen=True, extra="allow", protected_namespaces=())

    card_version: int = CARD_VERSION
    name: str
    version: str = ""
    role: Role
    runtime: str = Field(description="key of the runtime class serving this card (models.runtime)")
    member_of: str | None = Field(
        None, description="components only: the model whose runtime loads this one"
    )
    description: str = ""
    onnx_file: str
    onnx_sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sampling_rate_hz: float
    preprocessing: Preprocessing
    threshold: Threshold | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    data: DataSpec = Field(default_factory=DataSpec)
    command: str = ""

    @property
    def window(self) -> WindowSpec:
        return self.preprocessing.window

    @property
    def threshold_value(self) -> float | None:
        return None if self.threshold is None else self.threshold.value

    def get(self, key: str, default: Any = None) -> Any:
        """A model-specific extra key (or a typed field) of the card, ``default`` when absent."""
        extra = self.model_extra or {}
        if key in extra:
            return extra[key]
        if key in type(self).model_fields:
            return getattr(self, key)
        return default

    @property
    def raw(self) -> dict[str, Any]:
        """The card as a JSON-able dict (what is written to disk)."""
        return self.model_dump(mode="json")

    def write(self, path: str | Path) -> Path:
        """Write the card as JSON to ``path``."""
        path = Path(path)
        path.write_text(json.dumps(self.raw, indent=2) + "\n")
        return path


def card_path(models_dir: str | Path, name: str) -> Path:
    """``<models_dir>/<name>.card.json``."""
    return Path(models_dir) / f"{name}{CARD_SUFFIX}"


def parse_card(raw: dict[str, Any], source: str = "card") -> ModelCard:
    """A :class:`ModelCard` from its JSON dict; :class:`ModelError` naming the problem otherwise."""
    if not isinstance(raw, dict):
        raise ModelError(f"malformed model card {source}: not a JSON object")
    if raw.get("card_version") != CARD_VERSION:
        raise ModelError(
            f"model card {source} is format {raw.get('card_version', 1)}, this code reads {CARD_VERSION}; "
            f"migrate it with `python -m training export {raw.get('name', 'MODEL')} --migrate-card`"
        )
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelError(f"malformed model card {source}: {where}: {first['msg']}") from exc


def load_card(path: str | Path) -> ModelCard:
    """Read a ``*.card.json``; :class:`ModelError` when missing, malformed or of an old format."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"model card not found: {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"malformed model card {path}: {exc}") from exc
    return parse_card(raw, str(path))


def list_cards(models_dir: str | Path) -> list[ModelCard]:
    """Every readable card in ``models_dir``, sorted by name; an unreadable one is logged with its reason
    and left out (loading it by name raises that reason)."""
    out = []
    for p in sorted(Path(models_dir).glob(f"*{CARD_SUFFIX}")):
        try:
            out.append(load_card(p))
        except ModelError as exc:
            log.warning("model card left out: %s", exc)
    return out


def upgrade(raw: dict[str, Any], contract: dict[str, Any]) -> ModelCard:
    """A card dict in the old, untyped format (or a new export's fields) plus its training task's
    ``contract`` (``role``, ``runtime``, ``window``, ``normalisation``, optionally ``filter`` and
    ``member_of``) -> a typed :class:`ModelCard`. Old keys move into the typed fields (``training_data`` and
    ``split`` -> ``data``, ``validation_metrics`` -> ``metrics.validation``, prose ``preprocessing`` ->
    ``preprocessing.description``, ``normalisation`` -> ``preprocessing.normalisation``); the rest stay as
    model-specific extras."""
    card = dict(raw)
    if card.get("card_version") == CARD_VERSION:
        return parse_card(card, str(card.get("name", "card")))
    old_pre = card.pop("preprocessing", None)
    inp = card.get("input")
    old_input: dict[str, Any] = inp if isinstance(inp, dict) else {}
    description = old_pre if isinstance(old_pre, str) else str(old_input.get("preprocessing", ""))
    old_norm = card.pop("normalisation", None)
    norm: dict[str, Any] = dict(contract.get("normalisation") or {})
    if isinstance(old_norm, dict):  # the card's own method/eps win; the contract says where it runs
        where_prose = old_norm.get("where")
        merged = {k: v for k, v in old_norm.items() if k != "where"}
        for k, v in norm.items():
            if k == "where" or k not in merged:
                merged[k] = v
        if isinstance(where_prose, str) and where_prose not in ("runtime", "graph", "none"):
            merged.setdefault("description", where_prose)
        norm = merged
    elif isinstance(old_norm, str) and old_norm:
        norm.setdefault("description", old_norm)
    window = WindowSpec.model_validate(contract["window"])
    card["preprocessing"] = {
        "filter": contract.get("filter") or FilterSpec().model_dump(),
        "window": window.model_dump(),
        "normalisation": norm,
        "description": description,
    }
    th = card.get("threshold")
    if isinstance(th, int | float):
        card["threshold"] = {"value": float(th), "rule": ""}
    elif th is None and "threshold" in card:
        card["threshold"] = None
    metrics = dict(card.get("metrics") or {})
    if "validation_metrics" in card:
        metrics["validation"] = card.pop("validation_metrics")
    card["metrics"] = metrics
    td = card.pop("training_data", None)
    split = card.pop("split", None)
    if "data" not in card:
        td_dict = td if isinstance(td, dict) else {}
        card["data"] = {
            "dataset": td if isinstance(td, str) else str(td_dict.get("dataset", "")),
            "split": str(split.get("kind", ""))
            if isinstance(split, dict)
            else str(td_dict.get("split", split or "")),
            "details": {"training_data": td, "split": split} if split is not None else td,
        }
    card.setdefault("version", str(card.get("exported_at", "")))
    card.setdefault("description", str(card.get("task", "")))
    card.setdefault("sampling_rate_hz", window.fs)
    card["role"] = contract["role"]
    card["runtime"] = contract["runtime"]
    if contract.get("member_of"):
        card["member_of"] = contract["member_of"]
    card["card_version"] = CARD_VERSION
    # typed fields first in the written JSON
    order = [*ModelCard.model_fields]
    ordered = {k: card[k] for k in order if k in card}
    ordered.update({k: v for k, v in card.items() if k not in ordered})
    return parse_card(ordered, str(card.get("name", "card")))


#: The windows of the committed models (their training tasks' contracts use these).
BEAT_720 = WindowSpec(name="beat_720", kind="beat", fs=360.0, samples=720)
BEAT_400 = WindowSpec(
    name="beat_400",
    kind="cycle",
    fs=400 / 0.7,
    samples=400,
    before_s=0.25,
    after_s=0.45,
    damaged=False,
)
LEADS_10S = WindowSpec(
    name="leads_10s",
    kind="leads",
    fs=100.0,
    samples=1000,
    leads=TWELVE_LEADS,
)


def contract(
    role: Role,
    runtime: str,
    window: WindowSpec,
    normalisation: dict[str, Any] | None = None,
    member_of: str | None = None,
) -> dict[str, Any]:
    """The typed part of a card that a training task declares (see :func:`upgrade`)."""
    out: dict[str, Any] = {
        "role": role,
        "runtime": runtime,
        "window": window.model_dump(),
        "normalisation": normalisation or {"method": "none", "where": "none"},
    }
    if member_of:
        out["member_of"] = member_of
    return out
