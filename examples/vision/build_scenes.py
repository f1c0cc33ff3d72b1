"""Write the scenes example's data folder.

Images with segmentation, depth, normals, boxes, keypoints, count and has_circle
(polytask.data.make_scenes):

    python examples/vision/build_scenes.py OUT_DIR [--n N] [--size S] [--seed SEED]
        [--max-objects K]
"""

import argparse

from polytask.data import make_scenes


def main() -> None:
    """Parse the arguments and build the folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="the data folder to write (created if missing)")
    parser.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--max-objects", type=int, default=3, help="most objects per image (default 3)"
    )
    args = parser.parse_args()
    manifest = make_scenes(
        args.out_dir, n=args.n, size=args.size, seed=args.seed, max_objects=args.max_objects
    )
    print(f"wrote {manifest}")


if __name__ == "__main__":
    main()
