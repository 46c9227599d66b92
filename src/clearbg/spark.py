"""The local Spark session that training (TorchDistributor) and batch (mapInPandas) start alone."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def local_spark(app_name: str = "clearbg") -> SparkSession:
    """A local[2] session bound to 127.0.0.1 (UI off) whose Python workers use this interpreter.

    Without PYSPARK_PYTHON Spark's workers would run the system interpreter, which may lack torch
    and clearbg.

    Example:
        >>> spark = local_spark("clearbg-batch")  # doctest: +SKIP
    """
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    return (
        SparkSession.builder.master("local[2]")
        .appName(app_name)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
