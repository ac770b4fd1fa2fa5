"""Kaggle as the engine: `kernelpack predict --per-model [--folds]` split into shards, each run
as a Kaggle kernel with the kernel's own runtime, followed, verified and assembled into exactly
the files `predict` writes (see docs/fanout.md).

`plan` cuts the work into shards named by the hash of what they compute, `shard_entry` is the
program each shard kernel runs, `shard_kernel` bundles it, `state` keeps what was pushed and
verified between runs, `assemble` checks outputs and writes the files, `run` is the loop."""
