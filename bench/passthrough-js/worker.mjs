// Benchmark fixture: the trivial JS pass-through, floor (ii) of scripts/bench. Reads the body
// once (arrayBuffer), sends it with the same method and path to ORIGIN_URL with the two headers
// an OpenAI-style origin needs, and returns the origin's response as is (its body streams).
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const headers = {};
    for (const name of ["content-type", "authorization"]) {
      const value = request.headers.get(name);
      if (value !== null) headers[name] = value;
    }
    const body = request.body === null ? null : await request.arrayBuffer();
    return fetch(env.ORIGIN_URL + url.pathname + url.search, { method: request.method, headers, body });
  },
};
