"""Write the speech example's data folder.

Short spoken commands synthesised by espeak-ng (apt-get install espeak-ng), with transcript,
style (slow / normal / fast) and voice, and a manifest with a split column
(polytask.data.make_speech):

    python examples/speech/build_speech.py OUT_DIR [--utterances N] [--seed SEED] [--workers W]
"""

import argparse

from polytask.data import make_speech


def main() -> None:
    """Parse the arguments and build the folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="the data folder to write (created if missing)")
    parser.add_argument(
        "--utterances", type=int, default=1500, help="number of clips (default 1500)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--workers", type=int, default=2, help="espeak-ng processes at a time (default 2)"
    )
    args = parser.parse_args()
    manifest = make_speech(
        args.out_dir, utterances=args.utterances, seed=args.seed, workers=args.workers
    )
    print(f"wrote {manifest}")


if __name__ == "__main__":
    main()
