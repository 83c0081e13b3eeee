#!/usr/bin/env python3
"""Writes the training goldens that fragile's parameter gradients and AdamW are tested against.

For the committed Hugging Face fixtures tests/fixtures/hf/{llama,qwen2} (made by
make_hf_fixtures.py) this loads the model with `transformers` (f32, eager attention), takes the
golden input ids, and dumps to tests/fixtures/hf/<arch>/train_golden.safetensors:

  grad.<name>   d loss / d parameter for every named parameter, where loss is HF's own
                causal-LM loss with labels = input_ids (mean over the B*(T-1) predictions)
  after.<name>  the parameters after STEPS steps of torch.optim.AdamW on that same batch, with
                decoupled weight decay on matrices only, torch.nn.utils.clip_grad_norm_, and a
                linear-warm-up + cosine learning-rate schedule (LambdaLR), as fragile::train does

and train_golden.json with the loss, the per-step losses, gradient norms and learning rates, and
the hyperparameters. Tied embeddings (qwen2) appear once, as model.embed_tokens.weight.

Usage: python3 tools/make_train_fixtures.py   (repository root; needs torch, transformers,
safetensors; the outputs are committed, so tests never need Python).
"""
import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "hf"

HP = dict(steps=4, lr=3e-2, min_lr=3e-3, warmup=2, beta1=0.9, beta2=0.95, eps=1e-8,
          weight_decay=0.1, clip=0.5)


def lr_at(step):
    """fragile::train::CosineSchedule: linear warm-up over `warmup` steps, then cosine to min_lr."""
    if step < HP["warmup"]:
        return HP["lr"] * (step + 1) / HP["warmup"]
    progress = (step - HP["warmup"]) / max(1, HP["steps"] - HP["warmup"])
    return HP["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * progress)) * (HP["lr"] - HP["min_lr"])


def main():
    torch.use_deterministic_algorithms(True)
    for arch in ["llama", "qwen2"]:
        d = FIX / arch
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                     attn_implementation="eager")
        model.train()  # dropout is 0 in these configs
        ids = torch.tensor(json.loads((d / "golden.json").read_text())["input_ids"])

        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        tensors = {f"grad.{n}": p.grad.detach().clone().contiguous()
                   for n, p in model.named_parameters()}
        loss0 = out.loss.item()
        model.zero_grad(set_to_none=True)

        named = list(model.named_parameters())
        decay = [p for _, p in named if p.dim() == 2]
        no_decay = [p for _, p in named if p.dim() != 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": HP["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=HP["lr"], betas=(HP["beta1"], HP["beta2"]), eps=HP["eps"],
                                foreach=False)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s) / HP["lr"])
        losses, norms, lrs = [], [], []
        for _ in range(HP["steps"]):
            opt.zero_grad(set_to_none=True)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), HP["clip"]).item())
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            losses.append(loss.item())
        for n, p in model.named_parameters():
            tensors[f"after.{n}"] = p.detach().clone().contiguous()
        save_file(tensors, str(d / "train_golden.safetensors"))
        meta = dict(loss=loss0, step_losses=losses, grad_norms=norms, learning_rates=lrs,
                    hyperparameters=HP, parameters=[n for n, _ in named],
                    torch_version=torch.__version__)
        (d / "train_golden.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(arch, "loss", loss0, "step losses", losses)


if __name__ == "__main__":
    main()
