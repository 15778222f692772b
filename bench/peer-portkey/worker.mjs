// workerd entry: evaluates the unmodified @portkey-ai/gateway start-server.js (its top-level
// serve() call hands the Hono app's fetch to the @hono/node-server stub) and exports that fetch.
import { realTimers } from "./prelude.mjs";
import "@portkey-ai/gateway/build/start-server.js";
import { captured } from "@hono/node-server";

Object.assign(globalThis, realTimers);
if (typeof captured !== "function") throw new Error("start-server.js did not call serve()");

export default {
  fetch(request, env, ctx) {
    return captured(request, env, ctx);
  },
};
