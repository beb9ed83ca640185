"""What the benchmarks share: how they measure memory, wait for a server and close a run."""
from __future__ import annotations

import socket
import time
import urllib.request


def _status_mib(pid: int | str, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib(pid: int | str = "self") -> float:
    """Peak resident memory of a process (this one by default, the embedded ClickHouse engine included)."""
    return _status_mib(pid, "VmHWM")


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process now."""
    return _status_mib(pid, "VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_summary(t_start: float) -> str:
    """The last line of a benchmark run: its wall time and this process's peak memory."""
    return f"\ntotal run time {time.perf_counter() - t_start:.1f} s, peak RSS {peak_rss_mib():,.0f} MiB"


def wait_ready(url: str, path: str = "/readyz", tries: int = 300) -> None:
    """Until the server at ``url`` answers ``path`` (0.1 s between tries)."""
    for _ in range(tries):
        try:
            urllib.request.urlopen(f"{url}{path}", timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)


def load_bench(name: str):
    """bench/<name>.py as a module, loaded by path: a bench run as a script has bench/ first on sys.path, where
    `import bench.<name>` would find bench/alerts.py before the alerts package."""
    import importlib.util
    import os
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(os.path.dirname(__file__), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
