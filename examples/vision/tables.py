"""The vision examples' MTL vs single-task tables: for each seed, one single-task model per task
and each multi-task variant (architecture × balancer) on the example's split, same budget;
each task's primary test metric (mean ± std over seeds), Δm against the single-task models and
training time (examples/tables_common.py). Writes examples/vision/results/<example>.md.

    python examples/vision/build_multi_mnist.py examples/vision/data/multi_mnist   # etc.
    python examples/vision/tables.py [multi_mnist multi_fashion xrays scenes] [--seeds 3]
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tables_common import Variants, main  # noqa: E402

WIDE = {"encoder_params": {"channels": [45, 90, 90]}}
"""The digit examples' CNN widened to the parameters of two single-task CNNs (112k against 2 ×
57k): does sharing lose for want of capacity?"""

VARIANTS: Variants = {
    "multi_mnist": [
        ("hard_sharing", "ew"),
        ("hard_sharing", "upgrad"),
        ("hard_sharing", "mgda"),
        ("hard_sharing", "ew", WIDE),
        ("mtan", "ew"),
    ],
    "multi_fashion": [("hard_sharing", "ew"), ("hard_sharing", "ew", WIDE), ("mtan", "ew")],
    "xrays": [("hard_sharing", "ew"), ("hard_sharing", "uncertainty"), ("hard_sharing", "upgrad")],
    "scenes": [("hard_sharing", "ew"), ("hard_sharing", "upgrad"), ("mtan", "upgrad")],
}

if __name__ == "__main__":
    main(HERE, VARIANTS, __doc__)
