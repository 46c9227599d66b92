"""Shared pytest fixtures."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import pytest

# --------------------------------------------------------------------------- S3 (moto server)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _moto_server_executable() -> str:
    # Prefer the one next to this interpreter: a venv's bin/ need not be on PATH.
    beside = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("moto_server")
    if found is None:
        pytest.fail(
            "moto_server not found (next to the Python interpreter or on PATH); "
            "the S3 tests need a real server: pip install 'moto[server]'",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real moto S3 server on 127.0.0.1 for the whole session; yields its URL.

    Sets dummy AWS credentials and CLEARBG_S3_ENDPOINT_URL for the session, and isolates
    botocore from the developer's own ~/.aws config and profile.
    """
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [_moto_server_executable(), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15.0
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # any HTTP answer means it is up
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer on {endpoint} within 15 s:\n{log_path.read_text()}")
                time.sleep(0.05)

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("CLEARBG_S3_ENDPOINT_URL", endpoint)
            for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
                mp.delenv(name, raising=False)
            empty = str(tmp_path_factory.mktemp("aws") / "none")
            mp.setenv("AWS_CONFIG_FILE", empty)
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", empty)
            yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str):
    """A plain boto3 S3 client on the moto server, to arrange and check state independently
    of clearbg.storage."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def s3_bucket(s3_endpoint: str, s3_client) -> Iterator[str]:
    """A fresh, empty, uniquely named bucket; yields ``"s3://<bucket>"``."""
    from clearbg.storage import get_filesystem

    name = f"test-{uuid.uuid4().hex}"
    s3_client.create_bucket(Bucket=name)
    # s3fs instances are cached across tests; drop any listing they hold.
    fs, _ = get_filesystem(f"s3://{name}")
    fs.invalidate_cache()
    yield f"s3://{name}"
    fs.invalidate_cache()


# --------------------------------------------------------------------------- shared test data


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The read-only photo + mask set in ``<workspace>/shared/data`` (see its README.md).

    Located from this file (repo at ``<workspace>/main``), so tests work from any cwd; a copy of
    the tests elsewhere (bench/mutation.py) names it with ``CLEARBG_SHARED``.
    """
    workspace_shared = pathlib.Path(__file__).resolve().parents[2] / "shared"
    root = pathlib.Path(os.environ.get("CLEARBG_SHARED", workspace_shared)) / "data"
    if not (root / "README.md").is_file():
        pytest.fail(f"shared test data not found at {root}", pytrace=False)
    return root


@pytest.fixture(scope="session")
def shared(shared_data) -> pathlib.Path:
    """``<workspace>/shared``: data/, reference/ (official checkpoint layouts)."""
    return shared_data.parent


@pytest.fixture(scope="session")
def tiny_pairs(shared_data) -> list[dict]:
    """Rows of the ``tiny`` subset (fashion and cars) with absolute ``image``/``mask`` paths."""
    import csv

    with open(shared_data / "index.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["tiny"] == "1"]
    for row in rows:
        row["image"], row["mask"] = str(shared_data / row["image"]), str(shared_data / row["mask"])
    return rows


@pytest.fixture(scope="session")
def tiny_pairs_csv(tmp_path_factory, shared_data) -> Callable[..., str]:
    """``make(n, split=None, domain="fashion")``: a CSV of the first ``n`` tiny pairs of a domain
    (absolute paths, its own columns kept; ``split`` overrides the split column) for prepare."""
    import pandas as pd

    def make(n: int, split: str | list[str] | None = None, domain: str = "fashion") -> str:
        root = shared_data / domain
        rows = pd.read_csv(root / "manifest.csv")
        rows = rows[rows["tiny"] == 1].sort_values("id").head(n).reset_index(drop=True)
        rows["image"] = [str(root / p) for p in rows["image"]]
        rows["mask"] = [str(root / p) for p in rows["mask"]]
        if split is not None:
            rows["split"] = split
        path = tmp_path_factory.mktemp(f"pairs-{domain}") / "pairs.csv"
        rows.to_csv(path, index=False)
        return str(path)

    return make


@pytest.fixture(scope="session")
def half_size_dataset(tmp_path_factory, shared_data) -> Callable[..., str]:
    """``make(rows, split)``: the fashion ``rows`` (manifest rows) prepared at 32 px from half-size
    copies of their photos and masks, all in ``split``. Evaluation scores the source photos at
    full resolution, so halving them keeps the photos real and the tests fast."""
    from PIL import Image

    from clearbg.data.prepare import PrepareConfig, prepare_dataset

    def make(rows, split: str) -> str:
        root = shared_data / "fashion"
        rows = rows.copy()
        work = tmp_path_factory.mktemp("half-size")
        for column, resample in (("image", Image.Resampling.BILINEAR), ("mask", Image.Resampling.NEAREST)):
            (work / column).mkdir()
            small = []
            for rel in rows[column]:
                out = work / column / f"{pathlib.Path(rel).stem}.png"
                with Image.open(root / rel) as im:
                    im.resize((im.width // 2, im.height // 2), resample).save(out)
                small.append(str(out))
            rows[column] = small
        rows["split"] = split
        rows.to_csv(work / "pairs.csv", index=False)
        prepare_dataset(str(work / "pairs.csv"), str(work / "ds"), PrepareConfig(sizes=[(32, 32)]), workers=1)
        return str(work / "ds")

    return make


@pytest.fixture(scope="session")
def fashion_photo(tiny_pairs):
    """One real fashion photo (RGB PIL image) from the tiny subset."""
    from PIL import Image

    row = next(r for r in tiny_pairs if r["domain"] == "fashion")
    return Image.open(row["image"]).convert("RGB")


# --------------------------------------------------------------------------- MLflow


@pytest.fixture(scope="session")
def make_mlflow_store(tmp_path_factory) -> Callable[[pathlib.Path], str]:
    """``make_mlflow_store(folder)`` puts a real, empty MLflow SQLite store at ``folder/mlflow.db``
    and returns its ``sqlite:///`` URI.

    Creating a store runs MLflow's ~50 schema migrations (4-10 s on 2 cores), so that happens
    once per session, into a template file; each store is a byte copy of it (MLflow checks the
    schema version when it opens the copy).
    """
    template = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"

    def make(folder: pathlib.Path) -> str:
        if not template.exists():
            from mlflow import MlflowClient

            MlflowClient(f"sqlite:///{template}").search_experiments()
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, folder / "mlflow.db")
        return f"sqlite:///{folder / 'mlflow.db'}"

    return make


# Debian's Chromium, the way the project runs it everywhere (never `playwright install`).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium per test module (Playwright's sync API); tests open their own pages."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# --------------------------------------------------------------------------- permissions


@pytest.fixture(scope="session")
def without_root_override() -> list[str]:
    """A command prefix under which a ``chmod 000`` folder really cannot be listed.

    Tests run as root here, and root reads every folder. ``setpriv`` (util-linux) starts the
    command still as root but without the two capabilities that override file permissions, so
    it meets "Permission denied" like any user would. As another user no prefix is needed.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to test unreadable folders as root: apt-get install util-linux",
                    pytrace=False)
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"setpriv cannot drop capabilities here ({probe.stderr.strip()}); run the tests as a non-root user",
                    pytrace=False)
    return prefix


# --------------------------------------------------------------------------- PostgreSQL


def _postgres_bin() -> pathlib.Path | None:
    """Debian keeps PostgreSQL's server binaries off PATH, in /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("initdb")
    if found:
        return pathlib.Path(found).parent
    versions = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real, throwaway PostgreSQL server on a loopback port for this test session: its URL
    (``postgresql://clearbg@127.0.0.1:PORT/postgres``). initdb refuses root, so as root the
    server runs as the ``postgres`` user. Skipped, saying why, only where the binaries are missing
    (``./setup.sh`` installs Debian's ``postgresql``)."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (initdb in /usr/lib/postgresql/*/bin or on PATH); "
                    "./setup.sh installs them: apt-get install postgresql")
    import tempfile

    # Not under pytest's tmp folder: that one is private to root, and the server runs as postgres.
    folder = pathlib.Path(tempfile.mkdtemp(prefix="clearbg-postgres-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = folder / "data"
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "clearbg"],
                   check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
                    "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://clearbg@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
