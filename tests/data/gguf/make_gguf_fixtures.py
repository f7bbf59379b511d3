#!/usr/bin/env python3
"""Reference fixtures for deviant's GGUF loader: the tiny Llama of ../models/llama written as GGUF
files the way llama.cpp's converter lays them out, and the log-probs transformers computes from
what each file holds.

Written with the `gguf` package (llama.cpp's own Python writer and quantizers):
  llama_f32.gguf   every tensor float32
  llama_f16.gguf   matrices float16, token embedding bfloat16, norms float32
  llama_q8_0.gguf  matrices Q8_0 where rows are a multiple of 32 values, float16 otherwise
  llama_q4_0.gguf  the same with Q4_0 (and Q4_1 for the output head)
Layout rules followed (llama.cpp convert_hf_to_gguf.py, LlamaModel): tensor names token_embd,
blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down},
output_norm, output; GGUF dimensions listed fastest first (a (out, in) matrix is ne = [in, out]);
q and k rows permuted from Hugging Face's rotate-half order to llama.cpp's interleaved order:
w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols), with
n_head = head_count for q and head_count_kv for k.
quant_blocks.gguf: for each of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K a (2, 512) tensor of
random blocks (finite float16 scales, random quants) named after the type, and beside it
"<type>.expected", the same values dequantized by gguf.quants as float32.
gpt2_tokenizer.gguf, llama3_tokenizer.gguf: ../tokenizers/{gpt2,llama3}_style.json as llama.cpp
stores a byte-level BPE tokenizer (tokenizer.ggml.model "gpt2": tokens by id, token types —
special added tokens CONTROL, other added tokens USER_DEFINED, ids without a token UNUSED —,
merges "a b", tokenizer.ggml.pre "gpt2" or "llama-bpe", BOS/EOS ids and add_bos_token as the
post-processor says); no tensors. The test compares their encodings with ../tokenizers/expected.json,
which the `tokenizers` package computed from the original tokenizer.json files.
qwen2_tokenizer.gguf: ../tokenizers/llama3_style.json with Qwen2's split pattern (single digits:
\p{N} instead of \p{N}{1,3}) stored with tokenizer.ggml.pre "qwen2"; expected.json holds the ids the
`tokenizers` package gives for that tokenizer.json on the test strings of ../tokenizers/expected.json.
qwen2_f32.gguf, qwen2_q8_0.gguf: a tiny random Qwen2 (q/k/v biases, tied embeddings, so no output
tensor) as llama.cpp's converter writes the "qwen2" architecture: the same tensor names plus
blk.N.attn_{q,k,v}.bias, rows NOT permuted, metadata under "qwen2.*".
expected.json: per file, the completion log-probs of ../models/pairs.jsonl under a transformers
LlamaForCausalLM (float64) whose weights are the file's tensors dequantized by `gguf.quants`
and permuted back.
Run from this folder: python3 make_gguf_fixtures.py   (torch, transformers, gguf required)
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as Q
from gguf import GGML_QUANT_SIZES, GGUFReader, GGUFWriter
from gguf.quants import dequantize, quantize
from transformers import LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "models")


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf):
    if hf.endswith(".bias"):  # qwen2 q/k/v biases
        n = hf.split(".")[2]
        return f"blk.{n}.attn_{hf.split('.')[4][0]}.bias"
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")  # model.layers.N.<module>.<proj>.weight
    n, rest = parts[2], ".".join(parts[3:])
    table = {"input_layernorm.weight": "attn_norm", "post_attention_layernorm.weight": "ffn_norm",
             "self_attn.q_proj.weight": "attn_q", "self_attn.k_proj.weight": "attn_k",
             "self_attn.v_proj.weight": "attn_v", "self_attn.o_proj.weight": "attn_output",
             "mlp.gate_proj.weight": "ffn_gate", "mlp.up_proj.weight": "ffn_up", "mlp.down_proj.weight": "ffn_down"}
    return f"blk.{n}.{table[rest]}.weight"


def storage(kind, name, arr):
    """The GGML type a tensor is stored in for file `kind`."""
    if arr.ndim == 1:
        return Q.F32
    if kind == "f32":
        return Q.F32
    if kind == "f16":
        return Q.BF16 if name == "token_embd.weight" else Q.F16
    block = 32
    if arr.shape[-1] % block:
        return Q.F16
    if kind == "q8_0":
        return Q.Q8_0
    return Q.Q4_1 if name == "output.weight" else Q.Q4_0


def add_model_metadata(w, cfg):
    """The "<arch>.*" keys llama.cpp's converter writes for a Llama or Qwen2 config."""
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)


def write(kind, model, cfg):
    path = os.path.join(HERE, f"llama_{kind}.gguf")
    w = GGUFWriter(path, "llama")
    w.add_name("deviant test llama")
    add_model_metadata(w, cfg)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"<t{i}>" for i in range(cfg.vocab_size)])
    for hf, t in model.state_dict().items():
        arr = t.detach().numpy().astype(np.float32)
        name = gguf_name(hf)
        if name.endswith("attn_q.weight"):
            arr = permute(arr, cfg.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            arr = permute(arr, cfg.num_key_value_heads)
        qt = storage(kind, name, arr)
        if qt == Q.F32:
            w.add_tensor(name, arr)
        elif qt == Q.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, quantize(arr, qt), raw_shape=quantize(arr, qt).shape, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def from_file(path, cfg):
    """A float64 transformers model holding exactly what the GGUF file holds."""
    r = GGUFReader(path)
    by_name = {t.name: t for t in r.tensors}
    m = LlamaForCausalLM(cfg).double()
    sd = {}
    for hf, t in m.state_dict().items():
        name = gguf_name(hf)
        g = by_name[name]
        arr = dequantize(g.data, g.tensor_type).astype(np.float64).reshape(tuple(reversed([int(d) for d in g.shape])))
        if name.endswith("attn_q.weight"):
            arr = unpermute(arr, cfg.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            arr = unpermute(arr, cfg.num_key_value_heads)
        sd[hf] = torch.from_numpy(np.ascontiguousarray(arr))
    m.load_state_dict(sd)
    return m.eval(), {n: int(t.tensor_type) for n, t in by_name.items()}


def seq_logp(model, prompt, completion):
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0].double()
    lp = F.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return lp[len(prompt) - 1:].sum().item()


def quant_blocks():
    rng = np.random.default_rng(7)
    w = GGUFWriter(os.path.join(HERE, "quant_blocks.gguf"), "none")
    rows, cols = 2, 512
    for qt in (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K):
        block, size = GGML_QUANT_SIZES[qt]
        n_blocks = rows * cols // block
        raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
        # float16 fields (scales, minimums) finite and of modest size
        halves = {Q.Q8_0: [0], Q.Q4_0: [0], Q.Q5_0: [0], Q.Q4_1: [0, 2], Q.Q5_1: [0, 2], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2],
                  Q.Q6_K: [size - 2], Q.Q2_K: [size - 4, size - 2], Q.Q3_K: [size - 2]}[qt]
        for off in halves:
            raw[:, off:off + 2] = rng.uniform(-0.05, 0.05, size=n_blocks).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
        raw = raw.reshape(rows, cols // block * size)
        name = qt.name.lower()
        w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qt)
        w.add_tensor(name + ".expected", dequantize(raw, qt).astype(np.float32).reshape(rows, cols))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def qwen2_tokenizer_json():
    src = json.load(open(os.path.join(HERE, "..", "tokenizers", "llama3_style.json")))
    src["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = QWEN2_PATTERN
    return src


def tokenizer_file(style, pre, src=None):
    if src is None:
        src = json.load(open(os.path.join(HERE, "..", "tokenizers", f"{style}_style.json")))
    vocab = dict(src["model"]["vocab"])
    added = {t["id"]: t for t in src.get("added_tokens", [])}
    n = max(list(vocab.values()) + list(added)) + 1
    tokens, types = [f"[UNUSED{i}]" for i in range(n)], [5] * n  # UNUSED
    for tok, i in vocab.items():
        tokens[i], types[i] = tok, 1  # NORMAL
    for i, t in added.items():
        tokens[i], types[i] = t["content"], 3 if t["special"] else 4  # CONTROL / USER_DEFINED
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in src["model"]["merges"]]
    w = GGUFWriter(os.path.join(HERE, f"{style}_tokenizer.gguf"), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    post = json.dumps(src.get("post_processor"))
    bos = next((t["id"] for t in added.values() if t["content"] in ("<|begin_of_text|>",)), None)
    if bos is not None and "TemplateProcessing" in post:
        w.add_bos_token_id(bos)
        w.add_add_bos_token(True)
    else:
        w.add_add_bos_token(False)
    eos = next((t["id"] for t in added.values() if t["content"] in ("<|end_of_text|>", "<|endoftext|>")), None)
    if eos is not None:
        w.add_eos_token_id(eos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def qwen2_model():
    torch.manual_seed(3)
    cfg = Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, rope_theta=1000000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    m = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.15)
            elif "norm" in name:
                p.uniform_(0.7, 1.3)
            else:
                p.normal_(0.0, 0.1)  # biases
    return m.eval(), cfg


def write_qwen2(kind, model, cfg):
    path = os.path.join(HERE, f"qwen2_{kind}.gguf")
    w = GGUFWriter(path, "qwen2")
    add_model_metadata(w, cfg)
    for hf, t in model.state_dict().items():
        if hf == "lm_head.weight":
            continue  # tied: llama.cpp writes no output tensor
        arr = t.detach().numpy().astype(np.float32)
        name = gguf_name(hf)
        if kind == "q8_0" and arr.ndim == 2 and arr.shape[-1] % 32 == 0:
            w.add_tensor(name, quantize(arr, Q.Q8_0), raw_shape=quantize(arr, Q.Q8_0).shape, raw_dtype=Q.Q8_0)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # the reference: the file's tensors, dequantized, in a float64 Qwen2
    r = GGUFReader(path)
    by_name = {g.name: g for g in r.tensors}
    ref = Qwen2ForCausalLM(cfg).double()
    sd = {}
    for hf in ref.state_dict():
        g = by_name["token_embd.weight" if hf == "lm_head.weight" else gguf_name(hf)]
        arr = dequantize(g.data, g.tensor_type).astype(np.float64).reshape(tuple(reversed([int(d) for d in g.shape])))
        sd[hf] = torch.from_numpy(np.ascontiguousarray(arr))
    ref.load_state_dict(sd)
    return path, ref.eval()


def main():
    quant_blocks()
    tokenizer_file("gpt2", "gpt2")
    tokenizer_file("llama3", "llama-bpe")
    tokenizer_file("qwen2", "qwen2", qwen2_tokenizer_json())
    model = LlamaForCausalLM.from_pretrained(os.path.join(MODELS, "llama"), dtype=torch.float32)
    cfg = model.config
    pairs = [json.loads(l) for l in open(os.path.join(MODELS, "pairs.jsonl"))]
    expected = {}
    with torch.no_grad():
        for kind in ("f32", "f16", "q8_0", "q4_0"):
            path = write(kind, model, cfg)
            m, types = from_file(path, cfg)
            expected[os.path.basename(path)] = {
                "tensor_types": types,
                "pairs": [{"chosen_logp": seq_logp(m, p["prompt_ids"], p["chosen_ids"]),
                           "rejected_logp": seq_logp(m, p["prompt_ids"], p["rejected_ids"])} for p in pairs],
            }
        qwen, qcfg = qwen2_model()
        for kind in ("f32", "q8_0"):
            path, ref = write_qwen2(kind, qwen, qcfg)
            expected[os.path.basename(path)] = {
                "pairs": [{"chosen_logp": seq_logp(ref, p["prompt_ids"], p["chosen_ids"]),
                           "rejected_logp": seq_logp(ref, p["prompt_ids"], p["rejected_ids"])} for p in pairs]}
        orig = model.double()
        expected["original"] = {"pairs": [{"chosen_logp": seq_logp(orig, p["prompt_ids"], p["chosen_ids"]),
                                           "rejected_logp": seq_logp(orig, p["prompt_ids"], p["rejected_ids"])} for p in pairs]}
    from tokenizers import Tokenizer
    qwen_tok = Tokenizer.from_str(json.dumps(qwen2_tokenizer_json()))
    texts = [c["text"] for c in json.load(open(os.path.join(HERE, "..", "tokenizers", "expected.json")))["llama3_style.json"]["cases"]]
    expected["qwen2_tokenizer.gguf"] = {"cases": [{"text": t, "ids": qwen_tok.encode(t, add_special_tokens=False).ids} for t in texts]}
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print("wrote", ", ".join(sorted(expected)))


if __name__ == "__main__":
    main()
