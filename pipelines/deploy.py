"""``defectops deploy``: the work pools (``infra/work-pools.sh``: ``cpu``, ``gpu`` with a concurrency
limit of ``GPU_SLOTS``) + every flow's Prefect deployment from ``infra/prefect.yaml``.

params.yaml stays the one config source: the retrain cron and timezone (``retrain.schedule``,
``retrain.timezone``) reach the deployment file through the environment variables it templates
(``{{ $DEFECTOPS_RETRAIN_CRON }}``), and ``DEFECTOPS_ROOT`` is this checkout, where process
workers run the flows. Everything goes through Prefect's own CLI on ``PREFECT_API_URL``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from components.settings import load_settings


def _run(argv: list[str], env: dict) -> str:
    p = subprocess.run(argv, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout


def deploy(params_file: str = "params.yaml", prefect_file: str = "infra/prefect.yaml") -> list[str]:
    params = load_settings(params_file)
    if not os.environ.get("PREFECT_API_URL"):
        raise ValueError("PREFECT_API_URL is not set: deployments live on a Prefect server "
                         "(`prefect server start`, or infra/docker-compose.yml)")
    if not Path(prefect_file).is_file():
        raise FileNotFoundError(f"no deployment file {prefect_file}")
    env = {**os.environ, "DEFECTOPS_ROOT": os.environ.get("DEFECTOPS_ROOT", str(Path.cwd().resolve())),
           "DEFECTOPS_RETRAIN_CRON": params.retrain.schedule, "DEFECTOPS_RETRAIN_TZ": params.retrain.timezone,
           "DEFECTOPS_MONITOR_CRON": params.monitor.schedule, "DEFECTOPS_MONITOR_TZ": params.monitor.timezone}
    prefect = str(Path(sys.executable).parent / "prefect")
    pools = _run(["bash", str(Path(prefect_file).with_name("work-pools.sh"))], {**env, "PREFECT": prefect})
    done = [line.strip() for line in pools.splitlines() if line.strip()]
    out = _run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", prefect_file], env)
    done += [line.strip() for line in out.splitlines() if "Deployment '" in line]
    done.append(f"retrain schedule: {env['DEFECTOPS_RETRAIN_CRON']} ({env['DEFECTOPS_RETRAIN_TZ']}); monitor "
                f"schedule: {env['DEFECTOPS_MONITOR_CRON']} ({env['DEFECTOPS_MONITOR_TZ']}); "
                f"flows run from {env['DEFECTOPS_ROOT']}")
    return done
