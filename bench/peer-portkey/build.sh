#!/usr/bin/env bash
# bench/peer-portkey/build.sh: builds Portkey's AI gateway (npm @portkey-ai/gateway, pinned in
# package.json / package-lock.json, used unmodified) into ONE ES module for bare `workerd serve`:
#   dist/portkey.mjs   (worker field: compatibilityFlags = ["nodejs_compat"])
#
# The package ships only a Node build (build/start-server.js) that calls @hono/node-server's
# serve({fetch: app.fetch}) at top level. worker.mjs imports it with these stand-ins (see stubs/):
#   @hono/node-server -> stubs/node-server.mjs  serve() just keeps app.fetch; worker.mjs exports it
#   @hono/node-ws     -> stubs/node-ws.mjs      no Node server to upgrade: /v1/realtime answers 501
#   ws                -> stubs/ws.mjs           realtime's upstream WebSocket client (unreachable)
#   ioredis           -> stubs/ioredis.mjs      optional Redis cache backend (needs node:net/tls)
#   avsc              -> stubs/avsc.cjs         Avro, only for reading Cohere batch-output files
#   prelude.mjs       passes --headless (no UI file read from disk) and makes the 1 s startup
#                     console spinner's timers no-ops while the module evaluates (workerd forbids
#                     timers in global scope); the real timers are restored right after.
# Node builtins the package imports (https, fs/promises, path, url, fs) stay imports of workerd's
# own node: modules (nodejs_compat); none of them is on the chat-completions path.
#
# A request Portkey forwards to an OpenAI-compatible origin at URL X (e.g. http://127.0.0.1:PORT):
#   POST /v1/chat/completions
#   content-type: application/json
#   x-portkey-provider: openai
#   x-portkey-custom-host: X/v1            (Portkey appends /chat/completions)
#   authorization: Bearer <provider key>   (forwarded to the origin as is)
#   body: the OpenAI chat body
# Portkey sends it to X/v1/chat/completions and returns the origin's JSON (plus its own headers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Install the pinned packages only when missing or older than the lockfile. --ignore-scripts: the
# gateway's postinstall runs patch-package for its own dev tree, nothing the bundle uses.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  npm ci --ignore-scripts --no-audit --no-fund
  touch node_modules
fi

mkdir -p dist
# Every Node builtin stays an import, served by workerd's nodejs_compat modules.
mapfile -t externals < <(node -e 'for (const m of require("module").builtinModules) console.log("--external:" + m)')
externals+=(--external:'node:*')
# --minify: Portkey deploys its worker with `wrangler deploy --minify` (the same esbuild pass).
node_modules/.bin/esbuild worker.mjs --bundle --minify --format=esm --platform=neutral \
  --main-fields=module,main --conditions=workerd,worker,browser \
  --alias:@hono/node-server=./stubs/node-server.mjs \
  --alias:@hono/node-ws=./stubs/node-ws.mjs \
  --alias:ws=./stubs/ws.mjs \
  --alias:ioredis=./stubs/ioredis.mjs \
  --alias:avsc=./stubs/avsc.cjs \
  "${externals[@]}" \
  --log-level=warning --outfile=dist/portkey.mjs
echo "built $(pwd)/dist/portkey.mjs ($(wc -c <dist/portkey.mjs) bytes)"
