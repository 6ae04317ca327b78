//! A throwaway PostgreSQL cluster in a temporary directory, started from the system's binaries,
//! and the upstream connection parameters the gateway uses (temporary cluster or a caller's URL).

use crate::Error;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Where the gateway connects, and as whom it runs administrative commands.
#[derive(Clone)]
pub(crate) struct UpstreamTarget {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Connect through `<dir>/.s.PGSQL.<port>` instead of TCP (the temporary cluster).
    pub(crate) socket_dir: Option<PathBuf>,
    /// Sent when the upstream asks for a password (cleartext, MD5 or SCRAM); trust needs none.
    pub(crate) password: Option<String>,
    /// The role for [`LocalDsql::create_role`](crate::LocalDsql::create_role).
    pub(crate) admin_user: String,
    pub(crate) admin_database: String,
}

impl std::fmt::Debug for UpstreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "password",
                &self.password.as_ref().map(|_| "** redacted **"),
            )
            .field("admin_user", &self.admin_user)
            .finish()
    }
}

impl UpstreamTarget {
    /// Parses `postgres://[user[:password]@]host[:port][/database]`.
    pub(crate) fn from_url(raw: &str) -> Result<Self, Error> {
        // Never echo the URL: it may hold a password.
        let url = url::Url::parse(raw).map_err(|e| Error::invalid_upstream(e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(Error::invalid_upstream(format!(
                "scheme `{}` is not postgres:// or postgresql://",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::invalid_upstream("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = decode(url.username());
        let database = decode(url.path().trim_start_matches('/'));
        Ok(UpstreamTarget {
            host,
            port: url.port().unwrap_or(5432),
            socket_dir: None,
            password: url.password().map(decode),
            admin_user: if user.is_empty() {
                "postgres".into()
            } else {
                user
            },
            admin_database: if database.is_empty() {
                "postgres".into()
            } else {
                database
            },
        })
    }
}

/// A PostgreSQL cluster in a temporary directory, run by a supervisor process (see
/// [`SUPERVISOR_SCRIPT`]); stopped and deleted on [`stop`](Self::stop), on drop, and when this
/// process dies, even by SIGKILL.
#[derive(Debug)]
pub(crate) struct TempPostgres {
    supervisor: Option<Supervisor>,
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    /// The per-run password of `admin`, needed over TCP (the unix socket is private).
    password: String,
}

/// The supervisor child: we hold its stdin; it reports on its stdout, one line per event.
struct Supervisor {
    child: std::process::Child,
    control: Option<std::process::ChildStdin>,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

/// How long a stop may take before the supervisor itself is killed (PostgreSQL's immediate
/// shutdown takes well under a second; the supervisor's own bound is 10 s).
const STOP_BOUND: Duration = Duration::from_secs(20);
/// How long PostgreSQL may take to accept connections.
const START_BOUND: Duration = Duration::from_secs(60);

/// The supervisor, run by `sh` in its own process group (terminal signals are for dsql-local,
/// which stops it in order). PostgreSQL's processes are its children, and it outlives
/// dsql-local: when dsql-local closes the supervisor's stdin (it is done, or it died: the
/// kernel closes the pipe even on SIGKILL), the supervisor stops PostgreSQL (immediate
/// shutdown, SIGKILL after 10 s) and removes the temporary directories. It creates the
/// directory itself, so nothing exists before it is watching.
///
/// Arguments: PostgreSQL's bindir, then the uid and gid to run PostgreSQL as (empty: as is).
/// Commands on stdin: `initdb`, `start <port>`, `tlsdir` (make a directory for the CA, removed
/// with the rest). Replies on stdout: `dir <path>`, `initdb <exit status>`, `pid <postmaster
/// pid>`, `tlsdir <path>`.
const SUPERVISOR_SCRIPT: &str = r#"
trap '' INT HUP TERM QUIT PIPE
bin=$1 uid=$2 gid=$3
d=$(mktemp -d "${TMPDIR:-/tmp}/dsql-local-pg-XXXXXXXX") || exit 1
if [ -n "$uid" ]; then chown "$uid:$gid" "$d" || { rm -rf "$d"; exit 1; }; fi
cd "$d" || exit 1
as_pg() {
  if [ -n "$uid" ]; then exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"; fi
  exec "$@"
}
echo "dir $d"
pg= tls=
while IFS= read -r line; do
  case $line in
    initdb)
      ( as_pg "$bin/initdb" -D "$d/data" -U admin --auth-local=trust --auth-host=scram-sha-256 \
          --pwfile="$d/pwfile" --no-sync -E UTF8 --locale=C ) >"$d/initdb.log" 2>&1
      echo "initdb $?"
      rm -f "$d/pwfile" ;;
    "start "*)
      if [ -n "$pg" ]; then wait "$pg" 2>/dev/null; fi
      ( as_pg "$bin/postgres" -D "$d/data" -p "${line#start }" ) >>"$d/postgres.log" 2>&1 &
      pg=$!
      echo "pid $pg" ;;
    tlsdir)
      tls=$(mktemp -d "${TMPDIR:-/tmp}/dsql-local-tls-XXXXXXXX")
      echo "tlsdir $tls" ;;
  esac
done
if [ -n "$pg" ]; then
  kill -QUIT "$pg" 2>/dev/null
  i=0
  while [ $i -lt 100 ]; do
    state=$(sed 's/.*) //' "/proc/$pg/stat" 2>/dev/null | cut -c1)
    case $state in ''|Z) break ;; esac
    sleep 0.1
    i=$((i + 1))
  done
  kill -KILL "$pg" 2>/dev/null
  wait "$pg" 2>/dev/null
fi
cd /
rm -rf "$d"
if [ -n "$tls" ]; then rm -rf "$tls"; fi
"#;

/// A random password for the upstream's `admin` (64 hex digits from the system's CSPRNG).
fn random_password() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| {
            Error::io(
                "cannot generate a random password",
                std::io::Error::other("the system's random source failed"),
            )
        })?;
    Ok(hex::encode(bytes))
}

/// Whether `pid` is gone (or a zombie: exited, not yet reaped by the supervisor).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn find_bindir() -> Result<PathBuf, Error> {
    let has_tools = |d: &Path| {
        d.join("initdb").is_file() && d.join("pg_ctl").is_file() && d.join("postgres").is_file()
    };
    if let Some(dir) = std::env::var_os("DSQL_LOCAL_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(Error::postgres_not_found())
        };
    }
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Ok(dir);
        }
    }
    if let Some(dir) =
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(|d| has_tools(d)))
    {
        return Ok(dir);
    }
    // Debian/Ubuntu keep each major version apart; take the newest.
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let version: Vec<u32> = name.split('.').map_while(|p| p.parse().ok()).collect();
            let bin = e.path().join("bin");
            if !version.is_empty()
                && has_tools(&bin)
                && best.as_ref().is_none_or(|(v, _)| version > *v)
            {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, b)| b).ok_or_else(Error::postgres_not_found)
}

/// (uid, gid) of `user` from /etc/passwd.
fn lookup_user(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn running_as_root() -> bool {
    // The owner of /proc/self is the process's effective uid; no libc (unsafe) needed.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("cannot find a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("cannot find a free port", e))
}

impl Supervisor {
    fn send(&mut self, command: &str) -> Result<(), Error> {
        let control = self.control.as_mut().ok_or_else(|| {
            Error::io(
                "the PostgreSQL supervisor is stopped",
                std::io::ErrorKind::BrokenPipe.into(),
            )
        })?;
        control
            .write_all(format!("{command}\n").as_bytes())
            .and_then(|()| control.flush())
            .map_err(|e| Error::io("cannot talk to the PostgreSQL supervisor (sh)", e))
    }

    /// The next reply, which must start with `prefix` (returned without it).
    async fn reply(&mut self, prefix: &str) -> Result<String, Error> {
        let failed =
            |detail: String| Error::postgres("sh (dsql-local's PostgreSQL supervisor)", detail);
        let line = tokio::time::timeout(START_BOUND, self.lines.recv())
            .await
            .map_err(|_| failed(format!("no answer within {START_BOUND:?}")))?
            .ok_or_else(|| {
                failed(
                    "it exited unexpectedly; check that `mktemp`, `setpriv` (util-linux, when \
                     running as root) and the temporary directory ($TMPDIR or /tmp) are usable"
                        .into(),
                )
            })?;
        line.strip_prefix(prefix)
            .map(str::to_owned)
            .ok_or_else(|| failed(format!("unexpected answer {line:?}")))
    }

    /// Closes the control pipe (the supervisor then stops PostgreSQL and removes the
    /// directories) and waits for it, killing it after [`STOP_BOUND`]. True if it finished.
    fn finish(&mut self) -> bool {
        self.control = None;
        let deadline = std::time::Instant::now() + STOP_BOUND;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return false;
                }
            }
        }
    }
}

impl TempPostgres {
    /// Runs `initdb` and starts the server on 127.0.0.1 (password only) and on a unix socket in
    /// its private temporary directory (the gateway's way in).
    pub(crate) async fn start() -> Result<Self, Error> {
        let bin = find_bindir()?;
        let ids = if running_as_root() {
            Some(lookup_user("postgres").ok_or_else(Error::no_postgres_user)?)
        } else {
            None
        };
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(SUPERVISOR_SCRIPT)
            .arg("dsql-local-supervisor")
            .arg(&bin)
            .arg(ids.map(|i| i.0.to_string()).unwrap_or_default())
            .arg(ids.map(|i| i.1.to_string()).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .env("LC_ALL", "C")
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io("cannot run sh (the PostgreSQL supervisor)", e))?;
        let control = child.stdin.take();
        let stdout = child.stdout.take();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        // From here on, dropping `pg` (an error, or the caller giving up) cleans everything up.
        let mut pg = TempPostgres {
            supervisor: Some(Supervisor {
                child,
                control,
                lines,
            }),
            dir: PathBuf::new(),
            data: PathBuf::new(),
            port: 0,
            password: random_password()?,
        };
        pg.dir = PathBuf::from(pg.sup()?.reply("dir ").await?);
        pg.data = pg.dir.join("data");

        write_private(&pg.dir.join("pwfile"), pg.password.as_bytes(), ids)?;
        pg.sup()?.send("initdb")?;
        let status = pg.sup()?.reply("initdb ").await?;
        if status != "0" {
            let log = std::fs::read_to_string(pg.dir.join("initdb.log")).unwrap_or_default();
            return Err(Error::postgres(
                format!("{} -D {}", bin.join("initdb").display(), pg.data.display()),
                format!("exit status {status}: {}", log.trim()),
            ));
        }
        // The unix socket lives in the private directory and only its owner (and root) may use
        // it; TCP wants admin's per-run password. Nothing else gets in.
        let hba = "# dsql-local: the gateway's private unix socket, or the per-run password\n\
                   local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        write_private(&pg.data.join("pg_hba.conf"), hba.as_bytes(), ids)?;
        let conf = format!(
            "\n# dsql-local\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             unix_socket_permissions = 0700\npassword_encryption = 'scram-sha-256'\n\
             default_transaction_isolation = 'repeatable read'\nmax_connections = 200\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\ndynamic_shared_memory_type = mmap\n\
             shared_buffers = 64MB\nlog_min_messages = warning\nlogging_collector = off\n",
            pg.dir.to_string_lossy().replace('\'', "''")
        );
        let conf_path = pg.data.join("postgresql.conf");
        let mut existing = tokio::fs::read_to_string(&conf_path)
            .await
            .map_err(|e| Error::io(format!("cannot read {}", conf_path.display()), e))?;
        existing.push_str(&conf);
        write_private(&conf_path, existing.as_bytes(), ids)?;

        // A free port can be taken by someone else before postgres binds it: try a few.
        let log = pg.dir.join("postgres.log");
        for _ in 0..5 {
            let port = free_port()?;
            pg.sup()?.send(&format!("start {port}"))?;
            let pid: u32 = pg.sup()?.reply("pid ").await?.parse().map_err(|_| {
                Error::io(
                    "the PostgreSQL supervisor sent a bad pid",
                    std::io::ErrorKind::InvalidData.into(),
                )
            })?;
            if pg.wait_ready(pid).await? {
                pg.port = port;
                tracing::debug!(port, data = %pg.data.display(), "temporary PostgreSQL started");
                return Ok(pg);
            }
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            if !log_text.contains("could not bind") && !log_text.contains("already in use") {
                let tail: Vec<&str> = log_text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(Error::postgres(
                    format!(
                        "{} -D {} -p {port}",
                        bin.join("postgres").display(),
                        pg.data.display()
                    ),
                    format!(
                        "it exited before accepting connections; server log:\n{}",
                        tail.join("\n")
                    ),
                ));
            }
        }
        Err(Error::postgres(
            bin.join("postgres").display().to_string(),
            "could not bind a free port on 127.0.0.1 in 5 tries; try again",
        ))
    }

    fn sup(&mut self) -> Result<&mut Supervisor, Error> {
        self.supervisor.as_mut().ok_or_else(|| {
            Error::io(
                "the temporary PostgreSQL is stopped",
                std::io::ErrorKind::NotConnected.into(),
            )
        })
    }

    /// Waits until the postmaster says `ready` in its pid file (as `pg_ctl -w` does); false if
    /// it exited first.
    async fn wait_ready(&self, pid: u32) -> Result<bool, Error> {
        let pid_file = self.data.join("postmaster.pid");
        let deadline = tokio::time::Instant::now() + START_BOUND;
        loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file) {
                let lines: Vec<&str> = text.lines().collect();
                if lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
                    && lines.get(7).map(|l| l.trim()) == Some("ready")
                {
                    return Ok(true);
                }
            }
            if process_gone(pid) {
                return Ok(false);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::postgres(
                    "postgres",
                    format!(
                        "not ready within {START_BOUND:?}; see {}",
                        self.dir.join("postgres.log").display()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A new private directory for the CA, removed with PostgreSQL's, whatever ends this process.
    pub(crate) async fn tls_dir(&mut self) -> Result<PathBuf, Error> {
        self.sup()?.send("tlsdir")?;
        let dir = self.sup()?.reply("tlsdir ").await?;
        if dir.is_empty() {
            return Err(Error::io(
                "cannot create a temporary directory for the CA",
                std::io::Error::other("mktemp failed"),
            ));
        }
        Ok(PathBuf::from(dir))
    }

    /// The TCP port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `admin`'s password, needed over TCP.
    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    /// The directory of the unix socket (`.s.PGSQL.<port>`).
    pub(crate) fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server (immediate mode: nothing here needs to survive) and deletes the directory.
    pub(crate) async fn stop(&mut self) -> Result<(), Error> {
        let Some(mut sup) = self.supervisor.take() else {
            return Ok(());
        };
        let finished = tokio::task::spawn_blocking(move || sup.finish())
            .await
            .unwrap_or(false);
        if !finished || self.dir.exists() {
            return Err(Error::io(
                format!(
                    "cannot stop the temporary PostgreSQL cleanly; remove {} by hand",
                    self.dir.display()
                ),
                std::io::Error::other("the supervisor did not finish"),
            ));
        }
        Ok(())
    }
}

/// Writes a file for the PostgreSQL user alone: created anew (never through a planted link),
/// mode 0600, given to `ids`.
fn write_private(path: &Path, contents: &[u8], ids: Option<(u32, u32)>) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let write_err = |source| Error::write(path.to_owned(), source);
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(write_err)?;
    f.write_all(contents).map_err(write_err)?;
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(write_err)?;
    }
    Ok(())
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Some(mut sup) = self.supervisor.take()
            && !sup.finish()
        {
            tracing::warn!(dir = %self.dir.display(), "cannot stop the temporary PostgreSQL cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_parse_and_redact() {
        let t = UpstreamTarget::from_url("postgres://bob:s%40cret@db.internal:6543/app")
            .expect("valid url");
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.admin_user.as_str(),
                t.admin_database.as_str()
            ),
            ("db.internal", 6543, "bob", "app")
        );
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert!(!format!("{t:?}").contains("s@cret"));
        let t = UpstreamTarget::from_url("postgresql://[::1]").expect("valid url");
        assert_eq!(
            (t.host.as_str(), t.port, t.admin_user.as_str()),
            ("::1", 5432, "postgres")
        );
        let e = UpstreamTarget::from_url("mysql://u:hunter2@h/db").expect_err("wrong scheme");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(UpstreamTarget::from_url("not a url").is_err());
    }
}
