#!/usr/bin/env bash
# Fine-tuning run any2reg-v5 from any2reg-v4's final checkpoint (resumable: run this again to
# continue from checkpoint.pt). Why: v4 (1500 steps on motion-free real bases) improved both
# invented motion and accuracy on validation but still invents ~1 mm on early, low-signal
# MOLLI frames of real kidney series; v5 gives the motion-free real bases more weight (half the
# draws real, half of those still) and the supervised end-point term twice the weight.
cd "$(dirname "$0")/../.."
exec nice -n 10 .venv/bin/any2reg train --out training/any2reg-v5 --steps 4000 --lr 3e-4 --seed 5 \
  --init-weights training/any2reg-v4/checkpoint.pt \
  --lambda-supervised 4.0 --zero-motion-probability 0.5 --motion-mm 3,25 \
  --real-data ../shared/data/real/acdc_patient101_slice3_cine.nii.gz \
  --real-data ../shared/data/real/kidney_molli_mdreg_z0.tif \
  --real-data-probability 0.5 --real-motion-mm 3,20 --real-base model \
  --validation-still-seed 10010 --validate-every 500 --log-every 100 --adacs-start 0 --threads 2
