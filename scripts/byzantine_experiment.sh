#!/bin/sh
# The Byzantine experiment (docs/byzantine.md): 8 clients, 2 Byzantine, every client in every aggregation.
# Synchronous FedAvg rounds and asynchronous FedBuff buffers of 8; sign flip and "a little is
# enough" against mean, median, trimmed mean, Krum and Bulyan. Results: docs/byzantine/.
set -e
OUT=${1:-docs/byzantine}
COMMON="--num_clients 8 --byzantine 2 --global_epoch 5 --local_epoch 1 --init_lr 1e-3 --seed 0"
SYNC="--num_select_clients 8"
ASYNC="--num_select_clients 8 --algorithm fedbuff --buffer_size 8 --concurrency 8"
# Bulyan needs n >= 4f + 3 = 11 with f = 2, so with n = 8 it can only assume f = 1.
python3 -m fedlearn.sweep --out "$OUT/sync" --scripts run_federated \
    --vary attack=none,signflip,alie --vary gar=mean,median,trimmed-mean,krum -- $COMMON $SYNC
python3 -m fedlearn.sweep --out "$OUT/sync-bulyan-f1" --scripts run_federated \
    --vary attack=none,signflip,alie -- $COMMON $SYNC --gar bulyan --gar_f 1
python3 -m fedlearn.sweep --out "$OUT/async" --scripts run_async \
    --vary attack=none,signflip,alie --vary gar=mean,median,trimmed-mean,krum -- $COMMON $ASYNC
python3 -m fedlearn.sweep --out "$OUT/async-bulyan-f1" --scripts run_async \
    --vary attack=none,signflip,alie -- $COMMON $ASYNC --gar bulyan --gar_f 1
