//! A throwaway PostgreSQL cluster in a temporary directory, started from the system's binaries,
//! and the upstream connection parameters the gateway uses (temporary cluster or a caller's URL).

use crate::Error;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tempfile::TempDir;

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
        let url = url::Url::parse(raw).map_err(|e| Error::InvalidUpstream(e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(Error::InvalidUpstream(format!(
                "scheme `{}` is not postgres:// or postgresql://",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::InvalidUpstream("no host".into()))?;
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

/// A PostgreSQL cluster in a temporary directory; stopped and deleted on [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub(crate) struct TempPostgres {
    dir: Option<TempDir>,
    data: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    port: u16,
    running: bool,
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
            Err(Error::PostgresNotFound)
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
    best.map(|(_, b)| b).ok_or(Error::PostgresNotFound)
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

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    if path.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("cannot find a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("cannot find a free port", e))
}

impl TempPostgres {
    /// Runs `initdb` and starts the server on 127.0.0.1 and a unix socket in the temporary directory.
    pub(crate) async fn start() -> Result<Self, Error> {
        let bin = find_bindir()?;
        let run_as = if running_as_root() {
            Some("postgres".to_owned())
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("dsql-local-pg-")
            .tempdir()
            .map_err(|e| Error::io("cannot create a temporary directory for PostgreSQL", e))?;
        if run_as.is_some() {
            let (uid, gid) = lookup_user("postgres").ok_or(Error::NoPostgresUser)?;
            chown_tree(dir.path(), uid, gid)
                .map_err(|e| Error::io("cannot give the temporary directory to `postgres`", e))?;
        }
        let data = dir.path().join("data");
        let mut pg = TempPostgres {
            dir: Some(dir),
            data,
            bin,
            run_as,
            port: 0,
            running: false,
        };
        let data_arg = pg.data.to_string_lossy().into_owned();
        // The bootstrap superuser is `admin`, like DSQL's; trust auth because the gateway is the gatekeeper.
        pg.run(
            "initdb",
            &[
                "-D",
                &data_arg,
                "-U",
                "admin",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )
        .await?;
        let socket_dir = pg.dir_path().to_string_lossy().into_owned();
        let conf = format!(
            "\n# dsql-local\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             default_transaction_isolation = 'repeatable read'\nmax_connections = 200\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\ndynamic_shared_memory_type = mmap\n\
             shared_buffers = 64MB\nlog_min_messages = warning\nlogging_collector = off\n",
            socket_dir.replace('\'', "''")
        );
        let conf_path = pg.data.join("postgresql.conf");
        let mut existing = tokio::fs::read_to_string(&conf_path)
            .await
            .map_err(|e| Error::io(format!("cannot read {}", conf_path.display()), e))?;
        existing.push_str(&conf);
        tokio::fs::write(&conf_path, existing)
            .await
            .map_err(|source| Error::Write {
                path: conf_path,
                source,
            })?;

        // A free port can be taken by someone else before postgres binds it: try a few.
        let log = pg.dir_path().join("postgres.log");
        let log_arg = log.to_string_lossy().into_owned();
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let opts = format!("-p {port}");
            match pg
                .run(
                    "pg_ctl",
                    &[
                        "start", "-w", "-t", "60", "-s", "-D", &data_arg, "-l", &log_arg, "-o",
                        &opts,
                    ],
                )
                .await
            {
                Ok(()) => {
                    pg.port = port;
                    pg.running = true;
                    tracing::debug!(port, data = %pg.data.display(), "temporary PostgreSQL started");
                    return Ok(pg);
                }
                Err(e) => {
                    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                    if !log_text.contains("could not bind") && !log_text.contains("already in use")
                    {
                        let tail: Vec<&str> = log_text.lines().rev().take(15).collect();
                        let tail: Vec<&str> = tail.into_iter().rev().collect();
                        return Err(match e {
                            Error::Postgres { command, detail } => Error::Postgres {
                                command,
                                detail: format!("{detail}\nserver log:\n{}", tail.join("\n")),
                            },
                            other => other,
                        });
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(Error::PostgresNotFound))
    }

    fn dir_path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// The TCP port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the unix socket (`.s.PGSQL.<port>`).
    pub(crate) fn socket_dir(&self) -> &Path {
        self.dir_path()
    }

    fn command(&self, tool: &str, args: &[&str]) -> std::process::Command {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => std::process::Command::new(exe),
        };
        // initdb and pg_ctl complain when the postgres user cannot read the current directory.
        cmd.args(args)
            .current_dir(self.dir_path())
            .stdin(Stdio::null())
            .env("LC_ALL", "C");
        cmd
    }

    async fn run(&self, tool: &str, args: &[&str]) -> Result<(), Error> {
        let cmd = self.command(tool, args);
        let out = tokio::process::Command::from(cmd)
            .output()
            .await
            .map_err(|e| Error::io(format!("cannot run {}", self.bin.join(tool).display()), e))?;
        if out.status.success() {
            return Ok(());
        }
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        Err(Error::Postgres {
            command: format!("{tool} {}", args.join(" ")),
            detail,
        })
    }

    fn stop_args(&self) -> Vec<String> {
        ["stop", "-s", "-w", "-t", "30", "-m", "immediate", "-D"]
            .iter()
            .map(|s| s.to_string())
            .chain([self.data.to_string_lossy().into_owned()])
            .collect()
    }

    /// Stops the server (immediate mode: nothing here needs to survive) and deletes the directory.
    pub(crate) async fn stop(&mut self) -> Result<(), Error> {
        let result = if self.running {
            self.running = false;
            let args = self.stop_args();
            let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            self.run("pg_ctl", &args).await
        } else {
            Ok(())
        };
        if let Some(dir) = self.dir.take() {
            dir.close()
                .map_err(|e| Error::io("cannot remove the temporary PostgreSQL directory", e))?;
        }
        result
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if self.running {
            self.running = false;
            let args = self.stop_args();
            let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let mut cmd = self.command("pg_ctl", &args);
            if let Err(e) = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status() {
                tracing::warn!(error = %e, "cannot stop the temporary PostgreSQL");
            }
        }
        // TempDir's own drop removes the directory.
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
