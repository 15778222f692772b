"""Processes the end-to-end suite runs: the mock origin and the two compiled hosts.

Every host is driven through the same small interface (`base_url`, `kv_put`, `kv_delete`,
`log_text`), so one suite of HTTP cases runs unchanged against both runtimes.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release"
NODE_BIN = ROOT / "node_modules" / ".bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited early:\n{log.read_text()[-4000:]}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout}s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


class MockOrigin:
    """The mock provider (src/bin/mock-origin): OpenAI/Anthropic/Gemini wire formats."""

    def __init__(self, workdir: Path, name: str = "origin"):
        self.log = workdir / f"{name}.log"
        self.proc = subprocess.Popen(
            [str(BIN / "mock-origin"), "--addr", "127.0.0.1:0", "--name", name],
            stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True, start_new_session=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"mock-origin did not start: {line!r}")
        self.url = "http://" + line.removeprefix("listening on ")

    def control(self, path: str, body=None):
        r = requests.post(self.url + path, json=body, timeout=5) if body is not None or path.endswith("reset") \
            else requests.get(self.url + path, timeout=5)
        r.raise_for_status()
        return r.json() if r.content else None

    def stats(self):
        return self.control("/_mock/stats")

    def requests(self):
        return self.control("/_mock/requests")["requests"]

    def reset(self):
        self.control("/_mock/reset")

    def fault(self, mode: str, **kw):
        self.control("/_mock/fault", {"mode": mode, **kw})

    def close(self):
        stop(self.proc)


MODEL_CODE = """
import sys
import mlflow.pyfunc
import pandas as pd


class FraudScorer(mlflow.pyfunc.PythonModel):
    # A deterministic tabular model: score = amount / 1000 + risk.
    def predict(self, context, model_input, params=None):
        return (model_input["amount"] / 1000.0 + model_input["risk"]).round(4).tolist()


mlflow.pyfunc.save_model(
    sys.argv[1],
    python_model=FraudScorer(),
    input_example=pd.DataFrame({"amount": [250.0], "risk": [0.1]}),
)
"""


class MlflowModelServer:
    """A real `mlflow models serve` on loopback, serving a small model this fixture logs."""

    def __init__(self, workdir: Path):
        model_dir = workdir / "fraud-model"
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"file://{workdir}/mlruns", "PYTHONWARNINGS": "ignore"}
        subprocess.run([sys.executable, "-c", MODEL_CODE, str(model_dir)], check=True, env=env,
                       capture_output=True, timeout=300)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / "mlflow-serve.log"
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        self.proc = subprocess.Popen(
            [str(mlflow_bin), "models", "serve", "-m", str(model_dir), "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_http(self.url + "/ping", self.proc, self.log, timeout=180)

    def close(self):
        stop(self.proc)


class Host:
    name = ""
    base_url = ""
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def kv_put_json(self, key: str, value) -> None:
        self.kv_put(key, json.dumps(value))


class WorkerdHost(Host):
    """The worker bundle (build/shim.mjs + build/gateway.wasm) under workerd, via `wrangler dev`
    with local KV and the Durable Object."""

    name = "workerd"

    def __init__(self, workdir: Path, secrets: dict):
        self.dir = workdir / "workerd"
        self.dir.mkdir()
        self.persist = self.dir / "state"
        self.log = self.dir / "wrangler.log"
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        args = [str(NODE_BIN / "wrangler"), "dev", "--local", "--ip", "127.0.0.1", "--port", str(port),
                "--persist-to", str(self.persist), "--inspector-port", str(free_port()),
                "--show-interactive-dev-session=false"]
        for k, v in secrets.items():
            args += ["--var", f"{k}:{v}"]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     env=wrangler_env(), start_new_session=True)
        wait_http(self.base_url + "/health", self.proc, self.log)

    def _wrangler_kv(self, *args: str) -> None:
        # wrangler writes the same local store the running workerd writes (the gateway's usage and
        # tallies, after each answer), and now and then gets "500 Internal Server Error" while the
        # store is busy (seen once in CI, on a delete); such a write is retried, any other failure
        # is raised at once.
        cmd = [str(NODE_BIN / "wrangler"), "kv", *args, "--binding", "KV", "--local", "--persist-to", str(self.persist)]
        for attempt in range(4):
            out = subprocess.run(cmd, cwd=ROOT, env=wrangler_env(), capture_output=True, text=True, timeout=60)
            if out.returncode == 0:
                return
            if "500 Internal Server Error" not in out.stdout + out.stderr:
                break
            time.sleep(0.25 * 2 ** attempt)
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")

    def kv_put(self, key: str, value: str) -> None:
        f = self.dir / "bulk.json"
        f.write_text(json.dumps([{"key": key, "value": value}]))
        self._wrangler_kv("bulk", "put", str(f))

    def kv_delete(self, key: str) -> None:
        self._wrangler_kv("key", "delete", key)

    def close(self):
        stop(self.proc)


class SpinHost(Host):
    """The Spin component composed with the test host (tests/spin-host) under `wasmtime serve`."""

    name = "spin"

    def __init__(self, workdir: Path, secrets: dict):
        self.dir = workdir / "spin"
        self.kv_dir = self.dir / "kv"
        self.kv_dir.mkdir(parents=True)
        self.log = self.dir / "wasmtime.log"
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        # Instances allocated on demand, not from wasmtime's default pool (1000 core instances;
        # this composed component takes several per request): every request is an instance
        # that lives on after its response until its telemetry export is answered, and the
        # suite's Python OTLP receiver answers a burst of 16 concurrent clients' exports in
        # ~1 s, so a burst can hold more instances than that pool (test_keys' concurrent-usage
        # test met "maximum concurrent limit of 1000 for core instances reached"). Spin sizes
        # its own pool.
        args = [shutil.which("wasmtime") or "wasmtime", "serve", "-Scli", "-Opooling-allocator=n",
                "--addr", f"127.0.0.1:{port}", "--dir", f"{self.kv_dir}::/kv"]
        for k, v in secrets.items():
            args += ["--env", f"SPIN_VARIABLE_{k.upper()}={v}"]
        args.append(str(ROOT / "target" / "spin" / "gateway.composed.wasm"))
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_http(self.base_url + "/health", self.proc, self.log)

    def kv_put(self, key: str, value: str) -> None:
        f = self.dir / "value"
        f.write_text(value)
        subprocess.run([str(ROOT / "scripts" / "spin-kv-put"), str(self.kv_dir), key, str(f)], check=True)

    def kv_delete(self, key: str) -> None:
        path = self.kv_dir / "default" / key.encode().hex()
        path.unlink(missing_ok=True)

    def close(self):
        stop(self.proc)


def wrangler_env() -> dict:
    env = dict(os.environ)
    env.update({"WRANGLER_SEND_METRICS": "false", "CI": "true", "NO_COLOR": "1",
                "PATH": f"{NODE_BIN}:{env.get('PATH', '')}"})
    return env


def new_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="egw-e2e-"))
