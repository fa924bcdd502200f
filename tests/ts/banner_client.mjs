// The official TypeScript SDK client, used as the demo banner tells a user to: the test
// (tests/test_typescript_client.py) pastes the banner's TypeScript lines where BANNER is and reads
// the one JSON line this prints. It runs from the folder the test installs the pinned SDK into.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const out = {};
try {
  // BANNER
  out.server = client.getServerVersion()?.name;
  out.tools = (await client.listTools()).tools.map((t) => t.name);
  if (process.env.CALL_TOOL) {
    try {
      const result = await client.callTool({ name: process.env.CALL_TOOL, arguments: JSON.parse(process.env.CALL_ARGS || "{}") });
      out.call = { isError: Boolean(result.isError), text: (result.content || []).map((c) => c.text).join(" ") };
    } catch (e) {
      out.call = { refused: true, code: e.code, message: e.message };
    }
  }
  await client.close();
} catch (e) {
  out.error = String(e?.message ?? e);
}
console.log(JSON.stringify(out));
process.exit(0);
