"""The OpenAPI document is the contract: schemathesis drives every operation, as the admin and as a
tenant, with schema-valid and schema-invalid requests, on the real app and a real SQLite store.

Zero 5xx, zero undocumented status codes, responses that match their schemas, and a schema-valid
request is refused only by a documented business rule (a 404, a 409, or a 422 that a rule raised,
not the request validation: the schema and the validation accept the same inputs)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as st_checks

from tests.conftest import Api, Clock, make_coordinator, standard_inventory


@schemathesis.check
def the_schema_and_validation_agree(ctx, response, case):
    """A schema-valid request refused by the request validation (a 422 with per-field ``errors``)
    is a schema that promises more than the code takes. Cross-field rules (the body's or an
    item's as a whole, field "" or ending in the item's tag) are documented business rules."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    errors = response.json().get("errors") or []
    fields = [e["field"] for e in errors if e["field"] and not e["field"].endswith(("compute", "network", "storage"))]
    if fields:
        raise AssertionError(f"schema-valid input refused by validation: {response.text}")
    return None


CHECKS = [st_checks.status_code_conformance, st_checks.content_type_conformance,
          st_checks.response_schema_conformance, the_schema_and_validation_agree,
          schemathesis.checks.not_a_server_error]


@pytest.mark.parametrize("mode", list(GenerationMode))
@pytest.mark.parametrize("who", ["admin", "alice"])
def test_every_operation_keeps_its_contract(sqlite_db, who, mode):
    api = Api(make_coordinator(sqlite_db, Clock()))
    api.app.state.stream_lasts_s = 0.05  # the event stream ends soon, so each case gets its whole answer
    standard_inventory(api)
    schema = schemathesis.openapi.from_asgi("/v1/openapi.json", api.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40
    driven = 0
    try:
        for operation in operations:
            @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                case.call_and_validate(headers=api.as_(who), checks=CHECKS)

            try:
                run()
                driven += 1
            except Unsatisfiable:  # nothing of it can be made invalid (no parameters, no body)
                assert mode == GenerationMode.NEGATIVE, operation.label
    finally:
        api.coordinator.close()
    assert driven >= (40 if mode == GenerationMode.POSITIVE else 25), driven
