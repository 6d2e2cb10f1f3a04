"""A local Spark session on loopback, shared by the Spark tests of one process.

Spark needs PySpark (the ``spark`` extra, installed by the Makefile) and a Java runtime (installed
by the Makefile when absent). On a developer machine without them the Spark tests skip; under CI
(``CI`` set) a missing piece fails them instead, so CI can never pass without running them.
"""

from __future__ import annotations

import os
import shutil

import pytest


def _missing() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "PySpark is not installed (pip install 'mmroute[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (Debian: default-jre-headless)"
    return None


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"Spark tests cannot run under CI: {reason}")
        pytest.skip(reason)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from mmroute.export.spark import spark_session

    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = spark_session("local[2]", app_name="mmroute-tests",
                            conf={"spark.sql.warehouse.dir": str(warehouse),
                                  "spark.driver.memory": "1g",
                                  "spark.executorEnv.OMP_NUM_THREADS": "1"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
