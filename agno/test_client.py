#!/usr/bin/env python3
"""End-to-end checks of agno_client.py against mock_openai.py (stdlib only).

    python3 agno/test_client.py          # uses $AGNO_PYTHON or <repo>/.tools/agno-venv/bin/python

Spawns real client processes (the pinned agno 2.1.5 stack) and talks the JSON-lines protocol.
No sleeps: every wait is a deadline on the next protocol line. Prints timings at the end.
"""

import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the repo
import mock_openai  # noqa: E402

PY = os.environ.get("AGNO_PYTHON") or os.path.join(HERE, "..", ".tools", "agno-venv", "bin", "python")
SECRET = "sk-test-secret-0123456789"
TIMINGS = []


class Proc:
    """One client process; protocol lines arrive on a queue as (time, event)."""

    def __init__(self, name, db, extra_env=None):
        self.name = name
        self.stderr = tempfile.TemporaryFile()
        env = {**os.environ, "AGNO_DB_FILE": db, **(extra_env or {})}
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([PY, os.path.join(HERE, "agno_client.py")], cwd=os.path.dirname(HERE),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                  env=env)
        self.q = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.next(60)
        assert ready["type"] == "ready" and ready["agno_version"] == "2.1.5", ready
        assert ready["pid"] == self.p.pid, ready
        TIMINGS.append((f"{name}: spawn -> ready (cold)", time.monotonic() - self.t0))

    def _read(self):
        for raw in self.p.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                ev = {"type": "NON-PROTOCOL BYTES", "raw": raw.decode("utf-8", "replace")}
            self.q.put((time.monotonic(), ev))
        self.q.put((time.monotonic(), None))

    def send(self, obj):
        self.p.stdin.write((json.dumps(obj) + "\n").encode())
        self.p.stdin.flush()
        return time.monotonic()

    def next(self, timeout=30):
        try:
            at, ev = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.name}: no event within {timeout}s; stderr:\n{self.log()}")
        assert ev is not None, f"{self.name}: stdout closed; stderr:\n{self.log()}"
        assert ev["type"] != "NON-PROTOCOL BYTES", f"{self.name}: {ev}"
        self.last_at = at
        self.seen.append(ev)
        return ev

    def run(self, seq, prompt, bots=None, session="s1", mode="", timeout=30, label=None, **extra):
        """Sends a run and returns its events up to and including the terminal one."""
        sent = self.send({"op": "run", "run_seq": seq, "session_id": session, "user_id": session,
                          "mode": mode, "prompt": prompt, "bots": bots or [], **extra})
        return self.collect(seq, sent, timeout, label)

    def collect(self, seq, sent, timeout=30, label=None):
        events, first = [], None
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next(max(0.1, deadline - time.monotonic()))
            if ev.get("run_seq") != seq:
                continue
            first = first or self.last_at
            events.append(ev)
            if ev["type"] in ("completed", "cancelled", "error"):
                if label:
                    TIMINGS.append((f"{label}: run -> first event", first - sent))
                    TIMINGS.append((f"{label}: run -> {ev['type']}", self.last_at - sent))
                return events

    def shutdown(self, label):
        t = time.monotonic()
        self.send({"op": "shutdown"})
        rc = self.p.wait(15)
        TIMINGS.append((f"{label}: shutdown -> exit", time.monotonic() - t))
        assert rc == 0, f"{self.name}: exit {rc}\n{self.log()}"
        return self.log()

    def log(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")


def bot(name, base_url, role=None, mcp=None, model="openai", **env):
    b = {"name": name, "system_prompt": f"You are {name}.", "role": role,
         "agent_config": {"env": {"model": model, "model_id": "mock-1", "api_key": SECRET,
                                  **({"base_url": base_url} if base_url else {}), **env}}}
    if mcp:
        b["mcp_servers"] = mcp
    return b


def types(events):
    return [e["type"] for e in events]


def terminal(events):
    return events[-1]


def history(events):
    """N of the mock's "Hello from mock (history=N msgs)"."""
    content = terminal(events)["content"]
    assert "history=" in content, content
    return int(content.split("history=")[1].split()[0])


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"FAILED {name}: {detail}")
    print(f"ok   {name}")


def main():
    server, port = mock_openai.start_server()
    base = f"http://127.0.0.1:{port}/v1"
    calc = {"calc": {"type": "stdio", "command": PY, "args": ["agno/mcp_calc.py"]}}
    tmp = tempfile.mkdtemp(prefix="agno-client-test-")
    db = os.path.join(tmp, "history.db")

    # --- process 1: single agent with an MCP server
    p1 = Proc("p1", db)
    check("ready", True)
    ev = p1.run(1, "hello", [bot("Solo", base, mcp=calc)], label="p1 first run (build + MCP connect)")
    check("single agent completes", terminal(ev)["type"] == "completed"
          and terminal(ev)["content"].startswith("Hello from mock"), ev)
    check("run_started scope agent", ev[0]["type"] == "run_started" and ev[0]["scope"] == "agent"
          and ev[0]["agent"] == "Solo" and ev[0]["run_id"] == terminal(ev)["run_id"], ev[0])
    h1 = history(ev)
    ev = p1.run(2, "hello again", label="p1 warm run")
    check("second run reuses the agent", terminal(ev)["type"] == "completed", ev)

    ev = p1.run(3, "please TOOL mul", label="p1 MCP tool run")
    started = [e for e in ev if e["type"] == "tool_started"]
    done = [e for e in ev if e["type"] == "tool_completed"]
    check("MCP tool_started", len(started) == 1 and started[0]["name"] == "mul"
          and started[0]["input"] == {"a": 2, "b": 3} and started[0]["tool_call_id"], started)
    check("MCP tool_completed", len(done) == 1 and done[0]["output"] == "6" and not done[0]["error"]
          and done[0]["tool_call_id"] == started[0]["tool_call_id"], done)
    check("tool run completes", terminal(ev) == {**terminal(ev), "type": "completed",
                                                  "content": "Tool said: 6"}, terminal(ev))

    ev = p1.run(4, "THINK first")
    check("reasoning deltas", "".join(e["delta"] for e in ev if e["type"] == "reasoning") == "Let me think...",
          types(ev))

    # SLOW + cancel once the first content chunk arrived
    sent = p1.send({"op": "run", "run_seq": 5, "session_id": "s1", "prompt": "be SLOW", "bots": []})
    while (e := p1.next())["type"] != "content":
        pass
    t_cancel = p1.send({"op": "cancel"})
    ev = p1.collect(5, sent, 10)
    acks = [e for e in p1.seen[-len(ev) - 3:] if e["type"] == "cancel_ack"]
    check("cancel_ack had_run", acks and acks[-1]["had_run"] is True, acks)
    cancel_latency = p1.last_at - t_cancel
    TIMINGS.append(("p1 SLOW run: cancel -> cancelled", cancel_latency))
    check("cancelled within 1 s, never completed", terminal(ev)["type"] == "cancelled"
          and "completed" not in types(ev) and cancel_latency < 1.0, (types(ev), cancel_latency))

    # busy: a second run while one is in flight; then a cancel before RunStarted could be seen
    sent = p1.send({"op": "run", "run_seq": 6, "session_id": "s1", "prompt": "SLOW again", "bots": []})
    p1.send({"op": "cancel"})
    p1.send({"op": "run", "run_seq": 7, "session_id": "s1", "prompt": "x", "bots": []})
    ev = p1.collect(6, sent, 10)
    busy = [e for e in p1.seen if e.get("run_seq") == 7]
    check("early cancel -> cancelled", terminal(ev)["type"] == "cancelled" and "content" not in types(ev), ev)
    check("run while busy -> error", busy and busy[0]["type"] == "error" and busy[0]["where"] == "run"
          and busy[0]["message"] == "a run is already in progress", busy)
    ack = p1.send({"op": "cancel"})
    check("cancel without a run", p1.next(5) == {"type": "cancel_ack", "run_seq": None, "had_run": False})

    ev = p1.run(8, "after cancel")
    h8 = history(ev)
    check("history grows (cancelled runs excluded)", h8 > h1, (h1, h8))
    log1 = p1.shutdown("p1")
    check("p1 shutdown exit 0", True)
    check("no secret in p1 logs", SECRET not in log1)

    # --- process 2: restart on the same SQLite file; a failing MCP server is not fatal
    broken = {"nope": {"type": "stdio", "command": "/nonexistent/mcp-server"}}
    p2 = Proc("p2", db)
    ev = p2.run(1, "back again", [bot("Solo", base, mcp=broken)], label="p2 first run")
    errs = [e for e in ev if e["type"] == "mcp_error"]
    check("mcp_error for a broken server", errs and errs[0]["server"] == "nope", ev)
    check("run completes without those tools", terminal(ev)["type"] == "completed", terminal(ev))
    # num_history_runs=3 caps the window, so "more than a fresh session's 2 messages" is the test
    check("history survives a restart", history(ev) > 2, (h8, terminal(ev)))
    ev = p2.run(2, "fresh", session="s2")
    check("a new session has no history", history(ev) == 2, terminal(ev))
    p2.shutdown("p2")

    # --- process 3: team, route mode, leader + worker (worker has the MCP tool)
    p3 = Proc("p3", db)
    bots = [bot("Lead", base, role="leader"), bot("Worker", base, mcp=calc)]
    ev = p3.run(1, "TOOL multiply please", bots, session="t1", mode="route", label="p3 team route run")
    print("     team events:", ", ".join(f"{e['type']}/{e.get('scope', '')}/{e.get('name') or e.get('agent', '')}"
                                        for e in ev if e["type"] not in ("content", "reasoning")))
    ts = [e for e in ev if e["type"] == "tool_started"]
    check("team run_started", ev[0]["type"] == "run_started" and ev[0]["scope"] == "team", ev[0])
    check("leader delegates", any(e["scope"] == "team" and e["name"] == "delegate_task_to_member"
                                  and e["input"].get("member_id") == "worker" for e in ts), ts)
    check("member run + tool", any(e["type"] == "run_started" and e["scope"] == "member"
                                   and e["agent"] == "Worker" for e in ev)
          and any(e["scope"] == "member" and e["name"] == "mul" for e in ts), ts)
    check("team completes", terminal(ev)["type"] == "completed" and "6" in terminal(ev)["content"],
          terminal(ev))
    p3.shutdown("p3")

    # --- process 4: a claude bot without base_url builds; the model call fails cleanly
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    p4 = Proc("p4", db, {"ANTHROPIC_BASE_URL": dead})
    ev = p4.run(1, "hi", [bot("Claudia", None, model="claude")], label="p4 claude (no server)", timeout=60)
    t = terminal(ev)
    check("claude without base_url: model error, not a build crash",
          t["type"] == "error" and t["where"] in ("model", "run") and SECRET not in t["message"], t)
    ev = p4.run(2, "hi again", timeout=60)
    check("process usable after an error", terminal(ev)["type"] == "error", terminal(ev))
    check("no secret in p4 logs", SECRET not in p4.shutdown("p4"))

    # --- process 5: claude with base_url goes there (our OpenAI mock: 404); stdin EOF = shutdown
    p5 = Proc("p5", db)
    ev = p5.run(1, "hi", [bot("Claudia", f"http://127.0.0.1:{port}", model="claude")], timeout=60)
    check("claude base_url is used", terminal(ev)["type"] == "error" and "404" in terminal(ev)["message"],
          terminal(ev))
    t = time.monotonic()
    p5.p.stdin.close()
    check("EOF exits 0", p5.p.wait(15) == 0)
    TIMINGS.append(("p5: stdin EOF -> exit", time.monotonic() - t))

    # --- process 6: a model that never answers: cancel falls back to cancelling the task
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections queue in the backlog and never get a byte back
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        p6 = Proc("p6", db, {"AGNO_CANCEL_GRACE_S": "0.5"})
        sent = p6.send({"op": "run", "run_seq": 1, "session_id": "h1", "prompt": "hi",
                        "bots": [bot("Mute", url)]})
        while p6.next()["type"] != "run_started":
            pass
        t = p6.send({"op": "cancel"})
        ev = p6.collect(1, sent, 10)
        TIMINGS.append(("p6 silent model: cancel -> cancelled (grace 0.5 s)", p6.last_at - t))
        check("hard cancel of a silent model", terminal(ev)["type"] == "cancelled", ev)
        p6.send({"op": "run", "run_seq": 2, "session_id": "h1", "prompt": "hi again"})
        while p6.next()["type"] != "run_started":
            pass
        p6.shutdown("p6 (run in flight)")
        check("shutdown with a run in flight exits 0", True)
    server.shutdown()

    print("\ntimings:")
    for name, secs in TIMINGS:
        print(f"  {name:<48} {secs * 1000:8.0f} ms")
    print("\nall checks passed")


if __name__ == "__main__":
    main()
