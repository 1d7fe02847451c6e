#!/usr/bin/env python3
"""transformers' own Qwen3-Next (Qwen3NextForCausalLM, eager, as installed) at the 80B model's real widths with random
weights: the baseline that bench_engine's rows are compared with, run in the same device job.

  bench_transformers_qwen3next.py --layers 12 [--prompt 1024] [--gen 16] [--batches 1,8] [--prefill 8192]
                                  [--device cuda] [--tiny]

Prints one JSON line per measurement:
  decode:  batch B, a P-token prompt prefilled, then G greedy steps through the model's cache; median step ms,
           tokens/s per sequence and in aggregate
  prefill: one sequence of N tokens, logits of the last token only; ms and tokens/s
--tiny shrinks every width (a CPU smoke run of this script; its numbers mean nothing).
Widths: hidden 2048, 16/2 attention heads of 256, 16/32 DeltaNet heads of 128, 512 experts top-10, expert and
shared-expert inter 512, vocab 151936, layers in the real 3:1 pattern (full attention every 4th layer).
"""
import argparse
import json
import statistics
import time

import torch
import transformers
from transformers import Qwen3NextConfig, Qwen3NextForCausalLM


def config(layers, tiny):
    kw = dict(vocab_size=151936, hidden_size=2048, num_attention_heads=16, num_key_value_heads=2, head_dim=256,
              linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128, linear_value_head_dim=128,
              num_experts=512, num_experts_per_tok=10, moe_intermediate_size=512, shared_expert_intermediate_size=512)
    if tiny:
        kw.update(vocab_size=1024, hidden_size=64, num_attention_heads=4, head_dim=32, linear_num_key_heads=2,
                  linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16, num_experts=8,
                  num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)
    types = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(layers)]
    return Qwen3NextConfig(num_hidden_layers=layers, layer_types=types, decoder_sparse_step=1, mlp_only_layers=[],
                           **kw)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def emit(**kw):
    print(json.dumps(kw), flush=True)


@torch.inference_mode()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--gen", type=int, default=16)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prefill", default="8192")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true")
    a = ap.parse_args()
    dev = torch.device(a.device)
    cfg = config(a.layers, a.tiny)
    t0 = time.time()
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with dev:
        model = Qwen3NextForCausalLM(cfg).eval()
    sync(dev)
    params = sum(p.numel() for p in model.parameters())
    emit(what="load", transformers=transformers.__version__, torch=torch.__version__, layers=a.layers,
         params=params, seconds=round(time.time() - t0, 1),
         experts_implementation=getattr(cfg, "_experts_implementation", None),
         gpu=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu")
    vocab = cfg.vocab_size
    g = torch.Generator(device="cpu").manual_seed(1)

    for b in [int(x) for x in a.batches.split(",") if x]:
        ids = torch.randint(0, vocab, (b, a.prompt), generator=g).to(dev)
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        steps = []
        for _ in range(a.gen):
            sync(dev)
            t = time.perf_counter()
            out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            sync(dev)
            steps.append(time.perf_counter() - t)
            cache = out.past_key_values
        med = statistics.median(steps[2:] if len(steps) > 4 else steps)
        emit(what="decode", batch=b, prompt=a.prompt, steps=a.gen, median_step_ms=round(med * 1e3, 3),
             tok_s_per_seq=round(1 / med, 1), tok_s_aggregate=round(b / med, 1))
        del out, cache
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    for n in [int(x) for x in a.prefill.split(",") if x]:
        ids = torch.randint(0, vocab, (1, n), generator=g).to(dev)
        model(input_ids=ids[:, :256], use_cache=False, logits_to_keep=1)  # warm-up
        sync(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t = time.perf_counter()
        try:
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
            sync(dev)
        except torch.OutOfMemoryError as e:  # a row that says so, and the longer prompts are still tried
            emit(what="prefill", tokens=n, error="out of memory: " + str(e).splitlines()[0][:200])
            del ids
            torch.cuda.empty_cache()
            continue
        dt = time.perf_counter() - t
        emit(what="prefill", tokens=n, ms=round(dt * 1e3, 1), tok_s=round(n / dt, 1),
             max_mem_gb=round(torch.cuda.max_memory_allocated(dev) / 1e9, 2) if dev.type == "cuda" else None)
        del ids
        if dev.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
