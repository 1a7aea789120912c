"""Texts: CSV/TSV/JSONL files, folders of ``.txt`` files and WordNet glosses. Word-vector sources are bound to the
data through a vocabulary built from every loaded text; sentence encoders bring their own tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferlab.cardcheck import card_error, int_field, show, strings
from transferlab.data.folders import DELIMITERS, csv_header, holds_files
from transferlab.data.text import decoded, load_texts, read_column
from transferlab.errors import UserError
from transferlab.files import read_bounded
from transferlab.modality import MODALITIES, Modality

if TYPE_CHECKING:
    from transferlab.config import FitConfig
    from transferlab.data.splits import Data
    from transferlab.sources.base import Source

MAX_TEXT_LENGTH = 100_000  # tokens


class TextModality(Modality):
    name = "text"
    word = "texts"
    # Measured on the built-in tasks: a head on L2-normalised sentence embeddings or on averaged word vectors
    # learns about 10x too slowly at the image default, and a transformer wants its weights moved ~10x less.
    default_lr = (1e-2, 0.01)
    options = ("text_model", "max_vectors", "text_column", "label_column", "encoding_errors")
    predict_column = "text"

    def claims(self, spec: str) -> bool | None:
        if spec.startswith("wordnet"):
            return True
        path = Path(spec).expanduser()
        if path.is_file():
            suffix = path.suffix.lower()
            if suffix in (".jsonl", ".ndjson"):
                return True
            if suffix not in DELIMITERS:
                return False
            header = csv_header(path, DELIMITERS[suffix])
            # a table has no "text" column; another text column (--text-column) cannot be told from a table's
            return None if header is None else "text" in header or None
        return holds_files(path, (".txt",)) if path.is_dir() else None

    def load(self, cfg: FitConfig) -> Data:
        return load_texts(cfg.data, seed=cfg.data_seed,
                          val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, per_class=cfg.per_class,
                          eval_per_class=cfg.eval_per_class, text_column=cfg.text_column,
                          label_column=cfg.label_column, encoding_errors=cfg.encoding_errors)

    def bind(self, source: Source, data: Data, cfg: FitConfig) -> Source:
        """Word vectors: the model over the vocabulary of every loaded text (the same for every labelled size and
        arm), with the vectors' coverage of it recorded."""
        if source.adapt is None:
            return source
        from transferlab.sources.text import build_vocab

        vocab, counts = build_vocab(data.corpus)
        return source.adapt(vocab, counts, cfg.text_model)

    def example(self, source: Source) -> Source:
        return source if source.adapt is None else source.adapt([])  # word vectors over an empty vocabulary

    def bind_card(self, source: Source, preprocessing: dict[str, Any]) -> Source:
        return source if source.adapt is None else source.adapt(preprocessing["vocab"][2:])  # no <pad>, <unk>

    def raw_features(self, splits: list[Any]) -> list[Any]:
        """TF-IDF of words and word pairs (sublinear term frequencies), its vocabulary from the training split."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
        return [tfidf.fit_transform(splits[0].texts), *(tfidf.transform(s.texts) for s in splits[1:])]

    def preprocessing_from_dict(self, d: dict[str, Any]) -> Any:
        from transferlab.sources.text import text_preprocessing_from_dict

        return text_preprocessing_from_dict(d)

    def check_card(self, card_path: Path, pre: dict[str, Any]) -> None:
        kind = pre.get("kind")
        int_field(card_path, "preprocessing.max_length", pre.get("max_length"), 1, MAX_TEXT_LENGTH)
        if kind == "words":
            vocab = strings(card_path, "preprocessing.vocab", pre.get("vocab"))
            if vocab[:2] != ["<pad>", "<unk>"]:
                raise card_error(card_path, "preprocessing.vocab", "must start with '<pad>', '<unk>'")
        elif kind == "tokenizer":
            if not isinstance(pre.get("path"), str) or not pre["path"].strip():
                raise card_error(card_path, "preprocessing.path", "must name the tokenizer's folder")
            int_field(card_path, "preprocessing.pad_id", pre.get("pad_id"), 0, 10_000_000)
        else:
            raise card_error(card_path, "preprocessing.kind",
                             f"must be 'words' or 'tokenizer' for a text run, not {show(kind)}")

    def export_examples(self, pre: Any) -> tuple[list[Any], dict[int, str]]:
        return ["an example", "a longer example of a text to classify"], {0: "batch", 1: "length"}

    def predict_inputs(self, paths: list[Path], texts: list[str], bad: list[tuple[str, str]], pre: Any,
                       options: dict[str, Any]) -> tuple[list[tuple[str, Any]], int]:
        """The texts given, then the texts of each file as ``fit`` reads them: the ``text_column`` of a CSV, TSV or
        JSONL file (never its header or label), every non-empty line of any other file. A file that cannot be
        read (not UTF-8, an image, not a regular file, too large) goes to ``bad``."""
        items: list[tuple[str, Any]] = [(t, t) for t in texts]
        column = options.get("text_column", "text")
        for f in paths:
            if f.is_dir():
                raise UserError(f"{f} is a folder; give text files")
            try:
                if f.suffix.lower() in (*DELIMITERS, ".jsonl", ".ndjson"):
                    items += [(t, t) for t in read_column(f, column)]
                    continue
                raw = read_bounded(f, "text file")
            except UserError as e:
                bad.append((str(f), str(e)))
                continue
            content, why = decoded(raw)
            if why:
                bad.append((str(f), why))
                continue
            items += [(line, line) for line in content.splitlines() if line.strip()]
        return items, len(paths)


MODALITIES.register("text")(TextModality())
