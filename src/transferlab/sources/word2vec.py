"""The develop model approach for text: word2vec (gensim) trained on an unlabelled corpus, written as a vectors
store that every command takes as a source."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from transferlab.data.text import decode_text
from transferlab.errors import UserError
from transferlab.files import read_bounded
from transferlab.sources.text import words
from transferlab.sources.vectors import save_store

log = logging.getLogger(__name__)
MIN_CORPUS_TOKENS = 100_000  # a rule of thumb for pretrain-vectors' warning, not a hard limit


def _stable_hash(word: str) -> int:
    """gensim seeds each word's initial vector with ``hash(word)``; Python's own hash changes per process."""
    import zlib

    return zlib.crc32(word.encode("utf-8"))


def read_corpus(path: Path, encoding_errors: str = "strict") -> list[list[str]]:
    """Tokenised sentences (one per non-empty line) of a text file or of every ``.txt`` file under a folder."""

    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise UserError(f"corpus folder {path} holds no .txt files")
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"corpus {path} does not exist; give a text file or a folder of .txt files")
    sentences = []
    for f in files:
        for line in decode_text(f, read_bounded(f, "corpus file"), encoding_errors).splitlines():
            tokens = words(line)
            if tokens:
                sentences.append(tokens)
    if not sentences:
        raise UserError(f"corpus {path} holds no words")
    return sentences


def train_vectors(
    corpus: str | Path,
    out: str | Path,
    *,
    dim: int = 100,
    window: int = 5,
    min_count: int = 2,
    epochs: int = 5,
    skipgram: bool = True,
    seed: int = 0,
    workers: int = 1,
    encoding_errors: str = "strict",
    progress: bool = True,
) -> dict:
    """Train word2vec (gensim) on an unlabelled corpus and write a vectors store usable as ``--source OUT``.

    With ``workers=1`` (the default) the vectors are the same on every run; more workers are faster but not
    bit-reproducible (gensim's threads race). Returns what ``source.json`` records.
    """

    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec
    from tqdm.auto import tqdm

    for name, value, low in (("--dim", dim, 1), ("--window", window, 1), ("--min-count", min_count, 1),
                             ("--epochs", epochs, 1), ("--workers", workers, 1)):
        if value < low:
            raise UserError(f"{name} must be at least {low}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists and is not empty; choose another --out")
    sentences = read_corpus(Path(corpus), encoding_errors)
    tokens = sum(map(len, sentences))
    if tokens < MIN_CORPUS_TOKENS:
        log.warning("%s holds %s tokens: below about %s, most words occur only a few times and word2vec's vectors "
                    "for them are mostly noise (the README's WordNet vectors used 1.4 million); expect little "
                    "transfer", corpus, f"{tokens:,}", f"{MIN_CORPUS_TOKENS:,}")
    bar = tqdm(total=epochs, desc="word2vec epochs", disable=not progress, unit="epoch")

    class Tick(CallbackAny2Vec):
        def on_epoch_end(self, model: Word2Vec) -> None:
            bar.update(1)

    tick = time.perf_counter()
    model = Word2Vec(sentences, vector_size=dim, window=window, min_count=min_count, sg=int(skipgram), seed=seed,
                     workers=workers, epochs=epochs, hashfxn=_stable_hash, callbacks=[Tick()])
    bar.close()
    seconds = time.perf_counter() - tick
    wv = model.wv
    if not wv.index_to_key:
        raise UserError(f"no word occurs {min_count} times in {corpus}; lower --min-count or give a larger corpus")
    probes = [w for w in wv.index_to_key[50:60]]  # frequent content words, past the commonest function words
    info = {
        "kind": "transferlab.vectors/1",
        "corpus": str(Path(corpus).resolve()),
        "sentences": len(sentences),
        "tokens": tokens,
        "vocabulary": len(wv.index_to_key),
        "word2vec": {"dim": dim, "window": window, "min_count": min_count, "epochs": epochs,
                     "architecture": "skip-gram" if skipgram else "CBOW", "seed": seed, "workers": workers},
        "train_seconds": round(seconds, 2),
        "neighbours": {w: [n for n, _ in wv.most_similar(w, topn=5)] for w in probes},
    }
    tmp = out.with_name(out.name + ".tmp")
    save_store(tmp, list(wv.index_to_key), wv.vectors)
    (tmp / "source.json").write_text(json.dumps(info, indent=1))
    if out.exists():
        out.rmdir()
    tmp.replace(out)
    return info
