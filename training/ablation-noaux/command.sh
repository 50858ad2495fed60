#!/usr/bin/env bash
# Ablation: no auxiliary losses, no AdaCS scorer (benchmarks/bench_any2reg.py --ablation
# no-auxiliary=training/ablation-noaux/best.pt). Stopped after step 1074 of 6000, best at step 1000: stop it there
# to rebuild that run.
cd "$(dirname "$0")/../.."
exec nice -n 10 .venv/bin/any2reg train --out training/ablation-noaux --steps 6000 --no-auxiliary --no-adacs --threads 1
