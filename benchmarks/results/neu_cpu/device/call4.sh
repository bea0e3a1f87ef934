#!/bin/bash
# GPU call 4 (new session, fresh 30-min budget): the protocol baseline again (its weights were lost
# with the last session's scratch folder; same seed, same machine: also a reproducibility check),
# DASC-YOLO-n with the paper's blocks at seeds 0, 1, 2 and the baseline at seed 2 (seed 1 exists),
# CPU protocol (neu-cpu profile). A run cut by the time limit leaves last.pt (split) to resume.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.devcarry/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
cd .devcarry/src
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mpslog; mkdir -p /tmp/mps /tmp/mpslog
nvidia-cuda-mps-control -d && echo MPS on
python3 -c "from pathlib import Path; from benchmarks.neu_cpu import dataset, protocol_params; dataset(protocol_params({}), Path('../neu-det'))" >/dev/null 2>&1 || { echo import failed; exit 1; }
echo "ready at $SECONDS s"
mkdir -p logs
T=$((588 - SECONDS))
go() { name=$1; model=$2; shift 2; timeout $T python3 -m benchmarks.neu_cpu --neu ../neu-det --device 0 --no-eval --run $name --model $model "$@" > logs/$name.log 2>&1; echo "$name rc=$? t=$SECONDS" >> logs/rc.txt; }
go base-mosaic baseline &
go base-s2-mosaic baseline --set train.seed=2 &
go dasc-paper dasc --set dasc.gate=none &
go dasc-paper-s1 dasc --set dasc.gate=none train.seed=1 &
go dasc-paper-s2 dasc --set dasc.gate=none train.seed=2 &
sleep 75; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; uptime
for f in logs/base-mosaic.log logs/dasc-paper.log; do tail -c 300 $f | tr '\r' '\n' | tail -1; echo; done
wait
cat logs/rc.txt
for r in .cache/bench/neu_cpu/*/train; do n=$(basename $(dirname $r)); cp $r/results.csv logs/$n.results.csv 2>/dev/null; done
for f in logs/*.log; do tail -c 3000 $f > $f.tail; done
tar czf $OUT/logs.tgz logs/*.tail logs/*.csv logs/rc.txt
for n in base-mosaic base-s2-mosaic dasc-paper dasc-paper-s1 dasc-paper-s2; do
  d=.cache/bench/neu_cpu/$n/train/weights
  if grep -q "^$n rc=0" logs/rc.txt; then cp $d/best.pt $OUT/$n.best.pt
  elif [ -f $d/last.pt ]; then split -b 15M $d/last.pt $OUT/$n.last.pt.part-; fi
done
ls -la $OUT
