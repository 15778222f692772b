// Stub of ioredis (needs node:net/tls sockets). Used only by the optional "redis" cache backend,
// which is created only when a Redis URL is configured; never on the default request path.
export default class Redis {
  constructor() { throw new Error("ioredis is not available in this workerd build"); }
}
