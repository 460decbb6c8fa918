"""Our tf.data map functions are traced as written, without AutoGraph.

tf.data runs every map function through AutoGraph, which parses its source, rewrites Python `if`,
`for` and `while` on tensors into TF control flow and does the same for every function it calls.
Ours are TF ops already, and their Python branches test Python values (the config, a feature being
present): the rewrite changes nothing in the graph, and it cost 3.2 s of CPU in building the
`infonce` training pipeline in a fresh process on a 2-core EPYC (`python bench/startup.py`), over a
quarter of its cost. Without it, a Python `if` on a tensor fails when the pipeline is built
("using a tf.Tensor as a Python bool is not allowed"), in every test that builds that pipeline,
instead of becoming a `tf.cond`.
"""

from __future__ import annotations

import tensorflow as tf


def as_written(fn):
  """`fn` for `Dataset.map`, traced without AutoGraph (also for every function it calls)."""
  return tf.autograph.experimental.do_not_convert(fn)
