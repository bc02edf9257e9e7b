"""What a run leaves behind and every tool reads: checkpoints, run folders, the input recipe.

This layer sits below the engine: training writes through it, and inference, export,
the authors'-checkpoint interop, the stress test, the ablation and the demo read
through it, so none of them needs the training engine. Submodules:

- `checkpoint`: the one checkpoint format (write atomically, read safely, validate,
  rebuild the network);
- `run_dir`: `RunDir`, the one place that names every file of a run folder;
- `preprocess`: `Preprocess`, the input recipe (size, mean/std, interpolation) and
  `IMAGENET_MEAN` / `IMAGENET_STD`; importable without torch;
- `images`: decoding, the one resize, and any user input -> 3 x H x W tensor.
"""
