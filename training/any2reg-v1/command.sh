#!/usr/bin/env bash
# Run any2reg-v1 (the first network; resumable: run this again to continue from checkpoint.pt).
# Written from its config.json and console.log (the run predates command.sh files): 5000 steps
# of the default phantom training; best at step 4600; the AdaCS scorer from step 3501 (weights/any2reg-v1.pt
# takes the scorer from the final checkpoint).
cd "$(dirname "$0")/../.."
exec nice -n 10 .venv/bin/any2reg train --out training/any2reg-v1 --steps 5000 --threads 1
