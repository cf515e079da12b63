"""GPU facts as PyTorch and NVML (nvidia-ml-py, the library nvidia-smi itself uses) report them,
to compare field by field with gpu_facts.   python3 tests/gpu/torch_facts.py OUT.json"""
import json
import sys


def nvml_facts():
    try:
        import pynvml as N
    except ImportError as e:
        return {"error": "pynvml not importable: %s" % e}
    N.nvmlInit()
    out = {"driver_version": N.nvmlSystemGetDriverVersion(), "gpus": []}
    v = N.nvmlSystemGetCudaDriverVersion_v2()
    out["cuda_version"] = "%d.%d" % (v // 1000, (v % 1000) // 10)
    for i in range(N.nvmlDeviceGetCount()):
        h = N.nvmlDeviceGetHandleByIndex(i)
        g = {"index": i, "name": N.nvmlDeviceGetName(h), "uuid": N.nvmlDeviceGetUUID(h),
             "pci_bus_id": N.nvmlDeviceGetPciInfo(h).busId}
        mem = N.nvmlDeviceGetMemoryInfo(h)
        g["memory_total_mib"] = mem.total // 2 ** 20
        g["memory_total_bytes"] = mem.total

        def get(name, fn):
            try:
                g[name] = fn()
            except N.NVMLError as e:
                g[name] = "error: %s" % e
        get("persistence_mode", lambda: "Enabled" if N.nvmlDeviceGetPersistenceMode(h) else "Disabled")
        get("ecc_mode", lambda: "Enabled" if N.nvmlDeviceGetEccMode(h)[0] else "Disabled")
        get("mig_mode", lambda: "Enabled" if N.nvmlDeviceGetMigMode(h)[0] else "Disabled")
        links = 0
        for lk in range(18):
            try:
                if N.nvmlDeviceGetNvLinkState(h, lk):
                    links += 1
            except N.NVMLError:
                break
        g["nvlink_links_active"] = links
        out["gpus"].append(g)
    N.nvmlShutdown()
    return out


def torch_facts():
    import torch
    out = {"torch": torch.__version__, "cuda_runtime": torch.version.cuda, "available": torch.cuda.is_available(),
           "device_count": torch.cuda.device_count(), "gpus": []}
    try:
        out["nccl_version"] = ".".join(str(x) for x in torch.cuda.nccl.version())
    except Exception as e:  # noqa: BLE001 - a fact, not an error path
        out["nccl_version"] = "error: %s" % e
    for i in range(out["device_count"]):
        p = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        out["gpus"].append({"index": i, "name": p.name, "total_memory_bytes": p.total_memory,
                            "memory_total_mib": p.total_memory // 2 ** 20, "mem_get_info_total_bytes": total,
                            "capability": "%d.%d" % (p.major, p.minor), "multiprocessors": p.multi_processor_count,
                            "uuid": "GPU-%s" % p.uuid if getattr(p, "uuid", None) else None})
    return out


if __name__ == "__main__":
    facts = {"torch": torch_facts(), "nvml": nvml_facts()}
    with open(sys.argv[1], "w") as f:
        json.dump(facts, f, indent=2, default=str)
    print(json.dumps(facts, default=str)[:2000])
