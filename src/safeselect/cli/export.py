"""``safeselect export RUN --out DIR``: a run's fine-tuned model as merged safetensors weights + tokenizer.

The adapter in ``RUN/model`` is loaded onto its base, folded in, and saved as a plain
model folder that ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` loads with
no peft installed (the chat template travels with the tokenizer).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safeselect.errors import UserError
from safeselect.models.saved import export_merged, model_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's fine-tuned model as merged safetensors weights")
    p.add_argument("run_dir", metavar="RUN", help="a finished run folder (holding model/) or a saved model folder")
    p.add_argument("--out", required=True, help="folder to write the merged model into")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    src = Path(args.run_dir)
    if not src.is_dir():
        raise UserError(f"{src}: not a folder")
    if not (model_dir(src).is_dir() or (src / "adapter_config.json").exists() or (src / "config.json").exists()):
        raise UserError(f"{src}: no saved model (runs made before models were saved have none: rerun it)")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not (out / "config.json").exists():
        raise UserError(f"--out {out}: folder exists and is not a model folder; choose another")
    export_merged(src, out)
    print(f"merged model written to {out}/ (load with transformers.AutoModelForCausalLM.from_pretrained)")
    return 0
