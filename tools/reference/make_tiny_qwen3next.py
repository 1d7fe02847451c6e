#!/usr/bin/env python3
"""Builds the tiny Qwen3-Next reference fixtures under tests/fixtures/tiny-*/.

Runs where PyTorch and transformers (>= 5, with Qwen3NextForCausalLM) are installed (the GPU machine); the
computation itself runs on the CPU in float32, so no GPU is needed and the results do not depend on TF32 settings.

For each fixture it
  1. builds a random Qwen3NextForCausalLM from a small config (widths, head counts, expert counts and layer patterns
     differ between fixtures; one has a dense-MLP layer via mlp_only_layers, one via decoder_sparse_step),
  2. re-initialises the weights at scales that give decisive logits and routing, perturbs every RMSNorm weight away
     from zero (so the (1 + w) convention is tested) and the gated norm away from one, randomises A_log and dt_bias,
  3. rounds to bfloat16 and saves with save_pretrained (one fixture sharded, so the index path is tested),
  4. reloads the saved checkpoint in float32 (eager attention, torch fallback for conv1d / delta rule), and saves
     reference.safetensors:
       prompt_ids        I64 [n_prompt]            random ids, longer than one DeltaNet chunk (64)
       generated_ids     I64 [n_gen]               greedy continuation through the cached (recurrent) decode path
       logits_positions  I64 [n_pos]               positions (into prompt + generated) the logits below belong to
       logits            F32 [n_pos, vocab]        one full forward pass (chunked path) over prompt + generated
       decode_logits     F32 [n_gen, vocab]        logits of the cached decode steps (small-vocab fixtures only)

Usage: make_tiny_qwen3next.py OUT_DIR      (writes OUT_DIR/tiny-*/)
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Qwen3NextConfig, Qwen3NextForCausalLM
from transformers.models.qwen3_next import modeling_qwen3_next as mq

N_PROMPT = 130
N_GEN = 32

FIXTURES = [
    # name, config kwargs, options
    ("tiny-a", dict(
        vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16,
        num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48,
        norm_topk_prob=True, mlp_only_layers=[1], decoder_sparse_step=1, tie_word_embeddings=False,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
        rms_norm_eps=1e-6, eos_token_id=2, bos_token_id=1,
    ), dict(shard="100KB", all_logits=True)),
    ("tiny-b", dict(
        vocab_size=1024, hidden_size=48, intermediate_size=80, num_hidden_layers=6,
        num_attention_heads=6, num_key_value_heads=1, head_dim=16,
        linear_num_key_heads=3, linear_num_value_heads=3, linear_key_head_dim=32, linear_value_head_dim=24,
        num_experts=6, num_experts_per_tok=3, moe_intermediate_size=24, shared_expert_intermediate_size=40,
        norm_topk_prob=False, mlp_only_layers=[], decoder_sparse_step=2, tie_word_embeddings=True,
        layer_types=["linear_attention", "full_attention", "linear_attention", "linear_attention", "full_attention",
                     "linear_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "partial_rotary_factor": 0.5},
        rms_norm_eps=1e-5, eos_token_id=[3, 5],
    ), dict(shard=None, all_logits=True)),
    # The real vocabulary, tied embeddings, a config.json written like the released checkpoints (top-level
    # rope_theta / partial_rotary_factor, full_attention_interval instead of layer_types).
    ("tiny-vocab", dict(
        vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        linear_num_key_heads=1, linear_num_value_heads=2, linear_key_head_dim=16, linear_value_head_dim=16,
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=16,
        norm_topk_prob=True, mlp_only_layers=[], decoder_sparse_step=1, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
        rms_norm_eps=1e-6, eos_token_id=[151645, 151643], bos_token_id=151643,
    ), dict(shard=None, all_logits=False, legacy_config=True)),
]


def force_torch_paths(model):
    """Checks that every DeltaNet layer runs the torch code of modeling_qwen3_next.py (no fla / causal-conv1d / hub
    kernels). transformers 5.17 calls module-level functions wrapped in use_kernel_func_from_hub_with_fallback, which
    fall back to the torch bodies when neither the `kernels` package nor fla is importable: we require that."""
    import importlib.util
    for pkg in ("fla", "causal_conv1d", "kernels"):
        assert importlib.util.find_spec(pkg) is None, f"{pkg} is installed: the reference would not use the torch path"
    for layer in model.model.layers:
        la = getattr(layer, "linear_attn", None)
        if la is not None:
            assert isinstance(la.norm, mq.Qwen3NextRMSNormGated), type(la.norm)


@torch.no_grad()
def randomise(model, gen):
    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=gen) * std)

    for name, p in model.named_parameters():
        if name.endswith("A_log"):
            p.copy_(torch.log(torch.rand(p.shape, generator=gen) * 15 + 1))
        elif name.endswith("dt_bias"):
            normal(p, 0.5)
        elif name.endswith("linear_attn.norm.weight"):  # gated norm: plain w, centred on one
            p.copy_(1 + torch.randn(p.shape, generator=gen) * 0.3)
        elif "norm" in name:  # zero-centred RMSNorm (1 + w)
            normal(p, 0.3)
        elif "embed_tokens" in name:
            normal(p, 1.0)
        elif "conv1d" in name:
            normal(p, 0.4)
        elif p.ndim >= 2:
            fan_in = p.shape[-1]
            scale = 2.0 if ("lm_head" in name or name.endswith("mlp.gate.weight")) else 0.7
            normal(p, scale / fan_in ** 0.5)
        else:
            normal(p, 0.1)


def legacy_config(path, cfg_kwargs):
    """Rewrites config.json the way the released Qwen3-Next checkpoints write it."""
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters", None) or cfg_kwargs["rope_parameters"]
    cfg["rope_theta"] = rp["rope_theta"]
    cfg["partial_rotary_factor"] = rp.get("partial_rotary_factor", 0.25)
    cfg.pop("layer_types", None)
    cfg["full_attention_interval"] = 4
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


@torch.no_grad()
def build(out_root, name, cfg_kwargs, opts, seed):
    gen = torch.Generator().manual_seed(seed)
    cfg = Qwen3NextConfig(**cfg_kwargs)
    cfg._attn_implementation = "eager"
    model = Qwen3NextForCausalLM(cfg).float().eval()
    randomise(model, gen)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "lm_head not tied"
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    model = model.to(torch.bfloat16)
    kw = {"max_shard_size": opts["shard"]} if opts["shard"] else {}
    model.save_pretrained(out, safe_serialization=True, **kw)
    cfg_path = os.path.join(out, "config.json")
    if opts.get("legacy_config"):
        original = open(cfg_path).read()
        legacy_config(cfg_path, cfg_kwargs)
        try:
            Qwen3NextConfig.from_pretrained(out)
        except Exception as e:  # keep the transformers-written config if this version rejects the legacy form
            print(f"{name}: legacy config.json rejected ({e}); keeping the original", flush=True)
            open(cfg_path, "w").write(original)
    del model
    from safetensors import safe_open
    names = []
    for fn in sorted(os.listdir(out)):
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(out, fn), "pt") as sf:
                names += [(k, tuple(sf.get_slice(k).get_shape())) for k in sf.keys()]
    print(name, "saved tensors:", sorted(n for n in names if ".layers.0." in n[0] or ".layers.1." in n[0]
                                          or "layers" not in n[0]), flush=True)

    # Reference: reload the saved bf16 checkpoint as float32 on the CPU.
    ref = Qwen3NextForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    force_torch_paths(ref)
    loaded = json.load(open(cfg_path))
    print(name, "config:", json.dumps({k: loaded[k] for k in sorted(loaded) if k not in ("layer_types",)}), flush=True)
    print(name, "layer_types:", ref.config.layer_types, "mlp_only_layers:", ref.config.mlp_only_layers, flush=True)

    vocab = cfg.vocab_size
    hi = min(vocab, 151643)
    prompt = torch.randint(0, hi, (1, N_PROMPT), generator=gen)

    # Greedy continuation through the cache: chunked prefill, then recurrent single-token steps.
    o = ref(input_ids=prompt, use_cache=True)
    past = o.past_key_values
    step_logits = [o.logits[0, -1].clone()]
    ids = []
    margins = []
    for t in range(N_GEN):
        lg = step_logits[-1]
        top2 = torch.topk(lg, 2).values
        margins.append(float(top2[0] - top2[1]))
        nxt = int(torch.argmax(lg))
        ids.append(nxt)
        if t + 1 == N_GEN:
            break
        o = ref(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = o.past_key_values
        step_logits.append(o.logits[0, -1].clone())
    generated = torch.tensor(ids, dtype=torch.int64)
    decode_logits = torch.stack(step_logits).float()

    full = torch.cat([prompt[0], generated]).unsqueeze(0)
    logits = ref(input_ids=full, use_cache=False).logits[0].float()  # [n, vocab]
    n = full.shape[1]
    # Consistency of the two reference paths (chunked full pass vs cached decode), for the log.
    d = (logits[N_PROMPT - 1:N_PROMPT - 1 + N_GEN] - decode_logits).abs().max() / logits.abs().max()
    print(f"{name}: chunked-vs-recurrent rel diff {float(d):.2e}, min greedy margin {min(margins):.3e}", flush=True)

    if opts["all_logits"]:
        positions = torch.arange(n, dtype=torch.int64)
    else:
        positions = torch.tensor([0, 1, 63, 64, 65, N_PROMPT - 1, N_PROMPT + 15, n - 1], dtype=torch.int64)
    tensors = {
        "prompt_ids": prompt[0].to(torch.int64).contiguous(),
        "generated_ids": generated.contiguous(),
        "logits_positions": positions.contiguous(),
        "logits": logits[positions].contiguous(),
    }
    if opts["all_logits"]:
        tensors["decode_logits"] = decode_logits.contiguous()
    save_file(tensors, os.path.join(out, "reference.safetensors"),
              metadata={"script": "tools/reference/make_tiny_qwen3next.py", "seed": str(seed),
                        "transformers": __import__("transformers").__version__, "torch": torch.__version__})
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(f"# {name}\n\nRandom Qwen3-Next checkpoint (bf16) and reference outputs, made by "
                f"`tools/reference/make_tiny_qwen3next.py` (seed {seed}) with transformers "
                f"{__import__('transformers').__version__}, torch {torch.__version__}, float32 on CPU.\n")
    print(name, "files:", sorted(os.listdir(out)), flush=True)


def main():
    out_root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    torch.manual_seed(0)
    torch.set_num_threads(8)
    failed = 0
    for i, (name, cfg_kwargs, opts) in enumerate(FIXTURES):
        try:
            build(out_root, name, cfg_kwargs, opts, seed=1234 + i)
        except Exception:
            import traceback
            traceback.print_exc()
            failed += 1
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
