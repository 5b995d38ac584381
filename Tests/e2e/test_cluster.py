"""Several aegisd nodes on one PostgreSQL behave as one gateway: a send or a
broadcast accepted by one node reaches agents on another (NOTIFY wakes the
owning node; the row is the truth), a send with a wait gets a response the
agent gave another node, one session per agent across nodes (4009), and a
node whose lease runs out is taken over (its sessions marked ended)."""
import os
import signal
import time

import pytest

from admin import Admin, LiveAgent, new_agent_id, wait_for
from aegis_agent import Agent
from gateway import Gateway


@pytest.fixture(scope="module")
def nodes():
    a = Gateway(extra=["--node-id", "node-a"])
    b = Gateway(database_url=a.database_url, extra=["--node-id", "node-b"])
    yield a, b
    b.stop()
    a.stop()


def admin(node, token_from):
    return Admin(node, token=token_from.admin_token)


def test_send_on_one_node_reaches_an_agent_on_another(nodes):
    a, b = nodes
    live = LiveAgent(b)
    try:
        adm = admin(a, a)
        r = adm.post(f"/api/v1/agents/{live.agent_id}/send",
                     json={"type": "event", "channel": "cluster/x", "payload": {"n": 1}})
        assert r.status_code == 202, r.text
        mid = r.json()["id"]
        live.wait_received(mid, timeout=10)
        st = adm.ok("GET", f"/api/v1/agents/{live.agent_id}/status", 200)
        assert st["node"] == "node-b" and st["connected"] is True
        wait_for(lambda: adm.ok("GET", f"/api/v1/messages/{mid}", 200)["status"] == "delivered", 10,
                 what="delivered")
    finally:
        live.close()


def test_a_send_with_wait_gets_the_response_given_to_another_node(nodes):
    a, b = nodes
    live = LiveAgent(b)
    try:
        r = admin(a, a).post(f"/api/v1/agents/{live.agent_id}/send",
                             json={"type": "request", "channel": "cluster/ask", "payload": {"q": 42},
                                   "wait_seconds": 10})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "responded"
        rid, answer = live.answered[body["id"]]
        assert body["response"]["id"] == rid
    finally:
        live.close()


def test_a_broadcast_from_one_node_reaches_agents_on_both(nodes):
    a, b = nodes
    on_a, on_b = LiveAgent(a), LiveAgent(b)
    try:
        r = admin(b, a).post("/api/v1/agents/broadcast",
                             json={"type": "event", "channel": "cluster/all", "payload": "hi",
                                   "agent_ids": [on_a.agent_id, on_b.agent_id]})
        assert r.status_code == 202, r.text
        bid = r.json()["id"]
        assert r.json()["recipients"] == 2
        on_a.wait_received(bid, timeout=10)
        on_b.wait_received(bid, timeout=10)
    finally:
        on_a.close()
        on_b.close()


def test_one_session_per_agent_across_nodes(nodes):
    a, b = nodes
    agent = Agent(new_agent_id())
    first = LiveAgent(a, agent=agent)
    try:
        time.sleep(0.2)
        second = LiveAgent(b, agent=agent)
        try:
            assert first.wait_closed(10) == 4009
            st = admin(a, a).ok("GET", f"/api/v1/agents/{agent.agent_id}/status", 200)
            assert st["node"] == "node-b"
        finally:
            second.close()
    finally:
        first.close()


def test_a_node_whose_lease_runs_out_is_taken_over():
    a = Gateway(extra=["--node-id", "node-c"])
    b = Gateway(database_url=a.database_url, extra=["--node-id", "node-d"])
    try:
        live = LiveAgent(b)
        adm = admin(a, a)
        assert adm.ok("GET", f"/api/v1/agents/{live.agent_id}/status", 200)["is_active"] is True
        b.stop(signal.SIGKILL)
        # Lease 10 s, renewed every 3 s, checked every 3 s by the survivor.
        st = wait_for(lambda: (lambda s: s if not s["is_active"] else None)(
            adm.ok("GET", f"/api/v1/agents/{live.agent_id}/status", 200)), 25, what="the session taken over")
        assert st["connected"] is False and st["node"] == "node-d"
        assert a.sql("select count(*) from gateway_nodes where node_id = 'node-d'") == [["0"]]
        assert a.sql("select count(*) from gateway_nodes where node_id = 'node-c'") == [["1"]]
        live.close()
    finally:
        b.stop(signal.SIGKILL)
        a.stop()


def test_agents_fail_over_when_a_node_is_killed_under_load():
    """Three nodes, agents (the SDK's aegis-agent) spread over them with the
    other nodes as fallbacks in their URL lists. A REST send on node 1
    reaches an agent on node 3; a broadcast from node 2 reaches every agent.
    Then node 2 is killed with SIGKILL mid-stream: its agents reconnect to
    the others; nothing acked is lost, nothing is stored twice, and every
    down message reaches each agent's application once."""
    from test_agent_sdk import AgentProcess, EXIT_OK, key_path

    a = Gateway(extra=["--node-id", "node-1"])
    # One gateway to its agents: every node signs with the same server key.
    same_key = {"AEGIS_SERVER_KEY_FILE": os.path.join(a.data_dir, "server.key")}
    b = Gateway(database_url=a.database_url, extra=["--node-id", "node-2"], env=same_key)
    c = Gateway(database_url=a.database_url, extra=["--node-id", "node-3"], admin=False, env=same_key)
    nodes = [a, b, c]
    agents = []
    try:
        total = 120
        for i in range(6):
            order = [nodes[(i + k) % 3] for k in range(3)]
            urls = [arg for n in order for arg in ("--url", f"ws://127.0.0.1:{n.port}/ws/agent")]
            agent_id = new_agent_id("fo")
            p = AgentProcess(*urls, "--insecure-plaintext", "--agent-id", agent_id, "--key-file", key_path(),
                             "--send-events", str(total), "--send-interval", "0.03",
                             "--reconnect-initial", "0.2", "--reconnect-cap", "1", "--exit-when-acked")
            agents.append((agent_id, p))
        for _, p in agents:
            p.wait_event("connected")
        spread = {row[0] for row in a.sql("select node_id from agent_connections where agent_id like 'fo-%' "
                                           "and is_active")}
        assert spread == {"node-1", "node-2", "node-3"}
        adm = admin(a, a)
        # A REST send on node 1 to an agent on node 3.
        on_3 = a.sql("select agent_id from agent_connections where agent_id like 'fo-%' "
                     "and node_id = 'node-3' and is_active")[0][0]
        to_3 = send_event(adm, on_3, "to node 3")
        dict(agents)[on_3].wait_event("event", id=to_3, timeout=10)
        # A broadcast from node 2 reaches all of them.
        r = admin(b, a).post("/api/v1/agents/broadcast",
                             json={"type": "event", "channel": "fo/all", "payload": "all",
                                   "agent_ids": [aid for aid, _ in agents]})
        assert r.status_code == 202 and r.json()["recipients"] == len(agents), r.text
        everyone = r.json()["id"]
        for _, p in agents:
            p.wait_event("event", id=everyone, timeout=10)
        before = {aid: send_event(adm, aid, "before") for aid, _ in agents}
        for _, p in agents:
            p.wait_for(lambda p=p: len(p.acked()) >= 20, what="20 acked events")
        acked_at_kill = {aid: set(p.acked()) for aid, p in agents}
        b.stop(signal.SIGKILL)
        after = {aid: send_event(adm, aid, "after") for aid, _ in agents}
        for aid, p in agents:
            assert p.wait(timeout=120) == EXIT_OK, p.output[-2000:]
            queued = {r["id"] for r in p.of("queued")}
            acked = p.acked()
            assert len(queued) == total and acked == queued
            stored = [r[0] for r in a.sql(f"select msg_id from message_queue where agent_id = '{aid}' "
                                          f"and direction = 'up'")]
            assert acked_at_kill[aid] <= set(stored)
            assert set(stored) == acked and len(stored) == len(set(stored))
            for mid in (before[aid], after[aid], everyone):
                assert len(p.of("event", id=mid)) == 1, f"{aid} processed {mid} {len(p.of('event', id=mid))} times"
        # Agents of node-2 moved to the others.
        assert {row[0] for row in a.sql("select node_id from agent_connections where agent_id like 'fo-%' "
                                         "and is_active")} <= {"node-1", "node-3"}
    finally:
        for _, p in agents:
            p.stop()
        for n in (c, b, a):
            n.stop(signal.SIGKILL) if n is b else n.stop()


def send_event(adm, agent_id, label):
    r = adm.post(f"/api/v1/agents/{agent_id}/send", json={"type": "event", "channel": "fo/x", "payload": label})
    assert r.status_code == 202, r.text
    return r.json()["id"]
