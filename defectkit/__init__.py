"""defectkit: MVTec AD-style defect data -> fine-tuned, evaluated detectors, segmenters and classifiers.

One namespace, in layers (docs/ARCHITECTURE.md):

- ``defectkit.core``: errors, atomic output, image I/O, RLE, weights, torch helpers, the file-format
  contract and the result model; it imports no stage.
- ``defectkit.convert`` and ``defectkit.evaluation``: import only the core.
- ``defectkit.detect``, ``defectkit.segment``, ``defectkit.classify``: the core and evaluation.
- ``defectkit.leaderboard`` and ``defectkit.cli``: on top, wiring the stages.

Importing ``defectkit`` imports nothing else, so ``--help`` of every command stays fast.
"""

__version__ = "0.1.0"
