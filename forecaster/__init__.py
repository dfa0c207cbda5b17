"""kpiwatch's forecasting side: sources, KPIs, models, detection, explanation, pipeline."""

import os

# One BLAS thread per process: kpiwatch runs one worker process per core already, and the small
# matrices of an ETS or Prophet fit gain nothing from more threads, while each process spawning a
# thread per core made a loaded 2-core machine 3x slower (the demo: 30.7 s against 10.5 s). Set
# before numpy is first imported; a value the operator set is kept.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
