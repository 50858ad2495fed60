#!/usr/bin/env bash
# Fine-tuning run any2reg-v7 from the shipped any2reg-v6 (resumable: run this again to continue
# from checkpoint.pt). Why: v5/v6 traded invented motion against accuracy (more still draws:
# less invented motion, less accurate). On a motion-free draw the unsupervised similarity is
# not minimal at zero (a small field "explains" noise and null crossings), so it pulls against
# the exact zero target; v7 keeps it on every moved draw and drops it on still draws
# (--still-unsupervised-weight 0), with 40 % still draws.
cd "$(dirname "$0")/../.."
exec nice -n 10 .venv/bin/any2reg train --out training/any2reg-v7 --steps 5000 --lr 2e-4 --seed 7 \
  --init-weights training/any2reg-v6/checkpoint.pt \
  --lambda-supervised 4.0 --zero-motion-probability 0.4 --still-unsupervised-weight 0 --motion-mm 3,25 \
  --real-data ../shared/data/real/acdc_patient101_slice3_cine.nii.gz \
  --real-data ../shared/data/real/kidney_molli_mdreg_z0.tif \
  --real-data-probability 0.5 --real-motion-mm 3,20 --real-base model \
  --validation-still-seed 10010 --validate-every 500 --log-every 100 --adacs-start 0 --threads 2
