//! The `ssh://` transport (also `ssh+git://`, `git+ssh://` and scp-like
//! `[user@]host:path`), in place of libgit2's: libgit2's is libssh2, which
//! links OpenSSL's libssl and libcrypto (3.9 MiB of the stripped binary
//! with libssh2 itself). This one is russh, pure Rust on ring, on the
//! process's tokio runtime, as the http(s) transport is.
//!
//! It does what libgit2's did as git-sync used it (`transports/ssh_libssh2.c`):
//! one connection lists the refs and then fetches; the user is the URL's,
//! else `git`; each `--ssh-key-file` is offered in turn; the host key is
//! checked against `--ssh-known-hosts-file` under the host and port the URL
//! names (unless `--ssh-known-hosts=false`); the server runs
//! `git-upload-pack '<path>'`. The connection (TCP connect to the running
//! command) and then each read and write is bounded by `--sync-timeout`,
//! as the `git://` transport's socket is. When upload-pack fails, what it
//! wrote to stderr and its exit status are the error, as git shows them.

mod auth;
mod known_hosts;
mod target;

use std::future::Future;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use russh::client::{self, Msg};
use russh::{Channel, ChannelMsg, Disconnect, Sig};
use tokio::runtime::Handle;

use crate::config::Ssh;
use target::Target;

/// At most this much of what upload-pack writes to stderr goes into an
/// error (it writes a line or two when it fails).
const STDERR_KEPT: usize = 4096;

/// Makes libgit2 use this transport for ssh URLs. libgit2 hands scp-like
/// URLs (anything with a `:` no other transport claims) to the transport
/// registered for `ssh://`.
///
/// # Safety
/// Registers with libgit2 globally: only while the process has one thread.
pub unsafe fn register(timeout: Duration, ssh: Ssh) -> Result<(), git2::Error> {
    let ssh = Arc::new(ssh);
    for scheme in ["ssh", "ssh+git", "git+ssh"] {
        let ssh = ssh.clone();
        git2::transport::register(scheme, move |remote| {
            let ssh = ssh.clone();
            Transport::smart(remote, false, SshTransport { timeout, ssh })
        })?;
    }
    Ok(())
}

struct SshTransport {
    timeout: Duration,
    ssh: Arc<Ssh>,
}

impl SmartSubtransport for SshTransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        // git2 hands the listing's stream on to the fetch that follows.
        if action != Service::UploadPackLs {
            return Err(git2::Error::from_str("ssh: only fetching is supported"));
        }
        let target = Target::parse(url).map_err(|e| git2::Error::from_str(&e))?;
        let rt = Handle::try_current()
            .map_err(|_| git2::Error::from_str("ssh: not called from within the tokio runtime"))?;
        let io = Io {
            rt,
            timeout: self.timeout,
            host: target.host.clone(),
        };
        let conn = Conn::open(io, &target, &self.ssh)
            .map_err(|e| git2::Error::from_str(&format!("{e:#}")))?;
        Ok(Box::new(conn))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// Runs the connection's futures on the runtime from libgit2's blocking
/// thread, each within `--sync-timeout`.
struct Io {
    rt: Handle,
    timeout: Duration,
    host: String,
}

impl Io {
    fn block_on<F: Future>(&self, f: F) -> std::io::Result<F::Output> {
        let _entered = self.rt.enter();
        self.rt
            .block_on(tokio::time::timeout(self.timeout, f))
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "ssh {}: timed out after {}",
                        self.host,
                        humantime::format_duration(self.timeout)
                    ),
                )
            })
    }
}

/// One session with one channel running upload-pack.
struct Conn {
    io: Io,
    /// Taken when the connection is dropped, to say goodbye.
    session: Option<client::Handle<auth::HostCheck>>,
    channel: Channel<Msg>,
    command: String,
    /// Received and not read yet.
    pending: Bytes,
    stderr: Vec<u8>,
    exit: Option<Exit>,
    /// The server closed the channel.
    closed: bool,
}

impl Conn {
    fn open(io: Io, target: &Target, ssh: &Ssh) -> anyhow::Result<Conn> {
        let host = target.host.as_str();
        let tcp = crate::tcp::connect(host, target.port, io.timeout)
            .with_context(|| format!("ssh: connect to host {host} port {}", target.port))?;
        tcp.set_nonblocking(true)?;
        let command = target.command("git-upload-pack");
        let (session, channel) = io.block_on(async {
            let tcp = crate::tcp::QuickAck(tokio::net::TcpStream::from_std(tcp)?);
            let check = auth::HostCheck::new(ssh, target);
            let config = Arc::new(check.config());
            let mut session = client::connect_stream(config, tcp, check).await?;
            let user = target.user.as_deref().unwrap_or("git");
            auth::log_in(&mut session, user, &ssh.key_files)
                .await
                .with_context(|| format!("ssh {user}@{host}"))?;
            let channel = session.channel_open_session().await?;
            channel.exec(true, command.as_bytes()).await?;
            anyhow::Ok((session, channel))
        })??;
        Ok(Conn {
            io,
            session: Some(session),
            channel,
            command,
            pending: Bytes::new(),
            stderr: Vec::new(),
            exit: None,
            closed: false,
        })
    }

    /// Takes the next message on the channel: output to read, stderr, how
    /// the command ended, or the channel's end.
    fn receive(&mut self) -> std::io::Result<()> {
        match self.io.block_on(self.channel.wait())? {
            Some(ChannelMsg::Data { data }) => self.pending = data,
            Some(ChannelMsg::ExtendedData { data, .. }) => {
                let room = STDERR_KEPT.saturating_sub(self.stderr.len());
                self.stderr.extend_from_slice(&data[..data.len().min(room)]);
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                self.exit = Some(Exit::Status(exit_status));
            }
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                self.exit = Some(Exit::Signal(signal_name));
            }
            Some(ChannelMsg::Failure) => {
                return Err(std::io::Error::other(format!(
                    "ssh {}: the server refused to run {}",
                    self.io.host, self.command
                )));
            }
            Some(ChannelMsg::Close) | None => self.closed = true,
            // Eof comes before the exit status and Close: read on.
            Some(_) => {}
        }
        Ok(())
    }

    /// The end of upload-pack's output: its failure, if it failed.
    fn end(&self) -> std::io::Result<usize> {
        let stderr = String::from_utf8_lossy(&self.stderr);
        let stderr = stderr.trim();
        let how = match &self.exit {
            Some(Exit::Status(0)) => return Ok(0),
            None if stderr.is_empty() => return Ok(0),
            Some(Exit::Status(n)) => format!("exited with status {n}"),
            Some(Exit::Signal(sig)) => format!("was killed by signal {sig:?}"),
            None => "ended".to_string(),
        };
        let what = format!("ssh {}: {} {how}", self.io.host, self.command);
        Err(std::io::Error::other(if stderr.is_empty() {
            what
        } else {
            format!("{stderr} ({what})")
        }))
    }
}

/// How the remote command ended.
enum Exit {
    Status(u32),
    Signal(Sig),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Each round waits for one message, within the timeout, until the
        // server closes the channel.
        while self.pending.is_empty() {
            if self.closed {
                return self.end();
            }
            self.receive()?;
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.io
            .block_on(self.channel.data_bytes(Bytes::copy_from_slice(buf)))?
            .map_err(|e| std::io::Error::other(format!("ssh {}: {e}", self.io.host)))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Conn {
    /// Ends the session as an ssh client leaving does, on the runtime: the
    /// drop may come from a thread that must not block.
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.io.rt.spawn(async move {
                let _ = session.disconnect(Disconnect::ByApplication, "", "").await;
            });
        }
    }
}
