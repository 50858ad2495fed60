#!/usr/bin/env bash
# Fine-tuning run any2reg-v2 (resumable: run again to continue from checkpoint.pt).
cd "$(dirname "$0")/../.."
exec .venv/bin/any2reg train --out training/any2reg-v2 --steps 3500 --lr 5e-4 --seed 2 \
  --init-weights training/any2reg-v1/checkpoint.pt \
  --lambda-supervised 1.0 --zero-motion-probability 0.15 --motion-mm 3,25 \
  --real-data ../shared/data/real/acdc_patient101_slice3_cine.nii.gz \
  --real-data ../shared/data/real/kidney_molli_mdreg_z0.tif \
  --real-data-probability 0.35 --real-motion-mm 3,20 \
  --validation-still-seed 10010 --validate-every 250 --log-every 50 --adacs-start 0 --threads 1
