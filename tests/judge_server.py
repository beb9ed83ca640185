"""An OpenAI-compatible chat-completions judge on loopback, for the evaluate job's tests and benchmark.

Its verdicts are deterministic from the answer in the prompt: ``WRONG`` in it is hallucinated, else grounded.
Markers in the answer inject trouble: ``[429]`` a 429 (Retry-After 0) on the first call, ``[500]`` two 500s,
``[slow]`` a first call slower than the job's timeout, ``[fence]`` an answer in a code fence, ``[text]`` the
object with prose around it, ``[junk]`` no JSON at all. Every answer reports token usage (100 in, 20 out).
``delay`` seconds are spent on every call (a judge answering in 500 ms for the benchmark)."""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.helpers import ServerThread

_ANSWER = re.compile(r"The assistant's answer:\n(.*?)\n\nReply with", re.S)


class JudgeServer(ServerThread):
    def __init__(self, delay: float = 0.0, slow: float = 1.0, json_mode: bool = True):
        self.delay, self.slow, self.json_mode = delay, slow, json_mode
        self.calls: list[dict] = []          # every request's body and headers, in arrival order
        self.seen: dict[str, int] = {}       # answer text -> calls so far
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with judge.lock:
                    judge.calls.append({"path": self.path, "body": body,
                                        "authorization": self.headers.get("Authorization")})
                    prompt = body["messages"][0]["content"]
                    m = _ANSWER.search(prompt)
                    answer = m.group(1) if m else prompt
                    n = judge.seen[answer] = judge.seen.get(answer, 0) + 1
                if not judge.json_mode and "response_format" in body:
                    return self._send(400, {"error": {"message": "response_format is not supported"}})
                if "[429]" in answer and n == 1:
                    return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
                if "[500]" in answer and n <= 2:
                    return self._send(500, {"error": {"message": "upstream"}})
                if "[slow]" in answer and n == 1:
                    time.sleep(judge.slow)
                if judge.delay:
                    time.sleep(judge.delay)
                label = "hallucinated" if "WRONG" in answer else "grounded"
                obj = json.dumps({"label": label, "reason": f"checked ({label})"})
                content = (f"```json\n{obj}\n```" if "[fence]" in answer else
                           f"Sure! Here is my verdict: {obj} Hope this helps." if "[text]" in answer else
                           "I think the answer is fine." if "[junk]" in answer else obj)
                self._send(200, {"id": "cmpl-1", "object": "chat.completion", "model": body.get("model"),
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": content}}],
                                 "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})

            def _send(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
