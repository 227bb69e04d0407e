#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, on loopback only, for the Slurm runner's tests
# (tests/scale/test_slurm.py) and for trying REER_WORKLOAD_RUNNER=slurm by hand. docs/scale.md, "Slurm".
#
#   scripts/local-slurm.sh up       install what is missing (apt), write the configuration, start munge, a
#                                   MariaDB and slurmdbd (accounting), slurmctld, slurmd and an sshd on
#                                   127.0.0.1; wait until the node takes jobs
#   scripts/local-slurm.sh down     stop the daemons this script started (by their pid files)
#   scripts/local-slurm.sh status   what runs; exit 0 only when everything does
#
# Idempotent: `up` on a running cluster starts nothing and rewrites nothing (unless the configuration
# changed, then the Slurm daemons are restarted). Needs root: the packages, SlurmUser=root, the sshd.
#
# Everything lives under one root-owned temporary folder, $REER_LOCAL_SLURM_DIR (default
# /run/reer-local-slurm, mode 700; /run is a tmpfs that only root may write): Slurm's state and spool
# folders, logs, pid files, the sshd's own configuration and host key, the client key pair (made at the
# first `up`, authorized for root) and a known_hosts file. `$DIR/env` holds the REER_SLURM_* settings
# that reach this cluster (the tests read it). Only /etc/slurm/slurm.conf (where Slurm's commands look
# for it; refused when it is someone else's) and the munge key /etc/munge/munge.key live outside.
#
# Accounting (slurmdbd on a MariaDB of its own, data folder under $DIR) is there because dagster-slurm
# needs it: once a job has ended, `squeue -j ID` no longer lists it, and the client reads the final state
# and exit code with `sacct`; without accounting it cannot see that a job finished (dagster-slurm 1.22 then
# polls forever).
#
# Bindings: sshd listens on 127.0.0.1 only (its own port, REER_LOCAL_SLURM_SSH_PORT, default the first
# free one from 2222); slurmctld, slurmd and slurmdbd bind to 127.0.0.1 (NodeAddr/SlurmctldHost/DbdAddr on
# loopback, CommunicationParameters=NoInAddrAny,NoCtldInAddrAny in both files); MariaDB to 127.0.0.1 on its own port
# (first free from 3316); munged is a Unix socket.
set -euo pipefail

DIR="${REER_LOCAL_SLURM_DIR:-/run/reer-local-slurm}"
CONF=/etc/slurm/slurm.conf
MARK="# written by reer-assets scripts/local-slurm.sh"
MUNGE_KEY=/etc/munge/munge.key
PARTITION=debug
MAX_TIME=02:00:00
PACKAGES=(slurmctld slurmd slurm-client slurmdbd mariadb-server munge openssh-server)

die() { echo "local-slurm: $*" >&2; exit 1; }
say() { echo "local-slurm: $*"; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and runs slurmctld with SlurmUser=root)"

alive() {  # alive PIDFILE: the pid in it is a running process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

port_busy() {  # something accepts connections on 127.0.0.1:$1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

install_missing() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    apt-get update -q
    # no recommends; a policy-rc.d (unless the machine has one) keeps the packages' own services from starting
    local policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { [ -n "$policy" ] && rm -f "$policy"; die "apt-get install ${missing[*]} failed"; }
    [ -n "$policy" ] && rm -f "$policy"
    return 0
}

make_dir() {
    if [ -e "$DIR" ] || [ -L "$DIR" ]; then
        [ -d "$DIR" ] && [ ! -L "$DIR" ] && [ "$(stat -c %u "$DIR")" = 0 ] \
            || die "$DIR exists and is not a root-owned folder: remove it or set REER_LOCAL_SLURM_DIR"
    fi
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    mkdir -p "$DIR/ctld" "$DIR/spool" "$DIR/log" "$DIR/ssh" "$DIR/db"
    chmod 700 "$DIR/ssh" "$DIR/db"
}

db_port() {
    if [ -s "$DIR/db.port" ]; then cat "$DIR/db.port"; return; fi
    local port
    for port in $(seq 3316 3399); do port_busy "$port" || { echo "$port" > "$DIR/db.port"; echo "$port"; return; }; done
    die "no free port in 3316-3399 for MariaDB"
}

sql() { mariadb --no-defaults --socket="$DIR/mariadb.sock" -u root "$@"; }

start_mariadb() {  # the accounting database: its own data folder, socket and loopback port
    local port="$1"
    if [ ! -d "$DIR/db/data/mysql" ]; then
        say "initialising the accounting database"
        mariadb-install-db --no-defaults --user=root --datadir="$DIR/db/data" --auth-root-authentication-method=socket \
            --skip-test-db > "$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $DIR/log)"
    fi
    if ! alive "$DIR/mariadb.pid"; then
        say "starting mariadbd on 127.0.0.1:$port"
        setsid /usr/sbin/mariadbd --no-defaults --user=root --datadir="$DIR/db/data" --socket="$DIR/mariadb.sock" \
            --bind-address=127.0.0.1 --port="$port" --pid-file="$DIR/mariadb.pid" --log-error="$DIR/log/mariadb.log" \
            --innodb-buffer-pool-size=32M --skip-name-resolve < /dev/null > /dev/null 2>&1 &
    fi
    for _ in $(seq 150); do sql -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
    sql -e "SELECT 1" >/dev/null 2>&1 || die "MariaDB does not answer (see $DIR/log/mariadb.log)"
    [ -s "$DIR/db/slurm.pass" ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/db/slurm.pass")
    sql -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$DIR/db/slurm.pass")';
            ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$DIR/db/slurm.pass")';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

write_slurmdbd_conf() {  # prints "changed" when the file was (re)written
    local port="$1" tmp
    if [ -e /etc/slurm/slurmdbd.conf ] && ! grep -qF "$MARK" /etc/slurm/slurmdbd.conf; then
        die "/etc/slurm/slurmdbd.conf exists and was not written by this script: not touching it"
    fi
    mkdir -p /etc/slurm
    tmp="$(mktemp)"
    cat > "$tmp" <<DBD
$MARK (state under $DIR)
AuthType=auth/munge
DbdHost=$(hostname -s)
DbdAddr=127.0.0.1
DbdPort=6819
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$port
StorageUser=slurm
StoragePass=$(cat "$DIR/db/slurm.pass")
StorageLoc=slurm_acct_db
DBD
    if [ -e /etc/slurm/slurmdbd.conf ] && cmp -s "$tmp" /etc/slurm/slurmdbd.conf; then rm -f "$tmp"; return 0; fi
    install -m 600 "$tmp" /etc/slurm/slurmdbd.conf && rm -f "$tmp"
    echo changed
}

start_slurmdbd() {
    if [ "$1" = changed ]; then stop_pid slurmdbd "$DIR/slurmdbd.pid"; fi
    if ! alive "$DIR/slurmdbd.pid"; then
        say "starting slurmdbd"
        slurmdbd
    fi
    for _ in $(seq 150); do port_busy 6819 && return 0; sleep 0.2; done
    die "slurmdbd does not listen on 127.0.0.1:6819 (see $DIR/log/slurmdbd.log)"
}

setup_munge() {
    if [ ! -s "$MUNGE_KEY" ]; then
        say "making a munge key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then mungekey --create --keyfile="$MUNGE_KEY" --force
        else dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none; fi
    fi
    chown munge:munge "$MUNGE_KEY" && chmod 400 "$MUNGE_KEY"
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
}

start_munge() {
    if alive /run/munge/munged.pid && munge -n </dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.2; done
    die "munged does not answer (see /var/log/munge/munged.log)"
}

write_slurm_conf() {  # prints "changed" when the file was (re)written
    local host cpus mem tmp
    host="$(hostname -s)"
    cpus="$(nproc)"
    mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: this machine has its own Slurm; not touching it"
    fi
    mkdir -p /etc/slurm
    tmp="$(mktemp)"
    cat > "$tmp" <<EOF
$MARK (state under $DIR)
ClusterName=reer-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=$MAX_TIME State=UP
EOF
    if [ -e "$CONF" ] && cmp -s "$tmp" "$CONF"; then rm -f "$tmp"; return 0; fi
    install -m 644 "$tmp" "$CONF" && rm -f "$tmp"
    echo changed
}

node_ready() {
    local state
    state="$(sinfo -h -n "$(hostname -s)" -o %T 2>/dev/null | head -1)"
    case "$state" in idle*|mixed*|allocated*|completing*) return 0 ;; *) return 1 ;; esac
}

start_slurm() {
    local changed="$1"
    if [ "$changed" = changed ]; then
        stop_pid slurmd "$DIR/slurmd.pid"
        stop_pid slurmctld "$DIR/slurmctld.pid"
    fi
    if ! alive "$DIR/slurmctld.pid"; then
        say "starting slurmctld"
        slurmctld -i   # -i: ignore state files it cannot read (a folder wiped since the last run)
    fi
    for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q "is UP" && break; sleep 0.2; done
    scontrol ping 2>/dev/null | grep -q "is UP" || die "slurmctld does not answer (see $DIR/log/slurmctld.log)"
    if ! alive "$DIR/slurmd.pid"; then
        say "starting slurmd"
        slurmd -N "$(hostname -s)"
    fi
    for _ in $(seq 150); do node_ready && return 0; sleep 0.2; done
    # a node left DOWN or DRAIN by an earlier run: give it back
    scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true
    for _ in $(seq 100); do node_ready && return 0; sleep 0.2; done
    die "the node does not take jobs: $(sinfo -h -o '%T %E' 2>&1) (see $DIR/log/slurmd.log)"
}

setup_ssh() {
    [ -s "$DIR/ssh/host_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C reer-local-slurm-host -f "$DIR/ssh/host_ed25519"
    [ -s "$DIR/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C reer-local-slurm-client -f "$DIR/ssh/id_ed25519"
    cp "$DIR/ssh/id_ed25519.pub" "$DIR/ssh/authorized_keys"
    chmod 600 "$DIR/ssh/authorized_keys" "$DIR/ssh/id_ed25519" "$DIR/ssh/host_ed25519"
    mkdir -p /run/sshd && chmod 755 /run/sshd   # privilege separation folder
}

pick_port() {
    local port
    if [ -n "${REER_LOCAL_SLURM_SSH_PORT:-}" ]; then echo "$REER_LOCAL_SLURM_SSH_PORT"; return; fi
    if [ -s "$DIR/ssh/port" ]; then echo "$(cat "$DIR/ssh/port")"; return; fi
    for port in $(seq 2222 2299); do port_busy "$port" || { echo "$port"; return; }; done
    die "no free port in 2222-2299 for sshd: set REER_LOCAL_SLURM_SSH_PORT"
}

start_sshd() {
    local port="$1"
    cat > "$DIR/ssh/sshd_config.new" <<EOF
# the local Slurm cluster's own sshd (scripts/local-slurm.sh): loopback only, key login for root only
ListenAddress 127.0.0.1
Port $port
HostKey $DIR/ssh/host_ed25519
PidFile $DIR/sshd.pid
AuthorizedKeysFile $DIR/ssh/authorized_keys
AllowUsers root
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding no
AllowTcpForwarding no
PermitTunnel no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
EOF
    if alive "$DIR/sshd.pid" && cmp -s "$DIR/ssh/sshd_config.new" "$DIR/ssh/sshd_config"; then
        rm -f "$DIR/ssh/sshd_config.new"
    else
        stop_pid sshd "$DIR/sshd.pid"
        mv "$DIR/ssh/sshd_config.new" "$DIR/ssh/sshd_config"
        port_busy "$port" && die "127.0.0.1:$port is taken by another program: set REER_LOCAL_SLURM_SSH_PORT"
        /usr/sbin/sshd -t -f "$DIR/ssh/sshd_config" || die "sshd rejects $DIR/ssh/sshd_config"
        say "starting sshd on 127.0.0.1:$port"
        /usr/sbin/sshd -f "$DIR/ssh/sshd_config" -E "$DIR/log/sshd.log"
    fi
    echo "$port" > "$DIR/ssh/port"
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$DIR/ssh/host_ed25519.pub")" > "$DIR/ssh/known_hosts"
    for _ in $(seq 50); do
        ssh_check "$port" && return 0
        sleep 0.2
    done
    die "cannot log in over ssh to root@127.0.0.1:$port (see $DIR/log/sshd.log)"
}

ssh_check() {
    ssh -q -p "$1" -i "$DIR/ssh/id_ed25519" -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes \
        -o UserKnownHostsFile="$DIR/ssh/known_hosts" root@127.0.0.1 'sinfo -h -o %P >/dev/null' </dev/null
}

write_env() {
    local port="$1"
    cat > "$DIR/env.new" <<EOF
# the REER_SLURM_* settings that reach this cluster (scripts/local-slurm.sh up)
REER_SLURM_HOST=127.0.0.1
REER_SLURM_PORT=$port
REER_SLURM_USER=root
REER_SLURM_KEY_PATH=$DIR/ssh/id_ed25519
REER_SLURM_KNOWN_HOSTS=$DIR/ssh/known_hosts
REER_SLURM_PARTITION=$PARTITION
EOF
    mv "$DIR/env.new" "$DIR/env"
}

stop_pid() {  # stop_pid NAME PIDFILE: SIGTERM, wait, then SIGKILL
    local name="$1" file="$2" pid
    alive "$file" || { rm -f "$file"; return 0; }
    pid="$(cat "$file")"
    say "stopping $name ($pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    rm -f "$file"
}

status() {
    local ok=0 name file
    for name in munged mariadb slurmdbd slurmctld slurmd sshd; do
        case $name in munged) file=/run/munge/munged.pid ;; *) file="$DIR/$name.pid" ;; esac
        if alive "$file"; then echo "$name: running (pid $(cat "$file"))"; else echo "$name: stopped"; ok=1; fi
    done
    if [ $ok = 0 ]; then
        echo "node: $(sinfo -h -o '%n %T' 2>/dev/null | head -1)"
        echo "ssh: root@127.0.0.1:$(cat "$DIR/ssh/port") with $DIR/ssh/id_ed25519"
        echo "settings: $DIR/env"
    fi
    return $ok
}

case "${1:-}" in
    up)
        install_missing
        make_dir
        setup_munge
        start_munge
        dbport="$(db_port)"
        start_mariadb "$dbport"
        start_slurmdbd "$(write_slurmdbd_conf "$dbport")"
        start_slurm "$(write_slurm_conf)"
        # jobs are recorded once the cluster is known to the accounting database (slurmctld adds it itself)
        sacctmgr -i -n list cluster format=cluster 2>/dev/null | grep -qw reer-local \
            || sacctmgr -i add cluster reer-local >/dev/null
        setup_ssh
        port="$(pick_port)"
        start_sshd "$port"
        write_env "$port"
        say "up: partition $PARTITION (max time $MAX_TIME), ssh root@127.0.0.1:$port, settings in $DIR/env"
        ;;
    down)
        stop_pid sshd "$DIR/sshd.pid"
        stop_pid slurmd "$DIR/slurmd.pid"
        stop_pid slurmctld "$DIR/slurmctld.pid"
        stop_pid slurmdbd "$DIR/slurmdbd.pid"
        stop_pid mariadbd "$DIR/mariadb.pid"
        stop_pid munged /run/munge/munged.pid
        say "down"
        ;;
    status)
        status
        ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 2
        ;;
esac
