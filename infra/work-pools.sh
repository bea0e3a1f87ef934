#!/usr/bin/env bash
# Create the defectops work pools on the Prefect server at PREFECT_API_URL (idempotent).
#   cpu: process pool (data, split, export, promote)
#   gpu: process pool, concurrency limit GPU_SLOTS (= number of GPUs serving it; default 1);
#        run one `prefect worker start --pool gpu --type process --limit 1` per GPU.
# Usage: PREFECT_API_URL=http://<host>:4200/api GPU_SLOTS=4 bash infra/work-pools.sh
set -euo pipefail

PREFECT="${PREFECT:-prefect}"
: "${PREFECT_API_URL:?set PREFECT_API_URL (e.g. http://<server>:4200/api)}"

for pool in cpu gpu; do
    if "$PREFECT" work-pool inspect "$pool" >/dev/null 2>&1; then
        echo "work pool $pool: exists"
    else
        "$PREFECT" work-pool create "$pool" --type process
    fi
done

"$PREFECT" work-pool set-concurrency-limit gpu "${GPU_SLOTS:-1}"
