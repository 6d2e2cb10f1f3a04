"""Where runs are recorded: the tracking URI, its reachability, and the experiment.

Without ``MLFLOW_TRACKING_URI`` mmroute records into ``sqlite:///<cwd>/mlflow.db`` with artifacts in
``<cwd>/mlartifacts`` (MLflow >= 3.13 no longer accepts the old ``./mlruns`` file store as a
default). Anything MLflow accepts works otherwise, e.g. a shared ``mlflow server`` (see
:data:`SERVER_HOWTO`). A tracking server that cannot be reached, or that answers ``/health`` but
fails its API (HTTP 5xx, a broken backend database), is detected with a few short requests *before*
any data is loaded or any router trained, so a typo in the URI costs seconds, not a run.

A new local sqlite store is created (MLflow runs its schema migrations) by one process at a time,
under a file lock beside the database (:func:`prepare_store`): two first runs started together on a
new store both succeed instead of racing through the migrations.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

__all__ = [
    "TrackingUnavailableError",
    "TrackingLocation",
    "resolve_tracking_uri",
    "check_tracking_uri",
    "prepare_store",
    "setup_tracking",
    "DEFAULT_EXPERIMENT",
    "SERVER_HOWTO",
]

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "mmroute"

SERVER_HOWTO = """\
Shared tracking server (several users, one PostgreSQL backend store, one artifact root):

    createdb mlflow                                   # once, on the PostgreSQL host
    pip install mlflow psycopg2-binary
    mlflow server --host 0.0.0.0 --port 5000 \\
        --backend-store-uri postgresql://USER:PASSWORD@DBHOST:5432/mlflow \\
        --artifacts-destination s3://BUCKET/mlflow    # or a shared path: /srv/mlflow-artifacts
    # clients (artifacts are proxied through the server, no bucket credentials needed there):
    export MLFLOW_TRACKING_URI=http://TRACKING_HOST:5000
    mlflow run . --env-manager local
"""


class TrackingUnavailableError(RuntimeError):
    """The tracking location cannot be used (server unreachable, directory missing...)."""


@dataclass(frozen=True)
class TrackingLocation:
    """A resolved tracking location.

    Attributes
    ----------
    uri : str
        The tracking URI handed to MLflow.
    artifact_root : str or None
        Artifact location for experiments mmroute creates; None lets the server decide (remote).
    is_default : bool
        True when ``MLFLOW_TRACKING_URI`` was unset and the local SQLite default is used.
    """

    uri: str
    artifact_root: str | None
    is_default: bool


def resolve_tracking_uri(cwd: str | os.PathLike | None = None,
                         env: Mapping[str, str] | None = None) -> TrackingLocation:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlflow.db`` + ``<cwd>/mlartifacts``.

    ``cwd`` defaults to the current directory and ``env`` to ``os.environ`` (both are read when
    called, never at import).
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    uri = environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        artifact_root = None
        if _scheme(uri) == "sqlite":
            # A local database: keep its artifacts beside it rather than in MLflow's ./mlruns.
            db = _sqlite_path(uri)
            if db is not None:
                artifact_root = (db.parent / "mlartifacts").as_uri()
        return TrackingLocation(uri=uri, artifact_root=artifact_root, is_default=False)
    base = Path(cwd if cwd is not None else os.getcwd()).resolve()
    return TrackingLocation(uri=f"sqlite:///{base / 'mlflow.db'}",
                            artifact_root=(base / "mlartifacts").as_uri(), is_default=True)


def check_tracking_uri(uri: str, *, timeout: float = 5.0) -> None:
    """Fail fast, with a clear message, when ``uri`` cannot be used.

    http(s): a GET on ``/health``, then one real API call (search one experiment), each with a
    ``timeout``-second limit and two quick retries on a 5xx or a dropped connection, so a server
    that is up but failing is reported in seconds; sqlite: the database's directory must exist and
    be writable; postgresql/mysql: one connection attempt with a
    ``timeout``-second connect timeout. Other schemes are left to MLflow.

    Raises
    ------
    TrackingUnavailableError
    """
    scheme = _scheme(uri)
    if scheme in ("http", "https"):
        _check_http(uri, timeout)
    elif scheme == "sqlite":
        db = _sqlite_path(uri)
        if db is not None:
            parent = db.parent
            if not parent.is_dir():
                raise TrackingUnavailableError(
                    f"tracking URI {uri!r}: directory {str(parent)!r} does not exist; create it or set "
                    "MLFLOW_TRACKING_URI to another location")
            if not os.access(parent, os.W_OK):
                raise TrackingUnavailableError(
                    f"tracking URI {uri!r}: directory {str(parent)!r} is not writable")
            if db.exists() and not os.access(db, os.W_OK):
                # SQLite opens it anyway and fails on the first write, after the data has loaded.
                raise TrackingUnavailableError(
                    f"tracking URI {uri!r}: database file {str(db)!r} is read-only; make it writable "
                    "(chmod u+w) or set MLFLOW_TRACKING_URI to another location")
    elif scheme.split("+")[0] in ("postgresql", "postgres", "mysql", "mssql"):
        _check_database(uri, timeout)
    elif scheme in ("", "file"):
        log.warning("tracking URI %r is a file store; MLflow >= 3.13 prefers a database "
                    "(e.g. sqlite:///mlflow.db)", uri)


def setup_tracking(experiment: str | None = None, *, cwd: str | os.PathLike | None = None,
                   check: bool = True, timeout: float = 5.0) -> tuple[TrackingLocation, str]:
    """Resolve and check the tracking location, point MLflow at it, and pick the experiment.

    Inside ``mlflow run`` (``MLFLOW_RUN_ID``/``MLFLOW_EXPERIMENT_ID`` set) the project run's
    experiment is used, so that nested runs land beside their parent; otherwise the experiment
    ``experiment`` (default ``"mmroute"``) is created if needed with the resolved artifact root.

    Returns
    -------
    (TrackingLocation, experiment_id)
    """
    import mlflow
    from mlflow import MlflowClient

    location = resolve_tracking_uri(cwd)
    if check:
        check_tracking_uri(location.uri, timeout=timeout)
    prepare_store(location.uri)
    mlflow.set_tracking_uri(location.uri)
    client = MlflowClient(location.uri)
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        experiment_id = client.get_run(run_id).info.experiment_id
    elif not experiment and _existing_experiment(client, os.environ.get("MLFLOW_EXPERIMENT_ID")):
        # Set by `mlflow run` (and by mlflow.set_experiment in this process): honoured only when
        # it names an experiment of *this* store, since a stale id may come from another store.
        experiment_id = os.environ["MLFLOW_EXPERIMENT_ID"]
    else:
        name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        found = client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "deleted":
            raise TrackingUnavailableError(
                f"experiment {name!r} is deleted in {location.uri}; restore it "
                f"(mlflow experiments restore --experiment-id {found.experiment_id}) or pick another name")
        if found is None:
            from mlflow.exceptions import MlflowException

            try:
                experiment_id = client.create_experiment(name, artifact_location=location.artifact_root)
                log.info("created experiment %r (artifacts: %s)", name, location.artifact_root or "server default")
            except MlflowException as exc:
                # Another process (a teammate's sweep started at the same moment) created it first.
                raced = client.get_experiment_by_name(name)
                if exc.error_code != "RESOURCE_ALREADY_EXISTS" or raced is None:
                    raise
                experiment_id = raced.experiment_id
                log.info("experiment %r was created by another process meanwhile; using it", name)
        else:
            experiment_id = found.experiment_id
    _mark_model_training(client, experiment_id)
    mlflow.set_experiment(experiment_id=experiment_id)
    log.info("tracking to %s, experiment id %s", location.uri, experiment_id)
    return location, experiment_id


def prepare_store(uri: str, *, timeout: float = 600.0) -> None:
    """Create and migrate a local sqlite store once, under ``<db>.lock`` (other URIs: nothing).

    MLflow creates the schema of a new database the first time a client opens it; two processes
    doing that at once both run the migrations and one fails ("duplicate column name"). Here the
    first process to take the lock creates the store; the others wait, then find it complete. In a
    directory where no lock file can be written nothing can be created either, so the store is left
    to MLflow as it is (read-only use).
    """
    if _scheme(uri) != "sqlite":
        return
    db = _sqlite_path(uri)
    if db is None:
        return
    from filelock import FileLock, Timeout
    from mlflow import MlflowClient

    try:
        lock = FileLock(str(db) + ".lock", timeout=timeout)
        lock.acquire()
    except Timeout as exc:
        raise TrackingUnavailableError(
            f"tracking URI {uri!r}: another process held {db}.lock for {timeout:g} s while creating the "
            "store; is it stuck?") from exc
    except OSError as exc:
        log.debug("no lock file beside %s (%s): using the store as it is", db, exc)
        return
    try:
        MlflowClient(uri).search_experiments(max_results=1)  # tables and migrations, once
        # The registry store checks its tables separately; open it too, still under the lock.
        MlflowClient(uri, registry_uri=uri).search_registered_models(max_results=1)
    finally:
        lock.release()


# ---------------------------------------------------------------- helpers
_KIND_TAG = "mlflow.experimentKind"


def _existing_experiment(client, experiment_id: str | None) -> bool:
    if not experiment_id:
        return False
    from mlflow.exceptions import MlflowException

    try:
        return client.get_experiment(experiment_id).lifecycle_stage == "active"
    except MlflowException:
        return False


def _mark_model_training(client, experiment_id: str) -> None:
    # MLflow 3's UI opens untagged experiments on its GenAI overview; this is the tag its own
    # experiment-type selector writes, so the runs table (what mmroute fills) opens by default.
    exp = client.get_experiment(experiment_id)
    if _KIND_TAG not in exp.tags:
        client.set_experiment_tag(experiment_id, _KIND_TAG, "custom_model_development")


def _scheme(uri: str) -> str:
    return urlparse(uri).scheme.lower() if "://" in uri or uri.startswith("sqlite:") else ""


def _sqlite_path(uri: str) -> Path | None:
    # sqlite:///relative.db, sqlite:////abs/path.db; in-memory databases have no path.
    rest = uri.split(":", 1)[1].lstrip("/") if uri.startswith("sqlite:") else ""
    if not rest or rest.startswith(":memory:"):
        return None
    rest = rest.split("?", 1)[0]
    path = Path("/" + rest) if uri.startswith("sqlite:////") else Path(rest)
    return path.resolve()


def _check_http(uri: str, timeout: float) -> None:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    base = uri.rstrip("/")
    session = requests.Session()
    # A couple of quick retries for a server that is starting or briefly overloaded, no more:
    # MLflow's own client retries for about a minute before failing.
    retry = Retry(total=2, connect=2, read=2, status=2, backoff_factor=0.25,
                  status_forcelist=(500, 502, 503, 504), allowed_methods=("GET",), raise_on_status=False)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    checks = (("/health", None),
              ("/api/2.0/mlflow/experiments/search", {"max_results": 1}))
    with session:
        for path, params in checks:
            url = base + path
            try:
                response = session.get(url, params=params, timeout=timeout, headers=_auth_headers())
            except requests.RequestException as exc:
                raise TrackingUnavailableError(
                    f"tracking server {uri!r} is unreachable ({type(exc).__name__} on {path}); start it "
                    "(mlflow server ...) or unset MLFLOW_TRACKING_URI to record into ./mlflow.db") from exc
            if response.status_code != 200:
                detail = " ".join(response.text.split())[:200]
                raise TrackingUnavailableError(
                    f"tracking server {uri!r} answered HTTP {response.status_code} on {path} (expected 200 "
                    f"from an MLflow tracking server){': ' + detail if detail else ''}")


def _auth_headers() -> dict[str, str]:
    # The same credentials MLflow's client would send (basic auth or a bearer token), if any.
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    if user and password:
        import base64

        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _check_database(uri: str, timeout: float) -> None:
    import sqlalchemy

    scheme = _scheme(uri)
    connect_args = {"connect_timeout": int(max(1, timeout))} if scheme.startswith(("postgres", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    except ImportError as exc:
        raise TrackingUnavailableError(
            f"tracking database {_redact(uri)!r} needs its Python driver ({exc}); e.g. "
            "pip install psycopg2-binary for postgresql://") from exc
    try:
        with engine.connect():
            pass
    except Exception as exc:  # driver missing, DNS, refused, auth: all mean "cannot track here"
        raise TrackingUnavailableError(
            f"tracking database {_redact(uri)!r} is unreachable ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc


def _redact(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@")
    return uri
