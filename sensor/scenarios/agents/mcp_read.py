#!/usr/bin/env python3
"""An MCP client that asks the real filesystem MCP server to read files.

Scenario 4 of the attack-scenario catalogue: a malicious tool call makes an MCP tool server
(`@modelcontextprotocol/server-filesystem` from npm) read a credential file, once outside its
allowed roots (the server refuses it by itself) and once inside them (the sensor must catch it).

    mcp_read.py [--timeout SECONDS] SERVER_JS ROOT PATH [PATH...]

starts `node SERVER_JS ROOT` over stdio (node itself, never npx: no network, and a process
tree of exactly this Python process -> node), initializes the MCP session, lists the tools and
calls the server's read tool (`read_text_file`, or the older `read_file`) once per PATH, in
order. Each call prints one JSON line on stdout:

    {"path": PATH, "ok": true|false, "text_prefix": first 40 characters read or "",
     "error": the server's error message or ""}

Exit status:
  0   every call was made and answered; a refusal from the server is a result, not a failure
  1   a call failed on this side (the SDK rejected the server's answer); its line says why
  2   the server could not be started, initialized or listed (a message on stderr says why)
  3   the server went away or stopped answering during the calls (a killed server, say); a line
      is still printed for every PATH, with the error
  64  bad usage

Every wait is bounded by --timeout (default 20 s). Only the standard library and the `mcp`
SDK are imported. The server's own stderr goes to this process's stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import anyio  # a dependency of mcp
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.types import CONNECTION_CLOSED

READ_TOOLS = ("read_text_file", "read_file")  # the current name first, then the deprecated one
PREFIX_CHARS = 40
EXIT_OK, EXIT_CLIENT, EXIT_START, EXIT_LOST, EXIT_USAGE = 0, 1, 2, 3, 64


class StartError(Exception):
    """The server could not be brought to the point of taking tool calls."""


def _emit(path: str, ok: bool, text_prefix: str = "", error: str = "") -> None:
    print(json.dumps({"path": path, "ok": ok, "text_prefix": text_prefix, "error": error}), flush=True)


def _text_of(result) -> str:
    return "".join(getattr(block, "text", "") for block in (result.content or []))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, MCPError) else f"{type(exc).__name__}: {text}"


async def _run(node: str, server_js: str, root: str, paths: list[str], timeout: float) -> int:
    params = StdioServerParameters(command=node, args=[server_js, root])
    status = EXIT_OK
    started = False
    try:
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                try:
                    with anyio.fail_after(timeout):
                        await session.initialize()
                        tools = [tool.name for tool in (await session.list_tools()).tools]
                except TimeoutError:
                    raise StartError(f"the server did not initialize and list its tools within {timeout:g} s") from None
                except Exception as exc:
                    raise StartError(f"the server did not initialize: {_describe(exc)}") from None
                tool = next((name for name in READ_TOOLS if name in tools), None)
                if tool is None:
                    raise StartError(f"the server has no read tool ({' or '.join(READ_TOOLS)}); its tools: {tools}")
                started = True
                lost = ""
                for path in paths:
                    if lost:
                        _emit(path, False, error=f"not called: {lost}")
                        continue
                    try:
                        with anyio.fail_after(timeout):
                            result = await session.call_tool(tool, {"path": path})
                    except TimeoutError:
                        lost = f"no answer from the server within {timeout:g} s"
                        _emit(path, False, error=lost)
                        status = EXIT_LOST
                        continue
                    except MCPError as exc:
                        # A JSON-RPC error: the server answered, unless the connection itself closed
                        # (the SDK reports that as an MCPError too, code CONNECTION_CLOSED).
                        _emit(path, False, error=str(exc))
                        if exc.code == CONNECTION_CLOSED:
                            lost = f"the server connection closed ({exc})"
                            status = EXIT_LOST
                        continue
                    except Exception as exc:  # a failure on this side, e.g. a result the SDK rejects
                        _emit(path, False, error=f"client error: {_describe(exc)}")
                        status = max(status, EXIT_CLIENT)
                        continue
                    text = _text_of(result)
                    if getattr(result, "is_error", False):
                        _emit(path, False, error=text)
                    else:
                        _emit(path, True, text_prefix=text[:PREFIX_CHARS])
    except Exception as exc:  # anyio's task groups may wrap what was raised inside them
        leaves = _leaves(exc)
        reason = "; ".join(str(e) if isinstance(e, (StartError, OSError)) else _describe(e) for e in leaves)
        if not started or any(isinstance(e, StartError) for e in leaves):
            print(f"mcp_read: cannot start the MCP server `{node} {server_js} {root}`: {reason}", file=sys.stderr)
            return EXIT_START
        # The transport broke outside a call, e.g. while shutting the server down.
        print(f"mcp_read: the MCP session failed: {reason}", file=sys.stderr)
        return EXIT_LOST
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mcp_read.py",
        description="Ask the filesystem MCP server (node SERVER_JS ROOT, over stdio) to read each PATH; "
                    "one JSON line per call on stdout.")
    parser.add_argument("--timeout", type=float, default=20.0, help="bound on every wait, in seconds (default 20)")
    parser.add_argument("server_js", metavar="SERVER_JS", help="the server's entry file, e.g. .../dist/index.js")
    parser.add_argument("root", metavar="ROOT", help="the one directory the server is allowed to access")
    parser.add_argument("paths", metavar="PATH", nargs="+", help="a file to ask the server to read")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    node = os.environ.get("NODE") or shutil.which("node")
    if not node:
        print("mcp_read: cannot start the MCP server: no `node` on PATH (set NODE=/path/to/node)", file=sys.stderr)
        return EXIT_START
    if not os.path.isfile(args.server_js):
        print(f"mcp_read: cannot start the MCP server: no such file {args.server_js}", file=sys.stderr)
        return EXIT_START
    if not os.path.isdir(args.root):
        print(f"mcp_read: cannot start the MCP server: ROOT {args.root} is not a directory", file=sys.stderr)
        return EXIT_START
    return anyio.run(_run, os.path.abspath(node), os.path.abspath(args.server_js), args.root, args.paths,
                     args.timeout)


if __name__ == "__main__":
    sys.exit(main())
