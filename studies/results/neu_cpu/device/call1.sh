#!/bin/bash
# GPU call 1: NEU-DET CPU protocol (224 px, 60 epochs) runs side by side on the lent H200.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.devcarry/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
cd .devcarry/src
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, ultralytics; print(torch.__version__, ultralytics.__version__, torch.cuda.is_available())"
python3 -c "from pathlib import Path; from benchmarks.neu_cpu import dataset, protocol_params; dataset(protocol_params({}), Path('../neu-det'))" >/dev/null 2>&1 || { echo import failed; exit 1; }
mkdir -p logs
go() { name=$1; model=$2; shift 2; timeout ${T:-520} python3 -m benchmarks.neu_cpu --neu ../neu-det --device 0 --run $name --model $model --set "$@" > logs/$name.log 2>&1; echo "$name rc=$?" >> logs/rc.txt; }
go base-s0 baseline train.seed=0 &
go base-s1 baseline train.seed=1 &
go base-mosaic baseline train.mosaic=1.0 train.close_mosaic=10 &
go dasc-paper dasc dasc.gate=none &
go dasc-gate dasc dasc.gate=zero &
go dasc-gate-local dasc dasc.gate=zero dasc.csa_context=local &
go dasc-gate-s1 dasc dasc.gate=zero train.seed=1 &
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; uptime
wait
cat logs/rc.txt
for r in .cache/bench/neu_cpu/*/train; do n=$(basename $(dirname $r)); cp $r/results.csv logs/$n.results.csv 2>/dev/null; done
for f in logs/*.log; do tail -c 3000 $f > $f.tail; done
tar czf $OUT/runs.tgz benchmarks/results/neu_cpu/runs logs/*.tail logs/*.csv logs/rc.txt
i=0; for n in base-s0 base-s1 base-mosaic dasc-paper dasc-gate dasc-gate-local dasc-gate-s1; do
  w=.cache/bench/neu_cpu/$n/train/weights/best.pt; [ -f $w ] && { mkdir -p wts/$n; cp $w wts/$n/; }; done
(cd wts && for g in "base-s0 base-s1" "base-mosaic dasc-paper" "dasc-gate dasc-gate-local" "dasc-gate-s1"; do tar cf $OUT/w$i.tar $g 2>/dev/null; i=$((i+1)); done)
ls -la $OUT; grep -h '"run"' logs/*.log | tail -20
