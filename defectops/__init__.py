"""The ``defectops`` command and what runs around it: the command line (``cli``), its console
and log file (``console``), the guard that stops its child processes with it (``guard``),
profiles as DVC experiments (``profile_args``) and the Optuna dashboard (``optuna_ui``).

The product is ``components`` (the work) and ``pipelines`` (the Prefect flows that order it);
this package only parses, calls and prints: it may import both, neither imports it.
"""
