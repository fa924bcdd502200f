"""REST operations as MCP tools (Kong ai-mcp-proxy's conversion modes): settings, the catalog
compiled per policy version, the request built from a call's arguments, and the call itself.
The MCP server answering for such routes is mcpserver/."""
