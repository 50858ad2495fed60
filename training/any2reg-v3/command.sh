#!/usr/bin/env bash
# Fine-tuning run any2reg-v3 from any2reg-v2's final checkpoint (resumable: run this again to
# continue from checkpoint.pt). Why: v2's validation EPE was still falling at its last step and
# the motion-free controls still showed 0.38 mm of invented motion; v3 raises the share of
# zero-motion draws (do-no-harm) and continues at a lower learning rate.
cd "$(dirname "$0")/../.."
exec nice -n 15 .venv/bin/any2reg train --out training/any2reg-v3 --steps 1500 --lr 3e-4 --seed 3 \
  --init-weights training/any2reg-v2/checkpoint.pt \
  --lambda-supervised 2.0 --zero-motion-probability 0.45 --motion-mm 3,25 \
  --real-data ../shared/data/real/acdc_patient101_slice3_cine.nii.gz \
  --real-data ../shared/data/real/kidney_molli_mdreg_z0.tif \
  --real-data-probability 0.35 --real-motion-mm 3,20 \
  --validation-still-seed 10010 --validate-every 250 --log-every 50 --adacs-start 0 --threads 1
