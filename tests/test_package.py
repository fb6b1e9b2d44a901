"""The deployable app: requirements.txt built for Linux the way `func azure functionapp publish --no-build` ships it,
then imported by a clean interpreter that sees only the app's files and that folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI_ONLY = {"typer", "rich", "duckdb", "polars", "pytest", "hypothesis", "ruff"}


def test_the_local_build_imports_function_app_with_a_clean_interpreter(tmp_path):
    site = tmp_path / ".python_packages" / "lib" / "site-packages"
    built = subprocess.run(["bash", str(ROOT / "tools" / "package.sh"), str(site)], capture_output=True, text=True,
                           timeout=1200)
    assert built.returncode == 0, built.stderr[-2000:]
    distributions = {p.name.split("-")[0].lower().replace("_", "-") for p in site.glob("*.dist-info")}
    assert {"azure-functions", "psycopg", "pyarrow", "deltalake", "adbc-driver-postgresql"} <= distributions
    assert not distributions & CLI_ONLY, distributions & CLI_ONLY  # the CLI's extras are not deployed
    app = tmp_path / "app"
    app.mkdir()
    for part in ("function_app.py", "host.json", "functions", "shared_code"):
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, app / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, app / part)
    # -I -S: no user site, no venv site-packages, no PYTHON* variables: only the standard library and these folders.
    probe = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import function_app\n"
        "import shared_code.engine, shared_code.restore, shared_code.storage.delta_table, shared_code.row_hash, "
        "shared_code.database.extract, shared_code.storage.lake, shared_code.transport, shared_code.service, shared_code.api\n"
        "names = sorted(f.get_function_name() for f in function_app.app.get_functions())\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[3].split(',')))\n"
        "print(len(names), ','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(app), str(site), ",".join(CLI_ONLY)],
                            capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    count, loaded = result.stdout.split()[0], result.stdout.strip().split(" ")[1:]
    assert int(count) >= 15 and loaded == []
