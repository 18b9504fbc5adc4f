#!/bin/sh
# Your own model and data from the command line: the hospitals' arrays written to an .npz, the MLP of
# examples/models.py, the three scripts, then the comparison. Usage: sh examples/own_data_cli.sh [OUT] [ROUNDS]
set -eu
cd "$(dirname "$0")/.."
out=${1:-results/hospitals}
rounds=${2:-10}
mkdir -p "$out"
python3 examples/hospitals.py "$out/hospitals.npz"
flags="--dataset $out/hospitals.npz --model examples/models.py:mlp --optimizer sgd --init_lr 0.05 --batch_size 32
       --local_epoch 1 --num_select_clients 3 --no_progress"
python3 run_baseline.py $flags --epoch "$rounds" --save "$out/baseline.json" > /dev/null
python3 run_federated.py $flags --global_epoch "$rounds" --save "$out/federated.json" > /dev/null
python3 run_async.py $flags --global_epoch "$rounds" --save "$out/async.json" > /dev/null
python3 -m fedlearn.compare "$out/baseline.json" "$out/federated.json" "$out/async.json"
