"""Progress bars of long work (captures, runs, builds) on stderr."""

import sys


def progress_bar(total: int, description: str, unit: str = "tok"):
    """A tqdm bar on stderr (the session lets it through pytest's capture while a run computes)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10)
