#!/usr/bin/env python3
"""A tiny stdio MCP server with one tool, `mul`, used by the agno client tests.

Run by the MCP client as: <venv python> agno/mcp_calc.py  (speaks MCP over stdin/stdout).
"""

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("calc")


@mcp.tool()
def mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


if __name__ == "__main__":
    mcp.run()  # stdio transport by default
