"""Broken data files: every reader raises the one DataError naming the file and line, line:column or JSON path;
gzipped files read as the plain ones; CR-only line ends; SQuAD answer_start repaired and counted."""
from __future__ import annotations

import gzip
import json
import os

import pytest

from backends.errors import BadInput
from tasks.data import DataError
from tasks.data.boolq import read_boolq
from tasks.data.glue import read_glue_file
from tasks.data.race import read_race, read_race_file
from tasks.data.squad import read_squad
from tasks.train.task import TaskError, make_task

from .test_train_support import CONTEXT, write_boolq, write_glue, write_race, write_squad

SST2 = "sentence\tlabel\ngood movie \t1\nbad film \t0\n"
COLA = "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\n"


def squad(**paragraph) -> dict:
    qas = [{"id": "q1", "question": "where did the cat sit", "answers": [{"text": "on the mat", "answer_start": 12}]}]
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas, **paragraph}]}]}


def write(path, content) -> str:
    """Write text, bytes or a JSON value to `path`; the path as a string."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return str(path)


def test_data_error_is_bad_input_with_file_and_position(tmp_path):
    error = DataError(tmp_path / "x.tsv", 3, "bad")
    assert isinstance(error, BadInput) and isinstance(error, ValueError) and error.exit_code == 2
    assert str(error) == f"{tmp_path / 'x.tsv'}:3: bad" and error.position == 3


# ---- GLUE TSV ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, task, message", [
    ("sentence\tlabel\n", "sst-2", ": holds no rows"),
    ("", "sst-2", ": holds no rows"),
    ("\n\n", "cola", ": holds no rows"),
    ("sentence\tlabel\ngood\tpositive\n", "sst-2", ":2: unknown label 'positive'"),
    ("index\tsentence1\tsentence2\tscore\n0\tA.\tB.\tnan\n", "sts-b", ":2: sts-b score 'nan' is not a finite"),
    ("index\tsentence1\tsentence2\tscore\n0\tA.\tB.\t-inf\n", "sts-b", ":2: sts-b score '-inf' is not a finite"),
    ('sentence1\tsentence2\tlabel\tidx\n"A.\tB.\t0\t0\n', "rte", ":2: expected 4 tab-separated fields"),
])
def test_glue_bad_files(tmp_path, text, task, message):
    path = write(tmp_path / "train.tsv", text)
    with pytest.raises(DataError, match=f"train.tsv{message}"):
        read_glue_file(path, task)


def test_glue_cr_only_and_crlf_line_ends_read_as_lf(tmp_path):
    for text, task in ((SST2, "sst-2"), (COLA, "cola")):
        expected = read_glue_file(write(tmp_path / "lf.tsv", text), task)
        assert len(expected) == 2
        for ending in ("\r", "\r\n"):
            assert read_glue_file(write(tmp_path / "lf.tsv", text.replace("\n", ending)), task) == expected


def test_glue_non_utf8_names_file_and_line(tmp_path):
    path = write(tmp_path / "dev.tsv", SST2.encode().replace(b"bad", b"b\xe9d"))
    with pytest.raises(DataError, match=r"dev.tsv:3: not UTF-8 text \(byte 0xe9"):
        read_glue_file(path, "sst-2")


def test_gzipped_files_read_as_plain_ones(tmp_path):
    plain = read_glue_file(write(tmp_path / "dev.tsv", SST2), "sst-2")
    assert read_glue_file(write(tmp_path / "dev.tsv.gz", gzip.compress(SST2.encode())), "sst-2") == plain
    assert [e.guid for e in plain] == ["dev-0", "dev-1"]
    lines = "".join(json.dumps({"question": "is it", "passage": "It is.", "answer": a}) + "\n" for a in (True, False))
    assert read_boolq(write(tmp_path / "val.jsonl.gz", gzip.compress(lines.encode()))) == \
        read_boolq(write(tmp_path / "val.jsonl", lines))
    assert read_squad(write(tmp_path / "d.json.gz", gzip.compress(json.dumps(squad()).encode()))) == \
        read_squad(write(tmp_path / "d.json", squad()))


def test_truncated_gzip_is_a_data_error(tmp_path):
    data = gzip.compress(SST2.encode() * 50)
    path = write(tmp_path / "train.tsv.gz", data[: len(data) // 2])
    with pytest.raises(DataError, match="train.tsv.gz: broken gzip data"):
        read_glue_file(path, "sst-2")


def test_real_squad_train_json_gz_reads(shared_data):
    examples = read_squad(shared_data("squad", "train-v1.1.reconstructed.json.gz"))
    assert len(examples) == 87599


def test_tasks_find_gzipped_split_files(tmp_path):
    data = write_squad(tmp_path / "squad")
    train = data / "train-v1.1.json"
    (data / "train-v1.1.json.gz").write_bytes(gzip.compress(train.read_bytes()))
    train.unlink()
    assert make_task("squad", data).path("train") == data / "train-v1.1.json.gz"
    glue = write_glue(tmp_path / "glue")
    (glue / "dev.tsv.gz").write_bytes(gzip.compress((glue / "dev.tsv").read_bytes()))
    (glue / "dev.tsv").unlink()
    assert make_task("sst-2", glue).path("dev") == glue / "dev.tsv.gz"


def test_data_dir_and_split_kind_checked(tmp_path):
    not_a_folder = write(tmp_path / "file", "x")
    with pytest.raises(TaskError, match="--data-dir .*file is a file"):
        make_task("sst-2", not_a_folder).path("train")
    with pytest.raises(TaskError, match="--data-dir .*nowhere does not exist"):
        make_task("sst-2", tmp_path / "nowhere").path("train")
    race = write_race(tmp_path / "race")
    with pytest.raises(TaskError, match="race: the train data .*train.tsv is not a folder"):
        make_task("race", files={"train": write(tmp_path / "train.tsv", "x")}).path("train")
    assert make_task("race", race).path("train") == race / "train"


# ---- SQuAD JSON -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    ({"data": {"title": "t"}}, ":data: data must be a list, found an object of 1 entries"),
    ({"data": ["an article"]}, r":data\[0\]: an article must be an object, found \"an article\""),
    ({"data": []}, ": holds no questions"),
    ([1, 2], ": no 'data' list; not a SQuAD file"),
    (squad(context=""), r":data\[0\].paragraphs\[0\].context: the context is empty"),
    (squad(context=7), r":data\[0\].paragraphs\[0\].context: the context must be a string, found 7"),
    (squad(qas=[{"id": "q", "question": "q", "answers": {"text": "x", "answer_start": 0}}]),
     r":data\[0\].paragraphs\[0\].qas\[0\].answers: answers must be a list, found an object"),
    (squad(qas=[{"id": "q", "question": "q", "answers": [{"text": "cat", "answer_start": "4"}]}]),
     r":data\[0\].paragraphs\[0\].qas\[0\].answers\[0\].answer_start: answer_start must be an integer, found \"4\""),
    (squad(qas=[{"id": "q", "question": "q", "answers": [{"text": "cat", "answer_start": True}]}]),
     r":data\[0\].paragraphs\[0\].qas\[0\].answers\[0\].answer_start: answer_start must be an integer, found true"),
    (squad(qas=[{"id": "q", "question": "q", "answers": [{"text": "cow", "answer_start": 4}]}]),
     r":data\[0\].paragraphs\[0\].qas\[0\].answers\[0\]: question 'q': the answer text \"cow\" does not occur in the context"),
    ({"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}, r":data\[0\].paragraphs\[0\]: missing key 'context'"),
    (squad(qas=[{"question": "q"}]), r":data\[0\].paragraphs\[0\].qas\[0\]: missing key 'id'"),
    ("[" * 100000, ": JSON nested too deeply"),
    ('{"data": [}', r":1:11: invalid JSON \(Expecting value\)"),
    ('{"version": "1.1",\n "data": [1,]}', r":2:13: invalid JSON"),
])
def test_squad_bad_files(tmp_path, content, message):
    path = write(tmp_path / "dev.json", content)
    with pytest.raises(DataError, match=f"dev.json{message}"):
        read_squad(path)


def test_squad_non_utf8(tmp_path):
    path = write(tmp_path / "dev.json", json.dumps(squad()).encode().replace(b"mat", b"m\xff"))
    with pytest.raises(DataError, match="dev.json:1: not UTF-8 text"):
        read_squad(path)


def test_squad_answer_start_moved_to_nearest_occurrence_and_counted(tmp_path, capsys):
    the_mat = [m for m in range(len(CONTEXT)) if CONTEXT.startswith("the", m)]
    qas = [{"id": "right", "question": "q", "answers": [{"text": "on the mat", "answer_start": 12}]},
           {"id": "off", "question": "q", "answers": [{"text": "on the mat", "answer_start": 10}]},
           {"id": "outside", "question": "q", "answers": [{"text": "the", "answer_start": 10 ** 6}]},
           {"id": "near", "question": "q", "answers": [{"text": "the", "answer_start": the_mat[2] + 1}]}]
    examples = read_squad(write(tmp_path / "train.json", squad(qas=qas)))
    starts = [example.answers[0].start for example in examples]
    assert starts == [12, 12, the_mat[-1], the_mat[2]]
    assert all(CONTEXT[a.start:a.start + len(a.text)] == a.text for e in examples for a in e.answers)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"note: {tmp_path / 'train.json'}: 3 answer_start values did not point at their answer text" in err
    read_squad(write(tmp_path / "ok.json", squad()))
    assert capsys.readouterr().err == ""  # no note when every answer_start is right


# ---- RACE and BoolQ ---------------------------------------------------------------------------------------------

RACE = {"id": "1.txt", "article": "A cat.", "questions": ["Who?"], "options": [["a", "b", "c", "d"]], "answers": ["A"]}


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(answers=["AB"]), ": question 1: answer 'AB' is not one of"),
    (lambda r: r.update(answers=[""]), ": question 1: answer '' is not one of"),
    (lambda r: r.update(answers=[["A"]]), r": question 1: answer \['A'\] is not one of"),
    (lambda r: r.update(options=[["a", "b", 3, "d"]]), r":options\[0\]\[2\]: an option must be a string, found 3"),
    (lambda r: r.update(questions="Who?"), ":questions: questions must be a list"),
    (lambda r: r.update(article=None), ":article: the article must be a string, found null"),
    (lambda r: r.update(questions=[], options=[], answers=[]), ": holds no questions"),
])
def test_race_bad_files(tmp_path, change, message):
    record = json.loads(json.dumps(RACE))
    change(record)
    with pytest.raises(DataError, match=f"1.txt{message}"):
        read_race_file(write(tmp_path / "1.txt", record))


def test_race_not_an_object_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="1.txt: not a RACE article file .*found a list"):
        read_race_file(write(tmp_path / "1.txt", [RACE]))
    for level in ("middle", "high"):
        (tmp_path / "RACE" / "dev" / level).mkdir(parents=True)
    with pytest.raises(DataError, match="dev: holds no RACE article files"):
        read_race(tmp_path / "RACE", "dev")
    (tmp_path / "RACE" / "dev" / "high").rmdir()
    with pytest.raises(DataError, match="high: no such RACE folder"):
        read_race(tmp_path / "RACE", "dev")


@pytest.mark.parametrize("lines, message", [
    (['["question", "passage"]'], ":1: a BoolQ record must be an object, found a list"),
    (['{"question": "q", "passage": "p", "label": 1}'], ":1: label must be true or false, found 1"),
    (['{"question": "q", "passage": "p", "label": true, "answer": false}'], ":1: 'answer' and 'label' disagree"),
    (['{"question": "q", "passage": "p", "answer": true}', '{"question": "q", "passage": "p"}'],
     ":2: some records have an answer and some do not"),
    (["", "  "], ": holds no records"),
    (['{"question": "q", "passage": "p"}', '{"question": "q", "passage": "p"'], r":2: invalid JSON"),
])
def test_boolq_bad_files(tmp_path, lines, message):
    with pytest.raises(DataError, match=f"train.jsonl{message}"):
        read_boolq(write(tmp_path / "train.jsonl", "\n".join(lines) + "\n"))


def test_boolq_superglue_label_key(tmp_path):
    lines = [{"question": "q", "passage": "p", "idx": 0, "label": True},
             {"question": "q", "passage": "p", "idx": 1, "label": False, "answer": False}]
    examples = read_boolq(write(tmp_path / "val.jsonl", "".join(json.dumps(line) + "\n" for line in lines)))
    assert [e.label for e in examples] == ["True", "False"]


def test_every_reader_refuses_folders_pipes_and_devices(tmp_path):
    os.mkfifo(tmp_path / "pipe")  # reading it would block for ever
    for read in (lambda p: read_glue_file(p, "sst-2"), read_boolq, read_squad, read_race_file):
        with pytest.raises(DataError, match="is a folder, not a data file"):
            read(tmp_path)
        for special in (tmp_path / "pipe", "/dev/zero"):
            with pytest.raises(DataError, match=f"{special}: is not a regular file"):
                read(special)
        with pytest.raises(DataError, match="missing.tsv: cannot be read"):
            read(tmp_path / "missing.tsv")


def test_written_fixtures_still_read(tmp_path):
    """The tiny task files the CLI tests write read without a note or error."""
    assert len(read_boolq(write_boolq(tmp_path / "b") / "train.jsonl")) == 16
    assert len(read_race(write_race(tmp_path / "r"), "dev")) == 8
