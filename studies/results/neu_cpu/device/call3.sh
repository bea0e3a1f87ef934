#!/bin/bash
# GPU call 3 (last of the budget): LAGNet-s with LAM normalize none vs image_max, and the baseline, all at
# 36 epochs (the 60-epoch protocol does not fit the remaining device time), CPU protocol otherwise.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.devcarry/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3 MKL_NUM_THREADS=3
cd .devcarry/src
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mpslog; mkdir -p /tmp/mps /tmp/mpslog
nvidia-cuda-mps-control -d && echo MPS on
python3 -c "from pathlib import Path; from benchmarks.neu_cpu import dataset, protocol_params; dataset(protocol_params({}), Path('../neu-det'))" >/dev/null 2>&1 || { echo import failed; exit 1; }
mkdir -p logs
pids=""
for nm in none image_max; do
  python3 -m benchmarks.neu_cpu --neu ../neu-det --device 0 --make-lams --lams-from base-mosaic --set lam.normalize=$nm > logs/lams-$nm.log 2>&1 &
  pids="$pids $!"
done
E=36
go() { name=$1; model=$2; shift 2; timeout $((385 - SECONDS)) python3 -m benchmarks.neu_cpu --neu ../neu-det --device 0 --no-eval --run $name --model $model "$@" > logs/$name.log 2>&1; echo "$name rc=$? t=$SECONDS" >> logs/rc.txt; }
go base-e36 baseline --set train.epochs=$E &
wait $pids; echo "lams done at $SECONDS s"; tail -c 300 logs/lams-none.log
go lag-none-e36 lagnet --lams-from base-mosaic --set train.epochs=$E lam.normalize=none &
go lag-imax-e36 lagnet --lams-from base-mosaic --set train.epochs=$E lam.normalize=image_max &
sleep 60; for f in logs/lag-none-e36.log logs/base-e36.log; do tail -c 300 $f | tr '\r' '\n' | tail -1; echo; done
wait
cat logs/rc.txt
for r in .cache/bench/neu_cpu/*/train; do n=$(basename $(dirname $r)); cp $r/results.csv logs/$n.results.csv 2>/dev/null; done
for f in logs/*.log; do tail -c 3000 $f > $f.tail; done
tar czf $OUT/runs.tgz benchmarks/results/neu_cpu/runs logs/*.tail logs/*.csv logs/rc.txt
for n in base-e36 lag-none-e36 lag-imax-e36; do w=.cache/bench/neu_cpu/$n/train/weights/best.pt; [ -f $w ] && cp $w $OUT/$n.pt; done
ls -la $OUT
