"""Start and stop a real `evident serve` on loopback for the Python end-to-end tests (tests/api, tests/web).

The server is started with `--port 0`; its port is read from the "serving http://127.0.0.1:PORT" line it logs.
"""
import re
import signal
import subprocess
import time


def ingest(evident, corpus, store, *extra):
    """`evident ingest CORPUS --store STORE [extra...]`; raises CalledProcessError when it fails."""
    subprocess.run([evident, "ingest", corpus, "--store", store, *extra], check=True, stdout=subprocess.DEVNULL)


def start(evident, store, log_path, *extra, timeout=60):
    """Starts `evident serve --store STORE --port 0 [extra...]`, logging to LOG_PATH; returns (process, port).

    Raises RuntimeError with the log when the server exits or prints no port within TIMEOUT seconds."""
    proc = subprocess.Popen([evident, "serve", "--store", store, "--port", "0", *extra],
                            stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    end = time.time() + timeout
    while time.time() < end:
        m = re.search(r"serving http://127\.0\.0\.1:(\d+)", open(log_path).read())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("evident serve did not start: " + open(log_path).read())


def stop(proc, timeout=30):
    """SIGTERM, then waits; returns the exit status, or None when it had to be killed after TIMEOUT seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
