#!/usr/bin/env bash
# Ablation: mean aggregation instead of the PCA-weighted one, no AdaCS scorer (scored by
# benchmarks/bench_any2reg.py --ablation mean=training/ablation-mean/best.pt). The run was stopped
# (Ctrl-C) after step 1001 of 6000 (the schedule spans 6000), best at step 800: stop it there to rebuild that run.
cd "$(dirname "$0")/../.."
exec nice -n 10 .venv/bin/any2reg train --out training/ablation-mean --steps 6000 --aggregation mean --no-adacs --threads 1
