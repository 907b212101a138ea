"""python -m tasks finetune | evaluate | distill | predict | augment: GLUE, SQuAD, RACE, BoolQ and masked-LM on torch,
paddle or tf.

Only the chosen framework is imported. Bad options, missing or malformed files give a one-line error and exit
2 before any work; a training run whose loss becomes NaN or Inf stops with a one-line error and exit 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from backends import FRAMEWORKS as BACKENDS  # the registry (framework-free: imports no framework)

DROPOUT_MODES = ("shared", "native", "device")  # backends._fw.dropout.MODES, repeated so that --help imports nothing
TF_COMPILE_MODES = ("eager", "function", "xla")  # backends._fw.tf.train.COMPILE_MODES, repeated likewise


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_task_arguments(parser, distill: bool = False) -> None:
    group = parser.add_argument_group("task and data")
    group.add_argument("--task", required=not distill,
                       help="a GLUE task (cola, sst-2, mrpc, sts-b, qqp, mnli, mnli-mm, qnli, rte, wnli), "
                            "squad, squad_v2, race, boolq, or mlm (masked language modelling on text files)"
                            + ("; none with --general" if distill else ""))
    group.add_argument("--data-dir", help="folder of the task's files (GLUE: the task folder or the GLUE root; "
                                          "SQuAD: train-v1.1.json/dev-v1.1.json; RACE: train|dev|test/{middle,high}; "
                                          "BoolQ: train.jsonl, dev.jsonl or val.jsonl, test.jsonl; mlm"
                                          + (" and --general" if distill else "") + ": train.txt, "
                                          "validation.txt or dev.txt; each file may also be gzipped, as NAME.gz)")
    group.add_argument("--train-file", help="train split file, instead of the one in --data-dir")
    group.add_argument("--validation-file", help="dev split file, instead of the one in --data-dir")
    group.add_argument("--test-file", help="test split file, instead of the one in --data-dir")
    group.add_argument("--max-seq-length", type=int,
                       help="tokens per sequence (default 384 for SQuAD, else 128); a DeFormer: tokens per passage "
                            "part, its special tokens included")
    group.add_argument("--doc-stride", type=int, default=128, help="SQuAD: tokens shared by consecutive windows")
    group.add_argument("--max-query-length", type=int,
                       help="question tokens kept, special tokens not counted (SQuAD; and the question part of a "
                            "DeFormer on every task: question with option on RACE). Default 64; a DeFormer: what "
                            "its max_question_length holds")
    group.add_argument("--max-answer-length", type=int, default=30, help="SQuAD: longest answer span in tokens")
    group.add_argument("--n-best", type=int, default=20, help="SQuAD: start and end candidates per window")
    group.add_argument("--version-2-with-negative", action="store_true",
                       help="SQuAD v2.0: questions may have no answer (same as --task squad_v2)")
    group.add_argument("--null-score-diff-threshold", type=float, default=0.0,
                       help="SQuAD v2.0: answer nothing when the null odds exceed this")
    group.add_argument("--max-eval-samples", type=int, help="evaluate on the first N dev examples")
    group.add_argument("--max-predict-samples", type=int, help="predict the first N test examples")
    group.add_argument("--mlm-probability", type=float, default=0.15,
                       help="mlm: share of the tokens masked (80%% [MASK], 10%% random token, 10%% unchanged; "
                            "default 0.15)")
    group.add_argument("--line-by-line", action="store_true",
                       help="mlm" + (" and --general" if distill else "") + ": each non-blank line is one example, "
                            "truncated to --max-seq-length (default: the text concatenated and cut into blocks of "
                            "--max-seq-length tokens)")
    group.add_argument("--whole-word-masking", action="store_true",
                       help="mlm: mask whole words (every piece of a chosen word)")


def add_model_arguments(parser, name: str = "--model", help_text: str = "a preset or a model folder") -> None:
    group = parser.add_argument_group("model and backend")
    group.add_argument(name, required=True, help=help_text)
    group.add_argument("--backend", required=True, choices=BACKENDS, help="framework to run in")
    group.add_argument("--tokenizer", help="tokenizer folder (default: the model folder)")
    group.add_argument("--config-overrides", metavar="KEY=VALUE,...",
                       help="change config values, e.g. hidden_dropout_prob=0,num_hidden_layers=4")
    deformer = parser.add_argument_group(
        "DeFormer (a BERT or RoBERTa model, or a deformer folder; the same as --config-overrides "
        "encoder2_layers=E2,assist_layers=A,encoder3_layers=E3; E2 + A + E3 must be the model's layers)")
    deformer.add_argument("--encoder2-layers", type=int, metavar="E2",
                          help="lower layers in which question and passage are encoded apart (default 0)")
    deformer.add_argument("--assist-layers", type=int, metavar="A",
                          help="layers in which the question also attends over the passage's states of the "
                               "layer, the passage still alone (default 0)")
    deformer.add_argument("--encoder3-layers", type=int, metavar="E3",
                          help="upper layers over question and passage jointly (default: the remaining layers)")
    group.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="where to run (default cpu)")
    group.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="parameter dtype")
    group.add_argument("--bf16", action="store_true",
                       help="bfloat16 autocast of a float32 model (torch on CPU or GPU, paddle on GPU; not tf)")
    group.add_argument("--tf-compile", choices=TF_COMPILE_MODES, default=TF_COMPILE_MODES[0],
                       help="--backend tf: eager (default) runs forward and backward op by op; function traces them "
                            "into one tf.function per batch shape; xla also compiles it with XLA. Training with "
                            "dropout compiles only with --dropout-masks device (the same masks as eager)")
    group.add_argument("--fp16", action="store_true",
                       help="float16 autocast with a dynamic loss scaler: an update whose gradients overflow is "
                            "skipped and the scale halved (torch on CPU or GPU, paddle on GPU; not tf)")
    group.add_argument("--eval-batch-size", type=int, help="batch size of evaluation (default: --batch-size)")
    group.add_argument("--seed", type=int, default=42,
                       help="seed of the batch order, dropout and any freshly initialised head (default 42)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    group.add_argument("--ddp-timeout", type=float, default=1800.0, metavar="SECONDS",
                       help="data-parallel runs (torchrun, paddle.distributed.launch, TF_CONFIG): how long a process "
                            "waits for the others at a collective before it stops with an error (default 1800)")


def add_training_arguments(parser) -> None:
    group = parser.add_argument_group("training (transformers' run_glue.py / run_qa.py names)")
    group.add_argument("--output-dir", required=True, help="where the model, checkpoints, metrics and predictions go")
    group.add_argument("--overwrite-output-dir", action="store_true", help="write into a non-empty output folder")
    group.add_argument("--do-train", action="store_true", help="train on the train split")
    group.add_argument("--do-eval", action="store_true", help="evaluate on the dev split (metrics, eval/ predictions)")
    group.add_argument("--do-predict", action="store_true", help="write test-split predictions (submission files)")
    group.add_argument("--epochs", type=int, default=3, help="passes over the train split (default 3)")
    group.add_argument("--max-steps", type=int, default=0, help="> 0: this many updates instead of --epochs")
    group.add_argument("--learning-rate", type=float, default=5e-5, help="peak AdamW learning rate (default 5e-5)")
    group.add_argument("--batch-size", type=int, default=32,
                       help="examples per micro-batch and process (default 32); data-parallel, an update takes "
                            "--batch-size x processes x --grad-accum examples")
    group.add_argument("--grad-accum", type=int, default=1, help="micro-batches per update (default 1)")
    group.add_argument("--warmup-ratio", type=float, default=0.0, help="fraction of updates of linear warmup")
    group.add_argument("--weight-decay", type=float, default=0.0,
                       help="decoupled AdamW weight decay (never on biases and LayerNorm weights)")
    group.add_argument("--adam-beta1", type=float, default=0.9)
    group.add_argument("--adam-beta2", type=float, default=0.999)
    group.add_argument("--adam-epsilon", type=float, default=1e-8)
    group.add_argument("--max-grad-norm", type=float, default=1.0, help="global-norm clipping; <= 0: none")
    group.add_argument("--eval-steps", type=int, default=0,
                       help="> 0: evaluate every N updates and keep the best model in OUTPUT_DIR/best")
    group.add_argument("--save-steps", type=int, default=0, help="> 0: resumable checkpoint every N updates")
    group.add_argument("--logging-steps", type=int, default=50, help="updates per progress-bar loss average")
    group.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                       help="continue from a checkpoint folder (default: the latest in --output-dir)")
    group.add_argument("--max-train-samples", type=int, help="train on the first N examples")
    group.add_argument("--skip-nonfinite-loss", action="store_true",
                       help="skip (and count, as train_skipped_updates) an update whose loss is NaN or Inf, "
                            "instead of stopping the run with an error (exit 1)")
    group.add_argument("--dropout-masks", choices=DROPOUT_MODES, default=DROPOUT_MODES[0],
                       help="shared (default): dropout masks drawn in numpy, the same in every backend, so the "
                       "backend does not change the result; device: the same in every backend too, a counter-based "
                       "hash computed on the model's device (no host-to-device copy per layer: for GPUs); native: "
                       "each framework's own dropout RNG")


def add_adapter_arguments(parser, training: bool) -> None:
    group = parser.add_argument_group("adapters (the `adapters` library's names and layout)")
    if training:
        group.add_argument("--train-adapter", action="store_true",
                           help="freeze the base model; train an adapter and the task head, and save only those (the "
                                "`adapters` library's layout: adapter_config.json, head_config.json, "
                                "adapter.safetensors, model_head.safetensors)")
        group.add_argument("--adapter-config", metavar="CONFIG",
                           help="the adapter to add, as the `adapters` library writes it: seq_bn, double_seq_bn, par_bn, "
                                "lora, with overrides such as seq_bn[reduction_factor=8] or lora[r=4,alpha=16]")
        group.add_argument("--adapter-name", default="adapter",
                           help="the adapter's name in its parameter names (default: adapter)")
    group.add_argument("--load-adapter", metavar="DIR",
                       help="an adapter-only folder (finetune --train-adapter writes one) to put on --model"
                            + (": training continues from it" if training else ""))


def add_distill_arguments(parser) -> None:
    group = parser.add_argument_group("distillation")
    group.add_argument("--teacher", "--teacher-model-path", dest="teacher", required=True,
                       help="a fine-tuned model folder (python -m tasks finetune), of any backend; a DeFormer "
                            "student's teacher is its base family's model (run on the joined question and passage) "
                            "or a deformer folder")
    group.add_argument("--teacher-backend", choices=BACKENDS,
                       help="framework of the teacher's logits pass (default --backend; another one runs in its "
                            "own process)")
    group.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the soft loss")
    group.add_argument("--alpha", type=float, default=0.5,
                       help="weight of the soft loss; the hard-label loss gets 1 - alpha")
    group.add_argument("--soft-loss", choices=("ce", "mse"), default="ce",
                       help="ce: cross-entropy with the teacher's softened distribution (Hinton et al.); "
                            "mse: squared error of the logits (Tang et al.'s BiLSTM)")
    group.add_argument("--hidden-mse-weight", type=float, default=0.0, metavar="W",
                       help="> 0: add W times the mean squared error of the student's last hidden states against the "
                            "teacher's, over the real tokens of the joint sequence (the DeFormer's \"teachhs\"; the "
                            "teacher's width must be the student's). The soft loss of the teacher's logits (span "
                            "start and end logits for SQuAD, \"teachsl\") keeps its weight alpha")
    group.add_argument("--intermediate", action="store_true",
                       help="TinyBERT's intermediate losses (embeddings, hidden states via fit_dense, attention "
                            "scores) instead of the prediction loss; needs a TinyBERT student")
    group.add_argument("--general", action="store_true",
                       help="TinyBERT's general distillation (no --task, no labels, no task head; --do-train "
                            "implied): the intermediate losses of --intermediate on a plain-text corpus, "
                            "--train-file CORPUS (one sentence or paragraph per line, no empty lines, e.g. `python -m "
                            "tasks.data.text squad-contexts`), tokenised by the teacher's tokenizer into blocks of "
                            "--max-seq-length tokens (or --line-by-line). --teacher: a BERT-like folder (pre-trained or "
                            "fine-tuned) of the student's vocab_size and with a multiple of its layers; --student: a "
                            "TinyBERT preset (e.g. tinybert-4l-312d; --config-overrides fit_size=<teacher hidden "
                            "size>) or folder. Saves a TinyBERT base model with fit_dense and the teacher's tokenizer, "
                            "which --intermediate and then the prediction-layer distillation (the seed's "
                            "task_distill.py stages) or finetune take as --student/--model. --validation-file: also "
                            "report its mean intermediate loss (eval_intermediate_loss)")


def add_predict_arguments(parser) -> None:
    group = parser.add_argument_group("model and backend")
    group.add_argument("--model", required=True, help="a DeFormer QA model folder (python -m tasks finetune)")
    group.add_argument("--backend", required=True, choices=BACKENDS, help="framework to run in")
    group.add_argument("--tokenizer", help="tokenizer folder (default: the model folder)")
    group.add_argument("--config-overrides", metavar="KEY=VALUE,...", help="change config values")
    group.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="where to run (default cpu)")
    group.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="parameter dtype")
    group.add_argument("--batch-size", type=int, default=32, help="question-window rows per forward pass")
    group.add_argument("--seed", type=int, default=42,
                       help="seed of the numpy init of what the folder lacks (a fresh QA head; default 42, as "
                            "evaluate)")
    group = parser.add_argument_group("questions and answers")
    group.add_argument("--input", required=True,
                       help="SQuAD-format JSON or JSONL of {\"context\", \"question\", \"id\"} (may be gzipped)")
    group.add_argument("--output", required=True, help="predictions JSON file written here: {id: answer}")
    group.add_argument("--null-odds-output", help="also write each question's null odds (SQuAD v2.0's na-prob file)")
    group.add_argument("--max-seq-length", type=int,
                       help="tokens per passage window, its special tokens included (default: 384, or what the "
                            "model's positions leave after max_question_length)")
    group.add_argument("--doc-stride", type=int, default=128, help="tokens shared by consecutive passage windows")
    group.add_argument("--max-answer-length", type=int, default=30, help="longest answer span in tokens")
    group.add_argument("--n-best", type=int, default=20, help="start and end candidates per window")
    group.add_argument("--version-2-with-negative", action="store_true", help="SQuAD v2.0: questions may have no "
                                                                             "answer")
    group.add_argument("--null-score-diff-threshold", type=float, default=0.0,
                       help="SQuAD v2.0: answer nothing when the null odds exceed this")
    group = parser.add_argument_group("cached passages")
    group.add_argument("--cache-passages", action="store_true",
                       help="encode each passage once and answer its questions against its cached layer states")
    group.add_argument("--cache-dir", help="also keep the encoded passages as safetensors files in this folder "
                                           "(reused by later runs of the same model)")
    group.add_argument("--max-cache-mb", type=float, default=2048,
                       help="memory bound of the cached passages (least recently used dropped; default 2048)")


def add_augment_arguments(parser) -> None:
    group = parser.add_argument_group("task and data")
    group.add_argument("--task", required=True, help="a GLUE task (sst-2, cola, mrpc, ...)")
    group.add_argument("--data-dir", help="folder of the task's files (the task folder or the GLUE root)")
    group.add_argument("--train-file", help="train split file, instead of the one in --data-dir")
    group.add_argument("--max-train-samples", type=int, help="augment the first N examples")
    group.add_argument("--output-dir", required=True,
                       help="OUTPUT_DIR/train.tsv and OUTPUT_DIR/train.tsv.teacher-logits.safetensors are written here")
    group.add_argument("--overwrite-output-dir", action="store_true", help="replace an existing OUTPUT_DIR/train.tsv")
    group = parser.add_argument_group("augmentation")
    group.add_argument("--method", required=True, choices=("tang", "tinybert"),
                       help="tang: Tang et al. 2019 (per word: p_mask 0.1 the teacher's mask token; then p_ng 0.25 "
                            "the sample cut to an n-gram, n in 1..5); their POS-guided replacement (p_pos 0.1) is "
                            "NOT applied: no part-of-speech tagger installs from PyPI with its model (nltk's needs "
                            "a data download), so those words stay unchanged. tinybert: Jiao et al. 2020 (per word "
                            "with p_t 0.4: a one-piece word -> one of the masked LM's top 15 at its masked position; "
                            "a multi-piece word -> one of its 15 nearest whole words by cosine in the masked LM's "
                            "input embeddings, where the paper uses GloVe)")
    group.add_argument("--n-iter", type=int, default=20, help="samples drawn per example (default 20; duplicates "
                                                               "are dropped)")
    group.add_argument("--seed", type=int, default=42, help="seed of the draws (one generator per example)")
    group = parser.add_argument_group("teacher")
    group.add_argument("--teacher", required=True,
                       help="the fine-tuned model folder whose logits of every row are stored beside train.tsv")
    group.add_argument("--mlm-model",
                       help="tinybert: the masked-LM checkpoint (a *ForMaskedLM or *ForPreTraining folder) that "
                            "proposes replacements and whose input embeddings give the neighbours (default --teacher)")
    group.add_argument("--tokenizer", help="the teacher's tokenizer folder (default: --teacher)")
    group.add_argument("--backend", required=True, choices=BACKENDS, help="framework the teacher runs in")
    group.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="where to run (default cpu)")
    group.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="the teacher's dtype, and that of the stored logits")
    group.add_argument("--max-seq-length", type=int, default=128, help="tokens per row for the teacher (default 128)")
    group.add_argument("--batch-size", type=int, default=32, help="rows per teacher forward pass (default 32)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> Parser:
    parser = Parser(prog="python -m tasks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    finetune = sub.add_parser(
        "finetune", help="fine-tune a preset or model folder on a task",
        description="Fine-tune with AdamW (decoupled weight decay, none on biases and LayerNorm weights), linear "
                    "warmup and decay, global-norm clipping and gradient accumulation. The batch order, the learning "
                    "rate of each update and the dropout seeds are computed the same way for every backend. Writes "
                    "the model (safetensors, config.json, tokenizer: any backend loads it), train/eval/predict "
                    "metrics as JSON and the task's prediction files.")
    add_task_arguments(finetune)
    add_model_arguments(finetune)
    add_training_arguments(finetune)
    add_adapter_arguments(finetune, training=True)
    evaluate = sub.add_parser("evaluate", help="evaluate a saved model (from any backend) on a task",
                              description="Score a model folder on the dev split; with --do-predict also write the "
                                          "test-split prediction files.")
    add_task_arguments(evaluate)
    add_model_arguments(evaluate, help_text="a model folder (python -m tasks finetune writes one)")
    evaluate.add_argument("--output-dir", help="write eval_results.json and predictions here")
    evaluate.add_argument("--batch-size", type=int, default=32, help="examples per batch (default 32)")
    evaluate.add_argument("--do-predict", action="store_true", help="also write test-split predictions")
    add_adapter_arguments(evaluate, training=False)
    distill = sub.add_parser(
        "distill", help="distill a fine-tuned teacher into a smaller student",
        description="Train a student on the teacher's outputs: soft targets at a temperature mixed with the hard "
                    "labels (alpha), the BiLSTM's logit regression (Tang et al. 2019, --soft-loss mse), or TinyBERT's "
                    "intermediate-layer losses (--intermediate). TinyBERT's three stages: --general on a text corpus, "
                    "then --intermediate on the (augmented) task data, then the prediction layer (the default "
                    "loss). Options as finetune's.")
    add_task_arguments(distill, distill=True)
    add_model_arguments(distill, "--student", "the student: a preset or a model folder")
    add_training_arguments(distill)
    add_distill_arguments(distill)
    predict = sub.add_parser(
        "predict", help="answer questions with a DeFormer, each passage encoded once",
        description="Answer SQuAD-style questions with a DeFormer QA model. With --cache-passages each passage's "
                    "lower-layer states are computed once and every question on it reuses them (tasks/serve.py); "
                    "the answers equal the full model's.")
    add_predict_arguments(predict)
    augment = sub.add_parser(
        "augment", help="write an augmented transfer set and its teacher's logits",
        description="Augment a GLUE task's train split by Tang et al. 2019's or TinyBERT's rules and store the "
                    "teacher's logits of every row: OUTPUT_DIR/train.tsv (the originals first, then their augmented "
                    "rows, duplicates dropped) and OUTPUT_DIR/train.tsv.teacher-logits.safetensors, which `distill "
                    "--train-file OUTPUT_DIR/train.tsv` reads instead of running the teacher. Streamed; the same "
                    "command continues an interrupted run and writes the same bytes.")
    add_augment_arguments(augment)
    return parser


def one_framework_environment() -> None:
    """Set before transformers is imported: it would import torch (or TF) for the tokenizers alone.

    Only the command line does this: in a process that already uses transformers' models it would hide them.
    """
    for variable in ("USE_TORCH", "USE_TF", "USE_FLAX"):
        os.environ.setdefault(variable, "0")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a one-line usage error
        return exit_.code
    from backends._fw.parallel import CollectiveFailed
    from backends.errors import BadInput
    from tasks.train.loop import TrainingDiverged

    if args.command == "distill" and args.general:
        from tasks.general_distill import GeneralDistillJob as Job
    elif args.command == "distill":
        from tasks.distill import DistillJob as Job
    elif args.command == "predict":
        from tasks.serve import PredictJob as Job
    elif args.command == "augment":
        from tasks.augment import AugmentJob as Job
    else:
        from tasks.train.job import Job

    try:  # Job() checks options and files before a framework loads; run() checks a resumed checkpoint
        job = Job(args)
        results = job.run()
    except (BadInput, TrainingDiverged, CollectiveFailed) as exc:  # usage errors and a lost process exit 2; a
        # run that diverged exits 1
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    layout = getattr(job, "layout", None)  # `predict` runs in one process and has none
    if layout is None or layout.main:  # data-parallel: the other processes computed the same results
        print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    one_framework_environment()
    sys.exit(main())
