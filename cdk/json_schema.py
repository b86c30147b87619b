"""JSON Schema documents as API Gateway models.

API Gateway models are draft-04. `to_api_gateway_schema` converts a schema dict into CDK's typed
`JsonSchema`; every keyword must have a counterpart, an unknown one raises instead of being dropped,
so a model never validates less than the schema says.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aws_cdk import aws_apigateway as apigw

_DRAFTS = {
    "http://json-schema.org/draft-04/schema#": apigw.JsonSchemaVersion.DRAFT4,
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
