# Renders run.csv (written by the recorded run in autoscale/recorded_run_test.go) to run.png:
#   gnuplot bench/autoscale/plot.gp   (from the repository root)
dir = 'bench/autoscale/'
set datafile separator ','
set terminal pngcairo size 1000,900 font 'sans,10'
set output dir.'run.png'
set multiplot layout 3,1 title 'scaleout autoscale: step from 40 to 200 req/s and back (app: 50 ms, 4 at once, 80 req/s per instance)'
set key top right
set grid
set xrange [0:90]
set lmargin 10

set title 'load'
set ylabel 'req/s'
set yrange [0:*]
plot dir.'run.csv' using (strcol(1) eq 'autoscale' ? $2 : 1/0):4 with steps lw 2 lc rgb '#888888' title 'offered', \
     ''            using (strcol(1) eq 'autoscale' ? $2 : 1/0):6 with lines lw 1.5 lc rgb '#1f77b4' title 'completed, autoscaled', \
     ''            using (strcol(1) eq 'fixed' ? $2 : 1/0):6 with lines lw 1.5 lc rgb '#d62728' title 'completed, fixed 2'

set title 'instances (ready)'
set ylabel 'instances'
set yrange [0:7]
plot dir.'run.csv' using (strcol(1) eq 'autoscale' ? $2 : 1/0):8 with steps lw 2 lc rgb '#1f77b4' title 'autoscaled (min 2, max 6, inflight target 3/instance, scale-up window 3 s, scale-down window 15 s)', \
     ''            using (strcol(1) eq 'fixed' ? $2 : 1/0):8 with steps lw 2 lc rgb '#d62728' title 'fixed 2'

set title 'p99 latency of the requests completed in each second'
set ylabel 'ms (log)'
set xlabel 'seconds'
set logscale y
set yrange [40:20000]
plot dir.'run.csv' using (strcol(1) eq 'autoscale' ? $2 : 1/0):10 with lines lw 2 lc rgb '#1f77b4' title 'autoscaled', \
     ''            using (strcol(1) eq 'fixed' ? $2 : 1/0):10 with lines lw 2 lc rgb '#d62728' title 'fixed 2'
unset multiplot
