#!/bin/bash
# GPU call 5 (one H200, 15 min of device time for the whole session): profiles/neu-paper-gpu.yaml,
# DASC-YOLO's paper protocol on NEU-DET (640 px, large models, AdamW lr 0.001, batch 16, AMP, RAM
# cache, 8 loader workers), shortened to E epochs: its 300 epochs do not fit a 10-minute call.
# YOLO11l and DASC-YOLO-l (the paper's blocks, dasc.proto_loss 0) side by side, same split, seed 0;
# each evaluated on val and test on the GPU (per-image test stats kept for the paired bootstrap).
# Alongside: one epoch of DASC-YOLO-n with box-supervised ProtoNets under CUDA autocast (the neu-cpu
# profile on a GPU worker: the proto loss's float32 path had never run on CUDA). At the end: params,
# GFLOPs and FPS of the three detectors of the paper profile (and of neu-cpu) on the H200.
# Data: the canonical NEU-DET import made here by benchmarks.neu_cpu (.cache/bench/neu_cpu/neu-det,
# carried; never in git). ultralytics, thop and polars travel as wheels (.whl) / a stripped polars
# runtime (.devcarry/polars_rt.tar.xz); the image has torch.
# Prepared here before the call (the tree that travels must stay under 64 MiB):
#   pip download --no-deps (py3.12, manylinux) ultralytics==8.4.190 ultralytics-thop==2.2.3 polars==2.1.0 -> .whl/
#   polars-runtime-32==2.1.0 unzipped, its .so `strip --strip-unneeded` (178 -> 138 MB), `tar cf - . | xz -8`
#     -> .devcarry/polars_rt.tar.xz (29 MB; the wheel is 54 MB)
#   the committed weights (96 MB) and runs untracked for the call (git rm -r --cached + .git/info/exclude),
#     restored after it (git reset -- those paths)
#   run: E=20 END=500 bash benchmarks/results/neu_cpu/device/call5.sh, carry .whl .devcarry .cache/bench/neu_cpu/neu-det
set -u
E=${E:-20}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -c "import tarfile; tarfile.open('.devcarry/polars_rt.tar.xz').extractall('/tmp/site')" || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR=/tmp/yolocfg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, ultralytics, polars; print(torch.__version__, ultralytics.__version__, polars.__version__, torch.cuda.is_available())" || exit 1
NEU=.devcarry/neu-src      # only checked for existence; the import is carried (manifest.json present)
mkdir -p $NEU/ANNOTATIONS logs
echo "ready at $SECONDS s"
END=${END:-480}            # trainings stop here at the latest (s since start); evaluation + FPS after
go() { name=$1; model=$2; shift 2; timeout $((END - SECONDS)) python3 -m benchmarks.neu_cpu --neu $NEU --device 0 \
       --run $name --model $model "$@" > logs/$name.log 2>&1; echo "$name rc=$? t=$SECONDS" >> logs/rc.txt; }
go gpu-paper-base-l-e$E baseline --profile neu-paper-gpu --set train.epochs=$E &
go gpu-paper-dasc-l-e$E dasc --profile neu-paper-gpu --set train.epochs=$E &
go gpu-proto-amp-check dasc --profile neu-cpu --no-eval --set train.epochs=1 train.amp=true train.workers=4 &
sleep 100; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; uptime
for f in logs/gpu-paper-*.log; do echo $f; tail -c 400 $f | tr '\r' '\n' | tail -2; done
wait
cat logs/rc.txt
timeout $((575 - SECONDS)) python3 -m benchmarks.profile_fps --profile neu-paper-gpu --device 0 > logs/fps-paper.log 2>&1
echo "fps paper rc=$? t=$SECONDS" >> logs/rc.txt
[ $SECONDS -lt 540 ] && { timeout $((580 - SECONDS)) python3 -m benchmarks.profile_fps --profile neu-cpu --device 0 \
  > logs/fps-cpu.log 2>&1; echo "fps neu-cpu rc=$? t=$SECONDS" >> logs/rc.txt; }
for r in .cache/bench/neu_cpu/gpu-*/train; do n=$(basename $(dirname $r)); cp $r/results.csv logs/$n.results.csv 2>/dev/null; done
for f in logs/*.log; do tail -c 4000 $f | tr '\r' '\n' | grep -v '━' | tail -40 > $f.tail; done
tar czf $OUT/call5.tgz benchmarks/results/neu_cpu/runs benchmarks/results/profile_fps_* logs/*.tail logs/*.csv logs/rc.txt
cat logs/rc.txt; ls -la $OUT
