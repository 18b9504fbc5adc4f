"""Put a dataset on disk ahead of time: ``python3 -m fedlearn.fetch --dataset mnist --data_dir ./data``.

Used by requirements.sh. Prints one line saying where the files are and how
they got there; exits 1 with a one-line message when the dataset cannot be had.
"""

from __future__ import annotations

import sys

from .data import DATASETS, raw_folder, resolve_dataset, title
from .errors import FedlearnError, OneLineParser


def main(argv: list[str] | None = None) -> int:
    """Fetch the requested dataset; returns the exit status."""
    parser = OneLineParser(prog="python3 -m fedlearn.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="auto", choices=DATASETS.choices())
    parser.add_argument("--data_dir", default="./data")
    parser.add_argument("--no_download", action="store_true", help="use local files or Debian's package only")
    args = parser.parse_args(argv)
    try:
        name, how = resolve_dataset(args.dataset, args.data_dir, download=not args.no_download, notify=lambda _: None)
    except FedlearnError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; no file was moved into {args.data_dir}", file=sys.stderr)
        return 130
    print(f"{title(name)} ready in {raw_folder(name, args.data_dir)} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
