"""Write the text example's data folder.

Template sentences with sentiment, entity tags, a translation and a normalised spelling, as
train / val / test JSON lines and CoNLL files (polytask.data.make_text_corpus):

    python examples/text/build_text.py OUT_DIR [--rows N] [--seed SEED]
"""

import argparse

from polytask.data import make_text_corpus


def main() -> None:
    """Parse the arguments and build the folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="the data folder to write (created if missing)")
    parser.add_argument(
        "--rows", type=int, default=4000, help="training sentences (default 4000; val: 1/8, "
        "test: 1/4 of it)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()
    for split, path in make_text_corpus(args.out_dir, rows=args.rows, seed=args.seed).items():
        print(f"wrote {path} ({split})")


if __name__ == "__main__":
    main()
