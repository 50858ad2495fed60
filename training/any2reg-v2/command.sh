#!/usr/bin/env bash
# Fine-tuning run any2reg-v2 (resumable: run this again to continue from checkpoint.pt).
# Steps 0-650 ran with --steps 3500 --lambda-supervised 1.0 --zero-motion-probability 0.15;
# from step 650 on the settings below (--steps 3000 until step 1351, then 2500 to finish within the session) (more weight on do-no-harm: the motion-free MOLLI
# validation phantom still showed 0.6 mm of invented motion at step 500, noise-free too).
cd "$(dirname "$0")/../.."
exec .venv/bin/any2reg train --out training/any2reg-v2 --steps 2500 --lr 5e-4 --seed 2 \
  --init-weights training/any2reg-v1/checkpoint.pt \
  --lambda-supervised 2.0 --zero-motion-probability 0.3 --motion-mm 3,25 \
  --real-data ../shared/data/real/acdc_patient101_slice3_cine.nii.gz \
  --real-data ../shared/data/real/kidney_molli_mdreg_z0.tif \
  --real-data-probability 0.35 --real-motion-mm 3,20 \
  --validation-still-seed 10010 --validate-every 250 --log-every 50 --adacs-start 0 --threads 1
