"""`python -m competition.import_folders SRC DST`: class-per-folder images → a Kaggle-layout competition.

SRC holds one folder per class (torchvision's ImageFolder layout, subfolders allowed inside a
class); DST receives

    DST/train.csv               id,image,label  (sorted by label, then path)
    DST/images/train/<class>/…  copies of the images (hard links with --link)
    DST/test.csv                id,image        (--test DIR: every image under DIR, unlabelled)
    DST/sample_submission.csv   id,label        (--test; label filled with the first class)
    DST/images/test/…

An image's id is its path relative to SRC (or to the test folder), so ids and row order depend
on the files alone. Files PIL cannot decode are skipped with a warning that lists them; hidden
files and folders (.DS_Store, .ipynb_checkpoints) are ignored. DST is built in a temporary
sibling folder and renamed into place: an import that fails leaves nothing behind.
"""

import argparse
from collections.abc import Sequence
from pathlib import Path

from competition.core.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m competition.import_folders",
        description="Turn class-per-folder images (SRC/<class>/<image>) into a Kaggle-layout competition in DST: "
        "train.csv (id,image,label), images/, and with --test also test.csv and sample_submission.csv.",
    )
    parser.add_argument("src", metavar="SRC", help="folder with one subfolder of images per class")
    parser.add_argument("dst", metavar="DST", help="new (or empty) folder to write the competition into")
    parser.add_argument("--test", metavar="DIR", default=None,
                        help="folder of unlabelled test images (searched recursively) → test.csv, sample_submission.csv")
    parser.add_argument("--link", action="store_true",
                        help="hard-link the images instead of copying them (copies where linking is not possible)")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from competition.data.importing import import_folders  # pandas and PIL: imported when it runs, not for --help

    result = import_folders(Path(args.src), Path(args.dst), Path(args.test) if args.test else None, args.link)
    per_class = ", ".join(f"{c} {n}" for c, n in result.counts.items())
    print(f"wrote {result.dst}: {sum(result.counts.values())} train images in {len(result.counts)} classes ({per_class})"
          + (f", {result.n_test} test images" if args.test else ""))
    if result.skipped:
        print(f"skipped {len(result.skipped)} file(s) that do not decode (listed above)")
    if not args.test:
        print(f"no --test folder: add {result.dst}/test.csv and sample_submission.csv before training")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
