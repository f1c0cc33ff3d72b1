"""`python -m polytask ...` (and `torchrun --nproc-per-node N -m polytask train CONFIG`)."""

import sys

from polytask.cli import main

sys.exit(main())
