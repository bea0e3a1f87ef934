#!/bin/bash
# GPU call 2: LAGNet-s x 3 LAM normalisations, DASC-YOLO variants, baseline seed 1 (CPU protocol + mosaic).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.devcarry/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
cd .devcarry/src
MPS=off
if command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mpslog; mkdir -p /tmp/mps /tmp/mpslog
  nvidia-cuda-mps-control -d && timeout 40 python3 -c "import torch; print((torch.ones(4, device='cuda') * 2).sum().item())" && MPS=on
  if [ $MPS = off ]; then echo quit | nvidia-cuda-mps-control; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY; fi
fi
echo "MPS=$MPS"
python3 -c "from pathlib import Path; from benchmarks.neu_cpu import dataset, protocol_params; dataset(protocol_params({}), Path('../neu-det'))" >/dev/null 2>&1 || { echo import failed; exit 1; }
mkdir -p logs
for nm in none image_max quantile; do
  python3 -m benchmarks.neu_cpu --neu ../neu-det --device 0 --make-lams --lams-from base-mosaic --set lam.normalize=$nm > logs/lams-$nm.log 2>&1 &
done; wait; echo "lams done at $SECONDS s"; tail -n 2 logs/lams-*.log | cut -c1-400
T=$((575 - SECONDS))
go() { name=$1; model=$2; shift 2; timeout $T python3 -m benchmarks.neu_cpu --neu ../neu-det --device 0 --no-eval --run $name --model $model "$@" > logs/$name.log 2>&1; echo "$name rc=$? t=$SECONDS" >> logs/rc.txt; }
go lag-none lagnet --lams-from base-mosaic --set lam.normalize=none &
go lag-imax lagnet --lams-from base-mosaic --set lam.normalize=image_max &
go lag-quant lagnet --lams-from base-mosaic --set lam.normalize=quantile &
go dasc-paper dasc --set dasc.gate=none &
go dasc-gate dasc --set dasc.gate=zero &
go dasc-gate-local dasc --set dasc.gate=zero dasc.csa_context=local &
go base-s1 baseline --set train.seed=1 &
sleep 90; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; uptime; for f in logs/lag-none.log logs/dasc-gate.log logs/base-s1.log; do tail -c 300 $f | tr '\r' '\n' | tail -1; echo; done
wait
cat logs/rc.txt
for r in .cache/bench/neu_cpu/*/train; do n=$(basename $(dirname $r)); cp $r/results.csv logs/$n.results.csv 2>/dev/null; done
for f in logs/*.log; do tail -c 3000 $f > $f.tail; done
tar czf $OUT/runs.tgz benchmarks/results/neu_cpu/runs logs/*.tail logs/*.csv logs/rc.txt
mkdir -p wts; for n in lag-none lag-imax lag-quant dasc-paper dasc-gate dasc-gate-local base-s1; do
  w=.cache/bench/neu_cpu/$n/train/weights/best.pt; [ -f $w ] && { mkdir -p wts/$n; cp $w wts/$n/; }; done
cd wts; i=0; for g in "lag-none lag-imax lag-quant" "dasc-paper dasc-gate" "dasc-gate-local base-s1"; do tar cf $OUT/w$i.tar $(ls -d $g 2>/dev/null); i=$((i+1)); done
ls -la $OUT
