"""opsgate's gateway: the composition root (Litestar app, MCP endpoint, CLI)."""
