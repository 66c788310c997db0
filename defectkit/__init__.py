"""defectkit: MVTec AD-style defect data -> fine-tuned, evaluated detectors, segmenters and classifiers.

The stages live in their own top-level packages (``convert``, ``detect``, ``segment``, ``classify``,
``evaluation``); this package holds what they share: errors, atomic output, image and mask I/O,
RLE helpers, weight fetching and the bundled synthetic sample.
"""

__version__ = "0.1.0"

from defectkit.errors import DefectkitError

__all__ = ["DefectkitError", "__version__"]
