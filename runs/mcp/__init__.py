"""DPP as an MCP server (SPEC §11): the packs as paid tools, runs as durable tasks (SEP-2663).

`views` is the `/mcp` endpoint of the API process (auth, plans and rate limits as /v1), `bridge` runs the
official SDK's ASGI transport behind a WSGI adapter, `server` builds the tools, `tasks` is the tasks extension
and `calls` holds what both do with runs (submit, wait, present).
"""
