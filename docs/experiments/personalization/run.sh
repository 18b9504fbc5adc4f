#!/usr/bin/env bash
# Personalization (docs/experiments/personalization.md): each client alone, FedAvg's global model, FedAvg +
# fine-tuning, FedPer and Ditto, under IID, Dirichlet(0.1) and two-classes-per-client Fashion-MNIST clients and
# FedProx's Synthetic(1,1) devices; 3 seeds; every run's JSON lands in this folder. The finetune runs give FedAvg's
# global model too (fine-tuning leaves it as it is), and so do Ditto's (its personal jobs never touch it).
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=docs/experiments/personalization
SEEDS=0,1,2
IMAGES=(--dataset fashion-mnist --num_clients 10 --num_select_clients 10 --client_test_frac 0.2 --optimizer adam
        --init_lr 1e-3 --batch_size 64 --global_epoch 5 --local_epoch 1 --epoch 5 --no_progress)
SYNTHETIC=(--dataset synthetic --num_select_clients 10 --model examples/models.py:mlp --optimizer sgd --init_lr 0.05
           --batch_size 10 --global_epoch 20 --local_epoch 2 --epoch 40 --no_progress)
declare -A PARTITIONS=(
  [iid]="--partition iid"
  [dir0.1]="--partition dirichlet --dirichlet_alpha 0.1"
  [2cls]="--partition classes --classes_per_client 2"
)
declare -A METHODS=([finetune]="--personalize finetune" [fedper]="--personalize fedper" [ditto]="--personalize ditto")
sweep() { python3 -m fedlearn.sweep --seeds "$SEEDS" "$@"; }
for partition in iid dir0.1 2cls; do
  # shellcheck disable=SC2086
  sweep --out "$OUT/$partition/local" --scripts run_baseline -- "${IMAGES[@]}" ${PARTITIONS[$partition]} --local_only
  for method in finetune fedper ditto; do
    # shellcheck disable=SC2086
    sweep --out "$OUT/$partition/$method" --scripts run_federated -- "${IMAGES[@]}" ${PARTITIONS[$partition]} \
      ${METHODS[$method]}
  done
done
sweep --out "$OUT/synthetic/local" --scripts run_baseline -- "${SYNTHETIC[@]}" --local_only
for method in finetune fedper ditto; do
  # shellcheck disable=SC2086
  sweep --out "$OUT/synthetic/$method" --scripts run_federated -- "${SYNTHETIC[@]}" ${METHODS[$method]}
done
