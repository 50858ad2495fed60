#!/usr/bin/env bash
# Fine-tuning run any2reg-v15 from the shipped any2reg-v13 (resumable: run this again to continue
# from checkpoint.pt). Why (issue 22): v13's gain over v12 came from widening the training
# generator's motion model (rotations 0-5 -> 0-10 degrees, non-rigid 0-2.5 -> 0-4 mm); v14 (more
# motion-free draws at half the learning rate) traded accuracy for stillness. This run continues
# the lever that worked: rotations 0-15 degrees, non-rigid 0-6 mm; otherwise v13's settings.
# The validation generator stays unseen.
cd "$(dirname "$0")/../.."
exec nice -n 10 .venv/bin/any2reg train --out training/any2reg-v15 --steps 2000 --lr 1e-4 --seed 15 \
  --init-weights weights/any2reg-v13.pt \
  --spacing-mm-range 1,3 --size-px-range 96,128 --rotation-deg 0,15 --nonrigid-mm 0,6 \
  --lambda-supervised 4.0 --zero-motion-probability 0.3 --still-unsupervised-weight 0 --motion-mm 3,25 \
  --real-data ../shared/data/real/acdc_patient101_slice3_cine.nii.gz \
  --real-data ../shared/data/real/kidney_molli_mdreg_z0.tif \
  --real-data-probability 0.5 --real-motion-mm 3,20 --real-base model \
  --validation-still-seed 10010 --validate-every 500 --log-every 50 --adacs-start 0 --threads 1
