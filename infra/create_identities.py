"""Create the MLflow identities of a defectops deployment on a server started with
``mlflow server --app-name basic-auth`` (MLflow's own basic-auth app), through its auth REST API
(``mlflow.server.get_app_client("basic-auth", ...)``). Idempotent: run it again after changing a
password or adding a reader.

    export MLFLOW_TRACKING_URI=http://<server>:5000
    export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=<admin password>   # the server's admin
    export DEFECTOPS_PIPELINE_PASSWORD=<password of the pipeline identity>
    export DEFECTOPS_READERS="alice:<password>,bob:<password>"                      # optional
    python infra/create_identities.py

What it makes (every value from the environment, nothing from params.yaml or git):

* the experiment ``DEFECTOPS_EXPERIMENT`` (default ``defectops``) and the registered model
  ``DEFECTOPS_MODEL`` (default ``defect-detector``), created by the admin if missing, so that no
  other identity can create them and own them;
* ``DEFECTOPS_PIPELINE_USER`` (default ``pipeline``, password ``DEFECTOPS_PIPELINE_PASSWORD``):
  EDIT on that experiment (runs, metrics, artifacts) and on that registered model (new versions,
  tags, descriptions, the ``champion`` / ``challenger`` aliases); no delete, no permission changes;
* every ``name:password`` of ``DEFECTOPS_READERS`` (comma-separated; a password holds no comma):
  READ on both (the UI, ``defectops predict`` / ``serve`` of the champion), nothing else.

An existing user gets the password from the environment (so rerunning rotates it). Exit 0 with
one line per identity; 2 with one ``error:`` line when a variable is missing or the server refuses.
"""

from __future__ import annotations

import os
import sys

EDIT, READ = "EDIT", "READ"


class Fail(Exception):
    """One line for the operator."""


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        raise Fail(f"{name} is not set")
    return value


def readers(spec: str) -> list[tuple[str, str]]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, password = item.partition(":")
        if not sep or not name or not password:
            raise Fail("DEFECTOPS_READERS must be comma-separated name:password pairs")
        out.append((name, password))
    return out


def ensure_user(auth, name: str, password: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        auth.get_user(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        auth.create_user(name, password)
        return "created"
    auth.update_user_password(name, password)
    return "password set"


def grant(auth, user: str, resource_type: str, resource_id: str, permission: str) -> None:
    """``permission`` on the resource for ``user``, whatever was granted before (a rerun re-grants)."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(user, resource_type, resource_id, permission)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(user, resource_type, resource_id)
        auth.grant_user_permission(user, resource_type, resource_id, permission)


def main() -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*starlette")    # its deprecation note on importing mlflow.server
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client
    from mlflow.tracking import MlflowClient

    try:
        uri = env("MLFLOW_TRACKING_URI")
        if not uri.startswith(("http://", "https://")):
            raise Fail(f"MLFLOW_TRACKING_URI must be the tracking server's URL (got {uri})")
        env("MLFLOW_TRACKING_USERNAME")
        env("MLFLOW_TRACKING_PASSWORD")
        experiment, model = env("DEFECTOPS_EXPERIMENT", "defectops"), env("DEFECTOPS_MODEL", "defect-detector")
        pipeline = env("DEFECTOPS_PIPELINE_USER", "pipeline")
        identities = [(pipeline, env("DEFECTOPS_PIPELINE_PASSWORD"), EDIT)]
        identities += [(n, p, READ) for n, p in readers(os.environ.get("DEFECTOPS_READERS", ""))]
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        auth = get_app_client("basic-auth", tracking_uri=uri)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        mlflow.set_tracking_uri(uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
        try:
            client.get_registered_model(model)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            client.create_registered_model(model, description="defectops: versions registered by the promote "
                                                               "stage (champion / challenger aliases)")
        for name, password, permission in identities:
            what = ensure_user(auth, name, password)
            grant(auth, name, "experiment", exp_id, permission)
            grant(auth, name, "registered_model", model, permission)
            print(f"{name}: {what}; {permission} on experiment '{experiment}' (id {exp_id}) and registered model "
                  f"'{model}'")
    except Fail as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MlflowException as e:
        msg = " ".join(str(e).split())[:300]
        hint = (": is MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD the server's admin?"
                if any(c in msg for c in ("401", "403", "PERMISSION_DENIED", "UNAUTHENTICATED")) else "")
        print(f"error: the MLflow server at {os.environ.get('MLFLOW_TRACKING_URI')} refused: {msg}{hint}",
              file=sys.stderr)
        return 2
    except Exception as e:                      # noqa: BLE001  unreachable server and the like: one line
        print(f"error: {type(e).__name__}: {' '.join(str(e).split())[:300]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
