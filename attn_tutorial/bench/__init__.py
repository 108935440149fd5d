"""Benchmarking: honest timing, the benchmark matrix, measuring, result cards, rendering.

One job per module:

* :mod:`~attn_tutorial.bench.timing`  — compare callables on the same inputs (``compare``,
  ``count_flops``, ``format_table``, ``plot_bars``, the CPU and CUDA timers);
* :mod:`~attn_tutorial.bench.matrix`  — what the matrix times (``MatrixRow``, ``build_rows``),
  each row built from one ``hyper`` dict that feeds both the module and the cost model;
* :mod:`~attn_tutorial.bench.machine` — the machine's roofs (copy, strict FP32, TF32, bf16), its
  float32/TF32 settings under both of torch's APIs, the provenance of a run;
* :mod:`~attn_tutorial.bench.measure` — timing rows of the matrix, interleaved set by set;
* :mod:`~attn_tutorial.bench.inside`  — looking inside one call: memory, operators, passes over
  a map, the SDPA kernel, time per submodule;
* :mod:`~attn_tutorial.bench.cards`   — the card schema, validation, reading and writing, the
  derived ratios and slopes;
* :mod:`~attn_tutorial.bench.render`  — tables, notes, crossover, roofline and scaling plots;
* :mod:`~attn_tutorial.bench.run`     — running the matrix (``python -m attn_tutorial bench``).

The timing API is re-exported here, so ``from attn_tutorial import bench; bench.compare(...)``
works as before.
"""

from attn_tutorial.bench.timing import (PASSES, Timing, compare, count_flops, device_name,
                                        format_table, make_step, plot_bars, time_cpu,
                                        time_cpu_blocks, time_cpu_interleaved, time_cuda,
                                        time_cuda_interleaved)

__all__ = ["PASSES", "Timing", "compare", "count_flops", "device_name", "format_table",
           "make_step", "plot_bars", "time_cpu", "time_cpu_blocks", "time_cpu_interleaved",
           "time_cuda", "time_cuda_interleaved"]
