"""Screenshot the MLflow UI's experiment page with headless Chromium.

Starts ``mlflow ui --backend-store-uri <store> --host 127.0.0.1 --port <free>`` (loopback only),
waits for ``/health``, loads ``#/experiments/<id>`` in headless Chromium (Debian package
``chromium``), writes a PNG, stops the server and prints one JSON line:
``{"png": ..., "bytes": ..., "url": ..., "experiment_id": ..., "n_runs": ..., "seconds": ...}``.

    python bench/ui_screenshot.py --store sqlite:///mlflow.db --out docs/mlflow-ui.png
    python bench/ui_screenshot.py --store http://127.0.0.1:5000 --out ui.png   # a running server

With an ``http(s)://`` store the running tracking server's own UI is captured (no server started).

The experiment defaults to the one with the most recent run. Exit status 2 when Chromium or the
store is missing, 1 when the page could not be captured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

# Chart view of the router runs (sweep children, train runs), sorted by budget/nAUC.
DEFAULT_VIEW = ("/runs?workflowType=machine_learning&compareRunsMode=CHART"
                "&searchFilter=" + urllib.parse.quote('tags.`mmroute.router` LIKE "%"', safe="")
                + "&orderByKey=" + urllib.parse.quote("metrics.`budget/nAUC`", safe="") + "&orderByAsc=false")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--disable-dev-shm-usage")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chromium(explicit: str | None) -> str | None:
    if explicit:
        return explicit if shutil.which(explicit) or Path(explicit).is_file() else None
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def pick_experiment(store: str, wanted: str | None) -> tuple[str, int]:
    """(experiment id, number of runs) of ``wanted`` (a name or id) or of the most recent run."""
    from mlflow import MlflowClient

    client = MlflowClient(store)
    if wanted:
        exp = client.get_experiment_by_name(wanted)
        if exp is None and wanted.isdigit():
            exp = client.get_experiment(wanted)
        if exp is None:
            raise SystemExit(f"experiment {wanted!r} not found in {store}")
        exp_ids = [exp.experiment_id]
    else:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exp_ids, order_by=["attributes.start_time DESC"], max_results=1000)
    if not runs:
        raise SystemExit(f"no runs in {store} (experiments {exp_ids}); run the pipeline first")
    exp_id = runs[0].info.experiment_id
    return exp_id, sum(r.info.experiment_id == exp_id for r in runs)


def wait_healthy(base: str, proc: subprocess.Popen | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited early with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow ui did not answer {base}/health within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    # The server runs in its own session (uvicorn may fork workers): signal that group only.
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def shrink_png(path: Path, max_bytes: int) -> None:
    """Re-encode with an adaptive palette when the screenshot is larger than ``max_bytes``."""
    if path.stat().st_size <= max_bytes:
        return
    from PIL import Image

    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="sqlite:///mlflow.db",
                   help="backend store URI, or the URL of a running tracking server (default: %(default)s)")
    p.add_argument("--out", default="docs/mlflow-ui.png", help="PNG to write (default: %(default)s)")
    p.add_argument("--experiment", default=None, help="experiment name or id (default: most recent run's)")
    p.add_argument("--view", default=DEFAULT_VIEW,
                   help="URL path and query after #/experiments/<id> (default: the metric charts of the "
                   "runs that trained a router, best budget/nAUC first; the plain runs table: "
                   "'/runs?workflowType=machine_learning')")
    p.add_argument("--chromium", default=None,
                   help="browser binary (default: first of {})".format(", ".join(CHROMIUM_NAMES)))
    p.add_argument("--window-size", default="1800,1100")
    p.add_argument("--virtual-time-budget", type=int, default=60000,
                   help="ms of page time before the shot (the chart view needs ~30 s on a loaded server)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds for server start and for Chromium")
    p.add_argument("--max-bytes", type=int, default=1_000_000)
    args = p.parse_args(argv)

    chromium = find_chromium(args.chromium)
    if chromium is None:
        print(json.dumps({"error": "chromium not found (Debian: apt-get install -y chromium)"}))
        return 2
    if args.store.startswith("sqlite:///") and not Path(args.store[len("sqlite:///"):]).exists():
        print(json.dumps({"error": f"store {args.store} does not exist"}))
        return 2
    exp_id, n_runs = pick_experiment(args.store, args.experiment)

    start = time.monotonic()
    server = None
    if args.store.startswith(("http://", "https://")):
        base = args.store.rstrip("/")  # a running tracking server serves its own UI
    else:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.store, "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    url = f"{base}/#/experiments/{exp_id}{args.view}"
    try:
        wait_healthy(base, server, args.timeout)
        with tempfile.TemporaryDirectory(prefix="mmroute-chromium-") as profile:
            if out.exists():
                out.unlink()
            cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}",
                   f"--window-size={args.window_size}", f"--virtual-time-budget={args.virtual_time_budget}", url]
            shot = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        if not out.is_file():
            print(json.dumps({"error": "chromium wrote no screenshot", "status": shot.returncode,
                              "stderr": shot.stderr[-2000:]}))
            return 1
        shrink_png(out, args.max_bytes)
    finally:
        if server is not None:
            stop(server)
    print(json.dumps({"png": str(out), "bytes": out.stat().st_size, "url": url, "experiment_id": exp_id,
                      "n_runs": n_runs, "seconds": round(time.monotonic() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
