"""Peer of `deviant train --lora --objective dpo` on a real checkpoint: a LoRA DPO step of a GGUF
model (SmolLM2-135M-Instruct in compare_cpu.sh) in PyTorch eager + transformers + peft, on the CPU,
float32 (transformers dequantizes the GGUF blocks to float32, as deviant does).

Same pairs (a JSON Lines file of {"prompt_ids", "chosen_ids", "rejected_ids"}, the file deviant
trains on), same adapters (rank r, alpha, on q/k/v/o/gate/up/down, dropout 0), same loss (sigmoid
DPO, beta 0.1, log-probs summed over the completion tokens), torch.optim.AdamW over the adapter
weights. The reference log-probs (the base model: adapters off) are computed once before the
timed steps, as deviant's trainer does (TRL's precompute_ref_log_probs). Prints one JSON line:
median step time over the steps after the first, tokens per step, peak RSS.

    python3 benchmarks/torch_lora_dpo_step.py MODEL_DIR GGUF_NAME pairs.jsonl --batch-size 4 --steps 4 --threads 1
"""
import argparse, json, resource, statistics, time

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("gguf_file")
    ap.add_argument("pairs")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(a.model_dir, gguf_file=a.gguf_file, torch_dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, bias="none",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    model.train()
    pairs = [json.loads(l) for l in open(a.pairs) if l.strip()]
    P = a.batch_size
    batches = [pairs[i:i + P] for i in range(0, len(pairs) - P + 1, P)]

    def layout(batch):
        """(2P, T) right-padded ids: chosen rows then rejected rows; completion mask over targets."""
        seqs = [(p["prompt_ids"], p["chosen_ids"]) for p in batch] + [(p["prompt_ids"], p["rejected_ids"]) for p in batch]
        T = max(len(pr) + len(c) for pr, c in seqs)
        ids = torch.zeros(len(seqs), T, dtype=torch.long)
        mask = torch.zeros(len(seqs), T - 1)
        attn = torch.zeros(len(seqs), T, dtype=torch.long)
        for r, (pr, c) in enumerate(seqs):
            full = pr + c
            ids[r, :len(full)] = torch.tensor(full)
            attn[r, :len(full)] = 1
            mask[r, len(pr) - 1:len(full) - 1] = 1  # position t predicts token t+1: the completion tokens
        return ids, attn, mask, sum(len(pr) + len(c) for pr, c in seqs)

    def logps(ids, attn, mask):
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
        lp = torch.log_softmax(logits.float(), -1)
        tok = torch.gather(lp, 2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        return (tok * mask).sum(-1)

    laid = [layout(b) for b in batches]
    with torch.no_grad(), model.disable_adapter():
        refs = [logps(ids, attn, mask) for ids, attn, mask, _ in laid]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times, tokens = [], 0
    for step in range(a.steps):
        ids, attn, mask, tokens = laid[step % len(laid)]
        ref = refs[step % len(laid)]
        s = time.perf_counter()
        lp = logps(ids, attn, mask)
        pi = lp[:P] - lp[P:]
        rr = ref[:P] - ref[P:]
        loss = -F.logsigmoid(0.1 * (pi - rr)).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - s)
    med = statistics.median(times[1:] if len(times) > 1 else times)
    print(json.dumps({"impl": "transformers+peft", "threads": torch.get_num_threads(), "step_s": round(med, 4),
                      "tokens_per_step": tokens, "tokens_per_s": round(tokens / med, 1),
                      "peak_mem_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3), "loss": float(loss)}))


if __name__ == "__main__":
    main()
