#!/usr/bin/env bash
# Fine-tuning run any2reg-v12 from the shipped any2reg-v10 (resumable: run this again to continue
# from checkpoint.pt). Why (issue 22): v10 saw only the fixed 3 mm, 96 x 96 grid; the engine now
# runs it at the scan's own spacing (a 3 mm pass, then a native pass), where it was never trained.
# New here: --spacing-mm-range 1,3 --size-px-range 96,128 — every phantom and every real draw at a
# random isotropic spacing and square size, so one weights file learns fine-grid statistics.
# Otherwise v10/v11's supervised settings (30 % motion-free draws), acquired schedules only.
cd "$(dirname "$0")/../.."
exec nice -n 10 .venv/bin/any2reg train --out training/any2reg-v12 --steps 4000 --lr 2e-4 --seed 12 \
  --init-weights weights/any2reg-v10.pt \
  --spacing-mm-range 1,3 --size-px-range 96,128 \
  --lambda-supervised 4.0 --zero-motion-probability 0.3 --still-unsupervised-weight 0 --motion-mm 3,25 \
  --real-data ../shared/data/real/acdc_patient101_slice3_cine.nii.gz \
  --real-data ../shared/data/real/kidney_molli_mdreg_z0.tif \
  --real-data-probability 0.5 --real-motion-mm 3,20 --real-base model \
  --validation-still-seed 10010 --validate-every 500 --log-every 50 --adacs-start 0 --threads 1
