#!/bin/bash
# LAGNet-s neck width on the embedded synthetic default (issue 10 item 7): for each seed and width,
# the LAGNet stages of the default pipeline (lam -> tune_lagnet -> train_lagnet -> evaluate_lagnet,
# `dvc repro -s`, one stage at a time, so the baseline the LAMs come from is the one already in
# models/baseline) with params.yaml's lagnet.width and train.seed replaced and train.threads 1;
# each run's metrics/lagnet.json is kept as results/synth_lagnet_width/lagnet-w<W>-s<S>.json.
# params.yaml is restored at the end; dvc.lock and metrics/ then hold the last run's LAGNet stages
# (`dvc repro` brings the default's back). Render the table: python -m studies.synth_lagnet_width
#
#   bash studies/synth_lagnet_width.sh "32 48" "0 1 2"
set -euo pipefail
cd "$(dirname "$0")/.."
widths=${1:-"32 48"}
seeds=${2:-"0 1 2"}
out=studies/results/synth_lagnet_width
mkdir -p "$out"
cp params.yaml "$out/.params.backup.yaml"
trap 'cp "$out/.params.backup.yaml" params.yaml && rm "$out/.params.backup.yaml"' EXIT
cp metrics/baseline.json "$out/baseline.json"
sed -i 's/^  threads: auto /  threads: 1    /' params.yaml
for seed in $seeds; do
  sed -i "/^train:/,/^[a-z]/s/^  seed: [0-9]*$/  seed: $seed/" params.yaml
  for w in $widths; do
    sed -i "/^lagnet:/,/^[a-z]/s/^  width: [0-9]* /  width: $w /" params.yaml
    t=$(date +%s)
    for s in lam tune_lagnet train_lagnet evaluate_lagnet; do dvc repro -s "$s"; done
    echo "width $w seed $seed took $(( $(date +%s) - t )) s"
    cp metrics/lagnet.json "$out/lagnet-w$w-s$seed.json"
  done
done
