"""Read an MLflow store with MLflow's own client and print it as JSON (run by the tracking tests with
:func:`conftest.extras_python`, the interpreter that has MLflow).

Usage: ``python tests/mlflow_store.py TRACKING_URI EXPERIMENT [METRIC ...]``: the experiment's runs, oldest first,
each with its status, run name, parameters, latest metrics and the step history of each METRIC named.
"""

from __future__ import annotations

import json
import sys

from mlflow.tracking import MlflowClient


def main(uri: str, experiment: str, history: list[str]) -> dict:
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {"experiment": None, "runs": []}
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    return {"experiment": experiment, "runs": [{
        "status": run.info.status, "run_name": run.info.run_name, "params": run.data.params,
        "metrics": run.data.metrics,
        "history": {key: [m.step for m in client.get_metric_history(run.info.run_id, key)] for key in history},
    } for run in runs]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3:])))
