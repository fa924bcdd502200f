"""The gateway answering MCP itself, for routes whose tools it defines (rest_tools/)."""
