"""Fuzz every operation of the OpenAPI schema against a real uvicorn server (schemathesis).

The server runs on a seeded SQLite database (an admin, a member, a third user and one of the
member's jobs in each state, the succeeded one with results and artifacts) and no worker.
Schemathesis reads /openapi.json from it and, per operation and for each caller (the admin, the
member, and an anonymous caller sending made-up credentials), sends the schema's examples, up to
`MAX_EXAMPLES` random valid and invalid requests and, as the admin, the coverage cases
(boundary and invalid values of every parameter and body field), deterministically (fixed
seed, derandomised). Parameters naming a job, an artifact, a user or a key are drawn half the time
from the seeded ones, so the 200 answers (jobs, results, artifact downloads, users, keys) are
checked as well as the 404s; admin routes never act on the callers' own user or keys (a test
after the fuzzing checks that both keys still authenticate with their roles).

Checks on every response:
- `not_a_server_error`: no 5xx, whatever the input;
- `status_code_conformance`: every status the server answers is documented for the operation;
- `content_type_conformance`: the Content-Type is one documented for that status;
- `response_schema_conformance`: the body validates against the documented schema (errors
  included: they must be the one `{"error": {type, message, hint}}` shape).

Not checked: `negative_data_rejection` (a schema-invalid request must be refused) and
`positive_data_acceptance` (a schema-valid one accepted). The schema is generated from the same
pydantic models that validate requests, so every documented constraint is enforced; the two
differ only where pydantic's lax mode converts a value the schema's type does not list (`0`/`1`
for a boolean, `"5"` for an integer), which the API accepts on purpose, and where a spec's
cross-field rules (e.g. a comparison with `steps` needs an SFT condition with checkpoints) are
beyond what JSON Schema expresses, which the API refuses on purpose with a 422 naming them.

No hang: each request has `REQUEST_TIMEOUT_S`, and a timeout fails the test.

Random integers are mostly small, so a parameter the server cannot store (an OFFSET beyond 64
bits was a 500) is rarely drawn: two direct tests cover that class, one requiring a maximum on
every integer parameter of the schema, one sending integers beyond 64 bits to each of them.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from conftest import ApiServer, FuzzSeed
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Random requests per operation. The admin's run also sends the coverage cases (every field's
# boundary and invalid values: ~1800 for a job spec); the member's and the anonymous caller's
# would repeat the same validation, so they stop at the random ones.
MAX_EXAMPLES = {"admin": 60, "member": 40, "anonymous": 10}
REQUEST_TIMEOUT_S = 10.0
SEED = 20261127
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
LARGEST_INT = 2**63 - 1  # what SQLite and PostgreSQL's bigint store


def fuzz_config(seed: FuzzSeed, caller: str) -> SchemathesisConfig:
    """Deterministic, bounded generation as `caller`; ids of seeded objects half the time."""
    key = {"admin": seed.admin_key, "member": seed.member_key}.get(caller)
    users = [seed.admin, seed.member, seed.victim]
    by_user = {"dictionary": "user-names", "probability": 0.5}
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            # The anonymous caller sends whatever `authorization`/`x-api-key` are generated.
            "headers": {"Authorization": f"Bearer {key}"} if key else {},
            "request-timeout": REQUEST_TIMEOUT_S,
            # No example database: a run does not replay what an earlier one found.
            "generation": {
                "max-examples": MAX_EXAMPLES[caller],
                "deterministic": True,
                "database": "none",
            },
            "phases": {"coverage": {"enabled": caller == "admin"}},
            "dictionaries": {
                "job-ids": {"values": sorted(seed.jobs.values())},
                "artifact-names": {"values": seed.artifacts},
                "user-names": {"values": users},
                "victim-names": {"values": [seed.victim]},
                "victim-key-ids": {"values": seed.victim_key_ids},
            },
            "parameters": {
                "path.job_id": {"dictionary": "job-ids", "probability": 0.5},
                "query.owner": by_user,
                "query.user": by_user,
                "query.actor": by_user,
            },
            "operations": [
                {
                    "include-tag": "artifacts",
                    "parameters": {
                        "path.name": {"dictionary": "artifact-names", "probability": 0.5}
                    },
                },
                {
                    "include-tag": "admin",
                    "parameters": {
                        "path.name": {"dictionary": "victim-names", "probability": 0.5},
                        "path.key_id": {"dictionary": "victim-key-ids", "probability": 0.5},
                        "body.user": by_user,
                    },
                },
            ],
        }
    )


def spares_the_callers(seed: FuzzSeed) -> Any:
    """A filter on generated path parameters: never act on the fuzzing callers themselves.

    Admin routes may revoke keys and disable or demote users; doing that to the admin or the
    member would turn the rest of the run into 401s and 403s.
    """
    names = {seed.admin, seed.member}
    key_ids = set(seed.own_key_ids)

    def filter_path_parameters(_: Any, parameters: dict[str, Any] | None) -> bool:
        values = parameters or {}
        return values.get("name") not in names and values.get("key_id") not in key_ids

    return filter_path_parameters


@pytest.fixture(params=["admin", "member", "anonymous"])
def api_schema(request: pytest.FixtureRequest, api_server: ApiServer) -> Any:
    # schemathesis 4.32 reads and sets `_nodeid`, which pytest 9.2 no longer has.
    request.node._nodeid = request.node.nodeid
    schema = schemathesis.openapi.from_url(
        f"{api_server.url}/openapi.json",
        config=fuzz_config(api_server.seed, request.param),
        timeout=REQUEST_TIMEOUT_S,
    )
    schema.hook("filter_path_parameters")(spares_the_callers(api_server.seed))
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_operation_conforms_to_the_schema(case: Case) -> None:
    case.call_and_validate(checks=CHECKS)


def test_the_fuzzing_callers_kept_their_keys_and_roles(api_server: ApiServer) -> None:
    # Runs after the fuzzing: had it revoked or demoted a caller, most of it saw only 401/403.
    seed = api_server.seed
    for key, name, role in [(seed.admin_key, seed.admin, "admin"),
                            (seed.member_key, seed.member, "member")]:  # fmt: skip
        me = httpx.get(f"{api_server.url}/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200, me.text
        assert (me.json()["name"], me.json()["role"]) == (name, role)


def _integer_parameters(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, parameter) of every integer path and query parameter."""
    found = []
    for path, methods in openapi["paths"].items():
        for method, operation in methods.items():
            for param in operation.get("parameters", []):
                schemas = [param["schema"], *param["schema"].get("anyOf", [])]
                if param["in"] in ("path", "query") and any(
                    s.get("type") == "integer" for s in schemas
                ):
                    found.append((method, path, param))
    return found


@pytest.fixture(scope="module")
def openapi(api_server: ApiServer) -> dict[str, Any]:
    schema: dict[str, Any] = httpx.get(f"{api_server.url}/openapi.json", timeout=10).json()
    return schema


def test_every_integer_parameter_has_a_storable_maximum(openapi: dict[str, Any]) -> None:
    params = _integer_parameters(openapi)
    assert params, "the API has integer parameters (limit, offset, key ids)"
    unbounded = [
        f"{method.upper()} {path} {p['name']}"
        for method, path, p in params
        if not any(s.get("maximum", LARGEST_INT + 1) <= LARGEST_INT
                   for s in [p["schema"], *p["schema"].get("anyOf", [])])
    ]  # fmt: skip
    assert unbounded == [], f"integer parameters without a maximum <= 2**63 - 1: {unbounded}"


@pytest.mark.parametrize("value", [2**63, 2**64 + 1, -(2**63) - 1])
def test_integers_beyond_64_bits_are_refused_with_a_4xx(
    api_server: ApiServer, openapi: dict[str, Any], value: int
) -> None:
    seed = api_server.seed
    headers = {"Authorization": f"Bearer {seed.admin_key}"}
    for method, path, param in _integer_parameters(openapi):
        url = path.replace("{job_id}", seed.jobs["succeeded"]).replace("{name}", seed.victim)
        params = {}
        if param["in"] == "path":
            url = url.replace("{" + param["name"] + "}", str(value))
        else:
            params[param["name"]] = str(value)
        response = httpx.request(method, f"{api_server.url}{url}", params=params,
                                 headers=headers, timeout=REQUEST_TIMEOUT_S)  # fmt: skip
        assert 400 <= response.status_code < 500, (method, url, params, response.text)
        assert set(response.json()["error"]) == {"type", "message", "hint"}
