"""Write the Multi-MNIST example's data folder.

Two overlaid MNIST digits per image, the left and right digits' classes, and split.npz
(polytask.data.make_multi_mnist):

    python examples/vision/build_multi_mnist.py OUT_DIR [--n N] [--size S] [--seed SEED]
"""

import argparse

from polytask.data import make_multi_mnist


def main() -> None:
    """Parse the arguments and build the folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="the data folder to write (created if missing)")
    parser.add_argument("--n", type=int, default=4000, help="number of images (default 4000)")
    parser.add_argument("--size", type=int, default=36, help="image side in pixels (default 36)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()
    manifest = make_multi_mnist(args.out_dir, n=args.n, size=args.size, seed=args.seed)
    print(f"wrote {manifest}")


if __name__ == "__main__":
    main()
