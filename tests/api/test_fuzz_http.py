"""Property-based fuzzing of the HTTP API from its own OpenAPI description (schemathesis): no 5xx, and every
response has a documented status and matches its documented schema."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
import schemathesis.specs.openapi.schemas  # imported (and assertion-rewritten) at collection time:

# compiling it lazily, mid-run, trips a CPython 3.11 "AST constructor recursion depth mismatch" SystemError
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from taxiload.harness import ServerProcess, call
from tests.conftest import SECRET
from tests.servers import server_env
from tests.support import PASSWORD

EXAMPLES = int(os.environ.get("TAXI_FUZZ_EXAMPLES", "40"))
ROOT = Path(__file__).resolve().parents[2]
# What the API promises for any input: no server error, a documented status, content type, headers and body.
# (Not "every schema-valid request succeeds": a sign-up also needs password1 == password2, which a schema
# cannot say.)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api(postgresql_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    env = server_env(
        postgresql_url, tmp, TAXI_LOGIN_ATTEMPTS_PER_USER="100000", TAXI_LOGIN_ATTEMPTS_PER_ADDRESS="100000"
    )
    with ServerProcess(env) as server:
        call(
            f"{server.url}/api/sign_up/",
            {"username": "fuzz-rider", "password1": PASSWORD, "password2": PASSWORD, "group": "rider"},
        )
        _, tokens = call(f"{server.url}/api/log_in/", {"username": "fuzz-rider", "password": PASSWORD})
        schema = schemathesis.openapi.from_url(f"{server.url}/docs/openapi.json")
        yield server, schema, tokens
    assert "Traceback" not in server.output(), server.output()


@dataclass
class Exercised:
    """How many generated cases one operation was sent, and how many of them carried the valid access token."""

    cases: int = 0
    with_token: int = 0


def operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


def documented_operations(document: dict) -> dict[str, bool]:
    """Every operation of an OpenAPI document, as "METHOD /path", and whether it declares ``security`` (its own
    or, when it has none, the document's: an empty list means no authentication)."""
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    return {
        f"{method.upper()} {path}": bool(operation.get("security", document.get("security")))
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in methods
    }


def test_every_operation_survives_generated_input(api):
    server, schema, tokens = api
    ops = operations(schema)
    assert len(ops) >= 8, [op.label for op in ops]
    sent: dict[str, Exercised] = {}
    tried = {
        f"{op.label} ({mode.value})": fuzz(op, mode, server.url, tokens["access"], sent)
        for op in ops
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    }
    print("fuzzed:", tried)
    assert sum(tried.values()) >= EXAMPLES * 8
    # Coverage, from the document the server serves (not from schemathesis's reading of it): every operation was
    # sent some cases, and every one that declares security was sent some with the valid access token.
    status, document = call(f"{server.url}/docs/openapi.json")
    assert status == 200, document
    documented = documented_operations(document)
    seen = {name: sent.get(name, Exercised()) for name in documented}
    never_sent = sorted(name for name, done in seen.items() if not done.cases)
    assert not never_sent, f"operations never fuzzed: {never_sent}"
    no_token = sorted(name for name, done in seen.items() if documented[name] and not done.with_token)
    assert not no_token, f"operations that declare security but were never fuzzed with a valid token: {no_token}"
    assert call(f"{server.url}/api/trip/", token=tokens["access"])[0] == 200  # the token was valid all along


def fuzz(op, mode: GenerationMode, base_url: str, access: str, sent: dict[str, Exercised]) -> int:
    """Run generated cases against one operation; return how many were sent, and count them in ``sent``."""
    count = 0
    guarded = op.path.startswith(("/api/trip", "/api/drivers", "/api/me")) or op.path == "/api/log_out/"
    headers = {"Authorization": f"Bearer {access}"} if guarded else {}
    exercised = sent.setdefault(f"{op.method.upper()} {op.path}", Exercised())

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case):
        nonlocal count
        count += 1
        response = case.call(base_url=base_url, headers=headers)
        exercised.cases += 1
        # What actually went out, not what was meant to: a case may set its own Authorization header.
        if response.request.headers.get("Authorization") == f"Bearer {access}":
            exercised.with_token += 1
        assert response.status_code < 500, (op.label, response.status_code, response.text)
        case.validate_response(response, headers=headers, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # Nothing in this operation can be made invalid (no body, any string is a valid path parameter).
    return count


def test_a_schemathesis_run_with_coverage_and_every_check_finds_nothing(api, tmp_path):
    """What a reviewer runs: ``st run`` with the coverage phase (boundary values, every documented constraint, methods
    the document does not list) and the fuzzing phase, and every check schemathesis has: among them, a schema-valid
    request must not be refused with 400, a schema-invalid one must be refused, and a 405 must say Allow."""
    server, _, tokens = api
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{server.url}/docs/openapi.json",
        "--phases=coverage,fuzzing",
        "--checks=all",
        f"--max-examples={EXAMPLES}",
        "--workers=1",
        "--no-color",
        "--header",
        f"Authorization: Bearer {tokens['access']}",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.api.fuzz_hooks",
        "PYTHONPATH": str(ROOT),
        "TAXI_FUZZ_SECRET": SECRET,  # the server's: the hooks sign the trip list's cursors with it
    }
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert "Coverage" in run.stdout and "Fuzzing" in run.stdout
