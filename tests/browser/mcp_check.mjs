// Talks to `probing mcp` as an MCP client does, through the protocol's own SDK
// (@modelcontextprotocol/sdk), and prints what it got as one JSON object on standard output:
//
//   node mcp_check.mjs PROBING PID [--allow-eval]
//
// {"server": serverInfo, "tools": [names], "query": tool result, "set": tool result,
//  "eval": tool result or {"refused": message}}
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

const [probing, pid, ...flags] = process.argv.slice(2);
const transport = new StdioClientTransport({ command: probing, args: ['mcp', ...flags], stderr: 'inherit' });
const client = new Client({ name: 'probing-e2e', version: '1.0.0' });
await client.connect(transport);
const out = { server: client.getServerVersion() };
out.tools = (await client.listTools()).tools.map((t) => t.name);
out.query = await client.callTool({
  name: 'query',
  arguments: { target: pid, sql: "SELECT name FROM python.threads WHERE name = 'MainThread'" },
});
out.set = await client.callTool({ name: 'query', arguments: { target: pid, sql: 'SET eval.timeout_s = 7' } });
out.backtrace = await client.callTool({ name: 'backtrace', arguments: { target: pid } });
try {
  out.eval = await client.callTool({ name: 'eval', arguments: { target: pid, code: 'print(6 * 7)' } });
} catch (e) {
  out.eval = { refused: String(e.message || e) };
}
await client.close();
console.log(JSON.stringify(out));
