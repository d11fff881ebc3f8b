#!/usr/bin/env python3
"""Agno client process of the executor: runs Wegent-style Agno agents/teams (agno 2.1.5).

Run as `$AGNO_PYTHON agno/agno_client.py`. Protocol: JSON lines (UTF-8, one object per line).
stdin ops:  {"op":"run","run_seq",...} | {"op":"cancel"} | {"op":"shutdown"} (stdin EOF = shutdown)
stdout:     ready, run_started, content, reasoning, tool_started, tool_completed, reasoning_step,
            mcp_error, cancel_ack, then exactly one of completed | cancelled | error per run.
stderr:     logs, one line per record ("LEVEL logger: message"), secrets masked.
The agent/team is built exactly like Wegent's executor/agents/agno (see
shared/research/agno.md §1.2) on the first run and reused by later runs, like Wegent's cache.
"""

import os
import sys

# agno (through rich) prints log lines to stdout: keep fd 1 for the protocol only, and point
# fd 1 at stderr before anything can import agno.
_PROTO = os.fdopen(os.dup(1), "wb")  # buffered: write() never leaves half a line
os.dup2(2, 1)
os.environ.setdefault("AGNO_TELEMETRY", "false")

import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402
from datetime import timedelta  # noqa: E402

AGNO_VERSION = "2.1.5"
CANCEL_GRACE_S = float(os.environ.get("AGNO_CANCEL_GRACE_S", "3"))  # cooperative cancel, then hard
log = logging.getLogger("agno_client")
SECRETS = set()  # api keys, header values, MCP env values: masked in every message and log line


def mask(text):
    text = str(text)
    for s in sorted(SECRETS, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def add_secrets(*values):
    SECRETS.update(str(v) for v in values if isinstance(v, str) and len(v) >= 6)


add_secrets(*(os.environ.get(k) for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY")))

SILENT_EXIT_MARKER = "__silent_exit__"  # the original's executor/tools/silent_exit.py


def silent_exit_reason(result):
    """The reason when a tool result is the silent-exit marker, else None."""
    try:
        data = json.loads(result) if isinstance(result, str) else None
    except ValueError:
        return None
    if isinstance(data, dict) and data.get(SILENT_EXIT_MARKER):
        reason = data.get("reason")
        return reason if isinstance(reason, str) else ""
    return None


class OneLineFormatter(logging.Formatter):
    def format(self, record):
        return mask(super().format(record)).replace("\n", "\\n")


_broken = False
CLIENT = None  # the Client, once running (emit() asks it to shut down on a dead pipe)


def emit(obj):
    """Writes one protocol line. A dead reader (the executor went away) means shut down."""
    global _broken
    if _broken:
        return
    try:
        _PROTO.write((json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
        _PROTO.flush()
    except OSError as e:
        _broken = True
        log.error("protocol pipe closed (%s): shutting down", e)
        if CLIENT is not None:
            CLIENT.inbox.put_nowait(None)


def describe(e):
    """`Type: message`, flattening anyio/asyncio exception groups to their leaves."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe(x) for x in e.exceptions)
    return mask(f"{type(e).__name__}: {e}".rstrip(": "))


handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
logging.basicConfig(level=os.environ.get("AGNO_CLIENT_LOG", "INFO").upper(), handlers=[handler])

try:
    from importlib.metadata import version as _version

    _found = _version("agno")
    if _found != AGNO_VERSION:
        raise ImportError(f"found agno {_found}")
    import anthropic  # noqa: F401  (Claude models; fail now rather than at the first run)
    from agno.agent import Agent
    from agno.db.sqlite import SqliteDb
    from agno.exceptions import ModelProviderError
    from agno.models.anthropic import Claude
    from agno.models.openai import OpenAIChat
    from agno.team import Team
    from agno.tools.mcp import MCPTools, SSEClientParams, StreamableHTTPClientParams
    from mcp import StdioServerParameters
except Exception as e:  # noqa: BLE001 - any import failure means "install the pinned stack"
    emit({"type": "error", "where": "import",
          "message": f"agno {AGNO_VERSION} is not installed in {sys.executable}: run bash "
                     f"agno/install.sh ({describe(e)})"})
    sys.exit(3)

# agno's own loggers use a rich handler (multi-line, wrapped): make them one masked line each.
for _name in ("agno", "agno-team", "agno-workflow"):
    logging.getLogger(_name).handlers = [handler]

DB_FILE = os.path.abspath(os.environ.get("AGNO_DB_FILE") or "/tmp/agno_data.db")
os.makedirs(os.path.dirname(DB_FILE), exist_ok=True)
DB = SqliteDb(db_file=DB_FILE)


def json_env(name):
    try:
        v = json.loads(os.environ.get(name) or "{}")
        return v if isinstance(v, dict) else {}
    except ValueError:
        log.warning("%s is not a JSON object; ignored", name)
        return {}


EXECUTOR_ENV = json_env("EXECUTOR_ENV")


def header_templates(op):
    """Wegent: EXECUTOR_ENV.DEFAULT_HEADERS, else $DEFAULT_HEADERS; a run's default_headers wins."""
    if isinstance(op.get("default_headers"), dict):
        return op["default_headers"]
    dh = EXECUTOR_ENV.get("DEFAULT_HEADERS") or os.environ.get("DEFAULT_HEADERS")
    if isinstance(dh, str):
        try:
            dh = json.loads(dh)
        except ValueError:
            dh = None
    return dh if isinstance(dh, dict) else {}


def resolve(path, sources):
    """`${source.a.b}` placeholder value, as Wegent's resolve_value_from_source ("" if missing)."""
    name, _, rest = path.partition(".") if "." in path else ("agent_config", "", path)
    cur = sources.get(name)
    for key in rest.split("."):
        if isinstance(cur, dict) and key in cur:
            cur = cur[key]
        elif isinstance(cur, list) and key.isdigit() and int(key) < len(cur):
            cur = cur[int(key)]
        else:
            return ""
    return "" if cur is None else str(cur)


def member_headers(templates, bot, op):
    import re

    sources = {"agent_config": bot.get("agent_config") or {}, "options": bot,
               "executor_env": EXECUTOR_ENV, "task_data": op}
    out = {k: re.sub(r"\$\{([^}]+)\}", lambda m: resolve(m.group(1), sources), v)
           if isinstance(v, str) else v for k, v in templates.items()}
    add_secrets(*out.values())
    return out


def make_model(env, headers):
    """Wegent's model_factory, minus its defects: no process-global ANTHROPIC_BASE_URL (set to
    None when absent, which crashed), empty strings count as unset."""
    kind = env.get("model") or "claude"
    model_id, api_key, base_url = env.get("model_id"), env.get("api_key"), env.get("base_url")
    add_secrets(api_key)
    if kind == "openai":
        return OpenAIChat(id=model_id or os.environ.get("OPENAI_MODEL", "gpt-4"),
                          api_key=api_key or os.environ.get("OPENAI_API_KEY"),
                          base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
                          default_headers=headers, max_tokens=32768,
                          # agno's default sends the system prompt as "developer"
                          role_map={"system": "system", "user": "user", "assistant": "assistant",
                                    "tool": "tool", "model": "assistant"})
    if kind == "gemini":  # imported lazily: google-genai adds ~1 s to every cold start
        from agno.models.google import Gemini
        from google.genai import Client
        from google.genai.types import HttpOptions

        api_key = api_key or os.environ.get("GOOGLE_API_KEY")
        model_id = model_id or os.environ.get("GEMINI_MODEL", "gemini-2.5-flash")
        if not base_url:
            return Gemini(id=model_id, api_key=api_key)
        url, version = base_url.rstrip("/"), "v1beta"
        for v in ("/v1beta", "/v1"):  # the SDK appends the version itself
            if v in url:
                url, version = url.replace(v, ""), v[1:]
                break
        hdrs = {**({"x-goog-api-key": api_key} if api_key else {}), **headers}
        client = Client(api_key=api_key, http_options=HttpOptions(base_url=url, api_version=version,
                                                                   headers=hdrs))
        return Gemini(id=model_id, client=client)
    if kind != "claude":
        log.warning("unknown model %r: using claude (as Wegent does)", kind)
    return Claude(id=model_id or os.environ.get("ANTHROPIC_MODEL", "claude-3-5-sonnet-20241022"),
                  api_key=api_key or os.environ.get("ANTHROPIC_API_KEY"), default_headers=headers,
                  max_tokens=32768, client_params={"base_url": base_url} if base_url else None)


def mcp_configs(bot):
    """(name, config) pairs from `mcp_servers`/`mcpServers`, incl. Wegent's nested and list forms."""
    servers = None
    for outer in ("mcpServers", "mcp_servers"):
        val = bot.get(outer)
        if isinstance(val, dict):
            inner = next((val[k] for k in ("mcpServers", "mcp_servers") if isinstance(val.get(k), dict)
                          and val[k]), None)
            servers = inner or val
            if inner:
                break
        elif isinstance(val, list) and val and servers is None:
            servers = {"default": val[0]}  # Wegent: list form, first server only
    return [(n, c) for n, c in (servers or {}).items() if isinstance(c, dict)]


def make_mcp(cfg):
    kind = cfg.get("type") or "stdio"
    timeout = cfg.get("timeout") or 300
    read_timeout = cfg.get("sse_read_timeout") or 300
    add_secrets(*(cfg.get("env") or {}).values(), *(cfg.get("headers") or {}).values())
    if kind in ("streamable-http", "streamable_http", "sse"):
        if not cfg.get("url"):
            raise ValueError(f"MCP {kind} server needs a url")
        if kind == "sse":
            params = SSEClientParams(url=cfg["url"], headers=cfg.get("headers") or {},
                                     timeout=timeout, sse_read_timeout=read_timeout)
            return MCPTools(transport="sse", server_params=params, timeout_seconds=timeout)
        params = StreamableHTTPClientParams(url=cfg["url"], headers=cfg.get("headers") or {},
                                            timeout=timedelta(seconds=timeout),
                                            sse_read_timeout=timedelta(seconds=read_timeout))
        return MCPTools(transport="streamable-http", server_params=params, timeout_seconds=timeout)
    if kind != "stdio":
        raise ValueError(f"unsupported MCP server type {kind!r}")
    if not cfg.get("command"):
        raise ValueError("MCP stdio server needs a command")
    env = dict(cfg.get("env") or {})
    # The executor finds (and ends) every process of a session by this marker, also MCP servers
    # that start their own session and so leave the client's process group.
    marker = os.environ.get("EXECUTOR_AGENT_MARKER")
    if marker:
        env["EXECUTOR_AGENT_MARKER"] = marker
    params = StdioServerParameters(command=cfg["command"], args=cfg.get("args") or [],
                                   env=env, cwd=os.getcwd())
    return MCPTools(transport="stdio", server_params=params, timeout_seconds=timeout)


class Client:
    def __init__(self):
        self.inbox = asyncio.Queue()  # stdin lines, None = EOF
        self.mcp_requests = asyncio.Queue()  # (configs, future) for the MCP owner task; None = stop
        self.runner = None  # the Agent or Team, built by the first run
        self.mode = ""
        self.task = None  # the in-flight run
        self.seq = self.run_id = None
        self.cancel_requested = self.terminal = False
        self.content = []
        self.silent = None  # a tool's silent-exit reason, once one asked for it

    # -- MCP: anyio cancel scopes must be entered and exited by the same task, so one long-lived
    # -- task connects every server and closes them all at shutdown.
    async def mcp_owner(self):
        connected = []
        while (req := await self.mcp_requests.get()) is not None:
            configs, fut = req
            result = []
            for name, cfg in configs:
                tools = None
                try:
                    tools = make_mcp(cfg)
                    await tools.connect()
                    connected.append(tools)
                    result.append((name, tools, None))
                except Exception as e:  # noqa: BLE001 - reported as mcp_error, the run goes on
                    result.append((name, None, describe(e)))
                    if tools is not None:  # release a half-open stdio process / HTTP stream
                        try:
                            await tools.close()
                        except BaseException as ce:  # noqa: BLE001
                            log.warning("closing failed MCP server %s: %s", name, describe(ce))
            if not fut.done():
                fut.set_result(result)
        for tools in reversed(connected):
            try:
                await tools.close()
            except BaseException as e:  # noqa: BLE001 - one bad server must not keep others open
                log.warning("closing an MCP server: %s", describe(e))
        log.info("closed %d MCP connection(s)", len(connected))

    async def connect_mcp(self, bot):
        configs = mcp_configs(bot)
        if not configs:
            return []
        fut = asyncio.get_running_loop().create_future()
        await self.mcp_requests.put((configs, fut))
        tools = []
        for name, t, err in await fut:
            if err:
                log.warning("MCP server %s of %s failed: %s", name, bot.get("name"), err)
                self.send("mcp_error", server=name, message=err)
            else:
                tools.append(t)
        return tools

    # -- build (first run only), as Wegent's team_builder / member_builder
    async def build(self, op):
        bots = op.get("bots")
        if not isinstance(bots, list) or not bots or not all(isinstance(b, dict) for b in bots):
            raise ValueError("run.bots must be a non-empty list of bot objects")
        for b in bots:
            add_secrets(((b.get("agent_config") or {}).get("env") or {}).get("api_key"))
        templates = header_templates(op)
        leaders = [i for i, b in enumerate(bots) if b.get("role") == "leader"]
        others = [i for i, b in enumerate(bots) if b.get("role") != "leader"]
        single = (not leaders and len(others) == 1) or (leaders and not others)
        # Only agents that will run get MCP connections (Wegent also connected the unused leader).
        used = [0] if single else ([leaders[0]] if leaders else []) + others
        agents = {}
        for i in used:
            bot = bots[i]
            desc = bot.get("system_prompt") or "Team member"
            env = (bot.get("agent_config") or {}).get("env") or {}
            agents[i] = Agent(name=bot.get("name") or "TeamMember", role=desc, description=desc,
                              model=make_model(env, member_headers(templates, bot, op)),
                              add_name_to_context=True, add_datetime_to_context=True,
                              tools=await self.connect_mcp(bot) if i in others or single else [],
                              db=DB, add_history_to_context=True, num_history_runs=3,
                              telemetry=False)
        if single:
            log.info("built single agent %s", agents[0].name)
            return agents[0]
        members = [agents[i] for i in others]
        lead = agents[leaders[0]] if leaders else members[0]  # no leader: members[0] also leads
        mode = op.get("mode") or ""
        mode_config = {"coordinate": {"reasoning": True},
                       "collaborate": {"delegate_task_to_all_members": True, "reasoning": True},
                       "route": {"respond_directly": True}}.get(
            mode, {"delegate_task_to_all_members": False, "respond_directly": False,
                   "determine_input_for_members": False})
        log.info("built team of %d member(s), leader %s, mode %r", len(members), lead.name, mode)
        return Team(name="AgnoTeam", members=members, model=lead.model, description=lead.description,
                    instructions=[lead.description], session_id=str(op.get("session_id")), db=DB,
                    add_member_tools_to_context=True, add_datetime_to_context=True,
                    add_history_to_context=True, markdown=True, telemetry=False,
                    show_members_responses=True, share_member_interactions=True, **mode_config)

    # -- runs
    def send(self, kind, **fields):
        emit({"type": kind, "run_seq": self.seq, **fields})

    def finish(self, kind, **fields):
        if not self.terminal:
            self.terminal = True
            if self.silent is not None and not self.cancel_requested and kind in (
                    "cancelled", "completed"):
                # A tool asked for a silent exit (contract 5.7): the run was stopped on purpose.
                kind = "completed"
                fields = dict(run_id=self.run_id, content="".join(self.content),
                              metrics=fields.get("metrics") or {}, silent_exit=True,
                              silent_exit_reason=self.silent)
            self.send(kind, **fields)

    def start_run(self, op):
        if self.task is not None:
            return emit({"type": "error", "run_seq": op.get("run_seq"), "where": "run",
                         "message": "a run is already in progress"})
        self.seq, self.run_id, self.content, self.silent = op.get("run_seq"), None, [], None
        self.cancel_requested = self.terminal = False
        self.task = asyncio.create_task(self.run(op))

    async def run(self, op):
        where = "build"
        try:
            if self.runner is None:
                # The task's workspace (its clone) is where the agent and its stdio MCP servers
                # run; one client serves one session, so changing the process's cwd is safe.
                cwd = op.get("cwd")
                if isinstance(cwd, str) and os.path.isdir(cwd):
                    os.chdir(cwd)
                self.mode = op.get("mode") or ""
                self.runner = await self.build(op)
            if self.cancel_requested:  # cancelled while building: never start the model
                return self.finish("cancelled", run_id=None)
            where = "run"
            prompt, sid = op.get("prompt"), op.get("session_id")
            if not isinstance(prompt, str) or sid in (None, ""):
                raise ValueError("run needs a string prompt and a session_id")
            kw = dict(stream=True, stream_intermediate_steps=True, add_history_to_context=True,
                      session_id=str(sid), user_id=str(op.get("user_id") or sid))
            if isinstance(self.runner, Team):
                kw.update(show_members_responses=True, markdown=True)
                if self.mode == "coordinate":
                    kw["show_full_reasoning"] = True
            stream = self.runner.arun(prompt, **kw)
            async for ev in stream:
                self.on_event(ev)
                if self.silent is not None:  # silent exit: stop here, as the original's break
                    break
            if self.silent is not None:
                try:
                    await stream.aclose()
                except Exception as e:  # noqa: BLE001 - the run is over either way
                    log.info("closing the stopped run: %s", describe(e))
            if self.cancel_requested:
                self.finish("cancelled", run_id=self.run_id)
            else:  # e.g. a paused run: no RunCompleted, but the stream ended normally
                self.finish("completed", run_id=self.run_id, content="".join(self.content),
                            metrics={})
        except asyncio.CancelledError:  # hard cancel (grace expired) or shutdown
            self.finish("cancelled", run_id=self.run_id)
        except Exception as e:  # noqa: BLE001 - the run's terminal event; the process lives on
            where = "model" if isinstance(e, ModelProviderError) else where
            log.error("%s failed: %s", where, describe(e), exc_info=log.isEnabledFor(logging.DEBUG))
            self.finish("error", where=where, message=describe(e))
        finally:  # a failed build left self.runner None: the next run builds again
            self.task = None

    def on_event(self, ev):
        name = getattr(ev, "event", "")
        team_ev = name.startswith("Team")
        base = name[4:] if team_ev else name
        top = team_ev or (isinstance(self.runner, Agent) and self.run_id in (None, ev.run_id))
        scope = "team" if team_ev else ("agent" if top else "member")
        agent = getattr(ev, "team_name" if team_ev else "agent_name", "") or ""
        if base == "RunStarted":
            if top and self.run_id is None:
                self.run_id = ev.run_id
                if self.cancel_requested:
                    self.request_cancel(self.task)
            self.send("run_started", run_id=ev.run_id, scope=scope, agent=agent)
        elif base == "RunContent" and top:
            reasoning = getattr(ev, "reasoning_content", None)
            if isinstance(reasoning, str) and reasoning:
                self.send("reasoning", delta=reasoning)
            if ev.content is not None and ev.content != "":
                delta = ev.content if isinstance(ev.content, str) else json.dumps(ev.content, default=str)
                self.content.append(delta)
                self.send("content", delta=delta)
        elif base in ("ToolCallStarted", "ToolCallCompleted") and ev.tool is not None:
            t = ev.tool
            common = dict(scope=scope, agent=agent, tool_call_id=t.tool_call_id or "", name=t.tool_name)
            if base == "ToolCallStarted":
                self.send("tool_started", input=t.tool_args or {}, **common)
            else:
                out = t.result if isinstance(t.result, str) or t.result is None else json.dumps(
                    t.result, default=str)
                self.send("tool_completed", output=out or "", error=bool(t.tool_call_error), **common)
                reason = silent_exit_reason(out)
                if reason is not None and self.silent is None:
                    # Stop the run (as the original's cancel_run on silent exit); it ends
                    # COMPLETED with the silent-exit flags (see finish).
                    log.info("silent exit requested by tool %s: %s", t.tool_name, reason)
                    self.silent = reason
                    self.request_cancel(self.task)
                    asyncio.get_running_loop().call_later(CANCEL_GRACE_S, self.hard_cancel,
                                                          self.task)
        elif base == "ReasoningStep" and ev.content is not None and hasattr(ev.content, "title"):
            s = ev.content
            self.send("reasoning_step", title=s.title, action=s.action, reasoning=s.reasoning,
                      confidence=s.confidence,
                      next_action=getattr(s.next_action, "value", s.next_action))
        elif base == "RunCompleted" and top:
            content = ev.content if isinstance(ev.content, str) or ev.content is None else json.dumps(
                ev.content, default=str)
            metrics = ev.metrics.to_dict() if getattr(ev, "metrics", None) is not None else {}
            if self.cancel_requested:  # finished before the cancel took effect: still cancelled
                self.finish("cancelled", run_id=self.run_id)
            else:
                self.finish("completed", run_id=self.run_id, content=content or "", metrics=metrics)
        elif base == "RunCancelled" and top:
            self.finish("cancelled", run_id=self.run_id)
        elif base == "RunError" and top:
            self.finish("error", where="model", message=mask(ev.content or "model error"))
        elif base in ("RunCompleted", "RunCancelled", "RunError"):
            log.info("member %s: %s", agent, name)

    def request_cancel(self, task):
        """agno's cancel_run only marks an id it has registered: an agent registers it a little
        after RunStarted, so retry until it is accepted or this run is over."""
        if self.task is not task or self.terminal:
            return
        if self.run_id and self.runner.cancel_run(self.run_id):
            return
        asyncio.get_running_loop().call_later(0.02, self.request_cancel, task)

    def cancel(self, ack=True):
        had = self.task is not None and not self.terminal
        if ack:
            emit({"type": "cancel_ack", "run_seq": self.seq if had else None, "had_run": had})
        if had and not self.cancel_requested:
            self.cancel_requested = True
            task = self.task
            self.request_cancel(task)
            asyncio.get_running_loop().call_later(CANCEL_GRACE_S, self.hard_cancel, task)

    def hard_cancel(self, task):
        """Cooperative cancel is only checked between model chunks / tool calls; a model that
        sends nothing would hold the run forever."""
        if self.task is task and not task.done():
            log.warning("run %s ignored cancel for %.1fs: cancelling its task", self.run_id,
                        CANCEL_GRACE_S)
            task.cancel()

    async def main(self):
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _l, ctx: log.error(
            "unhandled: %s %s", ctx.get("message"), describe(ctx["exception"]) if "exception" in ctx else ""))

        def read_stdin():  # a thread: works for pipes, files and ttys alike
            try:
                for raw in sys.stdin.buffer:
                    loop.call_soon_threadsafe(self.inbox.put_nowait, raw)
            except Exception as e:  # noqa: BLE001 - e.g. no stdin at all: same as EOF
                log.error("reading stdin: %s", describe(e))
            finally:
                loop.call_soon_threadsafe(self.inbox.put_nowait, None)

        threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
        owner = asyncio.create_task(self.mcp_owner())
        emit({"type": "ready", "agno_version": AGNO_VERSION, "pid": os.getpid()})
        while (raw := await self.inbox.get()) is not None:
            try:
                op = json.loads(raw)
                kind = op.get("op") if isinstance(op, dict) else None
            except ValueError:
                op, kind = {}, None
            if kind == "shutdown":
                break
            try:
                if kind == "run":
                    self.start_run(op)
                elif kind == "cancel":
                    self.cancel()
                elif raw.strip():
                    line = mask(raw.decode("utf-8", "replace").strip())[:200]
                    emit({"type": "error", "run_seq": None, "where": "protocol",
                          "message": f"unknown line: {line}"})
            except Exception as e:  # noqa: BLE001 - keep serving; the run task reports its own
                log.error("handling %s: %s", kind, describe(e))
        # shutdown: cancel the run (cooperatively, then hard), then close MCP from its owner task
        if self.task is not None:
            task = self.task
            self.cancel(ack=False)
            await asyncio.wait({task}, timeout=CANCEL_GRACE_S + 1)
        await self.mcp_requests.put(None)
        await asyncio.wait({owner}, timeout=10)
        log.info("shut down")
        # Exit here, not after asyncio.run: its teardown would cancel a stuck MCP owner inside
        # anyio scopes and could hang; MCP children see their stdin close and exit.
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    CLIENT = Client()
    asyncio.run(CLIENT.main())
