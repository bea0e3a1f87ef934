#!/bin/bash
# GPU call 6, on the machine call 5 left warm (its .cache kept), in the 425 s of device time left:
# DASC-YOLO-l with box-supervised ProtoNets (dasc.proto_loss 1.0) at the same shortened paper
# protocol as call 5 (neu-paper-gpu, 20 epochs), trained alone on the GPU (call 5's two ran side by side).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -c "import tarfile; tarfile.open('.devcarry/polars_rt.tar.xz').extractall('/tmp/site')"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR=/tmp/yolocfg
mkdir -p .devcarry/neu-src/ANNOTATIONS logs
timeout $((340 - SECONDS)) python3 -m benchmarks.neu_cpu --neu .devcarry/neu-src --device 0 --run gpu-paper-dasc-proto-l-e20 \
  --model dasc --profile neu-paper-gpu --set train.epochs=20 dasc.proto_loss=1.0 > logs/p.log 2>&1
echo "rc=$? t=$SECONDS"
cp .cache/bench/neu_cpu/gpu-paper-dasc-proto-l-e20/train/results.csv logs/gpu-paper-dasc-proto-l-e20.results.csv
tail -c 4000 logs/p.log | tr '\r' '\n' | grep -v '━' | tail -30 > logs/p.log.tail
tar czf $OUT/call6.tgz benchmarks/results/neu_cpu/runs logs/*.tail logs/*.csv
