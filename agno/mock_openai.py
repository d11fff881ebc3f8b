#!/usr/bin/env python3
"""A scripted mock of OpenAI's chat-completions API, stdlib only (for testing agno_client.py).

Run:    python3 agno/mock_openai.py [PORT]        (prints "PORT <n>" once listening; 0 = any port)
Import: server, port = start_server()            (serves from a daemon thread)

POST /v1/chat/completions answers from the LAST message of the request:
- role `tool`                        -> "Tool said: <its content>"
- user text contains THINK           -> `reasoning_content` deltas first, then the answer below
- user text contains TOOL, tools set -> one `tool_calls` delta: `delegate_task_to_member`
                                        {member_id: "worker", task_description: <user text>, ...}
                                        or `delegate_task_to_members` if offered, else `mul`
                                        (or the first tool) with {a: 2, b: 3}
- user text contains SLOW            -> 40 content chunks, 0.25 s apart
- otherwise                          -> "Hello from mock (history=N msgs)", N = len(messages)
`stream: true` gets `chat.completion.chunk` SSE lines then `data: [DONE]` (each chunk flushed at
once); otherwise one `chat.completion` JSON. GET /_requests returns every body received.
"""

import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_CHUNKS = 40
SLOW_DELAY = 0.25

_lock = threading.Lock()
REQUESTS = []  # bodies of POST /v1/chat/completions, in arrival order


def _text(content):
    """Text of a message `content` (a string or a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def script(body):
    """What to answer: (reasoning chunks, content chunks, tool call or None, delay between chunks)."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    tools = [t.get("function", {}).get("name") for t in body.get("tools") or []]
    if last.get("role") == "tool":
        return [], ["Tool said: ", _text(last.get("content"))], None, 0.0
    user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    reasoning = ["Let me ", "think..."] if "THINK" in user else []
    if "TOOL" in user and tools:
        if "delegate_task_to_member" in tools:
            call = ("delegate_task_to_member",
                    {"member_id": "worker", "task_description": user, "expected_output": "the result"})
        elif "delegate_task_to_members" in tools:  # collaborate mode: delegate to all
            call = ("delegate_task_to_members", {"task_description": user, "expected_output": "the result"})
        else:
            call = ("mul" if "mul" in tools else tools[0], {"a": 2, "b": 3})
        return reasoning, [], call, 0.0
    if "SLOW" in user:
        return reasoning, [f"chunk{i} " for i in range(SLOW_CHUNKS)], None, SLOW_DELAY
    words = f"Hello from mock (history={len(messages)} msgs)".split(" ")
    return reasoning, [w + " " for w in words[:-1]] + [words[-1]], None, 0.0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def _json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/_requests":
            with _lock:
                return self._json(200, list(REQUESTS))
        self._json(404, {"error": {"message": f"no route GET {self.path}"}})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self._json(404, {"error": {"message": f"no route POST {self.path}"}})
        try:
            body = json.loads(raw)
        except ValueError:
            return self._json(400, {"error": {"message": "body is not JSON"}})
        with _lock:
            REQUESTS.append(body)
        reasoning, chunks, call, delay = script(body)
        model = body.get("model", "mock-1")
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        tool_calls = None
        if call:
            tool_calls = [{"index": 0, "id": "call_" + uuid.uuid4().hex[:8], "type": "function",
                           "function": {"name": call[0], "arguments": json.dumps(call[1])}}]
        finish = "tool_calls" if call else "stop"
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if not body.get("stream"):
            msg = {"role": "assistant", "content": "".join(chunks) or None}
            if reasoning:
                msg["reasoning_content"] = "".join(reasoning)
            if tool_calls:
                msg["tool_calls"] = [{k: v for k, v in tc.items() if k != "index"} for tc in tool_calls]
            return self._json(200, {"id": cid, "object": "chat.completion", "created": int(time.time()),
                                    "model": model, "usage": usage,
                                    "choices": [{"index": 0, "message": msg, "finish_reason": finish}]})

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # HTTP/1.0: the body ends when we close
        self.end_headers()

        def send(delta, finish_reason=None, **extra):
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        try:
            send({"role": "assistant", "content": ""})
            for r in reasoning:
                send({"reasoning_content": r})
            for i, c in enumerate(chunks):
                if i and delay:
                    time.sleep(delay)
                send({"content": c})
            if tool_calls:
                send({"tool_calls": tool_calls})
            send({}, finish)
            if (body.get("stream_options") or {}).get("include_usage"):
                self.wfile.write(f"data: {json.dumps({'id': cid, 'object': 'chat.completion.chunk', 'created': int(time.time()), 'model': model, 'choices': [], 'usage': usage})}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up (a cancelled run): nothing to do


def start_server(port=0):
    """Starts the mock on 127.0.0.1:<port> in a daemon thread; returns (server, port)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="mock-openai", daemon=True).start()
    return server, server.server_address[1]


if __name__ == "__main__":
    srv, p = start_server(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(f"PORT {p}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        srv.shutdown()
