"""The finetune and evaluate commands (tasks/distill.py extends them): every check a run needs happens in
`Job.__init__`, before any framework is imported; `Job.run()` builds the backend's Runner and works."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from backends import family, presets
from backends.checkpoints.adapters import is_adapter_folder, read_adapter_folder
from backends._fw.parallel import DEFAULT_TIMEOUT, layout, process_group
from backends._fw.amp import check_autocast
from backends.errors import BadInput
from tasks.data.features import load_tokenizer
from tasks.data.split_pair import PartLayout, reads_split_pair

from . import runner_class
from .adapters import AdapterSetup, describe_trainable
from .loop import Trainer, TrainArgs, check_resume_state, latest_checkpoint, num_rows, schedule
from .losses import LOSSES
from .model import attach_adapter, load_model, refuse_adapter_folder, save_model, split_overrides
from .task import TRAINING_DATA_OPTIONS, Options, TaskError, make_task

EVAL_DIR = "eval"  # dev-split prediction files go here; the test split's (submissions) into the output folder
TRAIN_KEYS = ("epochs", "max_steps", "learning_rate", "batch_size", "grad_accum", "warmup_ratio", "weight_decay",
              "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "eval_steps", "save_steps",
              "logging_steps", "seed", "skip_nonfinite_loss")


def log(message: str) -> None:
    print(message, file=sys.stderr)


def few(names) -> str:
    return ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")


def check_output_dir(folder: Path) -> None:
    """TaskError unless `folder` is a folder, or can be made one, that this process can write into.

    Checked before a model loads: a file in the way, or a read-only place, would fail only after training.
    The probe is a temporary folder made and removed in the nearest existing ancestor (os.access says yes
    to root even on read-only file systems).
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == folder else f"lies under the file {existing}"
        raise TaskError(f"--output-dir {folder} {what}; give a folder")
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".write-probe-").cleanup()
    except OSError as exc:
        raise TaskError(f"--output-dir {folder}: cannot write in {existing} ({exc.strerror or exc})") from None


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


class Job:
    """One finetune or evaluate invocation: options checked, data read and featurised, model prepared."""

    model_option = "model"

    def __init__(self, args):
        self.args = args
        self.layout = layout(args.backend)  # data-parallel: this process's rank among its launcher's processes
        training = args.command != "evaluate"
        self.do_train = training and args.do_train
        self.do_eval = args.do_eval if training else True
        self.do_predict = args.do_predict
        if not (self.do_train or self.do_eval or self.do_predict):
            raise TaskError("nothing to do: give --do-train, --do-eval and/or --do-predict")
        if not getattr(args, "ddp_timeout", 1) > 0:
            raise TaskError(f"--ddp-timeout must be a positive number of seconds, not {args.ddp_timeout}")
        for option in ("max_train_samples", "max_eval_samples", "max_predict_samples", "max_seq_length"):
            value = getattr(args, option, None)
            if value is not None and value < 1:  # 0 is a value, not "unset"
                raise TaskError(f"--{option.replace('_', '-')} must be positive, not {value}")
        check_autocast(args.backend, args.device, args.dtype, args.bf16, getattr(args, "fp16", False))
        if getattr(args, "tf_compile", "eager") != "eager" and args.backend != "tf":
            raise TaskError(f"--tf-compile {args.tf_compile} compiles the TensorFlow step: it needs --backend tf, "
                            f"not {args.backend}")
        self.task = self.make_task()
        wanted = [split for split, asked in (("train", self.do_train), ("dev", self.do_eval),
                                             ("test", self.do_predict)) if asked]
        for split in wanted:
            self.task.path(split)  # a missing file fails here, before anything is read
        self.output_dir = Path(args.output_dir) if args.output_dir else None
        if self.output_dir is not None:
            check_output_dir(self.output_dir)
        self.resume = self.resume_checkpoint() if training else None
        if training and self.resume is None and self.output_dir.is_dir() and any(self.output_dir.iterdir()) \
                and not args.overwrite_output_dir:
            raise TaskError(f"output folder {self.output_dir} is not empty; use --overwrite-output-dir or --resume")
        adapter, stored = self.adapter_options()
        refuse_adapter_folder(getattr(args, self.model_option))  # before its (absent) tokenizer is looked for
        self.tokenizer = self.load_tokenizer()
        self.source = load_model(getattr(args, self.model_option), self.task.head, self.task.num_labels,
                                 split_overrides(args), args.seed, adapter=adapter)
        if adapter is not None:
            self.source = attach_adapter(self.source, adapter, stored, getattr(args, self.model_option))
        limits = {"train": getattr(args, "max_train_samples", None), "dev": args.max_eval_samples,
                  "test": args.max_predict_samples}
        self.inputs = family(self.source.family).model_inputs(self.source.config, self.task.head)
        self.set_question_part(self.source.config)
        self.check_fits(self.source.config)
        try:  # the inputs the model declares (a two-tower model: each sentence on its own)
            self.splits = {split: self.task.load(split, self.tokenizer, limits[split], self.inputs) for split in wanted}
        except BadInput:  # the readers' DataError names the file and line of a bad record
            raise
        except (ValueError, KeyError) as exc:  # features: labels outside the task's label list
            raise TaskError(str(exc).strip("'\"")) from None
        for split, purpose in (("train", "train on"), ("dev", "score")):
            if split in self.splits and not self.task.has_labels(self.splits[split]):
                raise TaskError(f"{self.task.path(split)}: the {split} split has no labels to {purpose} (a test "
                                "file? a header without the label column?)")
        if self.resume is not None:  # a damaged state, or a step with nothing left to train, fails here
            rows = num_rows(self.splits["train"].inputs)
            check_resume_state(self.resume, schedule(rows, self.train_args())[1], self.train_args(), rows,
                               self.objective_settings())
        self.eval_batch_size = args.eval_batch_size or args.batch_size

    def fine_tuned_task(self) -> str | None:
        """The task a trained model's config.json records (`finetuning_task`), or None for a pre-training one."""
        return self.task.name if self.task.fine_tunes else None

    def objective_settings(self) -> dict:
        """What a resumed run must share with its checkpoint beyond the training arguments: the task and the options
        that shape its training rows (a checkpoint records them; --resume refuses other values, naming them)."""
        return {"task": self.task.name, **{name: getattr(self.task.options, name) for name in TRAINING_DATA_OPTIONS}}

    def make_task(self):
        a = self.args
        return make_task(a.task, a.data_dir, self.split_files(), self.options())

    def split_files(self) -> dict:
        a = self.args
        return {"train": a.train_file, "dev": a.validation_file, "test": a.test_file}

    def options(self) -> Options:
        a = self.args
        squad = a.task.lower() in ("squad", "squad_v2")
        return Options(max_seq_length=a.max_seq_length or (384 if squad else 128), doc_stride=a.doc_stride,
                       max_query_length=a.max_query_length, max_answer_length=a.max_answer_length, n_best=a.n_best,
                       version_2_with_negative=a.version_2_with_negative,
                       null_score_diff_threshold=a.null_score_diff_threshold, mlm_probability=a.mlm_probability,
                       line_by_line=a.line_by_line, whole_word_masking=a.whole_word_masking)

    def adapter_options(self):
        """(the adapter on the model, the adapter folder it comes from, if any): --train-adapter needs
        --adapter-config or --load-adapter; the config string, the name and the folder are checked before any
        data is read."""
        a = self.args
        train, text = getattr(a, "train_adapter", False), getattr(a, "adapter_config", None)
        load_from = Path(a.load_adapter) if getattr(a, "load_adapter", None) else None
        if load_from is not None and not is_adapter_folder(load_from):
            raise TaskError(f"--load-adapter {load_from}: not an adapter folder (no adapter_config.json)")
        if train and text is None and load_from is None:
            raise TaskError("--train-adapter needs --adapter-config (seq_bn, double_seq_bn, par_bn, lora, e.g. "
                            "seq_bn[reduction_factor=8]) or --load-adapter DIR")
        if not train and text is not None:
            raise TaskError("--adapter-config is for --train-adapter")
        if not train and load_from is not None and getattr(a, "do_train", False):
            raise TaskError("--load-adapter with --do-train trains the adapter: give --train-adapter too")
        if load_from is not None:
            from .model import model_family_and_config

            # a folder the adapters library saved keeps no model config: the base model (--model) gives it
            stored = read_adapter_folder(load_from, base=lambda: model_family_and_config(getattr(a, self.model_option)))
            if text is not None and text != stored.adapter:
                raise TaskError(f"--adapter-config {text} differs from the adapter in {load_from} ({stored.adapter}); "
                                "leave --adapter-config out to continue that one")
            return AdapterSetup(stored.adapter, stored.name), stored
        if text is None:
            return None, None
        from backends.adapters import parse_adapter_config
        from backends.adapters.config import check_name

        parse_adapter_config(text)  # an unknown method or key: ConfigError naming it
        return AdapterSetup(text, check_name(a.adapter_name)), None

    def resume_checkpoint(self) -> Path | None:
        if not self.args.resume:
            return None
        checkpoint = latest_checkpoint(self.args.output_dir) if self.args.resume == "latest" else Path(self.args.resume)
        if checkpoint is None or not checkpoint.is_dir():
            where = f"in {self.args.output_dir}" if checkpoint is None else str(checkpoint)
            raise TaskError(f"--resume: no checkpoint {where}")
        if not self.do_train:
            raise TaskError("--resume continues training: give --do-train")
        return checkpoint

    def tokenizer_folder(self):
        model = getattr(self.args, self.model_option)
        return self.args.tokenizer or (None if model in presets() else model)

    def load_tokenizer(self):
        folder = self.tokenizer_folder()
        if folder is None:
            raise TaskError(f"--{self.model_option} {getattr(self.args, self.model_option)} is a preset: "
                            "give --tokenizer FOLDER")
        try:
            return load_tokenizer(folder)
        except FileNotFoundError as exc:
            raise TaskError(str(exc)) from None

    def set_question_part(self, config) -> None:
        """A model that reads question and passage parts (tasks/data/split_pair.py) gets them; --max-query-length
        (question tokens, default 64) then defaults to what its max_question_length holds beside the question's
        special tokens."""
        options = self.task.options
        options.split_pair = reads_split_pair(config, self.inputs)
        if options.max_query_length is None:
            options.max_query_length = 64
            if options.split_pair:
                specials = PartLayout.from_tokenizer(self.tokenizer).question_specials
                options.max_query_length = config.max_question_length - specials
        if options.max_query_length < 1:
            raise TaskError("--max-query-length must be positive")

    def check_fits(self, config) -> None:
        """The tokenizer's ids and the sequence length must fit the model's tables."""
        vocab_size = getattr(config, "vocab_size", None)
        if vocab_size is not None and len(self.tokenizer) > vocab_size:
            raise TaskError(f"the tokenizer has {len(self.tokenizer)} tokens, the model's vocab_size is {vocab_size}")
        options = self.task.options
        if options.split_pair:  # question positions 0..Lq-1; passage positions from max_question_length on
            specials = PartLayout.from_tokenizer(self.tokenizer).question_specials
            longest = options.max_query_length + specials
            if longest > config.max_question_length:
                raise TaskError(f"--max-query-length {options.max_query_length}: a question part of up to {longest} "
                                f"tokens ({specials} special) exceeds the model's max_question_length "
                                f"{config.max_question_length}")
            positions = config.max_positions  # RoBERTa's positions start at pad_token_id + 1
            if config.max_question_length + options.max_seq_length > positions:
                raise TaskError(f"--max-seq-length {options.max_seq_length}: the passage part's positions start at "
                                f"the model's max_question_length {config.max_question_length} and would pass its "
                                f"{positions} positions (max_position_embeddings)")
            return
        positions = getattr(config, "max_position_embeddings", None)
        if positions is not None and self.task.options.max_seq_length > positions:
            raise TaskError(f"--max-seq-length {self.task.options.max_seq_length} exceeds the model's "
                            f"max_position_embeddings {positions}")

    # ---- running ----

    def make_runner(self):
        a = self.args
        runner = runner_class(a.backend)(self.source.family, self.source.config, self.source.head, self.source.params,
                                         dtype=a.dtype, device=a.device, bf16=a.bf16, fp16=getattr(a, "fp16", False),
                                         seed=a.seed,
                                         dropout_masks=getattr(a, "dropout_masks", "shared"),  # evaluate: no option
                                         trainable=self.source.trainable)
        if getattr(a, "tf_compile", "eager") != "eager":  # --backend tf (checked above); refused where not exact
            runner.set_compile(a.tf_compile, train=self.do_train)
        return runner

    def run(self) -> dict:
        """Train, evaluate and predict as asked; write the metrics JSON files; return all metrics.

        Data-parallel, every process runs this (joining its framework's process group first: TensorFlow's
        strategy must exist before any op runs); only the main process writes, and the others wait for it
        at the end, so that a failed write fails every process."""
        a = self.args
        self.group = process_group(a.backend, self.layout, getattr(a, "ddp_timeout", DEFAULT_TIMEOUT), a.device)
        try:
            results = self.run_in_group()
            self.group.barrier()
        finally:  # also when another process died: a group left open is torn down during interpreter exit, where
            # torch's gloo threads, still holding the dead peer's connection, abort now and then (SIGABRT, not exit 2)
            self.group.close()
        return results

    def run_in_group(self) -> dict:
        if (self.source.fresh or self.source.unused) and self.layout.main:
            log(f"note: {len(self.source.fresh)} parameters initialised fresh ({few(self.source.fresh)}); "
                f"{len(self.source.unused)} stored tensors unused ({few(self.source.unused)})")
        if self.source.trainable is not None and self.do_train:
            log(f"adapter {self.source.adapter_name} ({self.source.config.adapter}), base model frozen: "
                + describe_trainable(self.source.params, self.source.trainable))
        runner = self.make_runner()
        if self.output_dir is not None and self.layout.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        results = {}
        if self.do_train:
            results.update(self.train(runner))
        if self.do_eval:
            results.update(self.evaluate(runner, "dev", "eval"))
        if self.do_predict:
            results.update(self.evaluate(runner, "test", "predict"))
        if self.output_dir is not None and self.layout.main:
            for prefix in ("train", "eval", "predict"):
                part = {key: value for key, value in results.items() if key.startswith(prefix + "_")}
                if part:
                    write_json(self.output_dir / f"{prefix}_results.json", part)
            write_json(self.output_dir / "all_results.json", results)
        return results

    def objective(self, runner):
        """(loss_fn, prepare, train inputs) of training; distillation replaces it."""
        return LOSSES[self.task.loss], None, self.splits["train"].inputs

    def train_args(self) -> TrainArgs:
        a = self.args
        return TrainArgs(**{key: getattr(a, key) for key in TRAIN_KEYS}, progress=not a.no_progress and self.layout.main,
                         processes=self.layout.size)

    def train(self, runner) -> dict:
        train_args = self.train_args()
        loss_fn, prepare, inputs = self.objective(runner)
        trainer = Trainer(
            runner, train_args, inputs, loss_fn, self.output_dir,
            save_model=lambda folder: save_model(folder, self.source, runner.get_params(), self.tokenizer,
                                                 self.fine_tuned_task()),
            evaluate=(lambda: self.evaluate(runner, "dev")) if self.do_eval else None,
            main_metric=self.task.main_metric, prepare=prepare,
            load_weights=self.adapter_weights(runner) if self.source.adapter_name is not None else None,
            dynamic_inputs=self.task.dynamic_inputs(train_args.seed), greater_is_better=self.task.greater_is_better,
            group=self.group, objective=self.objective_settings())
        metrics = trainer.train(self.resume)
        if self.layout.main:
            save_model(self.output_dir, self.source, runner.get_params(), self.tokenizer, self.fine_tuned_task())
            write_json(self.output_dir / "trainer_state.json",
                       {"best_metric": trainer.state.best_metric, "best_step": trainer.state.best_step,
                        "log_history": trainer.state.log_history, "settings": trainer.run_settings()})
        return {**metrics, "train_samples": len(self.splits["train"].examples)}

    @staticmethod
    def adapter_weights(runner):
        """load_weights of a resumed adapter run: its checkpoints hold the adapter and head; the frozen base is
        the runner's own."""
        return lambda folder: {**runner.get_params(), **read_adapter_folder(folder).params}

    def evaluate(self, runner, split_name: str, prefix: str | None = None) -> dict:
        """Metrics of one split (when labelled). With a prefix (a final evaluation), the metrics get it
        and the prediction files are written: dev into OUTPUT_DIR/eval, test into OUTPUT_DIR."""
        split = self.splits[split_name]
        outputs = self.task.predict(runner, split, self.eval_batch_size,
                                    progress=not self.args.no_progress and self.layout.main, group=self.group)
        predictions = self.task.decode(split, outputs)
        metrics = self.task.score(split, predictions) if self.task.has_labels(split) else {}
        if prefix is None:
            return metrics
        if self.output_dir is not None and self.layout.main:
            folder = self.output_dir / EVAL_DIR if split_name == "dev" else self.output_dir
            folder.mkdir(parents=True, exist_ok=True)
            self.task.write(split, predictions, folder)
        samples = len(split.examples)
        return {**{f"{prefix}_{key}": value for key, value in metrics.items()}, f"{prefix}_samples": samples}
