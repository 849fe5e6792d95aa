"""JSON Schema of rule files, generated from the same pydantic models the loader validates with
(for ``novita-monitor schema`` and editors' YAML plugins).

The ``when`` tree is recursive and open to every registered condition, so its schema is built
here: ``all``/``any``/``not``, a comparison, or exactly one built-in with its own parameters.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

import monitor.actions.model  # registers the actions (parameter models)
import monitor.rules.conditions  # noqa: F401  (registers the built-in conditions)
from monitor.rules.durations import format_duration
from monitor.rules.model import RuleModel
from monitor.rules.registry import actions, conditions
from monitor.rules.tree import CompareModel

_DELTA = TypeAdapter(timedelta)
SCHEMA_ID = "https://novita-monitor.invalid/schemas/rules.json"
REF = "#/$defs/{model}"


def rule_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a rule file."""
    specs = list(conditions)
    action_specs = list(actions)
    models: list[type[BaseModel]] = [
        RuleModel,
        CompareModel,
        *(s.params for s in specs),
        *(a.params for a in action_specs),
    ]
    refs, top = models_json_schema(
        [(m, "validation") for m in models], ref_template=REF, by_alias=True
    )
    defs: dict[str, Any] = dict(top.get("$defs", {}))

    def ref_of(model: type) -> dict[str, Any]:
        return refs[(model, "validation")]

    rule = defs[RuleModel.__name__]
    rule["properties"]["when"] = {"$ref": "#/$defs/Condition"}
    action_branches = []
    for act in action_specs:
        branch = _single(act.name, {"anyOf": [dict(ref_of(act.params)), {"type": "null"}]})
        branch["description"] = act.doc
        action_branches.append(branch)
    rule["properties"]["actions"] = {
        "description": rule["properties"]["actions"].get("description", ""),
        "anyOf": [
            {
                "type": "array",
                "items": {
                    "anyOf": [
                        *action_branches,
                        {"enum": [a.name for a in action_specs], "description": "no parameters"},
                    ]
                },
            },
            {"type": "null"},
        ],
    }
    condition = "#/$defs/Condition"
    branches: list[dict[str, Any]] = [
        _single("all", {"type": "array", "minItems": 1, "items": {"$ref": condition}}),
        _single("any", {"type": "array", "minItems": 1, "items": {"$ref": condition}}),
        _single("not", {"$ref": condition}),
        ref_of(CompareModel),
    ]
    for spec in specs:
        params = dict(ref_of(spec.params))
        branch = _single(spec.name, {"anyOf": [params, {"type": "null"}]})
        branch["description"] = f"{spec.doc} (resources: {', '.join(sorted(spec.resources))})"
        branches.append(branch)
    defs["Condition"] = {"description": "a condition tree node", "anyOf": branches}
    _readable_defaults(defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "novita-monitor rule file",
        "type": "object",
        "properties": {
            "rules": {"type": "array", "items": {"$ref": REF.format(model="RuleModel")}}
        },
        "required": ["rules"],
        "additionalProperties": False,
        "$defs": defs,
    }


_ISO_DURATION = re.compile(r"^-?P(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?$")


def _readable_defaults(node: Any) -> None:
    """Pydantic renders timedelta defaults as ISO 8601 (``PT30M``); show them as a rule file
    spells them (``30m``)."""
    if isinstance(node, dict):
        default = node.get("default")
        if isinstance(default, str) and _ISO_DURATION.match(default):
            node["default"] = format_duration(_DELTA.validate_python(default))
        elif isinstance(default, list):
            node["default"] = [
                format_duration(_DELTA.validate_python(d))
                if isinstance(d, str) and _ISO_DURATION.match(d)
                else d
                for d in default
            ]
        for value in node.values():
            _readable_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _readable_defaults(value)


def _single(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {key: value},
        "required": [key],
        "additionalProperties": False,
    }
