"""The PySpark side of tests/test_spark_reader.py, run by .venv-spark's interpreter (pysail + pyspark-client + pandas).

It lives in its own virtualenv because the PySpark client needs pandas, and pyarrow imports pandas on its first array
wherever pandas is installed (0.2-0.5 s of CPU in every tsarchive process): the project's own venv stays as users
install it. Reads a JSON list of requests on stdin, starts Sail's Spark Connect server, answers each request in
order, prints a JSON list of answers. Requests:
- {"sql": "..."}: rows of a Spark SQL query, values as JSON (timestamps ISO, decimals as text);
- {"schema": path}: [[name, type], ...] of the Delta table at path;
- {"python": code}: what the code prints, with `spark` in its namespace.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import io
import json
import sys


def plain(value):
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def main() -> None:
    from pysail.spark import SparkConnectServer
    from pyspark.sql import SparkSession

    requests = json.load(sys.stdin)
    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    _, port = server.listening_address
    spark = SparkSession.builder.remote(f"sc://127.0.0.1:{port}").getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # what a notebook should set to read the archive as UTC
    answers = []
    try:
        for request in requests:
            if "sql" in request:
                table = spark.sql(request["sql"]).toArrow()  # Arrow keeps UTC timestamps as they are
                answers.append([[plain(v) for v in row.values()] for row in table.to_pylist()])
            elif "schema" in request:
                frame = spark.read.format("delta").load(request["schema"])
                answers.append([[f.name, f.dataType.simpleString()] for f in frame.schema.fields])
            else:
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    exec(compile(request["python"], "request", "exec"), {"spark": spark})
                answers.append(out.getvalue())
    finally:
        spark.stop()
        server.stop()
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
