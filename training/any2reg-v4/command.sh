#!/usr/bin/env bash
# Fine-tuning run any2reg-v4 from any2reg-v2's final checkpoint (resumable: run this again to
# continue from checkpoint.pt). Why: v2/v3 learned on real frames pre-aligned by `groupwise`,
# whose residual misalignment was labelled "no motion"; v4 uses motion-free real bases
# (--real-base model: the kidney MOLLI regenerated from its fitted MOLLI maps, the cine from a
# rank-2 temporal model, fresh noise per draw), so still draws carry real null crossings with an
# exact zero target, and moved draws an exact motion target.
cd "$(dirname "$0")/../.."
exec nice -n 10 .venv/bin/any2reg train --out training/any2reg-v4 --steps 1500 --lr 3e-4 --seed 4 \
  --init-weights training/any2reg-v2/checkpoint.pt \
  --lambda-supervised 2.0 --zero-motion-probability 0.4 --motion-mm 3,25 \
  --real-data ../shared/data/real/acdc_patient101_slice3_cine.nii.gz \
  --real-data ../shared/data/real/kidney_molli_mdreg_z0.tif \
  --real-data-probability 0.4 --real-motion-mm 3,20 --real-base model \
  --validation-still-seed 10010 --validate-every 250 --log-every 50 --adacs-start 0 --threads 2
