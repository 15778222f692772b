// Runs before start-server.js (imported first by worker.mjs, so it is evaluated first).
// 1. `--headless`: the package's CLI flag; without it, start-server.js reads build/public/index.html
//    from disk (node:fs) at startup to serve a UI. It reads process.argv.slice(2); workerd's argv is
//    empty, so put the usual two entries (runtime, script) in front.
process.argv.splice(0, process.argv.length, "workerd", "start-server.js", "--headless");
// 2. At top level, after serve(), start-server.js awaits a 1 s "Starting AI Gateway..." console
//    spinner (setInterval + setTimeout). workerd forbids timers in global scope, so while the module
//    evaluates, timers fire their callback on the next microtask (the spinner ends at once) and
//    worker.mjs restores the real ones as soon as the bundle has evaluated.
export const realTimers = { setTimeout: globalThis.setTimeout, setInterval: globalThis.setInterval,
  clearTimeout: globalThis.clearTimeout, clearInterval: globalThis.clearInterval };
globalThis.setTimeout = (fn, _ms, ...args) => { queueMicrotask(() => fn(...args)); return 0; };
globalThis.setInterval = () => 0;
globalThis.clearTimeout = () => {};
globalThis.clearInterval = () => {};
// 3. The spinner calls console.clear, which workerd may not have: a no-op then.
if (typeof console.clear !== "function") console.clear = () => {};
