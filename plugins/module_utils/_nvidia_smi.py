# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection (not a public API): GPU, RDMA and interface facts.

Parses ``nvidia-smi -q -x`` with ``xml.etree`` (standard library only), falls back to the
CSV query where the XML is unavailable, and reads RDMA devices and IPv4 interfaces.  All
command execution goes through a ``run(argv) -> (rc, stdout, stderr)`` callable so that
the module passes ``AnsibleModule.run_command`` and the tests pass fakes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import xml.etree.ElementTree as ET

CSV_QUERY_FIELDS = [
    "index", "uuid", "name", "pci.bus_id", "driver_version", "memory.total", "memory.used",
    "memory.free", "persistence_mode", "ecc.mode.current", "mig.mode.current",
]
APPS_QUERY_FIELDS = ["gpu_uuid", "pid", "process_name", "used_memory"]

DRIVER_NOT_LOADED_MARKERS = (
    "couldn't communicate with the nvidia driver",
    "could not communicate with the nvidia driver",
    "driver/library version mismatch",
    "no devices were found",
    "nvml: driver not loaded",
    "failed to initialize nvml",
)

# Product name fragments -> architecture, for the CSV fallback (the XML says it directly).
ARCH_BY_NAME = [
    ("GB200", "Blackwell"), ("B200", "Blackwell"), ("B100", "Blackwell"), ("B300", "Blackwell"),
    ("RTX PRO 6000", "Blackwell"), ("GH200", "Hopper"), ("H200", "Hopper"), ("H100", "Hopper"),
    ("H800", "Hopper"), ("H20", "Hopper"), ("L40", "Ada Lovelace"), ("L4", "Ada Lovelace"),
    ("RTX 6000 Ada", "Ada Lovelace"), ("A100", "Ampere"), ("A800", "Ampere"), ("A30", "Ampere"),
    ("A40", "Ampere"), ("A10", "Ampere"), ("V100", "Volta"), ("T4", "Turing"),
]
# Boards whose 8 GPUs sit on NVSwitch (fabric manager required) when all pairs are NVLink.
NVSWITCH_PRODUCTS = ("H100", "H200", "H800", "H20", "A100", "A800", "B200", "B100", "B300")


class NvidiaSmiError(Exception):
    """kind: 'not_found' | 'driver' | 'failed' | 'parse'."""

    def __init__(self, kind, msg):
        super(NvidiaSmiError, self).__init__(msg)
        self.kind = kind
        self.msg = msg


def _add_usable(gpu):
    """Set memory_reserved_mib (from total - used - free where nvidia-smi did not say it) and
    memory_usable_mib = total - reserved: the memory CUDA reports as the device's total
    (torch.cuda.mem_get_info), which vLLM multiplies by --gpu-memory-utilization. On an
    H100 80GB HBM3 (driver 580) nvidia-smi says 81559 MiB total, 480 MiB reserved, CUDA 81079 MiB."""
    total, used, free = gpu.get("memory_total_mib"), gpu.get("memory_used_mib"), gpu.get("memory_free_mib")
    if gpu.get("memory_reserved_mib") is None and None not in (total, used, free) and total - used - free >= 0:
        gpu["memory_reserved_mib"] = total - used - free
    reserved = gpu.get("memory_reserved_mib")
    gpu["memory_usable_mib"] = (total - reserved) if total is not None and reserved is not None else total


def _int_mib(text):
    """'143771 MiB' -> 143771; 'N/A' -> None."""
    if text is None:
        return None
    m = re.match(r"\s*(\d+)", text)
    return int(m.group(1)) if m else None


def _clean(text):
    if text is None:
        return None
    text = text.strip()
    return None if text in ("", "N/A", "[N/A]", "[Not Supported]", "Not Supported") else text


def architecture_from_name(name):
    for frag, arch in ARCH_BY_NAME:
        if name and frag in name:
            return arch
    return None


def is_driver_failure(text):
    low = (text or "").lower()
    return any(m in low for m in DRIVER_NOT_LOADED_MARKERS)


# --------------------------------------------------------------------------- parsers
def parse_xml(text):
    """Parse ``nvidia-smi -q -x`` output into the facts dict (without nvlink/topology)."""
    try:
        root = ET.fromstring(text.encode("utf-8") if isinstance(text, str) else text)
    except ET.ParseError as e:
        raise NvidiaSmiError("parse", "nvidia-smi -q -x returned XML that does not parse: %s" % e)
    if root.tag != "nvidia_smi_log":
        raise NvidiaSmiError("parse", "nvidia-smi -q -x: unexpected root element <%s>" % root.tag)
    gpus = []
    processes = []
    for idx, g in enumerate(root.findall("gpu")):
        uuid = _clean(g.findtext("uuid"))
        gpu = {
            "index": idx,
            "uuid": uuid,
            "name": _clean(g.findtext("product_name")),
            "architecture": _clean(g.findtext("product_architecture")),
            "pci_bus_id": _clean(g.findtext("pci/pci_bus_id")) or g.get("id"),
            "memory_total_mib": _int_mib(g.findtext("fb_memory_usage/total")),
            "memory_used_mib": _int_mib(g.findtext("fb_memory_usage/used")),
            "memory_free_mib": _int_mib(g.findtext("fb_memory_usage/free")),
            "memory_reserved_mib": _int_mib(g.findtext("fb_memory_usage/reserved")),
            "persistence_mode": _clean(g.findtext("persistence_mode")),
            "mig_mode": _clean(g.findtext("mig_mode/current_mig")),
            "ecc_mode": _clean(g.findtext("ecc_mode/current_ecc")),
            "compute_mode": _clean(g.findtext("compute_mode")),
            "fabric_state": _clean(g.findtext("fabric/state")),
            "fabric_status": _clean(g.findtext("fabric/status")),
            "fabric_clique_id": _clean(g.findtext("fabric/cliqueId")),
            "nvlink_links_active": None,
        }
        # Older drivers (<= 535) report NVLink state per GPU in the XML.
        links = g.findall("nvlink/link") if g.find("nvlink") is not None else []
        if links:
            gpu["nvlink_links_active"] = sum(
                1 for lk in links if (lk.findtext("state") or "").strip().lower() == "active")
        _add_usable(gpu)
        gpus.append(gpu)
        for p in g.findall("processes/process_info"):
            processes.append({
                "gpu_index": idx,
                "gpu_uuid": uuid,
                "pid": int(p.findtext("pid", "0").strip() or 0),
                "type": _clean(p.findtext("type")),
                "process_name": _clean(p.findtext("process_name")),
                "used_memory_mib": _int_mib(p.findtext("used_memory")),
            })
    return {
        "source": "xml",
        "driver_version": _clean(root.findtext("driver_version")),
        "cuda_version": _clean(root.findtext("cuda_version")),
        "gpus": gpus,
        "processes": processes,
    }


def parse_query_csv(text, fields=None):
    """Parse ``--query-gpu=<fields> --format=csv,noheader,nounits`` output."""
    fields = fields or CSV_QUERY_FIELDS
    gpus = []
    driver = None
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(fields):
            raise NvidiaSmiError("parse", "nvidia-smi CSV query: expected %d columns, got %d in %r"
                                 % (len(fields), len(cells), line))
        row = dict(zip(fields, cells))
        driver = driver or _clean(row.get("driver_version"))
        name = _clean(row.get("name"))
        gpus.append({
            "index": int(row["index"]) if row.get("index", "").isdigit() else len(gpus),
            "uuid": _clean(row.get("uuid")),
            "name": name,
            "architecture": architecture_from_name(name),
            "pci_bus_id": _clean(row.get("pci.bus_id")),
            "memory_total_mib": _int_mib(row.get("memory.total")),
            "memory_used_mib": _int_mib(row.get("memory.used")),
            "memory_free_mib": _int_mib(row.get("memory.free")),
            "memory_reserved_mib": None,
            "persistence_mode": _clean(row.get("persistence_mode")),
            "mig_mode": _clean(row.get("mig.mode.current")),
            "ecc_mode": _clean(row.get("ecc.mode.current")),
            "compute_mode": _clean(row.get("compute_mode")),
            "fabric_state": None,
            "fabric_status": None,
            "fabric_clique_id": None,
            "nvlink_links_active": None,
        })
        _add_usable(gpus[-1])
    return {"source": "csv", "driver_version": driver, "cuda_version": None, "gpus": gpus, "processes": []}


def parse_compute_apps_csv(text, gpus):
    """``--query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv,noheader,nounits``."""
    by_uuid = {g["uuid"]: g["index"] for g in gpus}
    out = []
    for line in (text or "").splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 4 or not cells[1].isdigit():
            continue
        out.append({"gpu_index": by_uuid.get(cells[0]), "gpu_uuid": cells[0], "pid": int(cells[1]),
                    "type": "C", "process_name": cells[2], "used_memory_mib": _int_mib(cells[3])})
    return out


def parse_version(text):
    """``nvidia-smi --version`` or the table header -> (driver_version, cuda_version)."""
    driver = cuda = None
    m = re.search(r"DRIVER version\s*:\s*(\S+)", text or "") or re.search(r"Driver Version:\s*(\S+)", text or "")
    if m:
        driver = m.group(1)
    m = re.search(r"CUDA Version\s*:?\s*([0-9][0-9.]*)", text or "")
    if m:
        cuda = m.group(1)
    return driver, cuda


def parse_nvlink_status(text):
    """``nvidia-smi nvlink -s`` -> {gpu_index: {"active": n, "total": m, "gbps": [per link]}}."""
    out = {}
    cur = None
    for line in (text or "").splitlines():
        m = re.match(r"GPU (\d+):", line)
        if m:
            cur = int(m.group(1))
            out[cur] = {"active": 0, "total": 0, "link_gbps": []}
            continue
        m = re.match(r"\s*Link (\d+):\s*(.*)$", line)
        if m and cur is not None:
            out[cur]["total"] += 1
            val = m.group(2).strip()
            sm = re.match(r"([0-9.]+)\s*GB/s", val)
            if sm:
                out[cur]["active"] += 1
                out[cur]["link_gbps"].append(float(sm.group(1)))
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_topo_matrix(text):
    """``nvidia-smi topo -m`` -> {"gpus": {"GPU0": {"GPU1": "NV18", "NIC0": "PXB"}}, "nics": {"NIC0": "mlx5_0"}}."""
    lines = [_ANSI.sub("", line) for line in (text or "").splitlines()]
    header = None
    matrix = {}
    nics = {}
    for line in lines:
        cells = line.split("\t")
        if header is None:
            if len(cells) > 1 and cells[0] == "" and cells[1].startswith("GPU"):
                header = [c.strip() for c in cells[1:]]
            continue
        if re.match(r"^(GPU|NIC)\d+\t", line):
            name = cells[0].strip()
            row = {}
            for col, val in zip(header, cells[1:]):
                if re.match(r"^(GPU|NIC)\d+$", col):
                    row[col] = val.strip()
            matrix[name] = row
        m = re.match(r"^\s*(NIC\d+):\s*(\S+)", line)
        if m:
            nics[m.group(1)] = m.group(2)
    return {"matrix": matrix, "nics": nics}


def nvlink_pairs(topo):
    """Number of GPU pairs connected by NVLink (NV#) in a parsed topology and all-pairs flag."""
    gpus = sorted(k for k in topo["matrix"] if k.startswith("GPU"))
    pairs = total = 0
    for i, a in enumerate(gpus):
        for b in gpus[i + 1:]:
            total += 1
            if re.match(r"^NV\d+$", topo["matrix"][a].get(b, "")):
                pairs += 1
    return pairs, (total > 0 and pairs == total)


# --------------------------------------------------------------------------- sysfs / network
def _read_first_line(path):
    try:
        with open(path, "r") as f:
            return f.readline().strip()
    except (IOError, OSError):
        return None


def rdma_devices(sysfs_root="/sys"):
    """Names and port states of RDMA devices under <sysfs_root>/class/infiniband."""
    base = os.path.join(sysfs_root, "class", "infiniband")
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    out = []
    for name in names:
        ports = []
        pdir = os.path.join(base, name, "ports")
        try:
            pnames = sorted(os.listdir(pdir), key=lambda p: int(p) if p.isdigit() else 0)
        except OSError:
            pnames = []
        for p in pnames:
            state = _read_first_line(os.path.join(pdir, p, "state"))
            ports.append({
                "port": int(p) if p.isdigit() else p,
                "state": state.split(":", 1)[-1].strip() if state else None,
                "link_layer": _read_first_line(os.path.join(pdir, p, "link_layer")),
                "rate": _read_first_line(os.path.join(pdir, p, "rate")),
            })
        out.append({"name": name, "ports": ports})
    return out


def parse_ip_json(text):
    """``ip -j addr`` -> [{name, state, ipv4: [{address, prefix}]}]."""
    data = json.loads(text)
    out = []
    for link in data:
        addrs = [{"address": a["local"], "prefix": int(a.get("prefixlen", 32))}
                 for a in link.get("addr_info", []) if a.get("family") == "inet" and "local" in a]
        out.append({"name": link.get("ifname"), "state": link.get("operstate"), "ipv4": addrs})
    return out


def parse_ip_oneline(text):
    """``ip -o -4 addr`` -> same shape as parse_ip_json (state unknown)."""
    out = {}
    order = []
    for line in (text or "").splitlines():
        m = re.match(r"^\d+:\s+(\S+)\s+inet\s+([0-9.]+)/(\d+)", line)
        if not m:
            continue
        name = m.group(1).split("@")[0]
        if name not in out:
            out[name] = {"name": name, "state": None, "ipv4": []}
            order.append(name)
        out[name]["ipv4"].append({"address": m.group(2), "prefix": int(m.group(3))})
    return [out[n] for n in order]


def interfaces_from_ioctl(sysfs_root="/sys"):
    """No ``ip`` binary (the real GPU hosts in fixtures lack it): one IPv4 per interface via
    SIOCGIFADDR / SIOCGIFNETMASK on the names listed in <sysfs_root>/class/net."""
    import fcntl  # POSIX only; imported here so the module loads everywhere

    base = os.path.join(sysfs_root, "class", "net")
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    out = []
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for name in names:
            ipv4 = []
            try:
                req = struct.pack("256s", name[:15].encode())
                addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, req)[20:24])
                mask = fcntl.ioctl(s.fileno(), 0x891B, req)[20:24]
                prefix = bin(struct.unpack("!I", mask)[0]).count("1")
                ipv4.append({"address": addr, "prefix": prefix})
            except (OSError, IOError):
                pass
            out.append({"name": name, "state": _read_first_line(os.path.join(base, name, "operstate")),
                        "ipv4": ipv4})
    finally:
        s.close()
    return out


def collect_interfaces(run, ip_path, sysfs_root="/sys"):
    """Try ``ip -j addr``, then ``ip -o -4 addr``, then ioctl. Returns (interfaces, source)."""
    if ip_path:
        rc, out, dummy = run([ip_path, "-j", "addr"])
        if rc == 0 and out.strip().startswith("["):
            try:
                return parse_ip_json(out), "ip -j addr"
            except (ValueError, KeyError, TypeError):
                pass
        rc, out, dummy = run([ip_path, "-o", "-4", "addr"])
        if rc == 0:
            return parse_ip_oneline(out), "ip -o -4 addr"
    return interfaces_from_ioctl(sysfs_root), "ioctl"


# --------------------------------------------------------------------------- collection
def _nvswitch(gpus, product_name, topo):
    fabric_states = [g.get("fabric_state") for g in gpus if g.get("fabric_state")]
    if fabric_states:
        # Hopper and later report the NVSwitch fabric (fabric manager) registration per GPU;
        # 'N/A' (cleaned to None) on boards without NVSwitch.
        return True
    dummy, all_pairs = nvlink_pairs(topo) if topo else (0, False)
    return bool(len(gpus) >= 8 and all_pairs and product_name
                and any(p in product_name for p in NVSWITCH_PRODUCTS))


def collect(run, nvidia_smi, sysfs_root="/sys", include_processes=True, ip_path=None):
    """Run nvidia-smi (XML, else CSV) and gather everything. Raises NvidiaSmiError."""
    rc, out, err = run([nvidia_smi, "-q", "-x"])
    warnings = []
    facts = None
    if rc == 0:
        try:
            facts = parse_xml(out)
        except NvidiaSmiError as e:
            warnings.append("%s; falling back to the CSV query" % e.msg)
    else:
        if is_driver_failure(out + "\n" + err):
            raise NvidiaSmiError("driver", "nvidia-smi is installed (%s) but the NVIDIA driver is not loaded: %s"
                                 % (nvidia_smi, (out.strip() or err.strip()).splitlines()[0]))
        warnings.append("nvidia-smi -q -x failed (rc=%s): %s; falling back to the CSV query"
                        % (rc, (err.strip() or out.strip())[:200]))
    if facts is None:
        rc, out, err = run([nvidia_smi, "--query-gpu=" + ",".join(CSV_QUERY_FIELDS),
                            "--format=csv,noheader,nounits"])
        if rc != 0:
            if is_driver_failure(out + "\n" + err):
                raise NvidiaSmiError("driver", "nvidia-smi is installed (%s) but the NVIDIA driver is not loaded: %s"
                                     % (nvidia_smi, (out.strip() or err.strip()).splitlines()[0]))
            raise NvidiaSmiError("failed", "nvidia-smi failed (rc=%s) for both -q -x and --query-gpu: %s"
                                 % (rc, (err.strip() or out.strip())[:500]))
        facts = parse_query_csv(out)
        rc, out, dummy = run([nvidia_smi, "--version"])
        if rc != 0:
            rc, out, dummy = run([nvidia_smi])
        dummy, facts["cuda_version"] = parse_version(out if rc == 0 else "")
        if include_processes:
            rc, out, dummy = run([nvidia_smi, "--query-compute-apps=" + ",".join(APPS_QUERY_FIELDS),
                                  "--format=csv,noheader,nounits"])
            facts["processes"] = parse_compute_apps_csv(out, facts["gpus"]) if rc == 0 else []
    gpus = facts["gpus"]

    rc, out, dummy = run([nvidia_smi, "nvlink", "-s"])
    nvl = parse_nvlink_status(out) if rc == 0 else {}
    for g in gpus:
        if g["index"] in nvl:
            g["nvlink_links_active"] = nvl[g["index"]]["active"]
        elif g["nvlink_links_active"] is None and rc == 0:
            g["nvlink_links_active"] = 0
    rc, out, dummy = run([nvidia_smi, "topo", "-m"])
    topo = parse_topo_matrix(out) if rc == 0 else None
    pairs, all_pairs = nvlink_pairs(topo) if topo else (0, False)
    link_count = sum(g["nvlink_links_active"] or 0 for g in gpus)

    names = sorted(set(g["name"] for g in gpus if g["name"]))
    product = names[0] if len(names) == 1 else (", ".join(names) if names else None)
    archs = sorted(set(g["architecture"] for g in gpus if g["architecture"]))
    fabric_states = sorted(set(g["fabric_state"] for g in gpus if g["fabric_state"]))
    fabric_statuses = sorted(set(g["fabric_status"] for g in gpus if g["fabric_status"]))
    nvswitch = _nvswitch(gpus, product, topo)
    fabric_ready = None
    if fabric_states:
        fabric_ready = fabric_states == ["Completed"] and fabric_statuses in ([], ["Success"])

    ifaces, if_source = collect_interfaces(run, ip_path, sysfs_root)
    rdma = rdma_devices(sysfs_root)
    result = {
        "driver_loaded": True,
        "source": facts["source"],
        "gpu_count": len(gpus),
        "product_name": product,
        "architecture": archs[0] if len(archs) == 1 else (", ".join(archs) if archs else None),
        "driver_version": facts["driver_version"],
        "cuda_version": facts["cuda_version"],
        "gpus": gpus,
        "memory_total_mib": sum(g["memory_total_mib"] or 0 for g in gpus),
        "persistence_mode_all": bool(gpus) and all(g["persistence_mode"] == "Enabled" for g in gpus),
        "mig_enabled": any(g["mig_mode"] == "Enabled" for g in gpus),
        "nvlink": {
            "present": link_count > 0 or pairs > 0,
            "link_count": link_count,
            "gpu_pairs": pairs,
            "all_pairs": all_pairs,
        },
        "topology": topo["matrix"] if topo else {},
        "nvswitch": nvswitch,
        "fabric": {"state": ", ".join(fabric_states) or None, "status": ", ".join(fabric_statuses) or None,
                   "ready": fabric_ready},
        "processes": facts["processes"] if include_processes else [],
        "rdma_devices": [d["name"] for d in rdma],
        "rdma": rdma,
        "interfaces": ifaces,
        "interfaces_source": if_source,
        "warnings": warnings,
    }
    return result


def empty_facts(reason, sysfs_root="/sys", run=None, ip_path=None):
    """Facts for a host without a working NVIDIA driver (fail_on_missing=false)."""
    ifaces, if_source = collect_interfaces(run, ip_path, sysfs_root) if run else ([], None)
    rdma = rdma_devices(sysfs_root)
    return {
        "driver_loaded": False,
        "reason": reason,
        "source": None,
        "gpu_count": 0,
        "product_name": None,
        "architecture": None,
        "driver_version": None,
        "cuda_version": None,
        "gpus": [],
        "memory_total_mib": 0,
        "persistence_mode_all": False,
        "mig_enabled": False,
        "nvlink": {"present": False, "link_count": 0, "gpu_pairs": 0, "all_pairs": False},
        "topology": {},
        "nvswitch": False,
        "fabric": {"state": None, "status": None, "ready": None},
        "processes": [],
        "rdma_devices": [d["name"] for d in rdma],
        "rdma": rdma,
        "interfaces": ifaces,
        "interfaces_source": if_source,
        "warnings": [],
    }
