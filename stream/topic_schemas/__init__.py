"""Machine-readable schemas of every topic: JSON Schema (draft 2020-12) generated from the pydantic models
of :mod:`stream.schemas`, and the README's topics table rendered from those schemas.

- :func:`topic_json_schemas` builds the schema of each topic's messages (keyed by the
  :class:`~stream.settings.TopicNames` field: ``telemetry``, ``dead_letter``, ``alerts``, ``dropouts``,
  ``beats``, ``ground_truth``, ``scores``). Output messages are written with every field, so every field
  is ``required`` in their schemas; the telemetry schema is the frame a producer must send. The alerts
  schema selects the shape of ``evidence`` by ``kind`` (``allOf`` of ``if``/``then``), and the scores
  schema lists the ``window`` values of the committed scoring models (from their cards).
- The committed files ``stream/topic_schemas/<topic>.schema.json`` (package data) are what
  :func:`write_schemas` writes; ``ecg-monitor schema [TOPIC] [--out DIR]`` prints or writes them.
- :func:`render_topics_table` renders the README's table between ``<!-- topics-table:start -->`` and
  ``<!-- topics-table:end -->``.

``python -m stream.topic_schemas`` regenerates the committed files and the README table;
``tests/unit/test_topic_schemas.py`` fails when either differs from what this module generates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from stream.schemas import (
    ALERT_EVIDENCE,
    AlarmActionMessage,
    AlertMessage,
    BeatBatchMessage,
    DeadLetterMessage,
    DropoutMessage,
    FaultTruthMessage,
    RecoveredMessage,
    ScoresMessage,
    _FrameEnvelope,
)
from stream.settings import TopicNames

#: The JSON Schema dialect of every schema.
DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: Where the committed schema files are (package data of ``stream``).
SCHEMA_DIR = Path(__file__).resolve().parent
SUFFIX = ".schema.json"
TABLE_START = "<!-- topics-table:start -->"
TABLE_END = "<!-- topics-table:end -->"


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its setting name, message model, key and what one message stands for."""

    name: str
    model: type[BaseModel]
    per: str
    key: str = "stream id (UTF-8)"
    #: ``validation``: the schema a producer's message must satisfy (telemetry, read by the worker);
    #: ``serialization``: the messages the project writes (every field present).
    mode: Literal["validation", "serialization"] = "serialization"


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "telemetry",
        _FrameEnvelope,
        "frame of one stream (default 1 s, `ECG_FRAME_SECONDS`)",
        mode="validation",
    ),
    TopicSpec(
        "dead_letter",
        DeadLetterMessage,
        "rejected input message",
        key="the rejected message's key (empty when it had none)",
    ),
    TopicSpec("alerts", AlertMessage, "alert transition: raised, then resolved, per episode"),
    TopicSpec("dropouts", DropoutMessage, "closed dropout segment of one lead"),
    TopicSpec("beats", BeatBatchMessage, "processed frame (the processing receipt)"),
    TopicSpec("ground_truth", FaultTruthMessage, "injected fault (simulators)"),
    TopicSpec(
        "scores",
        ScoresMessage,
        "stream and scoring batch (windows are batched across streams: at most 64 windows or 0.25 s, "
        "one ONNX Runtime call per model)",
    ),
    TopicSpec("alarm_actions", AlarmActionMessage, "acknowledge or silence action on an alarm"),
    TopicSpec(
        "recovered",
        RecoveredMessage,
        "run of recovered (or unrecoverable) samples of one lead in one model window",
    ),
)
TOPIC_NAMES: tuple[str, ...] = tuple(t.name for t in TOPICS)


class _WireSchema(GenerateJsonSchema):
    """Serialization mode: ``model_dump_json`` writes every field, so every field is required."""

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        return self.mode == "serialization" or super().field_is_required(field, total)


def default_topic(name: str) -> str:
    """The default Kafka topic of setting ``name`` (``ECG_TOPIC_<NAME>`` overrides it at run time)."""
    return str(TopicNames.model_fields[name].default)


def resolve_topic(topic: str) -> str | None:
    """Setting name of ``topic`` (a setting name such as ``alerts`` or a default topic name such as
    ``ecg.alerts.v1``); None when unknown."""
    if topic in TOPIC_NAMES:
        return topic
    return next((n for n in TOPIC_NAMES if default_topic(n) == topic), None)


def score_windows(models_dir: str | Path | None = None) -> dict[str, str]:
    """``{window name: description}`` of the windows the scoring models in ``models_dir`` (default: the
    committed artifacts) take, e.g. ``beat_720: beat, 2 s at 360 Hz (cae, cae_pooled)``."""
    from models.card import DEFAULT_ARTIFACTS_DIR, list_cards

    by_window: dict[str, list[str]] = {}
    what: dict[str, str] = {}
    for card in list_cards(models_dir or DEFAULT_ARTIFACTS_DIR):
        if card.role != "scorer":
            continue
        w = card.window
        by_window.setdefault(w.name, []).append(card.name)
        leads = f", {len(w.leads)} leads" if w.leads else ""
        what[w.name] = f"{w.kind}, {w.seconds:.3g} s at {w.fs:.4g} Hz{leads}"
    return {
        name: f"{what[name]} ({', '.join(models)})" for name, models in sorted(by_window.items())
    }


def _alert_evidence(schema: dict[str, Any]) -> None:
    """Add the evidence model of each kind and select it by ``kind``; resolved messages carry duration_s."""
    defs = schema.setdefault("$defs", {})
    for model in dict.fromkeys(ALERT_EVIDENCE.values()):
        defs[model.__name__] = model.model_json_schema(mode="validation")
    schema["allOf"] = [
        {
            "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
            "then": {"properties": {"evidence": {"$ref": f"#/$defs/{model.__name__}"}}},
        }
        for kind, model in ALERT_EVIDENCE.items()
    ] + [
        {
            "if": {"properties": {"status": {"const": "resolved"}}, "required": ["status"]},
            "then": {"properties": {"evidence": {"required": ["duration_s"]}}},
        }
    ]


def _score_windows(schema: dict[str, Any]) -> None:
    windows = score_windows()
    prop = schema["$defs"]["ScoreFields"]["properties"]["window"]
    prop["examples"] = list(windows)
    prop["description"] += " Committed scoring models: " + "; ".join(
        f"{name} = {text}" for name, text in windows.items()
    )
    prop["description"] += "."


def topic_json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the messages of topic setting ``name``."""
    spec = next((t for t in TOPICS if t.name == name), None)
    if spec is None:
        raise KeyError(f"unknown topic {name!r}; known: {', '.join(TOPIC_NAMES)}")
    body = spec.model.model_json_schema(mode=spec.mode, schema_generator=_WireSchema)
    topic = default_topic(name)
    schema: dict[str, Any] = {
        "$schema": DRAFT,
        "$id": f"urn:ecg-monitor:schema:{topic}",
        "title": body.pop("title"),
        "description": body.pop("description", ""),
        "x-topic": topic,
        "x-topic-setting": f"ECG_TOPIC_{name.upper()}",
        "x-key": spec.key,
        "x-one-message-per": spec.per,
        **body,
    }
    if name == "alerts":
        _alert_evidence(schema)
    elif name == "scores":
        _score_windows(schema)
    return schema


def topic_json_schemas() -> dict[str, dict[str, Any]]:
    """``{topic setting name: JSON Schema}`` of every topic, in :data:`TOPICS` order."""
    return {name: topic_json_schema(name) for name in TOPIC_NAMES}


def dumps(schema: Mapping[str, Any]) -> str:
    """The committed text of a schema (2-space indent, UTF-8, trailing newline)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(out_dir: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Write ``<name>.schema.json`` of each topic (default: all) into ``out_dir``; the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or TOPIC_NAMES:
        path = out / f"{name}{SUFFIX}"
        path.write_text(dumps(topic_json_schema(name)), encoding="utf-8")
        paths.append(path)
    return paths


def committed_schemas(schema_dir: str | Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    """The committed schema files, ``{topic setting name: schema}``."""
    return {
        p.name[: -len(SUFFIX)]: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(Path(schema_dir).glob(f"*{SUFFIX}"))
    }


# ------------------------------------------------------------------------------------ the README table
def _text(value: str) -> str:
    """One markdown table cell: whitespace collapsed, RST literals as code, pipes escaped."""
    text = re.sub(r"\s+", " ", value).strip().replace("``", "`")
    return text.replace("|", "\\|")


def _ref(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = prop.get("$ref")
    return defs[ref.rsplit("/", 1)[-1]] if isinstance(ref, str) else prop


def _type(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    """A short type of a property: ``number (epoch s)``, ``string: a, b``, ``array of objects``..."""
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "anyOf" in prop:
        outer = {k: prop[k] for k in ("description", "format", "contentEncoding") if k in prop}
        parts = [_type({**outer, **p}, defs) for p in prop["anyOf"]]
        nullable = "null" in parts
        parts = list(dict.fromkeys(p for p in parts if p != "null"))
        if len(parts) == 2 and parts[1] == "string" and parts[0].startswith("string: "):
            parts = [parts[0] + " (or another string)"]
        text = " or ".join(parts)
        return f"{text} or null" if nullable else text
    prop = _ref(prop, defs)
    kind = prop.get("type", "object" if "properties" in prop else "any")
    if "enum" in prop:
        return f"{kind}: {', '.join(map(str, prop['enum']))}"
    if kind == "number" and "epoch seconds" in prop.get("description", "").lower():
        return "number (epoch s)"
    if kind == "string" and prop.get("format") == "date-time":
        return "string (ISO-8601)"
    if kind == "string" and prop.get("contentEncoding") == "base64":
        return "string (base64)"
    if kind == "array":
        items = _ref(prop.get("items", {}), defs)
        if "properties" in items:
            return "array of objects"
        return f"array of {_type(items, defs)}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"object {{name: {_type(prop['additionalProperties'], defs)}}}"
    return str(kind)


def _field_rows(
    schema: Mapping[str, Any], defs: Mapping[str, Any], prefix: str = "", label: str = ""
) -> list[tuple[str, str, str]]:
    """``(field, type, meaning)`` rows of an object schema's properties, nested objects expanded
    (``beats[].time``); ``label`` prefixes the meaning (the alert kinds of an evidence model)."""
    rows = []
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name == "v" and not prefix:
            continue  # every message's schema version, said once above the table
        field = f"{prefix}{name}"
        typ = _type(prop, defs)
        if name not in required:
            typ += ", optional"
        meaning = prop.get("description", "")
        rows.append((field, typ, f"{label}{meaning}"))
        items = _ref(prop.get("items", {}), defs) if prop.get("type") == "array" else {}
        if "properties" in items:
            rows += _field_rows(items, defs, f"{field}[].")
    return rows


def _evidence_rows(schema: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Rows of ``evidence.*`` per alert kind (from the alerts schema's ``if kind then evidence``)."""
    defs = schema.get("$defs", {})
    kinds: dict[str, list[str]] = {}
    for rule in schema.get("allOf", ()):
        kind = rule["if"]["properties"].get("kind", {}).get("const")
        ref = rule["then"]["properties"]["evidence"].get("$ref")
        if kind is not None and ref is not None:
            kinds.setdefault(ref.rsplit("/", 1)[-1], []).append(kind)
    if not kinds:
        return []
    # fields every kind's evidence has (duration_s, closed_by) are listed once, after the others
    common = set.intersection(*(set(defs[d]["properties"]) for d in kinds))
    rows = []
    for def_name, names in kinds.items():
        model = defs[def_name]
        own = {k: v for k, v in model["properties"].items() if k not in common}
        rows += _field_rows(
            {**model, "properties": own}, defs, "evidence.", f"{', '.join(names)}: "
        )
    model = defs[next(iter(kinds))]
    shared = {k: v for k, v in model["properties"].items() if k in common}
    return rows + _field_rows({**model, "properties": shared}, defs, "evidence.", "every kind: ")


def render_topics_table(schemas: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The README's topics table (markdown, between the markers, markers excluded): one row per topic,
    then one row per field of every message, nested fields, score windows and per-kind evidence
    included."""
    schemas = schemas if schemas is not None else topic_json_schemas()
    lines = [
        "| topic (setting) | key | value (schema file) | one message per |",
        "|---|---|---|---|",
    ]
    for name, schema in schemas.items():
        lines.append(
            f"| `{schema['x-topic']}` (`{name}`) | {_text(schema['x-key'])} | `{schema['title']}` "
            f"(`stream/topic_schemas/{name}{SUFFIX}`) | {_text(schema['x-one-message-per'])} |"
        )
    lines += ["", "| value | field | type | meaning |", "|---|---|---|---|"]
    for name, schema in schemas.items():
        defs = schema.get("$defs", {})
        rows = _field_rows(schema, defs)
        if name == "alerts":
            at = next(i for i, r in enumerate(rows) if r[0] == "evidence") + 1
            rows[at:at] = _evidence_rows(schema)
        for i, (field, typ, meaning) in enumerate(rows):
            value = f"`{schema['title']}`" if i == 0 else ""
            lines.append(f"| {value} | `{field}` | {_text(typ)} | {_text(meaning)} |")
    return "\n".join(lines) + "\n"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_table(readme: str, table: str, name: str = "topics-table") -> str:
    """``readme`` with the text between the ``name`` markers replaced by ``table``."""
    first, last = _markers(name)
    start, end = readme.index(first) + len(first), readme.index(last)
    return f"{readme[:start]}\n{table}{readme[end:]}"


def table_in(readme: str, name: str = "topics-table") -> str:
    """The text between the ``name`` markers of ``readme`` (what its renderer must equal)."""
    first, last = _markers(name)
    start, end = readme.index(first) + len(first), readme.index(last)
    return readme[start:end].removeprefix("\n")
