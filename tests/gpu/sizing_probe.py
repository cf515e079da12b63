"""The planner's weight arithmetic against what the GPU holds.

For each model shape: build a Llama model with random bf16 weights, save it as sharded safetensors
(with model.safetensors.index.json, as on the Hub), then in a fresh process load it with
transformers onto the GPU and read torch.cuda.memory_allocated / memory_reserved and nvidia-smi's
memory.used before and after. The planner's figures come from plugins/plugin_utils (_catalog.
read_model_dir -> the index's total_size, _sizing.weight_bytes; and the estimate parameters x 2 B
used before the weights are downloaded).

    python3 tests/gpu/sizing_probe.py WORK_DIR OUT.json [shape ...]      (shapes: 1b 8b tiny)
"""
import json
import os
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHAPES = {
    # Llama-3.2-1B's shape (tied embeddings) and Llama-3.1-8B's shape; random weights.
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, head_dim=64),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, head_dim=128),
    "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=1024, tie_word_embeddings=False, head_dim=64),
}


def smi_used_mib():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, check=True).stdout.splitlines()[0]
        used, total = [int(x) for x in out.split(",")]
        apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, check=False).stdout
        mine = [int(l.split(",")[1]) for l in apps.splitlines() if l.strip() and int(l.split(",")[0]) == os.getpid()]
        return {"used_mib": used, "total_mib": total, "process_mib": mine[0] if mine else None}
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def make(shape, path, device):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(max_position_embeddings=8192, **SHAPES[shape])
    cfg.torch_dtype = "bfloat16"
    torch.manual_seed(0)
    t0 = time.time()
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path, max_shard_size="2GB")
    return {"parameters": params, "make_s": round(time.time() - t0, 1)}


def measure(path, device):
    import torch
    from transformers import AutoModelForCausalLM
    out = {}
    if device == "cuda":
        torch.empty(1, device="cuda")
        torch.cuda.synchronize()
        out["context_only"] = smi_used_mib()
        out["allocated_before"] = torch.cuda.memory_allocated()
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map=device)
    out["load_s"] = round(time.time() - t0, 1)
    params = {id(p): p for p in model.parameters()}
    bufs = {id(b): b for b in model.buffers()}
    out["param_bytes"] = sum(p.numel() * p.element_size() for p in params.values())
    out["buffer_bytes"] = sum(b.numel() * b.element_size() for b in bufs.values())
    out["parameters"] = sum(p.numel() for p in params.values())
    if device == "cuda":
        torch.cuda.synchronize()
        out["allocated"] = torch.cuda.memory_allocated() - out["allocated_before"]
        out["reserved"] = torch.cuda.memory_reserved()
        out["loaded"] = smi_used_mib()
    return out


def planner(path, parameters):
    sys.path.insert(0, os.path.join(REPO, "build", "gpu-collections"))
    from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _sizing
    entry = _catalog.resolve_model({"path": path}, {})
    wb, how = _sizing.weight_bytes(entry)
    est, est_how = _sizing.weight_bytes({"parameters": parameters, "dtype": entry.get("dtype")})
    return {"weights_bytes": wb, "weights_source": how, "estimate_bytes": est, "estimate_source": est_how,
            "dtype": entry.get("dtype"), "shards": entry.get("shards"),
            "files_on_disk_bytes": sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
                                       if f.endswith(".safetensors"))}


def main(work, out_path, shapes, device):
    report = {"device": device, "shapes": {}}
    for shape in shapes:
        path = os.path.join(work, "sizing-%s" % shape)
        me = [sys.executable, os.path.abspath(__file__)]
        made = json.loads(subprocess.run(me + ["--make", shape, path, device], check=True, capture_output=True,
                                         text=True).stdout.splitlines()[-1])
        got = json.loads(subprocess.run(me + ["--measure", path, device], check=True, capture_output=True,
                                        text=True).stdout.splitlines()[-1])
        plan = planner(path, made["parameters"])
        r = {"config": SHAPES[shape], "made": made, "measured": got, "planner": plan}
        if device == "cuda":
            wb = plan["weights_bytes"]
            ctx = got["context_only"] or {}
            lo = got["loaded"] or {}
            r["ratios"] = {
                "allocated_over_planner": got["allocated"] / wb,
                "reserved_over_planner": got["reserved"] / wb,
                "smi_delta_over_planner": ((lo.get("used_mib", 0) - ctx.get("used_mib", 0)) * 2 ** 20 / wb)
                if lo and ctx else None,
                "smi_total_used_over_planner": (lo.get("used_mib", 0) * 2 ** 20 / wb) if lo else None,
                "planner_estimate_over_index": plan["estimate_bytes"] / wb,
            }
            r["context_overhead_mib"] = ctx.get("used_mib")
        report["shapes"][shape] = r
        print(json.dumps({shape: r.get("ratios"), "planner": plan["weights_bytes"],
                          "allocated": got.get("allocated")}), flush=True)
        for f in os.listdir(path):
            if f.endswith(".safetensors"):
                os.remove(os.path.join(path, f))
    with open(out_path, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    if sys.argv[1] == "--make":
        print(json.dumps(make(sys.argv[2], sys.argv[3], sys.argv[4])))
    elif sys.argv[1] == "--measure":
        print(json.dumps(measure(sys.argv[2], sys.argv[3])))
    else:
        import importlib.util
        dev = os.environ.get("LLMFLEET_SIZING_DEVICE") or (
            "cuda" if importlib.util.find_spec("torch") and __import__("torch").cuda.is_available() else "cpu")
        main(sys.argv[1], sys.argv[2], sys.argv[3:] or ["1b", "8b"], dev)
