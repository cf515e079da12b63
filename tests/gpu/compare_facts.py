"""Field-by-field check of gpu_facts (XML path and CSV fallback) against nvidia-smi's own CSV
answer, NVML (nvidia-ml-py) and torch.cuda.

    python3 tests/gpu/compare_facts.py RESULTS_DIR SMI_DIR
RESULTS_DIR holds gpu_facts_xml.json, gpu_facts_csv.json (the modules' results) and torch_facts.json;
SMI_DIR the capture of capture_smi.sh. Writes RESULTS_DIR/facts_compare.{json,md}; exit 1 on a mismatch.
The reference values are parsed here on their own (no code shared with the module)."""
import json
import os
import re
import sys

README_FIELDS = ("index,uuid,name,pci.bus_id,driver_version,memory.total,memory.used,memory.free,utilization.gpu,"
                 "temperature.gpu,power.draw,power.limit,persistence_mode,compute_mode,ecc.mode.current,clocks.sm,"
                 "clocks.max.sm,mig.mode.current").split(",")


def load(path):
    with open(path) as f:
        return json.load(f)


def section(text, title):
    m = re.search(r"^## %s\n(.*?)(?=^## |\Z)" % re.escape(title), text, re.S | re.M)
    return m.group(1) if m else ""


def smi_reference(smi_dir):
    rows = []
    with open(os.path.join(smi_dir, "query-gpu.csv")) as f:
        for line in f:
            if line.strip():
                rows.append(dict(zip(README_FIELDS, [c.strip() for c in line.split(",")])))
    with open(os.path.join(smi_dir, "topo.txt")) as f:
        topo = f.read()
    ver = section(topo, "version")
    cuda = re.search(r"CUDA Version\s*:\s*(\S+)", ver)
    links = {}
    cur = None
    for line in section(topo, "nvlink -s").splitlines():
        m = re.match(r"GPU (\d+):", line)
        if m:
            cur = int(m.group(1))
            links[cur] = 0
        elif cur is not None and re.search(r"Link \d+: [0-9.]+ GB/s", line):
            links[cur] += 1
    return {"count": len(rows), "driver_version": rows[0]["driver_version"] if rows else None,
            "cuda_version": cuda.group(1) if cuda else None,
            "gpus": [{"index": int(r["index"]), "uuid": r["uuid"], "name": r["name"], "pci_bus_id": r["pci.bus_id"],
                      "memory_total_mib": int(r["memory.total"]), "persistence_mode": r["persistence_mode"],
                      "ecc_mode": r["ecc.mode.current"], "mig_mode": r["mig.mode.current"],
                      "nvlink_links_active": links.get(int(r["index"]), 0)} for r in rows]}


def main(results, smi_dir):
    xml = load(os.path.join(results, "gpu_facts_xml.json"))["ansible_facts"]["llmfleet_gpu_facts"]
    csv = load(os.path.join(results, "gpu_facts_csv.json"))["ansible_facts"]["llmfleet_gpu_facts"]
    tf = load(os.path.join(results, "torch_facts.json"))
    smi = smi_reference(smi_dir)
    torch, nvml = tf["torch"], tf["nvml"]
    rows = []

    def check(field, ref_name, ref, xml_v, csv_v):
        ok_x = xml_v == ref
        ok_c = csv_v == ref or csv_v == "(not in CSV)"
        rows.append({"field": field, "reference": ref_name, "expected": ref, "gpu_facts_xml": xml_v,
                     "gpu_facts_csv": csv_v, "ok": ok_x and ok_c})

    check("gpu_count", "nvidia-smi CSV rows", smi["count"], xml["gpu_count"], csv["gpu_count"])
    check("gpu_count", "torch.cuda.device_count()", torch["device_count"], xml["gpu_count"], csv["gpu_count"])
    check("driver_version", "nvidia-smi CSV", smi["driver_version"], xml["driver_version"], csv["driver_version"])
    check("driver_version", "NVML", nvml.get("driver_version"), xml["driver_version"], csv["driver_version"])
    check("cuda_version", "nvidia-smi --version", smi["cuda_version"], xml["cuda_version"], csv["cuda_version"])
    check("cuda_version", "NVML cudaDriverVersion", nvml.get("cuda_version"), xml["cuda_version"], csv["cuda_version"])
    check("source", "XML first, CSV when -q -x fails", None, xml["source"], csv["source"])
    rows[-1].update(expected="xml / csv", ok=(xml["source"], csv["source"]) == ("xml", "csv"))
    # CUDA's total is nvidia-smi's total less what the driver reserves (480 MiB on an H100 80GB):
    # gpu_facts reports it per GPU as memory_usable_mib, and the planner sizes against it
    check("sum of gpus[].memory_usable_mib", "torch total_memory / MiB", sum(g["memory_total_mib"] for g in torch["gpus"]),
          sum(g.get("memory_usable_mib") or 0 for g in xml["gpus"]), sum(g.get("memory_usable_mib") or 0 for g in csv["gpus"]))
    check("mig_enabled", "NVML", any(g.get("mig_mode") == "Enabled" for g in nvml.get("gpus", [])),
          xml["mig_enabled"], csv["mig_enabled"])
    check("persistence_mode_all", "NVML", all(g.get("persistence_mode") == "Enabled" for g in nvml.get("gpus", [])),
          xml["persistence_mode_all"], csv["persistence_mode_all"])
    check("nvlink.link_count", "nvidia-smi nvlink -s", sum(g["nvlink_links_active"] for g in smi["gpus"]),
          xml["nvlink"]["link_count"], csv["nvlink"]["link_count"])
    for i, ref in enumerate(smi["gpus"]):
        gx, gc = xml["gpus"][i], csv["gpus"][i]
        t = torch["gpus"][i] if i < len(torch["gpus"]) else {}
        n = nvml["gpus"][i] if i < len(nvml.get("gpus", [])) else {}
        for key in ("uuid", "name", "pci_bus_id", "memory_total_mib", "persistence_mode", "ecc_mode", "mig_mode",
                    "nvlink_links_active"):
            check("gpus[%d].%s" % (i, key), "nvidia-smi", ref[key], gx.get(key), gc.get(key))
        check("gpus[%d].name" % i, "torch", t.get("name"), gx["name"], gc["name"])
        check("gpus[%d].memory_usable_mib" % i, "torch total_memory", t.get("memory_total_mib"),
              gx.get("memory_usable_mib"), gc.get("memory_usable_mib"))
        if t.get("uuid"):
            check("gpus[%d].uuid" % i, "torch", t["uuid"], gx["uuid"], gc["uuid"])
        for key in ("uuid", "name", "pci_bus_id", "memory_total_mib", "persistence_mode", "ecc_mode", "mig_mode",
                    "nvlink_links_active"):
            if key in n:
                check("gpus[%d].%s" % (i, key), "NVML", n[key], gx.get(key), gc.get(key))
    bad = [r for r in rows if not r["ok"]]
    with open(os.path.join(results, "facts_compare.json"), "w") as f:
        json.dump({"rows": rows, "mismatches": len(bad)}, f, indent=2)
    lines = ["| field | reference | expected | gpu_facts (XML) | gpu_facts (CSV fallback) | ok |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            r["field"], r["reference"], r["expected"], r["gpu_facts_xml"], r["gpu_facts_csv"],
            "yes" if r["ok"] else "**NO**"))
    lines.append("")
    lines.append("%d checks, %d mismatches" % (len(rows), len(bad)))
    with open(os.path.join(results, "facts_compare.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
