"""A second, independent origin for the e2e suite: Python's standard-library `http.server`
(ThreadingHTTPServer + BaseHTTPRequestHandler), not the project's own Rust mock.

It behaves like the many origins that are not hyper: model servers, HTTP/1.0 servers, WAFs.

* Request bodies are read by `Content-Length` only. There is no chunked decoding: a request
  that comes with `Transfer-Encoding` (or with no `Content-Length` on a POST) is answered
  411 Length Required and the connection closed, so a host that frames its outbound bodies
  as chunked fails visibly here instead of being quietly understood.
* It speaks OpenAI's wire format: `POST /v1/chat/completions` (JSON, or SSE with
  `stream: true`, usage in a final chunk when `stream_options.include_usage`),
  `POST /v1/embeddings` (float lists; base64 of little-endian f32 with
  `encoding_format: "base64"`, as OpenAI does) and `GET /v1/models`.
* Response framing is chosen per path prefix (or, for direct calls, the request header
  `x-py-origin-framing`): `/cl/...` (or no prefix) answers with `Content-Length`,
  `/chunked/...` with `Transfer-Encoding: chunked`, `/http10/...` as an HTTP/1.0 response
  whose body ends when the connection closes (no length, no chunking).
* Answers are deterministic and depend on the request: the chat answer is
  `"py-echo: <last user message>"`, token counts are word counts, embeddings are derived from
  a SHA-256 of the input text (components are multiples of 1/128, exact in f32).
* Tool calls, decided as the Rust mock decides them (src/bin/mock-origin/text.rs): when the
  request declares `tools` (and `tool_choice` is not `"none"`) and the conversation ends with a
  user message whose text contains "call tool" (any case), the answer is one call of the first
  declared function with arguments `{"text": <that message>}` (compact JSON) and finish_reason
  `tool_calls`; streamed, the first chunk carries the call's id and name and the arguments
  follow word by word in `tool_calls` deltas. After a tool result (the conversation ends with a
  `tool` message) the answer is the echo of the last user message again. Completion tokens of
  a call are the words of its arguments.
* Every request is recorded (method, path, version, headers, body, framing) for the tests.

Run standalone with `python tests/e2e/py_origin.py [--port N]`; it prints `listening on
host:port`.
"""
import base64
import hashlib
import json
import re
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FRAMINGS = ("cl", "chunked", "http10")
FRAMING_HEADER = "x-py-origin-framing"
ANSWER_PREFIX = "py-echo:"
EMBEDDING_DIMS = 8
CREATED = 1_700_000_000  # fixed, so answers are byte-for-byte reproducible
MODELS = ("py-gpt", "py-embedder")


def words(text: str) -> int:
    return len(text.split())


def text_of(content) -> str:
    """The text of an OpenAI message `content`: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def has_text(content) -> bool:
    """Whether a message `content` carries text (a string, or a list with a text part)."""
    if isinstance(content, str):
        return True
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content)


def wants_tool(body: dict, messages: list):
    """The name of the function to call, or None: tools declared (and allowed), and the
    conversation ends with user text asking "call tool" (as the Rust mock decides)."""
    tools = body.get("tools")
    if body.get("tool_choice") == "none" or not isinstance(tools, list) or not tools:
        return None
    first = tools[0] if isinstance(tools[0], dict) else {}
    name = (first.get("function") or {}).get("name") or first.get("name")
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if not name or last.get("role") != "user" or not has_text(last.get("content")):
        return None
    return name if "call tool" in text_of(last.get("content")).lower() else None


def pieces(text: str) -> list:
    """Streaming pieces of `text`, one word each with the whitespace before it; they join back
    to `text` exactly."""
    parts = re.findall(r"\s*\S+", text)
    if parts:
        parts[-1] += text[len("".join(parts)):]
    return parts


def embedding_of(text: str, dims: int = EMBEDDING_DIMS) -> list:
    digest = b""
    counter = 0
    while len(digest) < dims:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    return [(b - 128) / 128.0 for b in digest[:dims]]


def embedding_base64(vector: list) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def openai_error(message: str, code: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class Recorder:
    """The requests the origin received, in order (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items = []

    def add(self, item: dict) -> None:
        with self._lock:
            self._items.append(item)

    def all(self) -> list:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked answers; http10 mode downgrades
    server_version = "py-origin/1"
    # The head and the body are separate writes: with Nagle on, the body waited for the
    # client's delayed ACK (~40 ms per answer on a kept-alive connection).
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet: the recorder is the log
        pass

    # --- request -----------------------------------------------------------------------------

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def _split_framing(self):
        path, _, query = self.path.partition("?")
        framing = "cl"
        first, _, rest = path.lstrip("/").partition("/")
        if first in FRAMINGS:
            framing, path = first, "/" + rest
        header = (self.headers.get(FRAMING_HEADER) or "").strip().lower()
        if header in FRAMINGS:
            framing = header
        return framing, path, query

    def _handle(self):
        framing, path, query = self._split_framing()
        record = {
            "method": self.command,
            "path": path,
            "query": query,
            "framing": framing,
            "version": self.request_version,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "header_list": [(k.lower(), v) for k, v in self.headers.items()],
            "content_length": self.headers.get("content-length"),
            "transfer_encoding": self.headers.get("transfer-encoding"),
            "raw_body": b"",
            "body": None,
        }
        self.server.recorder.add(record)
        # Content-Length only, like many servers: no chunked decoding at all.
        if record["transfer_encoding"] is not None or (
                self.command in ("POST", "PUT", "PATCH") and record["content_length"] is None):
            self.close_connection = True  # the unread (chunked) body would poison the connection
            self._send_json(411, openai_error(
                "request body must have a Content-Length (Transfer-Encoding is not supported)",
                "length_required"), framing="cl", close=True)
            record["unread_body"] = self._discard_unread()
            return
        length = int(record["content_length"] or 0)
        raw = self.rfile.read(length) if length else b""
        record["raw_body"] = raw
        try:
            record["body"] = json.loads(raw) if raw else None
        except ValueError:
            record["body"] = raw.decode("utf-8", "replace")

        expected = self.server.api_key
        if expected is not None and self.headers.get("authorization") != f"Bearer {expected}":
            self._send_json(401, openai_error("Incorrect API key provided", "invalid_api_key"), framing)
            return
        route = (self.command, path)
        if route == ("GET", "/v1/models"):
            self._send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "py-origin"} for m in MODELS]}, framing)
        elif route == ("POST", "/v1/chat/completions") and isinstance(record["body"], dict):
            self._chat(record["body"], framing)
        elif route == ("POST", "/v1/embeddings") and isinstance(record["body"], dict):
            self._embeddings(record["body"], framing)
        elif route[1] in ("/v1/chat/completions", "/v1/embeddings", "/v1/models"):
            self._send_json(400, openai_error(f"bad request for {self.command} {path}", "invalid_request"), framing)
        else:
            self._send_json(404, openai_error(f"no route {self.command} {path}", "not_found"), framing)

    def _discard_unread(self) -> bytes:
        """Swallows what the client still sends (undecoded) before the connection closes, so
        the close does not reset the connection under the 411 it has not read yet."""
        seen = b""
        self.connection.settimeout(0.3)
        try:
            while len(seen) < 1 << 20 and not seen.endswith(b"0\r\n\r\n"):
                data = self.rfile.read1(65536)
                if not data:
                    break
                seen += data
        except OSError:
            pass
        return seen

    # --- OpenAI formats ----------------------------------------------------------------------

    def _chat(self, body: dict, framing: str):
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        last_user = next((text_of(m.get("content")) for m in reversed(messages)
                          if m.get("role") == "user" and has_text(m.get("content"))), "")
        model = body.get("model", "py-gpt")
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
        ident = "chatcmpl-py-" + digest
        prompt_tokens = sum(words(text_of(m.get("content"))) for m in messages)
        tool = wants_tool(body, messages)
        if tool is not None:
            arguments = json.dumps({"text": last_user}, separators=(",", ":"))
            call = {"id": "call_py_" + digest, "type": "function", "function": {"name": tool, "arguments": arguments}}
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": words(arguments),
                     "total_tokens": prompt_tokens + words(arguments)}
            self._chat_tool_call(body, framing, ident, model, call, usage)
            return
        answer = f"{ANSWER_PREFIX} {last_user}".strip().split()
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and 0 < limit < len(answer):
            answer, finish = answer[:limit], "length"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(answer),
                 "total_tokens": prompt_tokens + len(answer)}
        if not body.get("stream"):
            self._send_json(200, {
                "id": ident, "object": "chat.completion", "created": CREATED, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(answer)},
                             "logprobs": None, "finish_reason": finish}],
                "usage": usage, "system_fingerprint": "py-origin"}, framing)
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta, finish_reason=None, **extra):
            c = {"id": ident, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            if include_usage:
                c["usage"] = None
            c.update(extra)
            return c

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(answer)]
        events.append(chunk({}, finish))
        self._send_chunks(events, include_usage, ident, model, usage, framing)

    def _chat_tool_call(self, body: dict, framing: str, ident: str, model: str, call: dict, usage: dict):
        """The answer that calls `call` (one function call, finish_reason `tool_calls`)."""
        if not body.get("stream"):
            self._send_json(200, {
                "id": ident, "object": "chat.completion", "created": CREATED, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                             "logprobs": None, "finish_reason": "tool_calls"}],
                "usage": usage, "system_fingerprint": "py-origin"}, framing)
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta, finish_reason=None):
            c = {"id": ident, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            if include_usage:
                c["usage"] = None
            return c

        name = call["function"]["name"]
        events = [chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": call["id"], "type": "function", "function": {"name": name, "arguments": ""}}]})]
        events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                   for piece in pieces(call["function"]["arguments"])]
        events.append(chunk({}, "tool_calls"))
        self._send_chunks(events, include_usage, ident, model, usage, framing)

    def _send_chunks(self, events: list, include_usage: bool, ident: str, model: str, usage: dict, framing: str):
        """Streams chat chunks as SSE: then, if asked, the usage chunk (no choices), then [DONE]."""
        if include_usage:
            events = events + [{"id": ident, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                                "choices": [], "usage": usage}]
        payloads = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
        self._send(200, "text/event-stream", payloads, framing, stream=True)

    def _embeddings(self, body: dict, framing: str):
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            self._send_json(400, openai_error("'input' must be a string or a non-empty list", "invalid_input"), framing)
            return
        dims = body.get("dimensions") or EMBEDDING_DIMS
        b64 = body.get("encoding_format") == "base64"
        data, tokens = [], 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(str(t) for t in item)
            tokens += words(text) if isinstance(item, str) else len(item)
            vector = embedding_of(text, dims)
            data.append({"object": "embedding", "index": i,
                         "embedding": embedding_base64(vector) if b64 else vector})
        self._send_json(200, {"object": "list", "data": data, "model": body.get("model", "py-embedder"),
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, framing)

    # --- response framing --------------------------------------------------------------------

    def _send_json(self, status: int, value: dict, framing: str, close: bool = False):
        raw = json.dumps(value).encode()
        # Split a JSON body into a few chunks in chunked/close modes, so the reader must join them.
        third = max(1, len(raw) // 3)
        parts = [raw[:third], raw[third:2 * third], raw[2 * third:]] if framing != "cl" else [raw]
        self._send(status, "application/json", [p for p in parts if p], framing, close=close)

    def _send(self, status: int, content_type: str, parts: list, framing: str, stream=False, close=False):
        if framing == "http10":
            self.protocol_version = "HTTP/1.0"  # the status line says HTTP/1.0
            self.close_connection = True
        self.send_response(status)
        self.send_header("content-type", content_type)
        if stream:
            self.send_header("cache-control", "no-cache")
        if framing == "cl":
            self.send_header("content-length", str(sum(len(p) for p in parts)))
        elif framing == "chunked":
            self.send_header("transfer-encoding", "chunked")
        if close or framing == "http10":
            self.send_header("connection", "close")
        self.end_headers()
        for part in parts:
            if framing == "chunked":
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            else:
                self.wfile.write(part)
            if stream or framing != "cl":
                self.wfile.flush()
                if stream:
                    time.sleep(0.002)  # separate writes, like a model generating tokens
        if framing == "chunked":
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        # http10: the body ends when the server closes the connection (close_connection).


class PyOrigin:
    """The origin on a background thread of the test process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key=None):
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.server.recorder = Recorder()
        self.server.api_key = api_key
        self.url = "http://%s:%d" % self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, name="py-origin", daemon=True)
        self._thread.start()

    def requests(self) -> list:
        return self.server.recorder.all()

    def reset(self) -> None:
        self.server.recorder.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv):
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 0
    origin = PyOrigin(port=port)
    print("listening on " + origin.url.removeprefix("http://"), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        origin.close()


if __name__ == "__main__":
    main(sys.argv[1:])
