#!/usr/bin/env bash
# Draws the loss curves of a `dsv3 train` run (and optionally a baseline run) from their
# metrics.jsonl into a PNG: training loss (main next-token loss, smoothed over 20 steps) and
# validation loss against tokens seen. Needs gnuplot (apt-get install gnuplot-nox) and python3.
#
#   scripts/plot_training.sh OUT.png MODEL_METRICS.jsonl [BASELINE_METRICS.jsonl]
set -euo pipefail
out=$1 model=$2 baseline=${3:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# metrics.jsonl -> "tokens train_loss_smoothed" and "tokens val_loss" columns.
to_columns() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
src, train_out, val_out = sys.argv[1:]
rows = [json.loads(l) for l in open(src) if l.strip()]
with open(train_out, "w") as t, open(val_out, "w") as v:
    window = []
    for r in rows:
        window = (window + [r["main_loss"]])[-20:]
        t.write(f'{r["tokens"]} {sum(window) / len(window)}\n')
        if "val_loss" in r:
            v.write(f'{r["tokens"]} {r["val_loss"]}\n')
PY
}
to_columns "$model" "$tmp/m_train" "$tmp/m_val"
plot="'$tmp/m_train' using (\$1/1e6):2 with lines lw 2 lc rgb '#1f77b4' title 'dsv3-tiny (MoE) train', \
'$tmp/m_val' using (\$1/1e6):2 with linespoints pt 7 ps 0.6 lw 2 lc rgb '#0b3d91' title 'dsv3-tiny (MoE) validation'"
if [ -n "$baseline" ]; then
  to_columns "$baseline" "$tmp/b_train" "$tmp/b_val"
  plot="$plot, '$tmp/b_train' using (\$1/1e6):2 with lines lw 2 lc rgb '#ff7f0e' title 'dense baseline train', \
'$tmp/b_val' using (\$1/1e6):2 with linespoints pt 5 ps 0.6 lw 2 lc rgb '#a04000' title 'dense baseline validation'"
fi
gnuplot <<GP
set terminal pngcairo size 900,500 font 'sans,11'
set output '$out'
set xlabel 'training tokens (millions)'
set ylabel 'next-token loss (nats)'
set grid
set key top right
set yrange [*:7]
plot $plot
GP
echo "wrote $out"
