"""An unlabelled corpus for ``pretrain-vectors``: every WordNet gloss (nouns, verbs, adjectives, adverbs, with their
examples), one per line, except the glosses of the bundled WordNet task, so that no target text (train or test)
is in the corpus.

    python scripts/wordnet_corpus.py /usr/share/wordnet runs/wordnet-corpus.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

from transferlab.data.wordnet import bundled_rows, corpus, find_wordnet_dir


def main(folder: str, out: str) -> None:
    exclude = {offset for offset, _, _ in bundled_rows()}
    lines = list(corpus(find_wordnet_dir(Path(folder)), exclude))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} glosses ({len(exclude)} bundled-task glosses left out) -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
