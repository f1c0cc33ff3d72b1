"""The speech example's MTL vs single-task table: for each seed, one single-task model per task
(transcript, style, voice) and each multi-task variant (architecture × balancer) on the
manifest's split, same budget; each task's primary test metric (mean ± std over seeds), Δm
against the single-task models and training time (examples/tables_common.py). Writes
examples/speech/results/speech.md.

    python examples/speech/build_speech.py examples/speech/data/speech
    python examples/speech/tables.py [--seeds 3]
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tables_common import main  # noqa: E402

VARIANTS = {
    "speech": [("hard_sharing", "ew"), ("hard_sharing", "upgrad")],
}

if __name__ == "__main__":
    main(HERE, VARIANTS, __doc__)
