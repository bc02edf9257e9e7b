"""What a run leaves behind and every tool reads: checkpoints, run folders, provenance.

This layer sits below training: training writes through it, and inference, export,
the authors'-checkpoint interop, the stress test, the ablation and the demo read
through it, so none of them needs the training loop. Submodules:

- `checkpoint`: the one checkpoint format (write atomically, read safely, validate,
  rebuild the network);
- `run_dir`: `RunDir`, the one place that names every file of a run folder;
- `digest`: the content hash a checkpoint carries and is checked against on load;
- `provenance`: what a result came from (checkpoint hash, data, settings, versions).

The input recipe and image decoding are `igoas.imaging`.
"""
