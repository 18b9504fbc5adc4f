#!/usr/bin/env bash
# What federation costs beyond accuracy, on Fashion-MNIST (docs/experiments/costs.md): bytes and compressed
# updates, time to target under a slow uplink, accuracy against the privacy loss. 3 seeds each; every run's
# JSON lands in this folder. About 45 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=docs/experiments/costs
SEEDS=0,1,2
LOCAL=(--dataset fashion-mnist --optimizer sgd-momentum --init_lr 0.01 --batch_size 64 --local_epoch 1 --no_progress)

# (a) accuracy against megabytes uploaded: 20 IID clients, 10 a round, 8 rounds
declare -A CODECS=(
  [none]=""
  [topk10-ef]="--compress topk --compress_ratio 0.1 --error_feedback"
  [topk1-ef]="--compress topk --compress_ratio 0.01 --error_feedback"
  [topk1]="--compress topk --compress_ratio 0.01"
  [qsgd16]="--compress qsgd --qsgd_levels 16"
  [qsgd2]="--compress qsgd --qsgd_levels 2"
)
for codec in none topk10-ef topk1-ef topk1 qsgd16 qsgd2; do
  # shellcheck disable=SC2086
  python3 -m fedlearn.sweep --out "$OUT/compression/$codec" --seeds "$SEEDS" --scripts run_federated -- \
    "${LOCAL[@]}" --num_clients 20 --num_select_clients 10 --global_epoch 8 ${CODECS[$codec]}
done

# (a') time to 75 % under a slow uplink: lognormal links around 0.5 Mbit/s up, 5 Mbit/s down, 50 ms latency;
# 20 clients, 10 jobs in flight (or picked), 100 client updates
SLOW=(--uplink_mbps 0.5 --downlink_mbps 5 --latency 0.05 --bandwidth lognormal --bandwidth_spread 1
      --num_clients 20 --num_select_clients 10 --global_epoch 10 --max_updates 100 --target_acc 0.75)
python3 -m fedlearn.sweep --out "$OUT/slow-uplink/fedavg" --seeds "$SEEDS" --scripts run_federated -- \
  "${LOCAL[@]}" "${SLOW[@]}"
python3 -m fedlearn.sweep --out "$OUT/slow-uplink/fedavg-topk1-ef" --seeds "$SEEDS" --scripts run_federated -- \
  "${LOCAL[@]}" "${SLOW[@]}" --compress topk --compress_ratio 0.01 --error_feedback
for algorithm in fedasync fedbuff; do
  python3 -m fedlearn.sweep --out "$OUT/slow-uplink/$algorithm" --seeds "$SEEDS" --scripts run_async -- \
    "${LOCAL[@]}" "${SLOW[@]}" --algorithm "$algorithm" --buffer_size 10 --eval_every 10
done
python3 -m fedlearn.sweep --out "$OUT/slow-uplink/fedbuff-topk1-ef" --seeds "$SEEDS" --scripts run_async -- \
  "${LOCAL[@]}" "${SLOW[@]}" --algorithm fedbuff --buffer_size 10 --eval_every 10 --compress topk \
  --compress_ratio 0.01 --error_feedback

# (b) accuracy against epsilon: 1,000 clients of 60 samples, 100 a round (q = 0.1), plain SGD lr 0.1 batch 20,
# 30 rounds; clip 0.5 (about the median update norm at the start), noise multipliers 1, 2, 4; clipping alone
DP=(--dataset fashion-mnist --optimizer sgd --init_lr 0.1 --batch_size 20 --local_epoch 1 --no_progress
    --num_clients 1000 --num_select_clients 100 --global_epoch 30)
python3 -m fedlearn.sweep --out "$OUT/privacy/no-dp" --seeds "$SEEDS" --scripts run_federated -- "${DP[@]}"
for z in 0 1 2 4; do
  python3 -m fedlearn.sweep --out "$OUT/privacy/z$z" --seeds "$SEEDS" --scripts run_federated -- \
    "${DP[@]}" --dp_clip 0.5 --dp_noise "$z"
done
python3 docs/experiments/costs/summary.py
