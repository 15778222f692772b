// Stub of the `ws` package (Node WebSocket client; used only for the upstream leg of /v1/realtime,
// which is unreachable here since the node-ws stub answers 501 first).
export default class WebSocket {
  constructor() { throw new Error("ws is not available in this workerd build"); }
}
