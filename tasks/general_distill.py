"""`python -m tasks distill --general`: TinyBERT's general (pre-training) distillation (Jiao et al. 2020,
general_distill.py of the seed) on a plain-text corpus.

The corpus is the seed's: one sentence or paragraph per line (an empty line is an error naming it), tokenised with
the teacher's tokenizer and concatenated into blocks of --max-seq-length tokens, as the masked-LM task groups its
text (tasks/data/text.py), or one row per line with --line-by-line. There are no labels and no task head: the
student (a TinyBERT preset, fresh numpy init, or a TinyBERT folder) learns the teacher's intermediate layers alone,
with the loss of `--intermediate` (tasks/distill.py: intermediate_loss; attention scores and hidden states through
fit_dense, embeddings included, layer mapping k = teacher layers / student layers), the teacher running beside the
student in the same framework. The text is read as it is, no token masked: as the seed's second General TinyBERT
(2019/11/18, "no [MASK] corpus"); its first one read pregenerate_training_data.py's masked-LM instances.

The student is saved as a TinyBERT base model (TinyBertModel: the body and fit_dense) with the teacher's tokenizer
files, so the task stages read it without --tokenizer: `tasks distill --intermediate` on the (augmented) task data,
then the prediction layer (`tasks distill` with its soft loss), or `tasks finetune`. A validation text
(--validation-file, or validation.txt / dev.txt in --data-dir) reports the mean intermediate loss over its rows.
"""
from __future__ import annotations

from backends import framework
from tasks.data.text import read_corpus, text_features
from tasks.distill import DistillJob, check_tinybert_student, intermediate_loss
from tasks.train import step_module
from tasks.train.loop import model_arrays, num_rows, take
from tasks.train.model import model_family_and_config
from tasks.train.task import Options, Split, Task, TaskError

GENERAL = "--general"
METRIC = "intermediate_loss"


class CorpusTask(Task):
    """A general-distillation corpus: train.txt and validation.txt (dev.txt) in --data-dir, or --train-file and
    --validation-file; the TinyBERT base model's inputs, no labels."""

    name = "general distillation"
    head = "base"  # no task head: the body and fit_dense
    fine_tunes = False  # the student is pre-trained, for any task
    loss = None  # intermediate_loss, against the teacher beside the student
    main_metric = METRIC
    greater_is_better = False
    num_labels = None
    split_files = {"train": ["train.txt"], "dev": ["validation.txt", "dev.txt"], "test": []}

    def path(self, split):
        if split == "test":
            raise TaskError(f"{GENERAL}: nothing to predict; score a text with --validation-file")
        return super().path(split)

    def load(self, split, tokenizer, limit=None, inputs=None):
        o = self.options
        path = self.path(split)
        lines = read_corpus(path)
        if o.line_by_line:
            lines = lines[:limit]  # one row per line: the first `limit` lines
        features = text_features(lines, tokenizer, o.max_seq_length, o.line_by_line, False, path, inputs)
        features.pop("maskable")  # what the masked LM may mask: nothing is masked here
        features = {name: array[:limit] for name, array in features.items()}  # grouped: the first `limit` blocks
        return Split(features, list(range(num_rows(features))))

    def has_labels(self, split):
        return True  # the intermediate losses need none: every split trains and scores


class GeneralDistillJob(DistillJob):
    """DistillJob with the corpus for a task and TinyBERT's intermediate losses alone; its evaluation is the mean
    intermediate loss over the validation rows."""

    intermediate_option = GENERAL

    def __init__(self, args):
        if args.task is not None:
            raise TaskError(f"{GENERAL} distills the pre-trained body on plain text, with no task head: leave out "
                            f"--task {args.task} (the task stages are --intermediate, then the prediction layer)")
        if args.do_predict:
            raise TaskError(f"{GENERAL}: nothing to predict (no task head); leave out --do-predict")
        # before the student loads: a family without a base model would otherwise fail on its head
        check_tinybert_student(GENERAL, args.student, model_family_and_config(args.student)[0])
        args.do_train, args.intermediate = True, True  # training is the command; the losses are TinyBERT's
        args.do_eval = args.do_eval or args.validation_file is not None
        super().__init__(args)

    def make_task(self):
        a = self.args
        options = Options(max_seq_length=a.max_seq_length or Options.max_seq_length, line_by_line=a.line_by_line)
        return CorpusTask(a.data_dir, self.split_files(), options)

    def teacher_missing(self):
        """The pooler aside: a masked-LM teacher (BertForMaskedLM) has none, and no intermediate loss reads it."""
        return [name for name in self.teacher.fresh if "pooler." not in name]

    def evaluate(self, runner, split_name, prefix=None):
        """{intermediate_loss} over the split's rows (the mean of each batch's loss weighted by its rows: every
        row has the same shape), in eval mode; with a prefix, named prefix_intermediate_loss, prefix_samples. No
        prediction files."""
        ops, to_numpy = step_module(self.args.backend), framework(self.args.backend).to_numpy
        teacher, inputs = self.teacher_beside(), model_arrays(runner, self.splits[split_name].inputs)
        rows, total = num_rows(inputs), 0.0
        for start in range(0, rows, self.eval_batch_size):
            batch = take(inputs, slice(start, start + self.eval_batch_size))
            loss = intermediate_loss(ops, runner.outputs(batch), {"teacher": teacher.outputs(batch)})
            total += float(to_numpy(loss)) * num_rows(batch)
        metrics = {METRIC: total / rows}
        if prefix is None:
            return metrics
        return {f"{prefix}_{METRIC}": metrics[METRIC], f"{prefix}_samples": rows}
