# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lab stand-in for ``nvidia-smi``: answers from a directory of captured outputs.

Standalone, Python 3 standard library only.  The fixture directory (a directory like
``tests/fixtures/gpu/h200x8``) comes from the environment variable
``LLMFLEET_GPU_FIXTURE_DIR`` and holds ``nvidia-smi.txt``, ``nvidia-smi-q.xml``,
``query-gpu.csv`` and ``topo.txt`` (sections ``## topo -m``, ``## nvlink -s``, ...).

Supported invocations (as the collection and the reference guides use them)::

    nvidia-smi                         the table (nvidia-smi.txt)
    nvidia-smi -q -x                   XML (nvidia-smi-q.xml); also --query --xml-format
    nvidia-smi --query-gpu=F1,F2 --format=csv[,noheader][,nounits] [-i N[,M]]
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,...
    nvidia-smi -L | --list-gpus
    nvidia-smi topo -m | topo --matrix
    nvidia-smi nvlink -s | --status ; nvidia-smi nvlink -c | --capabilities
    nvidia-smi --version

Failure simulation: with ``LLMFLEET_GPU_FAKE_NO_DRIVER=1`` (or when the fixture directory
is unset or missing) it prints the driver failure message of the real tool and exits 9,
like ``nvidia-smi`` on a host whose kernel module is not loaded.  Unknown arguments exit
1 with the real tool's "Invalid combination of input arguments" message.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET

DRIVER_FAILURE = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)
INVALID_ARGS = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n"

# Column order of the real query-gpu.csv captures (see tests/fixtures/gpu/README.md).
CSV_FIELDS = [
    "index", "uuid", "name", "pci.bus_id", "driver_version", "memory.total", "memory.used",
    "memory.free", "utilization.gpu", "temperature.gpu", "power.draw", "power.limit",
    "persistence_mode", "compute_mode", "ecc.mode.current", "clocks.sm", "clocks.max.sm",
    "mig.mode.current",
]

# query field -> (XML path under <gpu> or a special key, unit or None)
GPU_FIELDS = {
    "index": ("@index", None),
    "count": ("@count", None),
    "uuid": ("uuid", None),
    "gpu_uuid": ("uuid", None),
    "name": ("product_name", None),
    "gpu_name": ("product_name", None),
    "serial": ("serial", None),
    "gpu_serial": ("serial", None),
    "vbios_version": ("vbios_version", None),
    "pci.bus_id": ("pci/pci_bus_id", None),
    "gpu_bus_id": ("pci/pci_bus_id", None),
    "pci.domain": ("pci/pci_domain", None),
    "pci.bus": ("pci/pci_bus", None),
    "pci.device": ("pci/pci_device", None),
    "pci.device_id": ("pci/pci_device_id", None),
    "driver_version": ("@driver_version", None),
    "memory.total": ("fb_memory_usage/total", "MiB"),
    "memory.reserved": ("fb_memory_usage/reserved", "MiB"),
    "memory.used": ("fb_memory_usage/used", "MiB"),
    "memory.free": ("fb_memory_usage/free", "MiB"),
    "utilization.gpu": ("utilization/gpu_util", "%"),
    "utilization.memory": ("utilization/memory_util", "%"),
    "temperature.gpu": ("temperature/gpu_temp", ""),
    "temperature.memory": ("temperature/memory_temp", ""),
    "power.draw": ("gpu_power_readings/instant_power_draw", "W"),
    "power.draw.instant": ("gpu_power_readings/instant_power_draw", "W"),
    "power.draw.average": ("gpu_power_readings/average_power_draw", "W"),
    "power.limit": ("gpu_power_readings/current_power_limit", "W"),
    "persistence_mode": ("persistence_mode", None),
    "compute_mode": ("compute_mode", None),
    "pstate": ("performance_state", None),
    "ecc.mode.current": ("ecc_mode/current_ecc", None),
    "ecc.mode.pending": ("ecc_mode/pending_ecc", None),
    "clocks.sm": ("clocks/sm_clock", "MHz"),
    "clocks.current.sm": ("clocks/sm_clock", "MHz"),
    "clocks.gr": ("clocks/graphics_clock", "MHz"),
    "clocks.mem": ("clocks/mem_clock", "MHz"),
    "clocks.max.sm": ("max_clocks/sm_clock", "MHz"),
    "clocks.max.gr": ("max_clocks/graphics_clock", "MHz"),
    "clocks.max.mem": ("max_clocks/mem_clock", "MHz"),
    "mig.mode.current": ("mig_mode/current_mig", None),
    "mig.mode.pending": ("mig_mode/pending_mig", None),
    "minor_number": ("minor_number", None),
}
# header names the real tool prints for fields with units
UNIT_HEADER = {"MiB": " [MiB]", "%": " [%]", "W": " [W]", "MHz": " [MHz]", "": ""}

APP_FIELDS = {
    "pid": ("pid", None, "pid"),
    "process_name": ("process_name", None, "process_name"),
    "name": ("process_name", None, "process_name"),
    "used_memory": ("used_memory", "MiB", "used_gpu_memory"),
    "used_gpu_memory": ("used_memory", "MiB", "used_gpu_memory"),
    "gpu_uuid": ("@uuid", None, "gpu_uuid"),
    "gpu_bus_id": ("@bus_id", None, "gpu_bus_id"),
    "gpu_name": ("@name", None, "gpu_name"),
    "gpu_serial": ("@serial", None, "gpu_serial"),
}


class Fixture(object):
    def __init__(self, path):
        self.path = path

    def read(self, name):
        with open(os.path.join(self.path, name), "r", encoding="utf-8", newline="") as f:
            return f.read()

    def exists(self, name):
        return os.path.isfile(os.path.join(self.path, name))

    def section(self, title):
        """Text of ``## title`` in topo.txt ('' when absent or empty)."""
        if not self.exists("topo.txt"):
            return ""
        text = self.read("topo.txt")
        marker = "## %s\n" % title
        start = text.find(marker)
        if start < 0:
            return ""
        start += len(marker)
        end = text.find("\n## ", start - 1)
        return text[start:] if end < 0 else text[start:end + 1]

    def xml(self):
        return ET.fromstring(self.read("nvidia-smi-q.xml"))

    def csv_rows(self):
        if not self.exists("query-gpu.csv"):
            return []
        rows = []
        for line in self.read("query-gpu.csv").splitlines():
            if line.strip():
                rows.append([c.strip() for c in line.split(",")])
        return rows


def _strip_unit(value, unit):
    value = (value or "").strip()
    if unit is not None:
        for suffix in (" " + unit, " C", " %", " MiB", " W", " MHz"):
            if suffix.strip() and value.endswith(suffix):
                return value[: -len(suffix)].strip()
    return value


def _fmt(value, unit, nounits):
    if unit is None or unit == "" or nounits or value in ("N/A", "[N/A]", "[Not Supported]"):
        return value
    return "%s %s" % (value, unit)


def query_gpu(fx, fields, fmt_opts, ids):
    root = fx.xml()
    gpus = root.findall("gpu")
    csv_rows = fx.csv_rows()
    use_csv = len(csv_rows) == len(gpus) and all(len(r) == len(CSV_FIELDS) for r in csv_rows)
    for f in fields:
        if f not in GPU_FIELDS:
            sys.stderr.write('Field "%s" is not a valid field to query.\n\n' % f)
            return 2
    nounits = "nounits" in fmt_opts
    lines = []
    if "noheader" not in fmt_opts:
        lines.append(", ".join(f + (UNIT_HEADER[GPU_FIELDS[f][1]] if GPU_FIELDS[f][1] and not nounits
                                    else "") for f in fields))
    for idx, g in enumerate(gpus):
        if ids is not None and idx not in ids:
            continue
        vals = []
        for f in fields:
            path, unit = GPU_FIELDS[f]
            if use_csv and f in CSV_FIELDS:
                v = csv_rows[idx][CSV_FIELDS.index(f)]
            elif path == "@index":
                v = str(idx)
            elif path == "@count":
                v = str(len(gpus))
            elif path == "@driver_version":
                v = root.findtext("driver_version", "N/A")
            else:
                v = _strip_unit(g.findtext(path, "N/A"), unit)
            vals.append(_fmt(v, unit, nounits))
        lines.append(", ".join(vals))
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def query_apps(fx, fields, fmt_opts):
    root = fx.xml()
    for f in fields:
        if f not in APP_FIELDS:
            sys.stderr.write('Field "%s" is not a valid field to query.\n\n' % f)
            return 2
    nounits = "nounits" in fmt_opts
    lines = []
    if "noheader" not in fmt_opts:
        lines.append(", ".join(APP_FIELDS[f][2] + (" [MiB]" if APP_FIELDS[f][1] and not nounits else "")
                               for f in fields))
    for g in root.findall("gpu"):
        meta = {"@uuid": g.findtext("uuid", ""), "@bus_id": g.findtext("pci/pci_bus_id", ""),
                "@name": g.findtext("product_name", ""), "@serial": g.findtext("serial", "")}
        for p in g.findall("processes/process_info"):
            if (p.findtext("type") or "").strip() not in ("C", "C+G", "M", "M+C"):
                continue
            vals = []
            for f in fields:
                path, unit, dummy = APP_FIELDS[f]
                v = meta[path] if path.startswith("@") else _strip_unit(p.findtext(path, "N/A"), unit)
                vals.append(_fmt(v, unit, nounits))
            lines.append(", ".join(vals))
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def _parse_ids(text):
    ids = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            return None
        ids.add(int(part))
    return ids


def main(argv):
    args = list(argv[1:])
    fixture_dir = os.environ.get("LLMFLEET_GPU_FIXTURE_DIR", "")
    if os.environ.get("LLMFLEET_GPU_FAKE_NO_DRIVER") == "1" or not fixture_dir or not os.path.isdir(fixture_dir):
        sys.stdout.write(DRIVER_FAILURE)
        return 9
    fx = Fixture(fixture_dir)

    def show(text):
        sys.stdout.write(text)
        return 0

    if not args:
        return show(fx.read("nvidia-smi.txt"))
    if args in (["--version"], ["-v"]) or args == ["--version", "-v"]:
        return show(fx.section("version"))
    if args in (["-L"], ["--list-gpus"]):
        return show(fx.section("-L"))
    if len(args) == 2 and args[0] == "topo" and args[1] in ("-m", "--matrix"):
        return show(fx.section("topo -m"))
    if len(args) == 2 and args[0] == "nvlink" and args[1] in ("-s", "--status"):
        return show(fx.section("nvlink -s"))
    if len(args) == 2 and args[0] == "nvlink" and args[1] in ("-c", "--capabilities"):
        return show(fx.section("nvlink -c"))
    flags = set(args)
    if flags in ({"-q", "-x"}, {"--query", "--xml-format"}, {"-q", "--xml-format"}, {"--query", "-x"}, {"-qx"}, {"-xq"}):
        return show(fx.read("nvidia-smi-q.xml"))

    query = apps = fmt = None
    ids = None
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--query-gpu="):
            query = a.split("=", 1)[1]
        elif a.startswith("--query-compute-apps="):
            apps = a.split("=", 1)[1]
        elif a.startswith("--format="):
            fmt = a.split("=", 1)[1]
        elif a in ("-i", "--id") and i + 1 < len(args):
            ids = _parse_ids(args[i + 1])
            i += 1
            if ids is None:
                sys.stderr.write(INVALID_ARGS)
                return 1
        elif a.startswith("--id="):
            ids = _parse_ids(a.split("=", 1)[1])
            if ids is None:
                sys.stderr.write(INVALID_ARGS)
                return 1
        else:
            sys.stderr.write(INVALID_ARGS)
            return 1
        i += 1
    if fmt is None or (query is None) == (apps is None):
        sys.stderr.write(INVALID_ARGS)
        return 1
    fmt_opts = [o.strip() for o in fmt.split(",")]
    if fmt_opts[0] != "csv" or any(o not in ("csv", "noheader", "nounits") for o in fmt_opts):
        sys.stderr.write(INVALID_ARGS)
        return 1
    if query is not None:
        return query_gpu(fx, [f.strip() for f in query.split(",") if f.strip()], fmt_opts, ids)
    return query_apps(fx, [f.strip() for f in apps.split(",") if f.strip()], fmt_opts)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
