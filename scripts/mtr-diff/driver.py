#!/usr/bin/env python3
"""Differential runner for MariaDB's own test suite (mysql-test-run test files).

Runs every test of a list with `mariadb-test` (mysqltest) twice per protocol: once
straight against a throwaway mariadbd and once through wolfscale in front of that same
server (`wolfscale proxy`, the front end alone; `--cluster`: a one-node cluster), in
the plain text protocol, --ps-protocol and --cursor-protocol. The two outputs of each
(test, protocol) are normalized (see normalizations()) and compared.
Started by scripts/mtr-diff.sh, which installs the packages and builds the binary.

Nothing here talks to a MariaDB on 3306: the server is installed into a temporary
directory and listens on a free loopback port and its own socket.
"""

import argparse
import difflib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

MTR_DIR = "/usr/share/mysql/mysql-test"
SHARE_DIR = "/usr/share/mysql"
# Never dropped between runs. `wolfscale` is where the node keeps its applied-entry
# marker (cluster builds); both runs see it alike.
SYSTEM_DBS = {"mysql", "information_schema", "performance_schema", "sys", "mtr",
              "wolfscale"}
PROTOCOLS = {"text": [], "ps": ["--ps-protocol"], "cursor": ["--cursor-protocol"]}
# mysqltest exits 62 when the test skips itself (--skip, an unmet have_*.inc).
RC_SKIP = 62
RC_HANG = "hang"

# ----------------------------------------------------------------------------------
# Normalizations of environment noise, applied to both sides before comparing. Each is
# (name, regex, replacement). They are deliberately narrow: a number is only masked
# where it is a connection/thread id, a port or a duration, never in general, so a
# wrong result or a different error code still shows.
# ----------------------------------------------------------------------------------


def normalizations(ctx):
    ports = "|".join(str(p) for p in sorted(ctx["ports"], reverse=True))
    paths = sorted(ctx["paths"], key=len, reverse=True)
    rules = [
        # The two runs use different socket paths (the real one, and a path that does
        # not exist for the proxy run, so nothing there can reach the server by a
        # socket) and different TCP ports (server, proxy); tests that print
        # MASTER_MYPORT/MASTER_MYSOCK or a client error naming host:port show them.
        # A port is a 5-digit number masked wherever it stands alone.
        ("paths", re.compile("|".join(re.escape(p) for p in paths)), "<PATH>"),
        ("ports", re.compile(r"(?<![0-9])(?:%s)(?![0-9])" % ports), "<PORT>"),
        # Connection ids differ between the two runs: every connection made through
        # the proxy (the proxy's own account loads and the cleanup connections)
        # advances MariaDB's thread counter. mysqltest prints them in
        # "Unknown thread id: N" and in errors that name a connection.
        ("thread-id-errors",
         re.compile(r"(Unknown thread id: |thread id |Thread ID: |connection id:? |"
                    r"Connection id: |thread_id=|Aborted connection )\d+"),
         r"\1<ID>"),
        # Processlist and SHOW ENGINE ... STATUS rows that a test prints without
        # --replace_column: "<id>\t<user>\t<host:port>..." -- the leading id and the
        # client's source port are noise.
        ("processlist-id", re.compile(r"^\d+(\t(?:root|system user|event_scheduler|"
                                      r"[a-z_0-9]+)\t(?:localhost|127\.0\.0\.1))",
                                      re.M), r"<ID>\1"),
        ("client-host-port", re.compile(r"\b(localhost|127\.0\.0\.1):\d+\b"), r"\1:<P>"),
        # Durations the client programs print ("(0.001 sec)" from $MYSQL) are not
        # deterministic even between two direct runs.
        ("durations", re.compile(r"\b\d+\.\d+ sec\b"), "<T> sec"),
        # When a test aborts, mysqltest names its log file, which lives under
        # runs/run-direct or runs/run-proxy of the output directory.
        ("run-dirs", re.compile(r"/run-(direct|proxy)/"), "/run-<TARGET>/"),
    ]
    return rules


def normalize(text, rules):
    for _name, rx, rep in rules:
        text = rx.sub(rep, text)
    return text


# ----------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(5)
                head = s.recv(5)
                if len(head) == 5 and head[4] == 10:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{what} did not accept connections on port {port}")


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class Server:
    """One throwaway mariadbd, with the mtr-like settings tests expect."""

    def __init__(self, root, buffer_pool):
        # mtr's layout: tests reach files with paths relative to the datadir such as
        # '../../tmp/x' (= $MYSQLTEST_VARDIR/tmp), and secure_file_priv is the vardir.
        self.vardir = os.path.join(root, "var")
        self.dir = os.path.join(self.vardir, "mysqld.1")
        self.data = os.path.join(self.dir, "data")
        self.tmp = os.path.join(self.vardir, "tmp")
        self.sock = os.path.join(root, "mariadbd.sock")
        self.log = os.path.join(self.vardir, "log", "mysqld.1.err")
        self.buffer_pool = buffer_pool
        self.port = None
        self.proc = None
        for d in (self.dir, self.tmp, os.path.join(self.vardir, "log")):
            os.makedirs(d, exist_ok=True)
        # mtr copies the suite's data files to $MYSQLTEST_VARDIR/std_data (inside
        # secure_file_priv; tests load '../../std_data/loaddata1.dat' from the datadir).
        shutil.copytree(os.path.join(MTR_DIR, "std_data"),
                        os.path.join(self.vardir, "std_data"), symlinks=True)

    def common(self):
        return ["--no-defaults", f"--datadir={self.data}", f"--tmpdir={self.tmp}",
                "--user=root", f"--innodb-buffer-pool-size={self.buffer_pool}",
                "--innodb-log-file-size=10M", "--character-set-server=latin1",
                "--default-storage-engine=myisam"]

    def install(self):
        out = subprocess.run(
            ["mariadb-install-db", *self.common(),
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            cwd=self.dir, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit("mariadb-install-db failed:\n" + out.stderr[-3000:])

    def start(self):
        # A restart (reset()) keeps the port: the proxy's config points at it.
        self.port = self.port or free_port()
        args = [
            "/usr/sbin/mariadbd", *self.common(),
            f"--port={self.port}", "--bind-address=127.0.0.1",
            f"--socket={self.sock}", f"--pid-file={self.dir}/mariadbd.pid",
            # --log-basename first: it would otherwise move the error log.
            "--log-basename=mysqld", f"--log-error={self.log}",
            # From src/localdb.rs.
            "--skip-log-bin", "--max-connections=500",
            # From mysql-test/include/default_mysqld.cnf (what mtr gives every
            # server), so the tests see the settings their .result files assume.
            # --skip-name-resolve (localdb.rs) is left out on purpose: mtr servers
            # resolve, so a TCP client on 127.0.0.1 is 'localhost' and matches the
            # user@localhost accounts the tests create, directly and through the proxy.
            "--local-infile", f"--secure-file-priv={self.vardir}",
            "--log-bin-trust-function-creators=1", "--key-buffer-size=1M",
            "--sort-buffer-size=256K", "--max-heap-table-size=1M",
            "--loose-aria-pagecache-buffer-size=8M", "--connect-timeout=60",
            "--open-files-limit=1024", "--use-stat-tables=preferably",
            "--histogram-type=json_hb", "--plugin-maturity=unknown",
            "--loose-debug-no-sync",
            "--innodb-lru-scan-depth=100",
        ]
        env = dict(os.environ, TZ="GMT-3")  # mtr's default --timezone
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        try:
            wait_port(self.port, self.proc, "mariadbd", 120)
        except SystemExit:
            sys.stderr.write(open(self.log, errors="replace").read()[-3000:])
            raise

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)

    def snapshot(self):
        """Keep a copy of the provisioned datadir (server stopped) for reset()."""
        self.stop()
        shutil.copytree(self.data, self.data + ".pristine", symlinks=True)
        self.start()

    def reset(self):
        """Last resort of cleanup(): restart on a fresh copy of the snapshot."""
        self.stop()
        shutil.rmtree(self.data)
        shutil.copytree(self.data + ".pristine", self.data, symlinks=True)
        self.start()

    def sql(self, query, force=False, timeout=120):
        """Run SQL over the server's own socket (never through the proxy)."""
        cmd = ["mariadb", "--no-defaults", f"--socket={self.sock}", "-uroot",
               "--batch", "--skip-column-names", "--raw"]
        if force:
            cmd.append("--force")
        out = subprocess.run(cmd, input=query, capture_output=True, text=True,
                             timeout=timeout)
        if out.returncode != 0 and not force:
            raise RuntimeError(f"SQL failed: {out.stderr.strip()}\n{query[:500]}")
        return out.stdout


def sql_to_client(path):
    """Port of mtr's sql_to_bootstrap(): mtr_warnings.sql / mtr_check.sql are written
    in mysqltest syntax ("delimiter ||;", "--" comments); turn them into input for the
    mariadb client, one statement per '||'."""
    out, delim, cur = ["DELIMITER ||"], ";", []
    for line in open(path, errors="replace").read().splitlines():
        m = re.match(r"^delimiter (.*)", line)
        if m:
            new = m.group(1)
            if new.endswith(delim):
                new = new[: -len(delim)]
            delim = new
            continue
        if line.endswith(delim):
            cur.append(line[: -len(delim)])
            out.append(" ".join(cur) + "||")
            cur = []
            continue
        if re.match(r"^\s*--", line):
            continue
        cur.append(line.replace("'@HOSTNAME@'", "localhost"))
    return "\n".join(out) + "\nDELIMITER ;\n"


def provision(server):
    """What mtr adds to a freshly installed server (mysql-test-run.pl,
    mysql_install_db()): the test database in latin1, time zone test data, no
    anonymous accounts, and the mtr database with add_suppression()/check_testcase()."""
    server.sql("USE mysql;\n" +
               open(os.path.join(SHARE_DIR, "mysql_test_data_timezone.sql")).read())
    server.sql(
        "CREATE DATABASE IF NOT EXISTS test CHARACTER SET latin1 COLLATE latin1_swedish_ci;\n"
        "DELETE FROM mysql.global_priv WHERE user='';\nFLUSH PRIVILEGES;\n"
        "CREATE DATABASE mtr CHARSET=latin1;\n")
    for f in ("mtr_warnings.sql", "mtr_check.sql"):
        server.sql(sql_to_client(os.path.join(MTR_DIR, "include", f)))


# System tables that change on their own (logs, engine statistics, replication
# state): never compared or restored.
UNWATCHED_TABLES = {"mysql.general_log", "mysql.slow_log", "mysql.innodb_table_stats",
                    "mysql.innodb_index_stats", "mysql.gtid_slave_pos",
                    # emptied by every cleanup anyway (tests add suppressions)
                    "mtr.test_suppressions"}

# One query for the fingerprint of every table in `mysql` and `mtr`: its columns and a
# checksum of its rows. A test that is killed (or fails) half-way can leave them
# changed: sp-error, for one, empties mysql.proc and reloads it at its end.
FINGERPRINT_SQL = """SELECT 'T', CONCAT(table_schema,'.',table_name),
  MD5(GROUP_CONCAT(column_name,' ',column_type ORDER BY ordinal_position))
  FROM information_schema.columns WHERE table_schema IN ('mysql','mtr')
  GROUP BY table_schema, table_name"""


def checksum_sql(tables):
    return "CHECKSUM TABLE " + ", ".join(tables) if tables else ""


class Baseline:
    """State captured after provisioning; each run starts from it (see cleanup)."""

    def __init__(self, server, dumpdir):
        self.vars = self.global_vars(server)
        self.users = set(server.sql(
            "SELECT CONCAT(QUOTE(user),'@',QUOTE(host)) FROM mysql.global_priv"
        ).split("\n"))
        self.plugins = set(server.sql(
            "SELECT plugin_name FROM information_schema.plugins").split("\n"))
        self.tables = {}
        for row in server.sql(FINGERPRINT_SQL).split("\n"):
            f = row.split("\t")
            if len(f) == 3 and f[1] not in UNWATCHED_TABLES:
                self.tables[f[1]] = [f[2], None]
        for row in server.sql(checksum_sql(sorted(self.tables))).split("\n"):
            f = row.split("\t")
            if len(f) == 2 and f[0] in self.tables:
                self.tables[f[0]][1] = f[1]
        # One dump file per table, to put back whatever a run changed.
        self.dumps = {}
        os.makedirs(dumpdir, exist_ok=True)
        for t in self.tables:
            db, name = t.split(".", 1)
            path = os.path.join(dumpdir, t + ".sql")
            with open(path, "w") as f:
                r = subprocess.run(["mariadb-dump", "--no-defaults",
                                    f"--socket={server.sock}", "-uroot",
                                    "--skip-triggers", "--skip-lock-tables", db, name],
                                   stdout=f, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                raise SystemExit(f"mariadb-dump {t} failed: {r.stderr}")
            self.dumps[t] = path
        self.restores = []
        self.keep_connections = set()

    def note_proxy_connections(self, server):
        """Connections open right after the proxy came up are its own: keep them."""
        self.keep_connections = set(server.sql(
            "SELECT id FROM information_schema.processlist WHERE id<>CONNECTION_ID() "
            "AND user NOT IN ('system user','event_scheduler','')").split())

    @staticmethod
    def global_vars(server):
        rows = server.sql("SELECT variable_name, global_value FROM "
                          "information_schema.system_variables WHERE global_value "
                          "IS NOT NULL").split("\n")
        return dict(r.split("\t", 1) for r in rows if "\t" in r)


# Globals that change on their own or cannot be set back; never restored.
VOLATILE_VARS = {"GTID_BINLOG_POS", "GTID_CURRENT_POS", "GTID_BINLOG_STATE",
                 "GTID_SLAVE_POS", "TIMESTAMP", "LAST_INSERT_ID", "INSERT_ID",
                 "RAND_SEED1", "RAND_SEED2", "IDENTITY", "WARNING_COUNT",
                 "ERROR_COUNT", "SERVER_UID", "PSEUDO_THREAD_ID",
                 "IN_TRANSACTION", "LAST_GTID"}


def system_tables_differ(server, base):
    out = server.sql(FINGERPRINT_SQL + ";\n" + checksum_sql(sorted(base.tables))
                     + ";\n", force=True)
    cols, sums = {}, {}
    for line in out.split("\n"):
        f = line.split("\t")
        if f[0] == "T" and len(f) == 3:
            cols[f[1]] = f[2]
        elif len(f) == 2:
            sums[f[0]] = f[1]
    return any(cols.get(t) != c or sums.get(t) != k
               for t, (c, k) in base.tables.items()) or \
        any(t not in base.tables and t not in UNWATCHED_TABLES for t in cols)


def cleanup(server, base, after=""):
    """Put the server back to the baseline between two runs, cheaply (~0.1 s):
    kill every client connection (a hung or killed run can leave one behind), drop
    every database but the system ones and recreate an empty `test`, drop accounts and
    plugins that were not there, set changed global variables back, reload any table
    of `mysql`/`mtr` whose columns or rows changed from its baseline dump (and drop
    tables added there), and empty the vardir tmp directory (SELECT ... INTO OUTFILE
    leftovers). `after` names the run before, for the record of restored tables."""
    state = server.sql(
        "SELECT 'K', id FROM information_schema.processlist WHERE id<>CONNECTION_ID() "
        "AND command NOT IN ('Daemon','Binlog Dump') AND user NOT IN "
        "('system user','event_scheduler','');\n"
        "SELECT 'D', schema_name FROM information_schema.schemata;\n"
        "SELECT 'U', CONCAT(QUOTE(user),'@',QUOTE(host)), is_role FROM "
        "(SELECT user, host, JSON_VALUE(priv,'$.is_role') AS is_role "
        "FROM mysql.global_priv) g;\n"
        "SELECT 'P', plugin_name FROM information_schema.plugins;\n"
        + FINGERPRINT_SQL + ";\n" + checksum_sql(sorted(base.tables)) + ";\n",
        force=True)
    stmts = []
    cols, sums = {}, {}
    for line in state.split("\n"):
        f = line.split("\t")
        if f[0] == "K" and f[1] in base.keep_connections:
            continue  # the node's own connections (applier, account loads)
        if f[0] == "K":
            stmts.append(f"KILL {f[1]}")
        elif f[0] == "D" and f[1] not in SYSTEM_DBS:
            stmts.append(f"DROP DATABASE IF EXISTS `{f[1]}`")
        elif f[0] == "U" and f[1] not in base.users:
            stmts.append(("DROP ROLE " if f[2] in ("1", "true") else "DROP USER ")
                         + f[1])
        elif f[0] == "P" and f[1] not in base.plugins:
            stmts.append(f"UNINSTALL PLUGIN `{f[1]}`")
        elif f[0] == "T" and len(f) == 3:
            cols[f[1]] = f[2]
        elif len(f) == 2 and f[0] in base.tables:
            sums[f[0]] = f[1]
    now = Baseline.global_vars(server)
    for name, value in base.vars.items():
        if name in VOLATILE_VARS or now.get(name) == value:
            continue
        if re.fullmatch(r"-?\d+(\.\d+)?", value):
            lit = value
        else:
            lit = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        stmts.append(f"SET GLOBAL {name} = {lit}")
    stmts.append("DELETE FROM mtr.test_suppressions")
    server.sql(";\n".join(stmts) + ";\n", force=True)
    # DROP DATABASE leaves a database directory that still holds files MariaDB does
    # not know (SELECT ... INTO OUTFILE 'x' writes into the current database's
    # directory): remove those too, or the next run's OUTFILE fails with ER_FILE_EXISTS.
    for entry in os.listdir(server.data):
        path = os.path.join(server.data, entry)
        if os.path.isdir(path) and entry not in SYSTEM_DBS and not entry.startswith("#"):
            shutil.rmtree(path, ignore_errors=True)
    server.sql("CREATE DATABASE test CHARACTER SET latin1 COLLATE latin1_swedish_ci;\n",
               force=True)
    changed = [t for t, (c, k) in base.tables.items()
               if cols.get(t) != c or sums.get(t) != k]
    extra = [t for t in cols if t not in base.tables and t not in UNWATCHED_TABLES]
    if changed or extra:
        base.restores.append((after, sorted(changed), sorted(extra)))
        sql = "SET SESSION foreign_key_checks=0;\n"
        for t in extra:
            db, name = t.split(".", 1)
            sql += (f"DROP TABLE IF EXISTS `{db}`.`{name}`;\n"
                    f"DROP VIEW IF EXISTS `{db}`.`{name}`;\n")
        for t in changed:
            db, name = t.split(".", 1)
            sql += (f"DROP TABLE IF EXISTS `{db}`.`{name}`;\n"
                    f"DROP VIEW IF EXISTS `{db}`.`{name}`;\n")
        for t in changed:
            sql += f"USE {t.split('.')[0]};\n" + open(base.dumps[t]).read() + "\n"
        server.sql(sql, force=True)
        if system_tables_differ(server, base):
            # The dumps could not put it back (a renamed system table, a view in
            # the way): restart the server on a copy of the provisioned datadir.
            base.restores.append((after, ["server reset"], []))
            server.reset()
    server.sql("FLUSH PRIVILEGES;\n", force=True)
    tmp = server.tmp
    for entry in os.listdir(tmp):
        path = os.path.join(tmp, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


class Proxy:
    def __init__(self, root, binary, server, log_level, cluster):
        self.cluster = cluster
        self.dir = os.path.join(root, "wolfscale")
        os.makedirs(self.dir, exist_ok=True)
        self.binary = binary
        self.backend_port = server.port
        self.log_level = log_level
        self.port = free_port()
        self.conf = os.path.join(self.dir, "wolfscale.toml")
        # node.id is a string ("1") in the current config format and was an integer
        # before: write the first form that `wolfscale validate` accepts.
        for node_id in ('"1"', "1"):
            self.write_conf(node_id)
            check = subprocess.run([binary, "-c", self.conf, "validate"],
                                   capture_output=True, text=True)
            if check.returncode == 0:
                break
        else:
            raise SystemExit("wolfscale validate rejects the generated config:\n"
                             + check.stdout + check.stderr)
        self.proc = None
        self.restarts = 0

    def write_conf(self, node_id):
        with open(self.conf, "w") as f:
            f.write(f"""[node]
id = {node_id}
data_dir = "{self.dir}/data"

[database]
host = "127.0.0.1"
port = {self.backend_port}
user = "root"
password = ""

[proxy]
bind_address = "127.0.0.1:{self.port}"

[api]
enabled = false
""")

    def start(self):
        self.logf = open(os.path.join(self.dir, "wolfscale.log"), "a")
        # The front end alone (`wolfscale proxy`), or a one-node cluster whose writes
        # go through the log (`wolfscale start --bootstrap`).
        mode = ["start", "--bootstrap"] if self.cluster else ["proxy"]
        self.proc = subprocess.Popen(
            [self.binary, "-c", self.conf, "--log-level", self.log_level, *mode],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
            start_new_session=True)
        wait_port(self.port, self.proc, "wolfscale")
        if not self.cluster:
            return
        # A cluster build takes writes only once this node is the leader of its
        # one-node cluster: wait until a write goes through (at most 60 s).
        probe = ("CREATE DATABASE IF NOT EXISTS mtr_diff_probe; "
                 "DROP DATABASE mtr_diff_probe")
        deadline = time.time() + 60
        while True:
            r = subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1",
                                f"-P{self.port}", "-uroot", "--skip-ssl", "-e", probe],
                               capture_output=True, text=True)
            if r.returncode == 0:
                return
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("wolfscale does not take writes: " + r.stderr)
            time.sleep(0.2)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)


def client_cnf(path, port, sock):
    """Option file for mysqltest and the client programs tests exec: always TCP to
    127.0.0.1:port (so `connect(c,localhost,...)` in a test goes to the same target
    and never to a socket), user root, no TLS (the throwaway server has no
    certificate); mtr's latin1 client defaults."""
    with open(path, "w") as f:
        f.write(f"""[client]
host=127.0.0.1
port={port}
socket={sock}
user=root
password=
protocol=tcp
[mysqltest]
loose-skip-ssl
[mysql]
default-character-set=latin1
[mysqlshow]
default-character-set=latin1
[mysqlimport]
default-character-set=latin1
[mysqlcheck]
default-character-set=latin1
[mysqldump]
loose-skip-ssl
""")


def test_env(server, cnf, port, sock, test):
    """The environment mtr gives a test (mysql-test-run.pl environment_setup()),
    pointed at one target."""
    dflt = f"--defaults-file={cnf}"
    env = dict(os.environ)
    env.update({
        "MYSQL_TEST_DIR": MTR_DIR, "MYSQLTEST_VARDIR": server.vardir,
        "MYSQLTEST_REAL_VARDIR": server.vardir,
        "MYSQL_TMP_DIR": os.path.join(server.vardir, "tmp"),
        "MASTER_MYPORT": str(port), "MASTER_MYSOCK": sock,
        "MYSQL_SHAREDIR": SHARE_DIR, "MYSQL_CHARSETSDIR": SHARE_DIR + "/charsets",
        "MYSQL_BINDIR": "/usr", "MTR_TEST_NAME": test,
        "SECURE_LOAD_PATH": os.path.join(MTR_DIR, "std_data"),
        "MYSQL": f"/usr/bin/mariadb {dflt}",
        "EXE_MYSQL": "/usr/bin/mariadb",
        "MYSQL_DUMP": f"/usr/bin/mariadb-dump {dflt}",
        "MYSQLADMIN": f"/usr/bin/mariadb-admin {dflt}",
        "MYSQL_SHOW": f"/usr/bin/mariadb-show {dflt}",
        "MYSQL_CHECK": f"/usr/bin/mariadb-check {dflt}",
        "MYSQL_IMPORT": f"/usr/bin/mariadb-import {dflt}",
        "MYSQL_SLAP": f"/usr/bin/mariadb-slap {dflt}",
        "MYSQL_BINLOG": "/usr/bin/mariadb-binlog",
        "MYSQL_MY_PRINT_DEFAULTS": "/usr/bin/my_print_defaults",
        "MY_PERROR": "/usr/bin/perror",
        "MYSQL_TEST": f"/usr/bin/mariadb-test {dflt}",
        "MYISAMCHK": "/usr/bin/myisamchk", "MYISAMPACK": "/usr/bin/myisampack",
        "MYISAMLOG": "/usr/bin/myisamlog", "MYISAM_FTDUMP": "/usr/bin/myisam_ftdump",
        "MARIA_CHK": "/usr/bin/aria_chk", "MARIA_PACK": "/usr/bin/aria_pack",
        "MYSQL_TZINFO_TO_SQL": "/usr/bin/mariadb-tzinfo-to-sql",
        "REPLACE": "/usr/bin/replace",
        "LC_ALL": "C", "LC_CTYPE": "C", "LC_COLLATE": "C", "TZ": "GMT-3",
    })
    return env


def run_mysqltest(server, target, test, proto, outdir, timeout):
    """One mysqltest run. Returns (rc, output); rc is RC_HANG on timeout. The output
    compared is mysqltest's result log (written even when the test aborts) followed
    by its stderr (the reason for an abort)."""
    name = target["name"]
    rundir = os.path.join(outdir, "runs", f"run-{name}")
    os.makedirs(rundir, exist_ok=True)
    logdir = os.path.join(rundir, "log")
    os.makedirs(logdir, exist_ok=True)
    res = os.path.join(rundir, f"{test}.{proto}.result")
    if os.path.exists(res):
        os.unlink(res)
    cmd = ["/usr/bin/mariadb-test", f"--defaults-file={target['cnf']}", "--silent",
           f"--tmpdir={server.vardir}/tmp", f"--logdir={logdir}",
           f"--character-sets-dir={SHARE_DIR}/charsets", "--database=test",
           *PROTOCOLS[proto], f"--basedir={MTR_DIR}/", f"--suite-dir={MTR_DIR}/main/",
           f"--test-file={MTR_DIR}/main/{test}.test", "--tail-lines=0",
           f"--result-file={res}", "--record", "--max-connect-retries=3"]
    env = test_env(server, target["cnf"], target["port"], target["sock"], test)
    p = subprocess.Popen(cmd, cwd=MTR_DIR, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, err = p.communicate()
        rc = RC_HANG
    text = ""
    if os.path.exists(res):
        text = open(res, errors="replace").read()
    else:
        # Aborted run: mysqltest leaves what it had in <logdir>/<test>.log.
        log = os.path.join(logdir, f"{test}.log")
        if os.path.exists(log):
            text = open(log, errors="replace").read()
            os.unlink(log)
    text += out.decode(errors="replace")
    text += "\n----- stderr -----\n" + err.decode(errors="replace")
    if rc == RC_HANG:
        text += f"\n----- killed after {timeout:.0f} s -----\n"
    return rc, text


def outcome(rc):
    if rc == RC_HANG:
        return "hang"
    if rc == 0:
        return "ok"
    if rc == RC_SKIP:
        return "skip"
    return f"fail({rc})"


def on_signal(signum, _frame):
    raise SystemExit(f"stopped by signal {signum}")


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wolfscale", required=True, help="wolfscale binary")
    ap.add_argument("--list", required=True, help="file with one main-suite test a line")
    ap.add_argument("--out", help="output directory (default: a new one under /tmp)")
    ap.add_argument("--timeout", type=float, default=60,
                    help="per run, seconds (direct runs, and the cap for proxy runs)")
    ap.add_argument("--proxy-timeout", default="auto",
                    help="seconds for a proxy run; 'auto' (default): 20 s plus 5 times "
                         "what the direct run of the same test took, at most --timeout")
    ap.add_argument("--protocols", default="text,ps,cursor")
    ap.add_argument("--tests", help="comma-separated subset of the list")
    ap.add_argument("--buffer-pool", default="32M")
    ap.add_argument("--log-level", default="warn", help="wolfscale --log-level")
    ap.add_argument("--cluster", action="store_true",
                    help="run the node as a one-node cluster (`wolfscale start "
                         "--bootstrap`, writes through the log) instead of the front "
                         "end alone (`wolfscale proxy`, the default)")
    ap.add_argument("--calibrate", action="store_true",
                    help="run the list directly only (text protocol) and print "
                         "outcome, seconds and whether the output matches the "
                         "test's .result file: used to pick the list")
    args = ap.parse_args()

    tests = [t.split("#")[0].strip() for t in open(args.list)]
    tests = [t for t in tests if t]
    if args.tests:
        want = args.tests.split(",")
        tests = [t for t in tests if t in want] or want
    protocols = args.protocols.split(",")
    outdir = args.out or tempfile.mkdtemp(prefix="mtr-diff-out-")
    os.makedirs(os.path.join(outdir, "diffs"), exist_ok=True)
    root = tempfile.mkdtemp(prefix="mtr-diff-")
    t0 = time.time()

    server = Server(root, args.buffer_pool)
    proxy = None
    try:
        server.install()
        server.start()
        provision(server)
        base = Baseline(server, os.path.join(root, "baseline"))
        server.snapshot()
        direct_sock = server.sock
        proxy_sock = os.path.join(root, "no-such-socket")  # TCP only, never a socket
        direct = {"name": "direct", "port": server.port, "sock": direct_sock,
                  "cnf": os.path.join(root, "direct.cnf")}
        client_cnf(direct["cnf"], server.port, direct_sock)
        targets = [direct]
        if not args.calibrate:
            proxy = Proxy(root, args.wolfscale, server, args.log_level, args.cluster)
            proxy.start()
            base.note_proxy_connections(server)
            via = {"name": "proxy", "port": proxy.port, "sock": proxy_sock,
                   "cnf": os.path.join(root, "proxy.cnf")}
            client_cnf(via["cnf"], proxy.port, proxy_sock)
            targets.append(via)
        ctx = {"ports": [server.port] + ([proxy.port] if proxy else []),
               "paths": [direct_sock, proxy_sock, root]}
        rules = normalizations(ctx)
        print(f"mariadbd on 127.0.0.1:{server.port}"
              + (f", wolfscale on 127.0.0.1:{proxy.port}" if proxy else "")
              + f"; {len(tests)} tests x {len(protocols)} protocols; output in {outdir}",
              flush=True)

        if args.calibrate:
            return calibrate(server, base, direct, tests, outdir, args.timeout, rules)

        results = {p: [] for p in protocols}  # proto -> [(test, kind, detail)]
        cleanup(server, base)
        for i, test in enumerate(tests, 1):
            line = []
            for proto in protocols:
                runs = {}
                for tgt in targets:
                    started = time.time()
                    limit = args.timeout
                    if tgt["name"] == "proxy" and args.proxy_timeout == "auto":
                        # The direct run just took runs["direct"][2] seconds: a proxy
                        # run far slower than that is hanging, not slow.
                        limit = min(args.timeout, 20 + 5 * runs["direct"][2])
                    elif tgt["name"] == "proxy":
                        limit = float(args.proxy_timeout)
                    rc, text = run_mysqltest(server, tgt, test, proto, outdir, limit)
                    crashed = tgt["name"] == "proxy" and not proxy.alive()
                    if crashed:
                        text += "\n----- wolfscale exited during this run -----\n"
                        proxy.restarts += 1
                        proxy.start()
                        base.note_proxy_connections(server)
                    runs[tgt["name"]] = (rc, normalize(text, rules),
                                         time.time() - started, crashed)
                    cleanup(server, base, after=f"{test} [{proto}] {tgt['name']}")
                kind, detail = compare(test, proto, runs, outdir)
                results[proto].append((test, kind, detail))
                line.append(f"{proto}={kind}")
            print(f"[{i}/{len(tests)}] {test}: " + " ".join(line), flush=True)
        return report(results, protocols, outdir, time.time() - t0, proxy, base)
    finally:
        if proxy:
            proxy.stop()
        server.stop()
        # Keep the two servers' logs with the results.
        for src, name in ((server.log, "mariadbd.err"),
                          (os.path.join(root, "wolfscale", "wolfscale.log"),
                           "wolfscale.log")):
            if os.path.exists(src):
                shutil.copy(src, os.path.join(outdir, name))
        if os.environ.get("MTR_DIFF_KEEP"):
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def compare(test, proto, runs, outdir):
    (rc_d, out_d, t_d, _), (rc_p, out_p, t_p, crashed) = runs["direct"], runs["proxy"]
    base = os.path.join(outdir, "diffs", f"{test}.{proto}")
    summary = f"direct {outcome(rc_d)} {t_d:.1f}s, proxy {outcome(rc_p)} {t_p:.1f}s"
    if rc_d == RC_HANG or rc_p == RC_HANG:
        kind = "hang"
    elif crashed:
        kind = "differ"
    elif rc_d == rc_p and out_d == out_p:
        kind = {"ok": "identical", "skip": "skipped"}.get(outcome(rc_d), "fail-both")
        if kind == "fail-both":  # keep the (common) output: why did it fail?
            with open(base + ".both.out", "w") as f:
                f.write(out_d)
        return kind, summary
    else:
        kind = "differ"
    diff = list(difflib.unified_diff(out_d.splitlines(), out_p.splitlines(),
                                     f"{test} {proto} direct", f"{test} {proto} proxy",
                                     lineterm="", n=3))
    with open(base + ".diff", "w") as f:
        f.write(f"# {summary}\n")
        f.write("\n".join(diff) + "\n")
    for name, out in (("direct", out_d), ("proxy", out_p)):
        with open(f"{base}.{name}.out", "w") as f:
            f.write(out)
    return kind, summary


def stderr_of(path):
    """First line mysqltest wrote to stderr (why it stopped), if any."""
    text = open(path, errors="replace").read()
    if "----- stderr -----" not in text:
        return ""
    tail = text.split("----- stderr -----", 1)[1].strip().splitlines()
    return " ".join(ln.strip() for ln in tail[:3])


def report(results, protocols, outdir, elapsed, proxy, base):
    kinds = ["identical", "differ", "hang", "fail-both", "skipped"]
    print()
    print(f"{'protocol':<10}" + "".join(f"{k:>11}" for k in kinds) + f"{'total':>8}")
    bad = 0
    for p in protocols:
        counts = {k: 0 for k in kinds}
        for _t, k, _d in results[p]:
            counts[k] += 1
        bad += counts["differ"] + counts["hang"]
        print(f"{p:<10}" + "".join(f"{counts[k]:>11}" for k in kinds)
              + f"{len(results[p]):>8}")
    print()
    for p in protocols:
        for test, kind, detail in results[p]:
            if kind not in ("differ", "hang"):
                continue
            path = os.path.join(outdir, "diffs", f"{test}.{p}.diff")
            print(f"--- {kind.upper()}: main.{test} [{p}] ({detail}) -> {path}")
            for side in ("direct", "proxy"):
                err = stderr_of(os.path.join(outdir, "diffs", f"{test}.{p}.{side}.out"))
                if err:
                    print(f"    {side} stderr: {err[:220]}")
            lines = open(path).read().splitlines()[1:]
            body = [ln for ln in lines if not ln.startswith(("---", "+++"))]
            first = next((i for i, ln in enumerate(body)
                          if ln.startswith(("+", "-"))), 0)
            hunk = next((i for i in range(first, -1, -1)
                         if body[i].startswith("@@")), first) if body else 0
            shown = body[hunk:hunk + 1] + body[max(first - 2, hunk + 1):first + 10]
            for ln in shown:
                print("    " + ln[:200])
    fails = [(p, t) for p in protocols for t, k, _ in results[p] if k == "fail-both"]
    if fails:
        print("failing on both sides (same output): "
              + ", ".join(f"{t}[{p}]" for p, t in fails))
    if base.restores:
        path = os.path.join(outdir, "system-table-reloads.txt")
        with open(path, "w") as f:
            for after, changed, extra in base.restores:
                f.write(f"after {after}: "
                        + ", ".join(changed + [f"dropped {t}" for t in extra]) + "\n")
        print(f"system tables were reloaded from the baseline after "
              f"{len(base.restores)} runs "
              f"that left them changed (list: {path})")
    if proxy and proxy.restarts:
        print(f"wolfscale exited and was restarted {proxy.restarts} time(s)")
    print(f"\nwall time {elapsed:.0f} s; full diffs and both outputs in {outdir}/diffs")
    print(f"RESULT differ_or_hang={bad}")
    return 1 if bad else 0


def calibrate(server, base, direct, tests, outdir, timeout, rules):
    rows = []
    cleanup(server, base)
    for test in tests:
        t = time.time()
        rc, text = run_mysqltest(server, direct, test, "text", outdir, timeout)
        dt = time.time() - t
        cleanup(server, base, after=test)
        expected = os.path.join(MTR_DIR, "main", f"{test}.result")
        match = "-"
        res = os.path.join(outdir, "runs", "run-direct", f"{test}.text.result")
        if rc == 0 and os.path.exists(expected) and os.path.exists(res):
            match = "match" if open(res, errors="replace").read() == \
                open(expected, errors="replace").read() else "nomatch"
        first_err = ""
        if rc != 0:
            first_err = " ".join(text.split("----- stderr -----")[-1].split())[:300]
        rows.append((test, outcome(rc), f"{dt:.2f}", match, first_err))
        print("\t".join(rows[-1]), flush=True)
    with open(os.path.join(outdir, "calibration.tsv"), "w") as f:
        for r in rows:
            f.write("\t".join(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
