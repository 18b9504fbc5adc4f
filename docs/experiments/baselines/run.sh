#!/usr/bin/env bash
# The standard federated baselines on Fashion-MNIST (docs/experiments/baselines.md): 10 clients all taking
# part, SGD with momentum 0.9 locally (lr 0.01, batch 64, as NIID-Bench), 5 rounds of 1 local epoch,
# 3 seeds; every run's JSON lands in this folder. About an hour on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=docs/experiments/baselines
COMMON=(--dataset fashion-mnist --num_clients 10 --num_select_clients 10 --optimizer sgd-momentum --init_lr 0.01
        --batch_size 64 --local_epoch 1 --global_epoch 5 --epoch 5 --no_progress)
declare -A PARTITIONS=(
  [iid]="--partition iid"
  [dir0.5]="--partition dirichlet --dirichlet_alpha 0.5"
  [dir0.1]="--partition dirichlet --dirichlet_alpha 0.1"
  [2cls]="--partition classes --classes_per_client 2"
)
declare -A METHODS=(
  [fedavg]=""
  [fedprox]="--prox_mu 0.01"
  [scaffold]="--drift_correction scaffold"
  [fednova]="--drift_correction fednova"
  [fedavgm]="--server_opt avgm"
  [fedadam]="--server_opt adam"
)
python3 -m fedlearn.sweep --out "$OUT/baseline" --seeds 0,1,2 --scripts run_baseline -- "${COMMON[@]}"
for partition in iid dir0.5 dir0.1 2cls; do
  for method in fedavg fedprox scaffold fednova fedavgm fedadam; do
    # shellcheck disable=SC2086
    python3 -m fedlearn.sweep --out "$OUT/$partition/$method" --seeds 0,1,2 --scripts run_federated -- \
      "${COMMON[@]}" ${PARTITIONS[$partition]} ${METHODS[$method]}
  done
done
# asynchronous: FedBuff with the sgd and adam server steps, a quarter of the clients 10x slower
for step in sgd adam; do
  python3 -m fedlearn.sweep --out "$OUT/async-stragglers/fedbuff-$step" --seeds 0,1,2 --scripts run_async -- \
    "${COMMON[@]}" --partition dirichlet --dirichlet_alpha 0.5 --algorithm fedbuff --server_opt "$step" \
    --delay straggler --max_updates 50
done
