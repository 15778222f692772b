// Stub of @hono/node-server. The package's start-server.js calls serve({fetch: app.fetch, port})
// at top level to open a Node HTTP server; workerd has no such server, so serve() only keeps the
// app's fetch for worker.mjs to export. Returns a dummy "server" (handed to injectWebSocket).
export let captured = null;
export function serve(options) {
  captured = options.fetch;
  return { close() {} };
}
