#!/usr/bin/env python3
"""A stdio MCP server with one tool, `silent_exit`, as Wegent's system MCP server offers to
subscription tasks (contract 5.7): it returns the silent-exit marker. Used by the silent-exit
end-to-end tests (Agno through agno's MCP client; Claude Code through a fake CLI tool call).

Run as: <venv python> agno/mcp_silent_exit.py  (speaks MCP over stdin/stdout).
With `--call <reason or JSON args>` it instead acts as a one-shot MCP *client*: it starts itself as the
server over stdio, calls `silent_exit(reason)` and prints the tool's text result.
"""

import json
import sys

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("wegent-system")


@mcp.tool()
def silent_exit(reason: str = "") -> str:
    """Silently exit the execution without notifying the user."""
    return json.dumps({"__silent_exit__": True, "reason": reason or "nothing to report"})


async def call(reason):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=sys.executable, args=[__file__])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            args = json.loads(reason) if reason.startswith("{") else {"reason": reason}
            result = await session.call_tool("silent_exit", args)
            print("".join(getattr(c, "text", "") for c in result.content))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--call":
        import asyncio

        asyncio.run(call(sys.argv[2]))
    else:
        mcp.run()  # stdio transport by default
