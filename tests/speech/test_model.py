"""speech.model on the real Korean model, on broken folders and under concurrent first use."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from speech.model import (
    GrammarError,
    ModelCache,
    ModelCorruptError,
    ModelNotFoundError,
    SpeechModel,
    check_model_folder,
    load_model,
    shared_model,
)

FST_MAGIC = (2125659606).to_bytes(4, "little")


@pytest.fixture(scope="module")
def korean(korean_model_path: Path) -> SpeechModel:
    """The process-wide Korean model (shared_model: the other tests here reuse the one load)."""
    return shared_model(korean_model_path)


def fake_model(root: Path, source: Path, final_mdl: bytes, *, graph: bytes | None = None) -> Path:
    """A model-shaped folder of a few kB instead of 250 MB: the real conf/, the given final.mdl,
    and HCLr.fst / Gr.fst that are OpenFst's magic number followed by `graph` (zeros by default)."""
    folder = root / "model"
    (folder / "am").mkdir(parents=True)
    (folder / "am" / "final.mdl").write_bytes(final_mdl)
    shutil.copytree(source / "conf", folder / "conf")
    (folder / "graph").mkdir()
    for name in ("HCLr.fst", "Gr.fst"):
        (folder / "graph" / name).write_bytes(FST_MAGIC + (graph or b"\x00" * 64))
    return folder


# ---------------------------------------------------------------------- the real model


def test_korean_model_properties(korean: SpeechModel, korean_model_path: Path) -> None:
    assert korean.path == korean_model_path.resolve()
    assert korean.sample_rate == 16000  # its mfcc.conf sets none: Kaldi's default
    assert korean.grammar_capable is True
    assert korean.size_bytes > 200_000_000
    assert korean.vocabulary_size is None  # no graph/words.txt in this small model
    assert korean.garbage_word == "<UNK>"
    assert korean.load_seconds > 0


def test_has_word(korean: SpeechModel) -> None:
    assert korean.has_word("네")
    assert korean.has_word("아니요")
    assert not korean.has_word("停电")
    assert not korean.has_word("xyzzy")
    # Graph symbols and malformed input are not words.
    for not_a_word in ("<eps>", "#0", "", " 네", "네 아니요"):
        assert not korean.has_word(not_a_word), not_a_word


def test_missing_words(korean: SpeechModel) -> None:
    assert korean.missing_words(["네", "아니요"]) == []
    phrases = ["네  아니요", "전기 xyzzy 停电", "xyzzy"]
    assert korean.missing_words(phrases) == ["xyzzy", "停电"]


@pytest.mark.parametrize(
    ("phrase", "words"),
    [
        ("네", "네"),
        ("정전요금", "정전 요금"),  # written unspaced, as flow phrases are: split into known words
        ("상담원  요금", "상담원 요금"),  # already spaced: kept
        ("정전xyz", None),  # a run no known word covers
        ("停电", None),  # not this model's language
        ("", None),
        ("   ", None),
    ],
)
def test_segment(korean: SpeechModel, phrase: str, words: str | None) -> None:
    assert korean.segment(phrase) == words
    if words is not None:
        assert korean.missing_words([words]) == []


def test_grammar_json(korean: SpeechModel) -> None:
    grammar = korean.grammar_json(["네", " 아니요 ", "전기 요금"])
    assert grammar == '["네", "아니요", "전기 요금", "<UNK>"]'  # UTF-8, not \\u escapes
    assert json.loads(grammar)[-1] == korean.garbage_word


def test_grammar_json_names_missing_words(korean: SpeechModel) -> None:
    with pytest.raises(GrammarError, match="停电, xyzzy") as caught:
        korean.grammar_json(["네", "停电 xyzzy", "xyzzy"])
    assert caught.value.missing == ("停电", "xyzzy")


@pytest.mark.parametrize("phrases", [[], ["네", "  "]])
def test_grammar_json_needs_phrases(korean: SpeechModel, phrases: list[str]) -> None:
    with pytest.raises(GrammarError, match="at least one phrase"):
        korean.grammar_json(phrases)


def test_grammar_usable_by_a_recognizer(korean: SpeechModel) -> None:
    import vosk

    recognizer = vosk.KaldiRecognizer(korean.vosk, 8000, korean.grammar_json(["네", "아니요"]))
    recognizer.AcceptWaveform(b"\x00\x00" * 8000)
    assert json.loads(recognizer.FinalResult())["text"] == ""


def test_shared_model_is_loaded_once(korean: SpeechModel, korean_model_path: Path) -> None:
    assert shared_model(korean_model_path) is korean
    assert shared_model(str(korean_model_path) + "/.") is korean
    relative = os.path.relpath(korean_model_path)
    assert shared_model(relative) is korean


def test_cache_loads_once_under_concurrent_first_use(korean_model_path: Path) -> None:
    cache = ModelCache()  # cold, unlike the process-wide one
    results: list[SpeechModel] = []
    barrier = threading.Barrier(4)

    def ask() -> None:
        barrier.wait()
        results.append(cache.get(korean_model_path))

    with capture_logs() as logs:
        threads = [threading.Thread(target=ask) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == 4
    assert all(model is results[0] for model in results)
    loads = [line for line in logs if line["event"] == "speech model loaded"]
    assert len(loads) == 1
    assert loads[0]["path"] == str(korean_model_path.resolve())
    assert loads[0]["seconds"] > 0
    assert loads[0]["size_bytes"] == results[0].size_bytes


# ---------------------------------------------------------------------- broken folders


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_file_instead_of_folder(tmp_path: Path) -> None:
    archive = tmp_path / "vosk-model-small-cn-0.22.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(ModelNotFoundError, match="unpack the archive first"):
        load_model(archive)


def test_parent_folder_given(tmp_path: Path, korean_model_path: Path) -> None:
    fake_model(tmp_path, korean_model_path, b"\x00B<TransitionModel> ")
    with pytest.raises(ModelCorruptError, match=r"no am/final.mdl \(did you mean .*model\?\)"):
        load_model(tmp_path)


def test_garbage_final_mdl(tmp_path: Path, korean_model_path: Path) -> None:
    folder = fake_model(tmp_path, korean_model_path, os.urandom(4096))
    with pytest.raises(ModelCorruptError, match="not a Kaldi acoustic model"):
        load_model(folder)


def test_no_conf(tmp_path: Path, korean_model_path: Path) -> None:
    folder = fake_model(tmp_path, korean_model_path, b"\x00B<TransitionModel> ")
    shutil.rmtree(folder / "conf")
    with pytest.raises(ModelCorruptError, match="no conf/"):
        check_model_folder(folder)


def test_no_graph(tmp_path: Path, korean_model_path: Path) -> None:
    folder = fake_model(tmp_path, korean_model_path, b"\x00B<TransitionModel> ")
    (folder / "graph" / "Gr.fst").unlink()
    with pytest.raises(ModelCorruptError, match="no decoding graph"):
        check_model_folder(folder)


def test_graph_not_an_fst(tmp_path: Path, korean_model_path: Path) -> None:
    folder = fake_model(tmp_path, korean_model_path, b"\x00B<TransitionModel> ")
    (folder / "graph" / "HCLr.fst").write_bytes(b"<html>not found</html>")
    with pytest.raises(ModelCorruptError, match=r"HCLr.fst is not an OpenFst graph"):
        check_model_folder(folder)


def test_truncated_final_mdl_reaches_kaldi_and_fails_cleanly(
    tmp_path: Path, korean_model_path: Path
) -> None:
    """Past the header checks, Kaldi reads a cut-off model: an exception, not an abort."""
    with (korean_model_path / "am" / "final.mdl").open("rb") as f:
        head = f.read(100_000)
    folder = fake_model(tmp_path, korean_model_path, head, graph=os.urandom(256))
    check_model_folder(folder)  # looks like a model
    with pytest.raises(ModelCorruptError, match="Kaldi could not load"):
        load_model(folder)


def test_failed_load_is_not_cached(tmp_path: Path) -> None:
    cache = ModelCache()
    with pytest.raises(ModelNotFoundError):
        cache.get(tmp_path / "later")
    (tmp_path / "later").mkdir()
    with pytest.raises(ModelCorruptError):  # tried again: the folder is now seen, and empty
        cache.get(tmp_path / "later")
