#!/usr/bin/env python3
"""Line-by-line comparison of training-step benchmarks: deviant's `dpo_step` against the PyTorch
peer (eager, and optionally torch.compile), from the JSON lines both print in the same run.

    compare_steps.py --ours ours.jsonl --eager torch_eager.jsonl [--compiled torch_compiled.jsonl]

Prints a Markdown table per (config, objective) — tokens/s, the ratios, peak memory and MFU —
then the project's CUDA targets (gpt2s DPO >= 1.3x compiled tokens/s and <= 0.6x eager peak
memory; tiny DPO >= 4x eager tokens/s) with the measured values. Lines that are not JSON objects
with a "config" key (build logs, the header lines) are ignored, so raw logs can be passed.
Standard library only.
"""
import argparse
import json
import sys


def read_lines(path):
    """{(config, objective): record} and the header records (those without a config)."""
    rows, headers = {}, []
    if not path:
        return rows, headers
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "config" in r and "objective" in r:
                    rows[(r["config"], r["objective"])] = r
                else:
                    headers.append(r)
    except OSError as e:
        print(f"compare_steps: {path}: {e.strerror}", file=sys.stderr)
    return rows, headers


def fmt_k(v):
    return "—" if v is None else f"{v / 1000:,.1f}k"


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}x"


def get(rows, key, field):
    r = rows.get(key)
    return None if r is None else r.get(field)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ours", required=True)
    ap.add_argument("--eager", required=True)
    ap.add_argument("--compiled", default="")
    a = ap.parse_args()
    ours, oh = read_lines(a.ours)
    eager, eh = read_lines(a.eager)
    comp, ch = read_lines(a.compiled)
    for h in oh + eh + ch:
        print("header:", json.dumps(h))
    keys = sorted(set(ours) | set(eager) | set(comp), key=lambda k: (["tiny", "small", "gpt2s"].index(k[0])
                                                                   if k[0] in ("tiny", "small", "gpt2s") else 9, k[1]))
    print()
    print("| config | objective | deviant tok/s | torch eager tok/s | torch compiled tok/s | vs eager | vs compiled "
          "| deviant peak GiB | eager peak GiB | mem vs eager | deviant MFU | eager MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k in keys:
        o, e, c = (get(ours, k, "tokens_per_s"), get(eager, k, "tokens_per_s"), get(comp, k, "tokens_per_s"))
        om, em = get(ours, k, "peak_mem_gib"), get(eager, k, "peak_mem_gib")
        of, ef = get(ours, k, "mfu"), get(eager, k, "mfu")
        print(f"| {k[0]} | {k[1]} | {fmt_k(o)} | {fmt_k(e)} | {fmt_k(c)} | {fmt_ratio(ratio(o, e))} | {fmt_ratio(ratio(o, c))} "
              f"| {'—' if om is None else f'{om:.2f}'} | {'—' if em is None else f'{em:.2f}'} | {fmt_ratio(ratio(om, em))} "
              f"| {'—' if of is None else f'{100 * of:.1f}%'} | {'—' if ef is None else f'{100 * ef:.1f}%'} |")
    print()
    print("| target | wanted | measured | verdict |")
    print("|---|---|---|---|")
    targets = [
        ("gpt2s DPO tokens/s vs torch.compile", ("gpt2s", "dpo"), "tokens_per_s", comp, ">=", 1.3),
        ("gpt2s DPO peak memory vs eager", ("gpt2s", "dpo"), "peak_mem_gib", eager, "<=", 0.6),
        ("tiny DPO tokens/s vs eager", ("tiny", "dpo"), "tokens_per_s", eager, ">=", 4.0),
    ]
    for name, key, field, peer, op, want in targets:
        r = ratio(get(ours, key, field), get(peer, key, field))
        verdict = "not measured" if r is None else ("met" if (r >= want if op == ">=" else r <= want) else "MISSED")
        print(f"| {name} | {op} {want}x | {fmt_ratio(r)} | {verdict} |")


if __name__ == "__main__":
    main()
