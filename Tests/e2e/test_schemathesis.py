"""Property-based tests of the admin API against the document it serves
(GET /api/v1/openapi.json), with schemathesis's CLI: every operation but the
endless SSE stream, positive and negative data, and the checks
not_a_server_error, status_code_conformance, content_type_conformance and
response_schema_conformance.

The gateway is seeded first (an agent that stays connected and answers
requests at once, agents that may be revoked or deleted, up and down
messages, a broadcast, tokens) and schemathesis draws path and query
parameters from those ids half of the time (dictionaries), so that the
operations reach their success paths as well as their 404s.

SCHEMATHESIS_MAX_EXAMPLES (default 400: ~40 s) and SCHEMATHESIS_SEED tune a run;
the whole run stays around two minutes on two cores."""
import json
import os
import subprocess
import sys

import pytest

from admin import Admin, LiveAgent, new_agent_id
from aegis_agent import Agent
from gateway import Gateway, Link

OPENAPI = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "Sources", "AegisAdmin", "Resources", "openapi.json")
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "400"))
SEED = os.environ.get("SCHEMATHESIS_SEED", "20251127")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def seeded():
    g = Gateway(enrollment="open")
    adm = Admin(g)
    live = LiveAgent(g)  # answers every request at once: sends with wait_seconds return quickly
    spare = []
    for _ in range(3):  # for revoke / delete / approve
        a = Agent(new_agent_id("spare"))
        Link(g, a).close()
        spare.append(a.agent_id)
    for i in range(5):
        live.send_up(f"seed-{i}", channel="seed/metrics", payload=json.dumps({"i": i}).encode())
    live.wait_acked([f"seed-{i}" for i in range(5)])
    down = adm.ok("POST", f"/api/v1/agents/{live.agent_id}/send", 202,
                  json={"type": "event", "channel": "seed/down", "payload": {"seed": True}})["id"]
    queued = adm.ok("POST", f"/api/v1/agents/{spare[0]}/send", 202,
                    json={"type": "event", "channel": "seed/down", "payload": 1})["id"]
    bcast = adm.ok("POST", "/api/v1/agents/broadcast", 202,
                   json={"type": "event", "channel": "seed/all", "payload": "hello"})["id"]
    token = adm.create_token(["admin"], name="schemathesis")["token"]
    spare_token = adm.create_token(["read"], name="spare")["id"]
    enrollment = adm.ok("POST", "/api/v1/enrollment-tokens", 201, json={})["id"]
    yield {"gw": g, "token": token, "live": live.agent_id, "spare": spare, "messages": [down, queued, bcast],
           "api_token_ids": [spare_token], "enrollment_ids": [enrollment], "live_agent": live}
    live.close()
    g.stop()


def toml_str(s):
    return json.dumps(s)  # a JSON string is a TOML basic string


def config(seed):
    """schemathesis.toml: dictionaries of seeded ids, bound per operation."""
    lines = []

    def dictionary(name, values):
        lines.append(f"[dictionaries.{name}]")
        lines.append("values = [" + ", ".join(toml_str(v) for v in values) + "]")
        lines.append("")

    dictionary("live", [seed["live"]])
    dictionary("agents", [seed["live"]] + seed["spare"])
    dictionary("spare", seed["spare"])
    dictionary("messages", seed["messages"])
    dictionary("api_tokens", seed["api_token_ids"])
    dictionary("enrollment_tokens", seed["enrollment_ids"])

    def bind(operation_ids, **params):
        lines.append("[[operations]]")
        lines.append("include-operation-id = [" + ", ".join(toml_str(o) for o in operation_ids) + "]")
        lines.append("[operations.parameters]")
        for key, name in params.items():
            lines.append(f'{toml_str(key.replace("__", "."))} = {{ dictionary = {toml_str(name)}, probability = 0.5 }}')
        lines.append("")

    # Sends only to the answering agent: a request with wait_seconds to an
    # agent that is away would wait up to 60 s for nothing.
    bind(["sendToAgent"], path__agent_id="live")
    bind(["agentStatus"], path__agent_id="agents")
    bind(["approveAgent", "revokeAgent", "deleteAgent"], path__agent_id="spare")
    bind(["messageState"], path__message_id="messages")
    bind(["listMessages"], query__agent_id="agents")
    bind(["revokeToken"], path__token_id="api_tokens")
    bind(["revokeEnrollmentToken"], path__token_id="enrollment_tokens")
    return "\n".join(lines)


def test_schemathesis(seeded, tmp_path):
    g = seeded["gw"]
    cfg = tmp_path / "schemathesis.toml"
    cfg.write_text(config(seeded))
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(cfg), "run",
           f"{g.admin_url}/api/v1/openapi.json",
           "--header", f"Authorization: Bearer {seeded['token']}",
           "--checks", CHECKS,
           "--exclude-operation-id", "streamMessages",
           "--phases", "examples,coverage,fuzzing",
           "--max-examples", str(MAX_EXAMPLES),
           "--seed", SEED,
           "--workers", "2",
           "--request-timeout", "75",
           "--suppress-health-check", "too_slow,filter_too_much",
           "--generation-database", "none",
           "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml"),
           "--no-color"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                       env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
    output = p.stdout + p.stderr
    print(output)  # shown with -s, and by pytest on a failure
    log_tail = "".join(open(g.log_path).readlines()[-40:])
    assert p.returncode == 0, (f"schemathesis exit {p.returncode}\n{output[-30000:]}\n"
                               f"--- aegisd log (tail) ---\n{log_tail}")
    # The run really exercised every operation but the stream (not a schema-loading no-op).
    import xml.etree.ElementTree as ET
    tested = {case.get("name") for case in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")}
    expected = {f"{m.upper()} {path}" for path, ops in json.load(open(OPENAPI))["paths"].items() for m in ops
                if path not in ("/api/v1/stream", "/api/v1/openapi.json")}  # schemathesis skips its own document
    assert tested == expected, f"not tested: {sorted(expected - tested)}\n{output[-5000:]}"
    # Success paths were reached, not only 404s and 422s: messages went down to the
    # answering agent and it answered some requests; spare agents were revoked or deleted.
    live = seeded["live_agent"]
    assert len(live.received) > 2 and live.answered, (len(live.received), len(live.answered))
    spare = ", ".join(f"'{a}'" for a in seeded["spare"])
    left = g.sql(f"select count(*) from agent_connections where agent_id in ({spare}) and enrollment = 'active'")
    assert int(left[0][0]) < len(seeded["spare"]), "no spare agent was revoked or deleted"
    assert Admin(g).get("/readyz", token=None).status_code == 200
