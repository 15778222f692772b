// Stub of @hono/node-ws (WebSocket upgrades on a Node server; only GET /v1/realtime uses it).
// workerd would need WebSocketPair instead; the realtime route answers 501 here.
export function createNodeWebSocket() {
  return {
    injectWebSocket() {},
    upgradeWebSocket: () => (c) => c.json({ error: "websockets (/v1/realtime) are not available in this workerd build" }, 501),
  };
}
