"""Build the bundled WordNet task: 500 noun glosses per default category, drawn with a fixed seed.

    python scripts/make_wordnet_subset.py /usr/share/wordnet

writes src/transferlab/data/bundled/wordnet_nouns.tsv.gz (offset, category, definition) and copies WordNet's
licence next to it.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

from transferlab.data.wordnet import BUNDLED, DEFAULT_CLASSES, noun_glosses

PER_CLASS = 500


def main(folder: str) -> None:
    rows = noun_glosses(Path(folder), DEFAULT_CLASSES)
    out = []
    for i, category in enumerate(DEFAULT_CLASSES):
        members = [r for r in rows if r[1] == category]
        pick = np.random.default_rng([2026, i]).permutation(len(members))[:PER_CLASS]
        out += [members[j] for j in sorted(pick)]
    bundled = Path(__file__).resolve().parents[1] / "src" / "transferlab" / "data" / "bundled"
    text = "".join(f"{o}\t{c}\t{d.replace(chr(9), ' ')}\n" for o, c, d in out)
    (bundled / BUNDLED).write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    licence = Path("/usr/share/doc/wordnet-base/copyright")
    if licence.is_file():
        (bundled / "WORDNET-LICENSE.txt").write_text(licence.read_text())
    print(f"{len(out)} glosses, {len(DEFAULT_CLASSES)} categories -> {bundled / BUNDLED}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/wordnet")
