"""Write the X-ray example's data folder.

Synthetic chest radiographs with four findings (labelled for part of the rows), age and sex
(polytask.data.make_xrays):

    python examples/vision/build_xrays.py OUT_DIR [--n N] [--size S] [--seed SEED]
        [--labelled-fraction F]
"""

import argparse

from polytask.data import make_xrays


def main() -> None:
    """Parse the arguments and build the folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="the data folder to write (created if missing)")
    parser.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--labelled-fraction",
        type=float,
        default=0.6,
        help="share of the images with finding labels (default 0.6)",
    )
    args = parser.parse_args()
    manifest = make_xrays(
        args.out_dir,
        n=args.n,
        size=args.size,
        seed=args.seed,
        labelled_fraction=args.labelled_fraction,
    )
    print(f"wrote {manifest}")


if __name__ == "__main__":
    main()
