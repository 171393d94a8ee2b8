#!/usr/bin/env python3
"""The local stack without Docker: Apache Kafka (KRaft, jars from Maven Central) and PostgreSQL.

Usage: python3 deploy/stack.py up [--brokers 1|3] [--kafka-only] | down | status | env

Everything lives under `.local/` (git-ignored): data directories, logs in `.local/logs/`, and
`.local/stack.env`, which the services read for their connection settings (the database
password is generated here and never committed). The Kafka jars are a cache shared by every
state folder (`.local/kafka/libs`, or WENMING_KAFKA_LIBS). Standard library only, so it runs
before the virtualenv exists. `up` is idempotent: a running node is left alone.

Shapes:
- `up` (default): one combined broker+controller node on 127.0.0.1:9092 (controller 9192),
  replication factor 1; what the demo and most tests use.
- `up --brokers 3` (= `make up CLUSTER=3`): three combined broker+controller nodes on
  ports P, P+1, P+2 (controllers P+100..P+102) with a static voter set
  (`controller.quorum.voters=1@..,2@..,3@..`): the KRaft quorum survives one node down.
  Topics get replication factor 3 and min.insync.replicas 2, so with acks=all a record is
  acknowledged only once two replicas hold it, and one broker may die without losing an
  acknowledged record or stopping writes.

Environment: WENMING_LOCAL_DIR (state folder, default `.local`), WENMING_KAFKA_PORT (first
broker port, default 9092; controller ports are 100 higher), WENMING_PG_PORT (55432).
A second stack runs beside the first in another folder, e.g. the three-broker cluster beside
the everyday single broker, reusing its PostgreSQL:

    WENMING_LOCAL_DIR=.local/cluster WENMING_KAFKA_PORT=19092 WENMING_PG_DSN=<the shared DSN> \
        python3 deploy/stack.py up --brokers 3 --kafka-only
    WENMING_LOCAL_DIR=.local/cluster python3 deploy/stack.py down   # stops only those brokers

`--kafka-only` starts no PostgreSQL; that folder's `stack.env` then carries the given
WENMING_PG_DSN, if any, and the cluster's bootstrap list.
`down` stops the brokers of its folder and a PostgreSQL only if that folder started one.
"""

from __future__ import annotations

import argparse
import base64
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = Path(os.environ.get("WENMING_LOCAL_DIR", ROOT / ".local"))
LOGS = LOCAL / "logs"
KAFKA_POM = ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_LOG4J = ROOT / "deploy" / "kafka" / "log4j2.properties"
KAFKA_LIBS = Path(os.environ.get("WENMING_KAFKA_LIBS", ROOT / ".local" / "kafka" / "libs"))
PG_DIR = LOCAL / "pg"
PG_PORT = int(os.environ.get("WENMING_PG_PORT", "55432"))
KAFKA_BASE_PORT = int(os.environ.get("WENMING_KAFKA_PORT", "9092"))
CONTROLLER_BASE_PORT = KAFKA_BASE_PORT + 100
ENV_FILE = LOCAL / "stack.env"
KAFKA_ONLY_MARK = LOCAL / "kafka-only"
PG_USER = "wenming"
PG_DB = "wenming"


def log(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_port(port: int, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.2)
    raise SystemExit(f"[stack] {what} did not accept connections on 127.0.0.1:{port} in {timeout:.0f}s; see {LOGS}")


def pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


# ---------------------------------------------------------------- Kafka


def kafka_version() -> str:
    text = KAFKA_POM.read_text()
    return text.split("<kafka.version>")[1].split("</kafka.version>")[0]


def ensure_kafka_jars() -> None:
    marker = KAFKA_LIBS / f".complete-{kafka_version()}"
    if marker.exists():
        return
    if shutil.which("mvn") is None:
        raise SystemExit("[stack] Maven (mvn) is needed to fetch the Kafka jars")
    log(f"fetching Apache Kafka {kafka_version()} jars from Maven Central (once)")
    shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
    KAFKA_LIBS.mkdir(parents=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={KAFKA_LIBS}",
        ],
        check=True,
    )
    marker.touch()


def kafka_node_dir(node: int) -> Path:
    return LOCAL / "kafka" / f"node-{node}"


def kafka_properties(node: int, brokers: int) -> str:
    """server.properties of one combined broker+controller node.

    With three nodes: static voters 1..3, replication factor 3 for every topic (and the
    offsets and transaction logs), min.insync.replicas 2, no unclean leader election.
    """
    voters = ",".join(f"{n}@127.0.0.1:{CONTROLLER_BASE_PORT + n - 1}" for n in range(1, brokers + 1))
    port = KAFKA_BASE_PORT + node - 1
    rf = min(3, brokers)
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{CONTROLLER_BASE_PORT + node - 1}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={kafka_node_dir(node) / 'data'}",
            f"num.partitions={6 if brokers == 1 else 12}",
            f"default.replication.factor={rf}",
            f"min.insync.replicas={1 if brokers == 1 else 2}",
            f"offsets.topic.replication.factor={rf}",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={1 if brokers == 1 else 2}",
            "offsets.topic.num.partitions=10",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.retention.hours=-1",
            "unclean.leader.election.enable=false",
            "",
        ]
    )


def kafka_cluster_id() -> str:
    id_file = LOCAL / "kafka" / "cluster.id"
    if not id_file.exists():
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    return id_file.read_text().strip()


def java_cmd(main: str, *args: str, heap: str = "512m", log_file: Path | None = None) -> list[str]:
    cmd = [
        "java",
        f"-Xmx{heap}",
        f"-Xms{heap if heap != '512m' else '256m'}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
    ]
    if log_file is not None:
        cmd.append(f"-Dkafka.logs.file={log_file}")
    return [*cmd, "-cp", f"{KAFKA_LIBS}/*", main, *args]


def configured_brokers() -> int:
    f = LOCAL / "kafka" / "brokers"
    return int(f.read_text()) if f.exists() else 1


def kafka_up(brokers: int) -> None:
    ensure_kafka_jars()
    if configured_brokers() != brokers and any(
        pid_alive(kafka_node_dir(n) / "pid") for n in range(1, configured_brokers() + 1)
    ):
        raise SystemExit(f"[stack] a {configured_brokers()}-broker Kafka is running; `down` it first")
    if configured_brokers() != brokers:
        # A different cluster shape needs freshly formatted storage.
        (LOCAL / "kafka" / "cluster.id").unlink(missing_ok=True)
        for n in range(1, 4):
            shutil.rmtree(kafka_node_dir(n), ignore_errors=True)
    (LOCAL / "kafka").mkdir(parents=True, exist_ok=True)
    (LOCAL / "kafka" / "brokers").write_text(str(brokers))
    cluster_id = kafka_cluster_id()
    started = []
    for node in range(1, brokers + 1):
        ndir = kafka_node_dir(node)
        ndir.mkdir(parents=True, exist_ok=True)
        port = KAFKA_BASE_PORT + node - 1
        if pid_alive(ndir / "pid"):
            log(f"kafka node {node} already running (pid {pid_alive(ndir / 'pid')}, port {port})")
            continue
        if port_open(port):
            raise SystemExit(f"[stack] port {port} is taken by another process; stop it first")
        props = ndir / "server.properties"
        props.write_text(kafka_properties(node, brokers))
        if not (ndir / "data" / "meta.properties").exists():
            subprocess.run(
                java_cmd(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                    log_file=LOGS / f"kafka-{node}.log",
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        proc = subprocess.Popen(
            java_cmd("kafka.Kafka", str(props), log_file=LOGS / f"kafka-{node}.log"),
            stdout=(LOGS / f"kafka-{node}.out").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        (ndir / "pid").write_text(str(proc.pid))
        started.append((node, port))
    for node, port in started:
        wait_port(port, f"kafka node {node}", 60)
        log(f"kafka node {node} up on 127.0.0.1:{port}")


def kafka_down() -> None:
    for node in range(1, 4):
        stop_pid(kafka_node_dir(node) / "pid", f"kafka node {node}")


def stop_pid(pid_file: Path, what: str, timeout: float = 30) -> None:
    pid = pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid_file):
        time.sleep(0.2)
    if pid_alive(pid_file):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    pid_file.unlink(missing_ok=True)
    log(f"{what} stopped")


# ---------------------------------------------------------------- PostgreSQL


def pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    if not candidates:
        log("PostgreSQL not found; installing Debian's postgresql package")
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "postgresql"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=subprocess.DEVNULL,
        )
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent


def as_pg_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; run its tools as the `postgres` system user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def pg_password() -> str:
    pw_file = PG_DIR / "password"
    if not pw_file.exists():
        pw_file.write_text(secrets.token_urlsafe(24))
        pw_file.chmod(0o600)
    return pw_file.read_text().strip()


def pg_up() -> None:
    bindir = pg_bin()
    data = PG_DIR / "data"
    PG_DIR.mkdir(parents=True, exist_ok=True)
    password = pg_password()
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    if not (data / "PG_VERSION").exists():
        log("initialising PostgreSQL data directory")
        data.mkdir(parents=True, exist_ok=True)
        pw_tmp = PG_DIR / "initpw"
        pw_tmp.write_text(password)
        if owner is not None:
            for p in (PG_DIR, data, pw_tmp):
                os.chown(p, owner.pw_uid, owner.pw_gid)
        pw_tmp.chmod(0o600)
        subprocess.run(
            as_pg_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    f"--pwfile={pw_tmp}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        pw_tmp.unlink()
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# wenming local stack\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {PG_PORT}\n"
                f"unix_socket_directories = '{PG_DIR}'\n"
                "max_connections = 300\n"
                "shared_buffers = 256MB\n"
                "wal_level = replica\n"
                "max_wal_size = 2GB  # bulk replays without forced checkpoints\n"
                "timezone = 'UTC'\n"
            )
    if owner is not None:
        os.chown(PG_DIR, owner.pw_uid, owner.pw_gid)
    if (data / "postmaster.pid").exists() and port_open(PG_PORT):
        log(f"postgresql already running on 127.0.0.1:{PG_PORT}")
    else:
        logfile = LOGS / "postgresql.log"
        if owner is not None:
            logfile.touch()
            os.chown(logfile, owner.pw_uid, owner.pw_gid)
        subprocess.run(
            as_pg_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "60", "start"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait_port(PG_PORT, "postgresql", 30)
        log(f"postgresql up on 127.0.0.1:{PG_PORT}")
    ensure_database(bindir, password)
    ENV_FILE.write_text(
        f"WENMING_PG_DSN=postgresql://{PG_USER}:{password}@127.0.0.1:{PG_PORT}/{PG_DB}\n"
        f"WENMING_KAFKA_BOOTSTRAP={kafka_bootstrap()}\n"
    )
    ENV_FILE.chmod(0o600)


def ensure_database(bindir: Path, password: str) -> None:
    psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", PG_USER, "-d", "postgres", "-tAc"]
    env = {**os.environ, "PGPASSWORD": password}
    for _ in range(50):
        found = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'"], capture_output=True, text=True, env=env
        )
        if found.returncode == 0:
            break
        time.sleep(0.2)
    if found.stdout.strip() != "1":
        subprocess.run([*psql, f"CREATE DATABASE {PG_DB}"], check=True, env=env, stdout=subprocess.DEVNULL)
        log(f"database {PG_DB} created")


def kafka_bootstrap() -> str:
    return ",".join(f"127.0.0.1:{KAFKA_BASE_PORT + n}" for n in range(configured_brokers()))


def pg_down() -> None:
    data = PG_DIR / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(
            as_pg_user([str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        log("postgresql stopped")


def pg_restart() -> None:
    data = PG_DIR / "data"
    subprocess.run(
        as_pg_user(
            [
                str(pg_bin() / "pg_ctl"),
                "-D",
                str(data),
                "-m",
                "fast",
                "-w",
                "-l",
                str(LOGS / "postgresql.log"),
                "restart",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )


# ---------------------------------------------------------------- commands


def write_kafka_only_env() -> None:
    """stack.env of a folder without its own PostgreSQL: the cluster, and the given DSN if any."""
    lines = [f"WENMING_KAFKA_BOOTSTRAP={kafka_bootstrap()}"]
    dsn = os.environ.get("WENMING_PG_DSN")
    if dsn:
        lines.insert(0, f"WENMING_PG_DSN={dsn}")
    ENV_FILE.write_text("\n".join(lines) + "\n")
    ENV_FILE.chmod(0o600)


def up(brokers: int, *, kafka_only: bool = False) -> None:
    t0 = time.monotonic()
    LOGS.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # The postgres user must be able to write its log here.
        LOGS.chmod(0o777)
    # Jars and the Kafka nodes start while PostgreSQL initialises.
    ensure_kafka_jars()
    kafka_up(brokers)
    if kafka_only:
        KAFKA_ONLY_MARK.touch()
        write_kafka_only_env()
    else:
        KAFKA_ONLY_MARK.unlink(missing_ok=True)
        pg_up()
    log(f"stack up in {time.monotonic() - t0:.1f}s; settings in {ENV_FILE}, logs in {LOGS}")


def status() -> int:
    down_count = 0
    for node in range(1, configured_brokers() + 1):
        pid = pid_alive(kafka_node_dir(node) / "pid")
        port = KAFKA_BASE_PORT + node - 1
        state = f"running (pid {pid})" if pid and port_open(port) else "down"
        down_count += state == "down"
        print(f"kafka node {node}: {state}, 127.0.0.1:{port}, log {LOGS / f'kafka-{node}.log'}")
    if KAFKA_ONLY_MARK.exists():
        print(f"postgresql: not started here (--kafka-only); stack.env {ENV_FILE}")
        return 0 if down_count == 0 else 3
    pg_pid_file = PG_DIR / "data" / "postmaster.pid"
    pg_ok = pg_pid_file.exists() and port_open(PG_PORT)
    down_count += not pg_ok
    print(f"postgresql: {'running' if pg_ok else 'down'}, 127.0.0.1:{PG_PORT}, log {LOGS / 'postgresql.log'}")
    return 0 if down_count == 0 else 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start Kafka and PostgreSQL (idempotent)")
    p_up.add_argument(
        "--brokers",
        type=int,
        default=int(os.environ.get("CLUSTER", "1") or 1),
        choices=(1, 3),
        help="1 (default) or 3 combined broker+controller nodes (RF 3, min.insync.replicas 2)",
    )
    p_up.add_argument(
        "--kafka-only",
        action="store_true",
        help="start Kafka only, no PostgreSQL (stack.env gets WENMING_PG_DSN from the environment, if set)",
    )
    sub.add_parser("down", help="stop what `up` started in this state folder (WENMING_LOCAL_DIR)")
    sub.add_parser("status", help="show what runs; exit 3 if something is down")
    sub.add_parser("env", help="print the connection settings file")
    sub.add_parser("restart-postgres", help="restart PostgreSQL (fault tests)")
    args = parser.parse_args()
    if args.cmd == "up":
        up(args.brokers, kafka_only=args.kafka_only)
    elif args.cmd == "down":
        kafka_down()
        pg_down()
    elif args.cmd == "status":
        return status()
    elif args.cmd == "env":
        print(ENV_FILE.read_text() if ENV_FILE.exists() else "", end="")
    elif args.cmd == "restart-postgres":
        pg_restart()
    return 0


if __name__ == "__main__":
    sys.exit(main())
