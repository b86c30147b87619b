"""JSON Schema documents as API Gateway models.

API Gateway models are draft-04. `to_api_gateway_schema` converts a schema dict into CDK's typed
`JsonSchema`; every keyword must have a counterpart, an unknown one raises instead of being dropped,
so a model never validates less than the schema says. `draft04_from_pydantic` turns the schema a
pydantic model generates (draft 2020-12) into the draft-04 document such a model takes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aws_cdk import aws_apigateway as apigw

DRAFT_04 = "http://json-schema.org/draft-04/schema#"
_DRAFTS = {
    DRAFT_04: apigw.JsonSchemaVersion.DRAFT4,
    "http://json-schema.org/draft-07/schema#": apigw.JsonSchemaVersion.DRAFT7,
}
_TYPES = {t.name.lower(): t for t in apigw.JsonSchemaType}

# Keywords copied as they are (JSON Schema name -> JsonSchema argument).
_VALUES = {
    "title": "title",
    "description": "description",
    "enum": "enum",  # may hold null: JSII passes None through as JSON null
    "format": "format",
    "pattern": "pattern",
    "default": "default",
    "id": "id",
    "$ref": "ref",
    "required": "required",
    "minimum": "minimum",
    "maximum": "maximum",
    "exclusiveMinimum": "exclusive_minimum",
    "exclusiveMaximum": "exclusive_maximum",
    "multipleOf": "multiple_of",
    "minLength": "min_length",
    "maxLength": "max_length",
    "minItems": "min_items",
    "maxItems": "max_items",
    "uniqueItems": "unique_items",
    "minProperties": "min_properties",
    "maxProperties": "max_properties",
}


def to_api_gateway_schema(schema: Mapping[str, Any]) -> apigw.JsonSchema:
    """The `JsonSchema` equivalent of `schema`, recursively."""
    args: dict[str, Any] = {}
    for keyword, value in schema.items():
        if keyword in _VALUES:
            args[_VALUES[keyword]] = value
        elif keyword in _CONVERTERS:
            name, convert = _CONVERTERS[keyword]
            args[name] = convert(value)
        else:
            raise ValueError(f"JSON Schema keyword {keyword!r} has no API Gateway model counterpart")
    return apigw.JsonSchema(**args)


def add_model(api: apigw.RestApi, model_id: str, schema: Mapping[str, Any], *, description: str) -> apigw.Model:
    """A JSON model of `api` whose deployed schema is exactly `schema`.

    The typed conversion checks every keyword; the template then carries the document itself, as
    JSON text (which AWS::ApiGateway::Model accepts): JSII turns Python None into `undefined`, so
    CDK would drop the `null` of a nullable enum such as `["desktop", ..., null]`, and that model
    would reject the nulls the schema allows.
    """
    model = api.add_model(
        model_id,
        content_type="application/json",
        description=description,
        schema=to_api_gateway_schema(schema),
    )
    cfn_model = model.node.default_child
    assert isinstance(cfn_model, apigw.CfnModel)
    cfn_model.add_property_override("Schema", json.dumps(schema, separators=(",", ":")))
    return model


def draft04_from_pydantic(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` (a pydantic `model_json_schema()`, draft 2020-12) as a draft-04 document of the same meaning:
    `$ref`s to `$defs` inlined (an API Gateway model can only reference other models, by URL), `const` as
    a one-value `enum`, and numeric `exclusiveMinimum`/`exclusiveMaximum` as draft-04's boolean flags on
    `minimum`/`maximum`. Other keywords are kept; `to_api_gateway_schema` refuses any draft-04 lacks."""
    definitions = schema.get("$defs", {})

    def convert(node: Any, expanding: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [convert(item, expanding) for item in node]
        if not isinstance(node, Mapping):
            return node
        if "$ref" in node:
            name = node["$ref"].removeprefix("#/$defs/")
            if name not in definitions or name in expanding:
                raise ValueError(f"cannot inline $ref {node['$ref']!r} (unknown or recursive)")
            # keywords beside a $ref (2020-12 allows them) narrow the referenced schema
            merged = {**definitions[name], **{k: v for k, v in node.items() if k != "$ref"}}
            return convert(merged, expanding | {name})
        converted: dict[str, Any] = {}
        for keyword, value in node.items():
            if keyword == "$defs":
                continue
            if keyword in _DATA_KEYWORDS:
                converted[keyword] = value
            elif keyword == "const":
                converted["enum"] = [value]
            elif keyword in _EXCLUSIVE_BOUNDS and not isinstance(value, bool):
                bound = _EXCLUSIVE_BOUNDS[keyword]
                if bound in node:
                    raise ValueError(f"{bound!r} beside a numeric {keyword!r} has no draft-04 equivalent")
                converted[bound], converted[keyword] = value, True
            elif keyword in _SCHEMA_MAPS:
                converted[keyword] = {name: convert(sub, expanding) for name, sub in value.items()}
            else:
                converted[keyword] = convert(value, expanding)
        return converted

    body = {k: v for k, v in convert(schema, frozenset()).items() if k != "$schema"}
    return {"$schema": DRAFT_04, **body}


# Keywords whose values are data, not schemas: copied without looking inside.
_DATA_KEYWORDS = {"enum", "default", "required", "title", "description", "pattern", "format"}
# Keywords whose values map names to schemas (the names are not keywords).
_SCHEMA_MAPS = {"properties", "patternProperties", "definitions"}
_EXCLUSIVE_BOUNDS = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}


def _draft(uri: str) -> apigw.JsonSchemaVersion:
    try:
        return _DRAFTS[uri]
    except KeyError:
        raise ValueError(f"unsupported JSON Schema draft {uri!r}") from None


def _type(value: str | list[str]) -> apigw.JsonSchemaType | list[apigw.JsonSchemaType]:
    # A list such as ["number", "null"] stays a list: it is how the schema says "nullable".
    return [_TYPES[t] for t in value] if isinstance(value, list) else _TYPES[value]


def _schemas(value: Mapping[str, Any]) -> dict[str, apigw.JsonSchema]:
    return {name: to_api_gateway_schema(sub) for name, sub in value.items()}


def _schema_list(value: list[Mapping[str, Any]]) -> list[apigw.JsonSchema]:
    return [to_api_gateway_schema(sub) for sub in value]


def _schema_or_list(value: Any) -> apigw.JsonSchema | list[apigw.JsonSchema]:
    return _schema_list(value) if isinstance(value, list) else to_api_gateway_schema(value)


def _schema_or_bool(value: Any) -> apigw.JsonSchema | bool:
    return value if isinstance(value, bool) else to_api_gateway_schema(value)


def _dependencies(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, list) else to_api_gateway_schema(v) for k, v in value.items()}


_CONVERTERS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "$schema": ("schema", _draft),
    "type": ("type", _type),
    "properties": ("properties", _schemas),
    "patternProperties": ("pattern_properties", _schemas),
    "definitions": ("definitions", _schemas),
    "items": ("items", _schema_or_list),
    "additionalItems": ("additional_items", _schema_or_bool),
    "additionalProperties": ("additional_properties", _schema_or_bool),
    "allOf": ("all_of", _schema_list),
    "anyOf": ("any_of", _schema_list),
    "oneOf": ("one_of", _schema_list),
    "not": ("not_", to_api_gateway_schema),
    "dependencies": ("dependencies", _dependencies),
}
