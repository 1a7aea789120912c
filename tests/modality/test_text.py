"""Text through the one pipeline: data readers, word vectors, sentence encoders, pretrain-vectors, compare."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import FILLER, TOPICS, make_texts
from transferlab import api
from transferlab.data.text import load_texts
from transferlab.errors import UserError
from transferlab.sources import load_source
from transferlab.sources.text import build_vocab, words
from transferlab.sources.vectors import VectorsError, load_vectors, read_vectors


@pytest.fixture(scope="module")
def vectors_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GloVe-style vectors where each topic's words share a direction: transfer should help."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("vec") / "topics.txt"
    lines = []
    for t, vocab in enumerate(TOPICS.values()):
        for word in vocab:
            v = rng.normal(0, 0.1, 8)
            v[t] += 1.0
            lines.append(word + " " + " ".join(f"{x:.4f}" for x in v))
    for word in FILLER:
        lines.append(word + " " + " ".join(f"{x:.4f}" for x in rng.normal(0, 0.1, 8)))
    path.write_text("\n".join(lines) + "\n")
    return path


# --- data ------------------------------------------------------------------------------------------------


def test_csv_with_named_columns_splits_like_images(text_csv: Path) -> None:
    data = load_texts(str(text_csv), text_column="sentence", label_column="topic", per_class=5)
    assert data.classes == ["animal", "food", "tool"]
    assert np.bincount(data.train.labels).tolist() == [5, 5, 5]
    assert len(data.corpus) == 90  # the vocabulary sees every text, whatever per_class
    smaller = load_texts(str(text_csv), text_column="sentence", label_column="topic", per_class=3)
    assert set(smaller.train.texts) <= set(data.train.texts)  # sizes are nested
    assert set(data.test.texts).isdisjoint(data.train.texts)


def test_tsv_jsonl_and_folder_read_the_same_rows(tmp_path: Path) -> None:
    rows = make_texts(6)
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    for i, (t, lab) in enumerate(rows):
        (tmp_path / "folder" / lab).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / lab / f"{i}.txt").write_text(t)
    loaded = [load_texts(str(tmp_path / name)) for name in ("d.tsv", "d.jsonl", "folder")]
    for data in loaded:
        assert data.classes == ["animal", "food", "tool"]
        assert sorted(data.corpus) == sorted(t for t, _ in rows)


def test_split_column_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("text,label,split\na dog,animal,train\nsome bread,food,train\na cat,animal,test\ncake,food,val\n")
    data = load_texts(str(path))
    assert data.test.texts == ["a cat"] and data.val.texts == ["cake"] and len(data.train) == 2


def test_bundled_wordnet_task_and_the_full_database(tmp_path: Path) -> None:
    data = load_texts("wordnet", per_class=10)
    assert data.classes == sorted(["animal", "artifact", "body", "food", "location", "person", "plant", "substance"])
    assert len(data.train) == 80 and len(data.corpus) == 4000
    assert all(text.strip() for text in data.test.texts)
    # the full database from its standard data.noun file at any path
    folder = tmp_path / "dict"
    folder.mkdir()
    lines = ["  1 This software and database is being provided to you\n"]
    for i, (lex, gloss) in enumerate([(5, "a domestic dog"), (5, "a large cat"), (13, "baked bread"),
                                      (13, "a sweet cake"), (6, "a hand tool")]):
        lines.append(f"{i:08d} {lex:02d} n 01 word{i} 0 000 | {gloss}; \"an example\"\n")
    (folder / "data.noun").write_text("".join(lines))
    full = load_texts(f"wordnet:classes=animal+food,dir={folder}", val_fraction=0.01, test_fraction=0.01)
    assert full.classes == ["animal", "food"] and sorted(full.corpus) == sorted(
        ["a domestic dog", "a large cat", "baked bread", "a sweet cake"])


@pytest.mark.parametrize(
    ("content", "kwargs", "fragments"),
    [
        ("text,label\na dog,animal\n", {"label_column": "topic"}, ["no column 'topic'", "--label-column"]),
        ("text,label\na dog,animal\n,food\n", {}, ["line 3", "text is empty"]),
        ("text,label\na dog,animal\na cat,animal\n", {}, ["only one class", "'animal'"]),
        ("text,label\na dog,animal\nbread,food,extra\n", {}, ["line 3", "expected 2 fields"]),
    ],
)
def test_bad_text_tables_name_the_culprit(tmp_path: Path, content: str, kwargs: dict, fragments: list[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError) as e:
        load_texts(str(path), **kwargs)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_invalid_utf8_names_the_line_unless_replaced(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"text,label\na dog,animal\ncaf\xe9 food,food\nbread,food\n")
    with pytest.raises(UserError, match="line 3 is not valid UTF-8.*--encoding-errors replace"):
        load_texts(str(path))
    data = load_texts(str(path), encoding_errors="replace", val_fraction=0.01, test_fraction=0.01)
    assert "caf\ufffd food" in data.corpus


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a dog", "label": "animal"}\n{"text": "bread", \n')
    with pytest.raises(UserError, match="d.jsonl line 2 is not valid JSON"):
        load_texts(str(path))


# --- word vectors -------------------------------------------------------------------------------------------


def test_glove_word2vec_and_fasttext_text_formats(tmp_path: Path) -> None:
    glove = tmp_path / "g.txt"
    glove.write_text("the 0.1 0.2 0.3\n. . . 1 2 3\ndog 0.5 -0.5 1e-3\nthe 9 9 9\n")  # space token, duplicate
    w, m = read_vectors(glove)
    assert w == ["the", ". . .", "dog"] and m.shape == (3, 3)
    assert m[0].tolist() == pytest.approx([0.1, 0.2, 0.3])  # the first of a duplicate wins
    vec = tmp_path / "f.vec"
    vec.write_text("2 3\nthe 0.1 0.2 0.3 \ndog 0.5 -0.5 0.001 \n")  # fastText: header and trailing spaces
    w2, m2 = read_vectors(vec)
    assert w2 == ["the", "dog"] and np.allclose(m2, m[[0, 2]])
    assert read_vectors(glove, max_vectors=2)[0] == ["the", ". . ."]


def test_word2vec_binary_matches_its_text_form(tmp_path: Path) -> None:
    matrix = np.array([[0.1, 0.2], [-1.0, 3.5]], dtype=np.float32)
    path = tmp_path / "v.bin"
    with open(path, "wb") as f:
        f.write(b"2 2\n")
        for word, row in zip(["caf\xc3\xa9", "dog"], matrix, strict=True):
            f.write(word.encode("latin1") + b" " + row.astype("<f4").tobytes() + b"\n")
    w, m = read_vectors(path)
    assert w == ["café", "dog"] and np.array_equal(m, matrix)
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(VectorsError, match="truncated"):
        read_vectors(path)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("the 0.1 0.2\ndog 0.5\n", "line 2 has 1 numbers after the word, expected 2"),
        ("the 0.1 0.2\ndog 0.5 0.1 0.7\n", "line 2 has 3 numbers after the word, expected 2"),
        ("the 0.1 0.2\ndog 0.5 abc\n", "line 2: 'abc' is not a number"),
        ("the 0.1 0.2\ndog nan 0.1\n", "line 2 holds a non-finite value"),
        ("3 2\nthe 0.1 0.2\n", "header promises 3 vectors"),
        ("hello world, this is prose\n", "not a GloVe, word2vec or fastText vectors file"),
    ],
)
def test_bad_vectors_files_name_file_and_line(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(VectorsError) as e:
        read_vectors(path)
    assert str(path) in str(e.value) and fragment in str(e.value)


def test_vectors_invalid_utf8_needs_replace(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_bytes(b"the 0.1 0.2\ncaf\xe9 0.3 0.4\n")
    with pytest.raises(VectorsError, match="line 2 is not valid UTF-8"):
        read_vectors(path)
    assert read_vectors(path, encoding_errors="replace")[0] == ["the", "caf\ufffd"]


def test_vectors_are_parsed_once_then_memory_mapped(vectors_file: Path) -> None:
    kv = load_vectors(vectors_file)
    assert isinstance(kv.vectors, np.memmap) and kv.vector_size == 8
    again = load_vectors(vectors_file)
    assert again.index_to_key == kv.index_to_key and np.array_equal(again["dog"], kv["dog"])
    assert kv.most_similar("dog", topn=1)[0][0] in TOPICS["animal"]  # gensim's API works on the map


def test_embedding_is_initialised_from_the_vectors_with_coverage(vectors_file: Path) -> None:
    kv = load_vectors(vectors_file)
    source = load_source(str(vectors_file))
    vocab, counts = build_vocab(["the dog and the cat", "zebra dog"])
    adapted = source.adapt(vocab, counts, "bag")
    weight = adapted.blocks["embedding"].embedding.weight.detach()
    index = adapted.preprocessing.index
    assert torch.allclose(weight[index["dog"]], torch.tensor(np.asarray(kv["dog"])))
    assert weight[0].abs().sum() == 0  # padding
    coverage = adapted.info["coverage"]
    assert coverage["types"] == pytest.approx(3 / 5)  # the, dog, cat of the, dog, cat, and, zebra
    assert coverage["tokens"] == pytest.approx(5 / 7)
    oov = weight[index["zebra"]]
    assert 0 < oov.std() < 1.0  # initialised at the vectors' scale (about 0.3 here), not N(0, 1)
    scratch = load_source("scratch:" + str(vectors_file)).adapt(vocab, counts, "bag")
    assert not torch.allclose(scratch.blocks["embedding"].embedding.weight[index["dog"]], weight[index["dog"]])


_token = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=6)
_number = st.one_of(st.floats(width=32).map(repr), st.integers(-5, 5).map(str),
                    st.sampled_from(["abc", "1e39", "-0", "", "1_0", "inf", "0x1"]))
_row = st.tuples(_token, st.lists(_number, max_size=4)).map(lambda t: " ".join([t[0], *t[1]]))
_header_line = st.one_of(st.none(), st.tuples(st.integers(0, 8), st.integers(0, 5)).map(lambda h: f"{h[0]} {h[1]}"))


def _check_consistent_or_clear(path: Path) -> None:
    try:
        w, m = read_vectors(path)
    except VectorsError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        return
    assert m.dtype == np.float32 and m.ndim == 2 and m.shape[0] == len(w) >= 1 and m.shape[1] >= 1
    assert len(set(w)) == len(w) and all(w) and np.isfinite(m).all()


@settings(max_examples=150, deadline=None)
@given(header=_header_line, rows=st.lists(_row, max_size=6))
def test_vectors_reader_returns_consistent_vectors_or_the_clear_error(header: str | None, rows: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "v.txt"
        path.write_text("\n".join(([header] if header else []) + rows) + "\n", encoding="utf-8")
        _check_consistent_or_clear(path)


@settings(max_examples=150, deadline=None)
@given(blob=st.binary(max_size=120), suffix=st.sampled_from([".txt", ".bin"]))
def test_vectors_reader_survives_arbitrary_bytes(blob: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"v{suffix}"
        path.write_bytes(blob)
        _check_consistent_or_clear(path)


def test_tokenizer_is_lowercase_words() -> None:
    assert words("The Dog's bone, half-eaten (2 days)!") == ["the", "dog's", "bone", "half-eaten", "2", "days"]


# --- training ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text_model", ["bag", "cnn"])
def test_word_vectors_beat_random_embeddings_and_predict_works(
    text_csv: Path, vectors_file: Path, tmp_path: Path, text_model: str
) -> None:
    common = dict(text_column="sentence", label_column="topic", per_class=6, epochs=6, batch_size=6, progress=False,
                  text_model=text_model, seed=0)
    frozen = api.fit(str(text_csv), out=tmp_path / "frozen", source=str(vectors_file), strategy="frozen", **common)
    scratch = api.fit(str(text_csv), out=tmp_path / "scratch", source=str(vectors_file), strategy="scratch", **common)
    assert frozen.test_accuracy > scratch.test_accuracy
    card = api.run_card(tmp_path / "frozen")
    assert card["modality"] == "text" and card["coverage"]["types"] > 0.9
    assert card["architecture"] == f"words:8:{text_model}"
    rows = api.predict(tmp_path / "frozen", [], texts=["the cat with some wolf", "bread with cheese"])
    assert [label for _, label, _ in rows] == ["animal", "food"]


def test_a_text_run_is_a_source_and_finetune_tunes_the_embedding(text_csv: Path, vectors_file: Path,
                                                                  tmp_path: Path) -> None:
    common = dict(text_column="sentence", label_column="topic", epochs=2, progress=False)
    api.fit(str(text_csv), out=tmp_path / "src", source=str(vectors_file), strategy="finetune", **common)
    reused = load_source(str(tmp_path / "src"))
    assert reused.modality == "text" and list(reused.blocks) == ["embedding", "encoder"]
    kv = load_vectors(vectors_file)
    index = reused.preprocessing.index
    tuned = reused.blocks["embedding"].embedding.weight[index["dog"]].detach()
    assert not torch.allclose(tuned, torch.tensor(np.asarray(kv["dog"])))  # finetune moved the vectors
    result = api.fit(str(text_csv), out=tmp_path / "again", source=str(tmp_path / "src"), strategy="frozen",
                     reuse=2, **common)
    assert result.test_accuracy > 0.5


def test_sentence_encoder_frozen_caches_embeddings(text_csv: Path, tmp_path: Path) -> None:
    common = dict(text_column="sentence", label_column="topic", per_class=6, epochs=15, batch_size=6, progress=False)
    first = api.fit(str(text_csv), out=tmp_path / "a", source="minilm", strategy="frozen", **common)
    second = api.fit(str(text_csv), out=tmp_path / "b", source="minilm", strategy="frozen", **common)
    assert first.cache_hit is False and second.cache_hit is True
    assert first.test_accuracy == second.test_accuracy and first.test_accuracy > 0.5
    rows = api.predict(tmp_path / "a", [], texts=["a wolf and a sheep"])
    assert rows[0][1] == "animal"


def test_sentence_encoder_finetune_and_scratch_run(text_csv: Path, tmp_path: Path) -> None:
    common = dict(text_column="sentence", label_column="topic", per_class=2, eval_per_class=3, epochs=1,
                  progress=False, batch_size=8)
    tuned = api.fit(str(text_csv), out=tmp_path / "ft", source="minilm", strategy="finetune", **common)
    assert tuned.test_size == 9
    reloaded = load_source(str(tmp_path / "ft"))
    assert list(reloaded.blocks) == ["embeddings", *(f"layer{i}" for i in range(1, 7))]
    assert reloaded.blocks["layer1"].config.hidden_size == 384
    scratch = api.fit(str(text_csv), out=tmp_path / "sc", source="minilm", strategy="scratch", **common)
    assert json.loads((tmp_path / "sc" / "config.json").read_text())["resolved"]["source_weights"] == "random init"
    assert scratch.test_size == 9


def test_pretrain_vectors_warns_about_a_small_corpus(text_csv: Path, tmp_path: Path, caplog) -> None:
    corpus = tmp_path / "small.txt"
    corpus.write_text("the cat sat on the mat\n" * 50)
    with caplog.at_level("WARNING", logger="transferlab"):
        api.pretrain_vectors(corpus, out=tmp_path / "v", dim=8, epochs=1, min_count=1, progress=False)
    assert "holds 300 tokens: below about 100,000" in caplog.text


def test_pretrain_vectors_is_reproducible_and_a_source(text_csv: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(t for t, _ in make_texts(40, seed=3)) + "\n")
    info = api.pretrain_vectors(corpus, out=tmp_path / "v1", dim=16, epochs=2, progress=False)
    api.pretrain_vectors(corpus, out=tmp_path / "v2", dim=16, epochs=2, progress=False)
    assert info["vocabulary"] == len(TOPICS) * 8 + len(FILLER)
    a, b = load_vectors(tmp_path / "v1"), load_vectors(tmp_path / "v2")
    assert np.array_equal(np.asarray(a.vectors), np.asarray(b.vectors))  # one worker: the same vectors every time
    result = api.fit(str(text_csv), out=tmp_path / "run", source=str(tmp_path / "v1"), strategy="frozen",
                     text_column="sentence", label_column="topic", epochs=1, progress=False)
    assert api.run_card(tmp_path / "run")["coverage"]["types"] == 1.0 and result.test_size > 0
    with pytest.raises(UserError, match="not empty"):
        api.pretrain_vectors(corpus, out=tmp_path / "v1")
    (tmp_path / "empty.txt").write_text("\n ,;\n")
    with pytest.raises(UserError, match="holds no words"):
        api.pretrain_vectors(tmp_path / "empty.txt", out=tmp_path / "v3")


def test_compare_arms_with_their_own_sources(text_csv: Path, vectors_file: Path, tmp_path: Path) -> None:
    results = api.compare(
        str(text_csv), out=tmp_path / "cmp", source=str(vectors_file),
        arms=f"scratch:source=words:8,frozen,finetune:source={vectors_file},frozen:source=words:8:cnn",
        seeds=2, epochs=1, per_class="4", text_column="sentence", label_column="topic", progress=False,
    )
    assert results["baseline"] == "scratch:source=words:8"
    arms = {"frozen", f"finetune:source={vectors_file}", "frozen:source=words:8:cnn"}
    assert set(results["benefits"]) == arms
    cell_dirs = {c["run_dir"] for c in results["cells"]}
    assert all(d.count("/") == 3 for d in cell_dirs)  # a source path never nests the cell directory
    with pytest.raises(UserError, match="holds texts but the source scratch:cnn_tiny takes images"):
        api.compare(str(text_csv), out=tmp_path / "mixed", source=str(vectors_file),
                    arms="frozen,finetune:source=scratch:cnn_tiny", seeds=2, text_column="sentence",
                    label_column="topic")


def test_modality_mismatch_is_a_clear_error(text_csv: Path, image_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="holds images but the source words takes texts"):
        from transferlab.config import FitConfig
        from transferlab.data import load_images
        from transferlab.train.fit import fit

        fit(FitConfig(data=str(image_folder), source="words"), tmp_path / "o", data=load_images(str(image_folder)))
    with pytest.raises(UserError, match="exceeds the 7 blocks of minilm"):
        api.fit(str(text_csv), out=tmp_path / "m", source="minilm", strategy="frozen", reuse=8,
                text_column="sentence", label_column="topic")
    with pytest.raises(UserError, match="test split of .* is empty"):
        api.fit(str(text_csv), out=tmp_path / "t", source="words", test_fraction=0.0, text_column="sentence",
                label_column="topic")
    assert not (tmp_path / "t").exists()
    with pytest.raises(UserError, match="pretrained block"):
        api.fit(str(text_csv), out=tmp_path / "r", source="words", strategy="frozen", reuse=2,
                text_column="sentence", label_column="topic")


def test_latin1_header_file_is_read_as_text_not_binary(tmp_path: Path) -> None:
    path = tmp_path / "latin1.bin"  # a text file with a misleading suffix and a non-UTF-8 word
    path.write_bytes("2 3\ncafé 0.1 0.2 0.3\ndog 1 2 3\n".encode("latin-1"))
    with pytest.raises(VectorsError, match="line 2 is not valid UTF-8"):
        read_vectors(path)
    w, m = read_vectors(path, encoding_errors="replace")
    assert w == ["caf\ufffd", "dog"] and m[1].tolist() == [1, 2, 3]


def test_jsonl_allows_line_separators_inside_strings_and_rejects_odd_splits(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"text": "a\u2028dog", "label": "animal"}, {"text": "bread", "label": "food"}] * 3
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert "a\u2028dog" in load_texts(str(path), val_fraction=0.2, test_fraction=0.2).corpus
    path.write_text('{"text": "a dog", "label": "animal", "split": 0}\n')
    with pytest.raises(UserError, match="split must be train, val or test"):
        load_texts(str(path))


def test_cnn_encoder_runs_under_half_precision_autocast() -> None:
    from transferlab.sources.text import CNNEncoder

    enc = CNNEncoder(8)
    x, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.float16):
        out = enc((x, mask))
    assert out.shape == (2, 300) and torch.isfinite(out.float()).all()
