// Edge AI Gateway on Cloudflare Workers: the worker's entry point. A hand-written shim over the
// gateway's wasm (src/host/cloudflare.rs), which has raw exports and no generated glue.
//
// Per request: one call into the wasm with the request (head as one string, body from one
// arrayBuffer()), which starts a task and answers with commands (src/host/cloudflare/abi.rs):
// KV get/put/delete/list, fetch, read a body, sleep, count (Durable Object), verify or sign
// (WebCrypto), respond, log. This file performs them — concurrently when several are pending —
// and hands each outcome back with one call (egw_resume) until the task is done. The Response
// goes out as soon as the task says `respond`; the rest of the task (stream summary, cache
// fill, accounting, the log line) runs under ctx.waitUntil. A streamed answer is the origin's
// body through a pull-based stream that crosses into the wasm once per chunk (the core's
// stream pump).
//
// No business rule lives here: this file moves bytes, performs I/O and maps runtime failures to
// codes. It never puts a runtime exception's text into a response.

import { DurableObject } from "cloudflare:workers";
import gatewayWasm from "./gateway.wasm";

// Command kinds: the `Cmd` enum in abi.rs. Field types per kind: s text, b bytes, u u32,
// h header list (`name\0value\0…` → [[name, value], …]).
const DONE = 0, RESPOND = 1, RESPOND_STREAM = 2, LOG = 3, KV_GET = 4, KV_PUT = 5, KV_DELETE = 6;
const KV_LIST = 7, FETCH = 8, READ_BODY = 9, DROP_BODY = 10, SLEEP = 11, COUNT = 12;
const STORAGE_GET = 13, STORAGE_PUT = 14, STORAGE_DELETE = 15, REPLY = 16;
const CACHE_GET = 17, CACHE_PUT = 18, CACHE_DELETE = 19, VERIFY = 20, SIGN_RS256 = 21;
const FIELDS = ["", "uhb", "uhu", "s", "s", "sbu", "s", "s", "sshbu", "uu", "u", "u", "ss", "s", "s", "s", "us", "s", "sbu", "s", "sbb", "bb"];

// Outcome codes (abi.rs).
const OK = 0, MISSING = 1, TOO_LARGE = 2, FAILED = -1, TIMEOUT = -2, UNBOUND = -9;
const BODY_INCLUDED = 1000; // added to a fetch's status when the body comes with the head

const HARD_BODY_LIMIT = 32 << 20; // cloudflare.rs HARD_BODY_LIMIT: larger bodies are not read
const FLAG_TOO_LARGE = 1, FLAG_READ_FAILED = 2;
const NULL_BODY = new Set([101, 204, 205, 304]);

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------------------------
// The instance. Created on first use; replaced after a trap (a panic aborts), failing the
// tasks that were in it.

let wasm = null;
let generation = 0; // of the instance
let u8 = null;
let dv = null;
let nextTask = 1;
// Requests the fetch handler took that have no response yet (the core asks: while others
// wait, it spends no timer turn on sending its own answer before its after-response work).
let unanswered = 0;

// Live tasks, held weakly once their first call into the wasm returned: a task is then kept
// alive by the pending I/O that will resume it (its callbacks hold it). If the runtime drops
// that I/O for good (a request cancelled with work outstanding), the task becomes garbage, and
// its wasm side is dropped too. During the first call it is held as it is: most cache hits end
// within it, and then never pay for a WeakRef and a finalizer registration.
let tasks = new Map(); // id → task during its first call, then WeakRef(task)
const weak = typeof WeakRef === "function" && typeof FinalizationRegistry === "function";
const dropped = weak
  ? new FinalizationRegistry(({ id, gen, waiting }) => {
      if (waiting) unanswered--;
      if (wasm !== null && gen === generation) {
        tasks.delete(id);
        try {
          wasm.egw_cancel(id);
        } catch (error) {
          crash(error);
        }
      }
    })
  : null;

const imports = {
  egw: {
    now_ms: () => Date.now(),
    random_fill: (ptr, len) => {
      crypto.getRandomValues(new Uint8Array(wasm.memory.buffer, ptr, len));
    },
    error_log: (ptr, len) => console.error(decoder.decode(mem().subarray(ptr, ptr + len))),
    unanswered: () => unanswered,
    // Read only when the core's routing needs it: reading `request.cf` on every request cost
    // ~2-3% of a request's CPU on bare workerd.
    client_geo: (id, ptr, cap) => {
      const task = live(tasks.get(id));
      const cf = task === undefined || task.host.request === undefined ? null : task.host.request.cf;
      let text = "";
      if (cf != null) {
        try {
          text = (cf.country || "") + "\n" + (cf.continent || "");
        } catch {
          // some runtimes' placeholders throw on read: no geo data then
        }
      }
      return encoder.encodeInto(text, new Uint8Array(wasm.memory.buffer, ptr, cap)).written;
    },
  },
};

function instance(env) {
  if (wasm === null) {
    wasm = new WebAssembly.Instance(gatewayWasm, imports).exports;
    generation++;
    u8 = null;
    // The text bindings (secrets, vars), once per instance: the core resolves `$NAME` from them.
    let text = "";
    for (const name of Object.keys(env)) {
      const value = env[name];
      if (typeof value === "string") text += name + "\0" + value + "\0";
    }
    const bytes = encoder.encode(text);
    wasm.egw_env(put(bytes), bytes.length);
  }
  return wasm;
}

function mem() {
  if (u8 === null || u8.byteLength === 0) {
    u8 = new Uint8Array(wasm.memory.buffer);
    dv = new DataView(wasm.memory.buffer);
  }
  return u8;
}

// Copies bytes into wasm memory; the export they are passed to owns them.
function put(bytes) {
  if (bytes.length === 0) return 0;
  const ptr = wasm.egw_alloc(bytes.length);
  mem().set(bytes, ptr);
  return ptr;
}

// Drops one task (its wasm side too) and answers 500 if nothing was sent yet.
function abandon(task) {
  if (task.over) return;
  try {
    wasm.egw_cancel(task.id); // its out buffer only releases origin bodies, which end() does
  } catch (error) {
    crash(error);
    return;
  }
  task.end();
}

function crash(error) {
  console.error("edge-gateway: the wasm instance failed; the next request starts a fresh one", error);
  wasm = null;
  const failed = tasks;
  tasks = new Map();
  for (const ref of failed.values()) {
    const task = live(ref);
    if (task !== undefined) task.end();
  }
}

// The task a `tasks` entry holds, if it is still alive.
function live(ref) {
  return weak && ref instanceof WeakRef ? ref.deref() : ref;
}

// ---------------------------------------------------------------------------------------------
// Tasks: one per request or Durable Object call.

class Task {
  constructor(host) {
    this.id = nextTask++;
    this.host = host; // { env, ctx, url, request } for a request; { storage } for the Durable Object
    this.handles = new Map(); // origin responses the wasm still refers to, by fetch op
    this.over = false;
    this.responded = false;
    this.response = null;
    this.resolve = null;
    this.done = null;
    this.doneResolve = null;
    // Shared with the finalizer, which must not hold the task. `waiting`: a request not yet answered.
    this.token = { id: this.id, gen: generation, waiting: host.ctx !== undefined };
    this.weakly = false;
    tasks.set(this.id, this);
  }

  // After the task's first call: if it goes on, only the I/O it waits for holds it.
  holdWeakly() {
    if (!weak || this.over || this.weakly) return;
    this.weakly = true;
    tasks.set(this.id, new WeakRef(this));
    dropped.register(this, this.token, this);
  }

  respond(response) {
    if (this.token.waiting) {
      this.token.waiting = false;
      unanswered--;
    }
    this.responded = true;
    if (this.resolve !== null) this.resolve(response);
    else this.response = response;
  }

  // The task finished (or its instance failed): release what it held.
  end() {
    if (this.over) return;
    this.over = true;
    tasks.delete(this.id);
    if (this.weakly) dropped.unregister(this);
    for (const h of this.handles.values()) cancelBody(h);
    this.handles.clear();
    if (this.host.reply !== undefined) {
      this.host.reply(1, ""); // no-op after the task's own reply
    } else if (!this.responded) {
      this.respond(internalError());
    }
    if (this.doneResolve !== null) this.doneResolve();
  }
}

function internalError() {
  const body = '{"error":{"message":"the gateway failed to handle the request","type":"gateway_error","code":"internal_error"}}';
  return new Response(body, { status: 500, headers: [["content-type", "application/json"]] });
}

// Calls into the wasm for `task` and performs the commands it answers with.
function step(task, call) {
  if (task.over) return;
  let ptr;
  try {
    ptr = call();
  } catch (error) {
    crash(error);
    return;
  }
  run(task, ptr);
}

// A command's outcome: a code, bytes, and for a fetch read ahead, the body.
function resume(task, op, code, bytes, body) {
  step(task, () => {
    const len = bytes ? bytes.length : 0;
    const bodyLen = body ? body.length : 0;
    return wasm.egw_resume(task.id, op, code, len ? put(bytes) : 0, len, bodyLen ? put(body) : 0, bodyLen);
  });
}

// Resumes `op` with the [code, bytes] the promise gives; a rejection is a failure.
function settle(task, op, promise) {
  promise.then(
    (out) => resume(task, op, out[0], out[1]),
    () => resume(task, op, FAILED, null),
  );
}

// A header list from the core (`name\0value\0…`) as `Response` and `fetch` take it: a plain
// record when every name is unique (workerd reads a record with one property walk; a list of
// pairs through the iterator protocol, per pair: ~6% of a cache hit's CPU), else the pairs.
// No prototype, so a name like `__proto__` is a header like any other.
function headerInit(text) {
  const parts = text.split("\0");
  const record = Object.create(null);
  for (let i = 0; i + 1 < parts.length; i += 2) {
    if (Object.hasOwn(record, parts[i])) {
      const pairs = [];
      for (let j = 0; j + 1 < parts.length; j += 2) pairs.push([parts[j], parts[j + 1]]);
      return pairs;
    }
    record[parts[i]] = parts[i + 1];
  }
  return record;
}

function items(text) {
  const parts = text.split("\0");
  parts.pop();
  return parts;
}

// Decodes the out buffer at `ptr` completely (it is only valid until the next call into the
// wasm), then performs each command.
function run(task, ptr) {
  mem();
  const end = ptr + 4 + dv.getUint32(ptr, true);
  const commands = [];
  let p = ptr + 4;
  while (p < end) {
    const kind = u8[p];
    const op = dv.getUint32(p + 1, true);
    const n = u8[p + 5];
    const types = FIELDS[kind];
    const f = [kind, op];
    p += 6;
    for (let i = 0; i < n; i++) {
      const len = dv.getUint32(p, true);
      p += 4;
      switch (types.charCodeAt(i)) {
        case 115: // s
          f.push(decoder.decode(u8.subarray(p, p + len)));
          break;
        case 98: // b
          f.push(u8.slice(p, p + len));
          break;
        case 117: // u
          f.push(dv.getUint32(p, true));
          break;
        default: // h
          f.push(headerInit(decoder.decode(u8.subarray(p, p + len))));
      }
      p += len;
    }
    commands.push(f);
  }
  const respondedBefore = task.responded;
  for (const c of commands) {
    try {
      perform(task, c);
    } catch (error) {
      // A command the runtime refused outright (not an I/O failure, which is an outcome).
      console.error("edge-gateway: a command failed; the request is abandoned", error);
      abandon(task);
      return;
    }
  }
  if (task.responded && !respondedBefore && !task.over && task.host.ctx !== undefined) {
    // Work left after the response: keep the request's context alive for it.
    task.done = new Promise((resolve) => (task.doneResolve = resolve));
    task.host.ctx.waitUntil(task.done);
  }
}

function perform(task, c) {
  const op = c[1];
  switch (c[0]) {
    case DONE:
      task.end();
      break;
    case RESPOND: {
      const status = c[2];
      try {
        task.respond(new Response(NULL_BODY.has(status) ? null : c[4], { status, headers: c[3] }));
      } catch {
        task.respond(internalError());
      }
      break;
    }
    case RESPOND_STREAM:
      task.respond(new Response(pumped(task, c[4], op), { status: c[2], headers: c[3] }));
      break;
    case LOG:
      console.log(c[2]);
      break;
    case KV_GET:
      settle(task, op, kv(task.host.env, async (ns) => {
        const value = await ns.get(c[2], "arrayBuffer");
        return value === null ? [MISSING] : [OK, new Uint8Array(value)];
      }));
      break;
    case KV_PUT:
      settle(task, op, kv(task.host.env, async (ns) => {
        await ns.put(c[2], c[3], c[4] > 0 ? { expirationTtl: c[4] } : undefined);
        return [OK];
      }));
      break;
    case KV_DELETE:
      settle(task, op, kv(task.host.env, async (ns) => {
        await ns.delete(c[2]);
        return [OK];
      }));
      break;
    case KV_LIST:
      settle(task, op, kv(task.host.env, async (ns) => {
        let text = "";
        let cursor;
        do {
          const page = await ns.list({ prefix: c[2], cursor });
          for (const key of page.keys) text += key.name + "\0";
          cursor = page.list_complete ? undefined : page.cursor;
        } while (cursor);
        return [OK, encoder.encode(text)];
      }));
      break;
    case FETCH:
      send(task, op, c[2], c[3], c[4], c[5], c[6]);
      break;
    case READ_BODY:
      settle(task, op, readBody(task, c[2], c[3]));
      break;
    case DROP_BODY: {
      const h = task.handles.get(c[2]);
      if (h !== undefined) {
        task.handles.delete(c[2]);
        cancelBody(h);
      }
      break;
    }
    case SLEEP:
      setTimeout(() => resume(task, op, OK, null), c[2]);
      break;
    case COUNT:
      settle(task, op, count(task.host.env, c[2], c[3]));
      break;
    case STORAGE_GET:
      settle(task, op, (async () => {
        const names = items(c[2]);
        const found = await task.host.storage.get(names);
        let text = "";
        for (const name of names) {
          const value = found.get(name);
          text += (value === undefined ? "" : typeof value === "string" ? value : JSON.stringify(value)) + "\0";
        }
        return [OK, encoder.encode(text)];
      })());
      break;
    case STORAGE_PUT:
      settle(task, op, (async () => {
        const parts = items(c[2]);
        const entries = {};
        for (let i = 0; i + 1 < parts.length; i += 2) entries[parts[i]] = parts[i + 1];
        await task.host.storage.put(entries);
        return [OK];
      })());
      break;
    case STORAGE_DELETE:
      settle(task, op, (async () => {
        await task.host.storage.delete(items(c[2]));
        return [OK];
      })());
      break;
    case REPLY:
      task.host.reply(c[2], c[3]);
      break;
    case CACHE_GET:
      settle(task, op, edgeCache(task, c[2], async (cache, url) => {
        const hit = await cache.match(url);
        return hit === undefined ? [MISSING] : [OK, new Uint8Array(await hit.arrayBuffer())];
      }));
      break;
    case CACHE_PUT:
      settle(task, op, edgeCache(task, c[2], async (cache, url) => {
        const headers = { "cache-control": `max-age=${c[4]}`, "content-type": "application/octet-stream" };
        await cache.put(url, new Response(c[3], { headers }));
        return [OK];
      }));
      break;
    case CACHE_DELETE:
      settle(task, op, edgeCache(task, c[2], async (cache, url) => {
        await cache.delete(url);
        return [OK];
      }));
      break;
    case VERIFY:
      settle(task, op, verify(c[2], c[3], c[4]));
      break;
    case SIGN_RS256:
      settle(task, op, (async () => {
        const key = await crypto.subtle.importKey("pkcs8", c[2], RS256, false, ["sign"]);
        return [OK, new Uint8Array(await crypto.subtle.sign(RS256, key, c[3]))];
      })());
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Ports.

// A KV call, retried once when it throws; a second failure is FAILED (the core answers 503
// kv_unavailable with Retry-After). The exception's text goes nowhere.
async function kv(env, call) {
  const ns = env.KV;
  if (ns === undefined) return [UNBOUND];
  try {
    return await call(ns);
  } catch {
    try {
      return await call(ns);
    } catch {
      return [FAILED];
    }
  }
}

// A call on this location's Cache API, in a cache of the gateway's own (not the zone's
// `caches.default`, which can answer the zone's requests), keyed by a URL on the request's
// host. A runtime without the Cache API, or a call that throws, is FAILED: the core reads a
// miss and stores nothing (KV stays the cache of record). After a throw the level is skipped
// for a minute: a runtime with no cache configured (bare workerd) throws on every call, and
// an exception costs more than the KV read it would save. Its text goes nowhere.
const CACHE_RETRY_MS = 60_000;
let gatewayCache = null;
let cacheDownUntil = 0;
async function edgeCache(task, key, call) {
  if (typeof caches === "undefined" || task.host.url === undefined || Date.now() < cacheDownUntil) return [FAILED];
  try {
    gatewayCache ??= caches.open("edge-gateway");
    return await call(await gatewayCache, new URL("/" + encodeURIComponent(key), task.host.url).href);
  } catch {
    gatewayCache = null; // opened again next time
    cacheDownUntil = Date.now() + CACHE_RETRY_MS;
    return [FAILED];
  }
}

// One outbound request; the timeout covers the response head, and aborting also cancels a
// body still streaming (the client went away). A body of declared length that is not an event
// stream is read right away and comes with the head (the core reads such bodies whole: this
// saves a round trip); any other body stays here under the op's number.
function send(task, op, method, url, headers, body, timeoutMs) {
  const abort = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    abort.abort();
  }, timeoutMs);
  fetch(url, { method, headers, body: body.length > 0 ? body : null, signal: abort.signal }).then(
    (response) => {
      clearTimeout(timer);
      const h = { response, abort };
      if (task.over) {
        cancelBody(h);
        return;
      }
      let text = "";
      let length = -1;
      let stream = false;
      for (const [name, value] of response.headers) {
        text += name + "\0" + value + "\0";
        if (name === "content-length") length = Number(value);
        else if (name === "content-type") stream = value.startsWith("text/event-stream");
      }
      const head = encoder.encode(text);
      if (stream || !(length >= 0 && length <= HARD_BODY_LIMIT) || response.body === null) {
        task.handles.set(op, h);
        resume(task, op, response.status, head);
        return;
      }
      task.handles.set(op, h); // until read: released if the task ends meanwhile
      response.arrayBuffer().then(
        (buffer) => {
          task.handles.delete(op);
          resume(task, op, response.status + BODY_INCLUDED, head, new Uint8Array(buffer));
        },
        () => {
          // Reading failed: hand over the head alone; the core's read then fails cleanly.
          resume(task, op, response.status, head);
        },
      );
    },
    () => {
      clearTimeout(timer);
      resume(task, op, timedOut ? TIMEOUT : FAILED, null);
    },
  );
}

function cancelBody(h) {
  if (h.response.body !== null) h.response.body.cancel().catch(() => {});
}

// The whole body: one arrayBuffer() when the length is declared (the core checked it against
// the limit), else read up to the limit.
async function readBody(task, handle, limit) {
  const h = task.handles.get(handle);
  if (h === undefined) return [FAILED];
  task.handles.delete(handle);
  const response = h.response;
  if (response.body === null) return [OK, new Uint8Array(0)];
  if (response.headers.has("content-length")) {
    const buffer = await response.arrayBuffer();
    return buffer.byteLength > limit ? [TOO_LARGE] : [OK, new Uint8Array(buffer)];
  }
  const reader = response.body.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > limit) {
      reader.cancel().catch(() => {});
      return [TOO_LARGE];
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return [OK, bytes];
}

// The origin's body through the task's stream pump, one wasm call per chunk. The stream's end
// (or a cut origin stream) closes the client's stream with the pump's closing bytes; the
// client going away cancels the origin request. Either way `op` resumes the task with the
// outcome, and the pump's summary goes to the after-response work.
function pumped(task, handle, op) {
  const h = task.handles.get(handle);
  task.handles.delete(handle);
  const reader = h.response.body.getReader();
  const watch = idleWatch(reader, wasm.egw_idle_ms(task.id));
  let finished = false;
  const finish = (completed) => {
    if (finished) return;
    finished = true;
    watch.stop();
    resume(task, op, completed ? 1 : 0, null);
  };
  // The pump ended the stream itself (a cap, an idle origin): close the client's stream and
  // cancel the origin request.
  const stop = (controller) => {
    controller.close();
    h.abort.abort();
    reader.cancel().catch(() => {});
    finish(false);
  };
  return new ReadableStream({
    async pull(controller) {
      for (;;) {
        let read;
        watch.begin();
        try {
          read = await reader.read();
        } catch {
          read = null; // a cut origin stream ends like a finished one
        }
        if (watch.end()) read = IDLE;
        if (finished) return; // the client went away meanwhile
        if (task.over) {
          controller.close();
          return;
        }
        let out;
        if (read === IDLE) {
          out = chunkOut(() => wasm.egw_chunk_idle(task.id));
          if (out !== null && out.length > 0) controller.enqueue(out);
          stop(controller);
          return;
        }
        if (read === null || read.done) {
          out = chunkOut(() => wasm.egw_chunk_end(task.id));
          if (out !== null && out.length > 0) controller.enqueue(out);
          controller.close();
          finish(true);
          return;
        }
        const chunk = read.value;
        out = chunkOut(() => wasm.egw_chunk(task.id, put(chunk), chunk.length));
        if (out === null) {
          controller.close();
          return;
        }
        if (out.length > 0) controller.enqueue(out);
        if (wasm.egw_pump_done(task.id) !== 0) {
          stop(controller);
          return;
        }
        if (out.length > 0) return;
      }
    },
    cancel() {
      if (finished) return;
      h.abort.abort();
      reader.cancel().catch(() => {});
      finish(false);
    },
  });
}

// The origin's reads, each ended once it has waited `ms` for a chunk (`end()` then says so, and
// the pump treats the read as IDLE). One timer per stream, re-armed only when it fires, not a
// timer per read: a setTimeout, a Promise.race and a finally per chunk added ~0.2 ms to the
// latency of every chunk on workerd. `ms` 0: no limit.
const IDLE = {};
function idleWatch(reader, ms) {
  let since = 0; // when the read in progress began (0: none in progress)
  let idled = false;
  let timer;
  const look = () => {
    timer = undefined;
    if (since === 0) return; // no read in progress (the client is slow): the next one re-arms
    const left = since + ms - Date.now();
    if (left > 0) {
      timer = setTimeout(look, left);
      return;
    }
    idled = true;
    reader.cancel().catch(() => {}); // ends the read in progress
  };
  return {
    begin() {
      if (!(ms > 0)) return;
      since = Date.now();
      if (timer === undefined) timer = setTimeout(look, ms);
    },
    end() {
      since = 0;
      return idled;
    },
    stop() {
      since = 0;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    },
  };
}

function chunkOut(call) {
  try {
    const ptr = call();
    mem();
    return u8.slice(ptr + 4, ptr + 4 + dv.getUint32(ptr, true));
  } catch (error) {
    crash(error);
    return null;
  }
}

// Signatures through WebCrypto (ports/signatures.rs): the wasm has no RSA or P-256 code. An
// issuer's keys are imported once per instance (a few, bounded), keyed by their JWK text; a
// key WebCrypto refuses (a point off the curve) is FAILED, a signature that does not hold
// MISSING.
const RS256 = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
const ES256 = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
const VERIFY_KEYS_MAX = 64;
const verifyKeys = new Map(); // JWK text → CryptoKey
async function verify(jwkText, message, signature) {
  const algorithm = jwkText.startsWith('{"kty":"RSA"') ? RS256 : ES256; // PublicKey::jwk's text
  let key = verifyKeys.get(jwkText);
  if (key === undefined) {
    key = await crypto.subtle.importKey("jwk", JSON.parse(jwkText), algorithm, false, ["verify"]);
    if (verifyKeys.size >= VERIFY_KEYS_MAX) verifyKeys.clear();
    verifyKeys.set(jwkText, key);
  }
  return [(await crypto.subtle.verify(algorithm, key, signature, message)) ? OK : MISSING];
}

// The scope's Durable Object (exact counters): one RPC call with the core's request JSON.
async function count(env, scope, request) {
  const ns = env.COUNTER;
  if (ns === undefined) return [UNBOUND];
  const reply = await ns.get(ns.idFromName(scope)).count(request);
  return [OK, encoder.encode(reply)];
}

// ---------------------------------------------------------------------------------------------
// Entry points.

export default {
  async fetch(request, env, ctx) {
    unanswered++; // until its task responds
    const method = request.method;
    const url = request.url; // each read of a getter builds the string again
    let head = method + "\n" + url + "\n";
    let declared = 0;
    for (const [name, value] of request.headers) {
      head += name + ":" + value + "\n";
      if (name === "content-length") declared = Number(value);
    }
    let body = null;
    let flags = 0;
    // GET and HEAD carry no body; for the others, arrayBuffer() reads one, or none (without
    // the `body` getter, which builds a stream object).
    if (method !== "GET" && method !== "HEAD") {
      if (declared > HARD_BODY_LIMIT) {
        flags = FLAG_TOO_LARGE;
      } else {
        try {
          body = new Uint8Array(await request.arrayBuffer());
        } catch {
          flags = FLAG_READ_FAILED;
        }
      }
    }
    try {
      instance(env);
    } catch (error) {
      unanswered--;
      throw error;
    }
    const task = new Task({ env, ctx, url, request });
    step(task, () => {
      // Encoded straight into wasm memory (UTF-8 takes at most 3 bytes per UTF-16 unit).
      const headCap = head.length * 3;
      const headPtr = wasm.egw_alloc(headCap);
      const headLen = encoder.encodeInto(head, mem().subarray(headPtr, headPtr + headCap)).written;
      const bodyLen = body === null ? 0 : body.length;
      const bodyPtr = bodyLen > 0 ? put(body) : 0;
      return wasm.egw_fetch(task.id, headPtr, headLen, headCap, bodyPtr, bodyLen, flags);
    });
    task.holdWeakly();
    if (task.response !== null) return task.response;
    return new Promise((resolve) => (task.resolve = resolve));
  },
};

let nextObject = 1;
const collected =
  typeof FinalizationRegistry === "function"
    ? new FinalizationRegistry((object) => {
        if (wasm !== null) wasm.egw_object_drop(object);
      })
    : null;

// Exact rate-limit counters: one object per scope. Its state and rules live in the wasm
// (cloudflare_counter.rs); this class only carries the RPC call and the storage calls.
export class GatewayCounter extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.object = nextObject++;
    if (collected !== null) collected.register(this, this.object);
  }

  count(request) {
    instance(this.env);
    return new Promise((resolve, reject) => {
      const reply = (code, body) => {
        if (code === 0) {
          resolve(body);
        } else {
          if (body) console.error("edge-gateway counter:", body);
          reject(new Error("the counter could not apply the request"));
        }
      };
      const task = new Task({ storage: this.ctx.storage, reply });
      step(task, () => {
        const bytes = encoder.encode(request);
        return wasm.egw_count(task.id, this.object, put(bytes), bytes.length);
      });
      task.holdWeakly();
    });
  }
}
