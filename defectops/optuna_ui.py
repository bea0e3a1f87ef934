"""``make optuna-ui``: optuna-dashboard on the project's Optuna storage.

The storage is the tuning stages' own (``pipelines.common.storage_url``: ``OPTUNA_STORAGE`` wins
over ``tune.storage``). The dashboard runs in this process (optuna-dashboard's ``run_server``), so
a storage URL holding credentials never appears on a command line.

    python -m defectops.optuna_ui [--params params.yaml] [--host 127.0.0.1] [--port 8080]
"""

from __future__ import annotations

import argparse
import sys

from components.settings import ConfigError

from pipelines.common import read_params, storage_url


def dashboard_app(params_file: str = "params.yaml"):
    """The dashboard as a WSGI application (optuna-dashboard's ``wsgi``) on the project's storage."""
    from optuna_dashboard import wsgi

    return wsgi(storage_url(read_params(params_file)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m defectops.optuna_ui", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    a = ap.parse_args(argv)
    from optuna_dashboard import run_server

    from sqlalchemy.engine import make_url

    try:
        url = storage_url(read_params(a.params))
    except (ConfigError, FileNotFoundError) as e:    # one line, no stack trace
        print(f"optuna-ui: {e}", file=sys.stderr)
        return 2
    try:
        shown = make_url(url).render_as_string(hide_password=True)   # no password in the console
    except Exception:  # noqa: BLE001  (not an SQLAlchemy URL: say where it came from instead)
        shown = "OPTUNA_STORAGE / tune.storage"
    print(f"optuna-dashboard on {shown}: http://{a.host}:{a.port}", flush=True)
    run_server(url, host=a.host, port=a.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
