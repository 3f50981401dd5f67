//! Zero-copy file bodies through hyper: `sendfile(2)` instead of read + write.
//!
//! hyper writes whatever bytes a body yields. For a large file range the body
//! yields a placeholder instead, a slice of one static zero buffer, and records
//! which file bytes it stands for in the connection's [`Spans`]. The socket
//! wrapper (`server.rs`) recognises placeholder memory by address when hyper
//! writes it and sends the recorded file range with `sendfile` instead. hyper
//! is told to use vectored writes, so body buffers reach the socket as they
//! were yielded (never copied into its own buffer), in order. Each span's
//! placeholder starts at a different offset of the buffer, and the wrapper
//! checks the exact address and length it is handed against the span it is
//! about to send: a placeholder it cannot match aborts the connection instead
//! of sending zeros or the wrong bytes.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::Interest;

/// Largest file span.
pub const SPAN: usize = 256 * 1024;
/// Distinct placeholder start offsets.
const SHIFTS: usize = 4096;

/// Only its addresses matter. Interior mutability (never used) puts the
/// buffer in `.bss`: an immutable zero array would take 260 KiB of `.rodata`
/// in the binary.
struct Placeholder(std::cell::UnsafeCell<[u8; SPAN + SHIFTS]>);
// SAFETY: nothing ever writes the buffer.
unsafe impl Sync for Placeholder {}
static PLACEHOLDER_CELL: Placeholder = Placeholder(std::cell::UnsafeCell::new([0; SPAN + SHIFTS]));

fn placeholder() -> &'static [u8; SPAN + SHIFTS] {
    // SAFETY: nothing ever writes the buffer, so shared references to it are sound.
    unsafe { &*PLACEHOLDER_CELL.0.get() }
}

/// Whether `buf` is (part of) a placeholder.
pub fn is_placeholder(buf: &[u8]) -> bool {
    let start = placeholder().as_ptr() as usize;
    let p = buf.as_ptr() as usize;
    !buf.is_empty() && p >= start && p < start + placeholder().len()
}

struct Span {
    file: Arc<File>,
    offset: u64,
    len: usize,
    /// Where in the placeholder buffer the unsent rest of this span starts.
    at: usize,
}

/// File ranges standing behind the placeholders of one connection, in the
/// order hyper will write them.
#[derive(Default)]
pub struct Spans(Mutex<State>);

#[derive(Default)]
struct State {
    queue: VecDeque<Span>,
    next_shift: usize,
}

impl Spans {
    /// Records a span of `len <= SPAN` bytes and returns its placeholder.
    pub fn push(&self, file: Arc<File>, offset: u64, len: usize) -> bytes::Bytes {
        let mut st = self.lock();
        let at = st.next_shift;
        st.next_shift = (st.next_shift + 1) % SHIFTS;
        st.queue.push_back(Span {
            file,
            offset,
            len,
            at,
        });
        bytes::Bytes::from_static(&placeholder()[at..at + len])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends (part of) the front span, which hyper is writing as the
    /// placeholder `buf`. Returns the bytes sent.
    pub fn poll_send<S: SendFile>(
        &self,
        sock: &S,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (file, offset, len) = match self.lock().queue.front() {
            Some(s) if buf.as_ptr() == placeholder()[s.at..].as_ptr() && buf.len() == s.len => {
                (s.file.clone(), s.offset, s.len)
            }
            _ => {
                return Poll::Ready(Err(io::Error::other(
                    "placeholder does not match its file span",
                )))
            }
        };
        let n = ready!(sock.poll_sendfile(cx, &file, offset, len))?;
        if n == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being sent",
            )));
        }
        let mut st = self.lock();
        if let Some(front) = st.queue.front_mut() {
            front.offset += n as u64;
            front.len -= n;
            front.at += n;
            if front.len == 0 {
                st.queue.pop_front();
            }
        }
        Poll::Ready(Ok(n))
    }
}

/// A socket that can take a file range directly.
pub trait SendFile {
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>>;

    /// Writes `bufs` (the response head) telling the kernel that more follows,
    /// so the head and the first file bytes share a segment (nginx's tcp_nopush).
    fn poll_write_more(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;
}

/// `sendmsg` of `bufs` with `flags` (MSG_MORE: a `writev` with a cork).
fn sendmsg(
    fd: std::os::fd::RawFd,
    bufs: &[io::IoSlice<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid; IoSlice is ABI-compatible with
    // iovec on Unix, and `bufs` outlives the call.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len() as _;
        libc::sendmsg(fd, &msg, flags | libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

macro_rules! impl_sendfile {
    ($t:ty, $more:expr) => {
        impl SendFile for $t {
            fn poll_sendfile(
                &self,
                cx: &mut Context<'_>,
                file: &File,
                offset: u64,
                len: usize,
            ) -> Poll<io::Result<usize>> {
                let mut off = offset as libc::off64_t;
                self.poll_io(cx, || {
                    nix::sys::sendfile::sendfile64(self, file, Some(&mut off), len)
                        .map_err(io::Error::from)
                })
            }

            fn poll_write_more(
                &self,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let fd = std::os::fd::AsRawFd::as_raw_fd(self);
                self.poll_io(cx, || sendmsg(fd, bufs, $more))
            }
        }

        impl PollIo for $t {
            fn poll_io(
                &self,
                cx: &mut Context<'_>,
                mut f: impl FnMut() -> io::Result<usize>,
            ) -> Poll<io::Result<usize>> {
                loop {
                    ready!(self.poll_write_ready(cx))?;
                    match self.try_io(Interest::WRITABLE, &mut f) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        r => return Poll::Ready(r),
                    }
                }
            }
        }
    };
}

/// One nonblocking write-side syscall, retried when the socket is writable.
trait PollIo {
    fn poll_io(
        &self,
        cx: &mut Context<'_>,
        f: impl FnMut() -> io::Result<usize>,
    ) -> Poll<io::Result<usize>>;
}

// MSG_MORE means nothing to unix sockets.
impl_sendfile!(tokio::net::TcpStream, libc::MSG_MORE);
impl_sendfile!(tokio::net::UnixStream, 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_by_address_and_differ_per_span() {
        let spans = Spans::default();
        let f = Arc::new(tempfile::tempfile().unwrap());
        let a = spans.push(f.clone(), 0, 10);
        let b = spans.push(f, 10, 10);
        assert!(is_placeholder(&a) && is_placeholder(&b[3..]));
        assert_ne!(a.as_ptr(), b.as_ptr());
        assert!(!is_placeholder(&[0u8; 10]));
        assert!(!is_placeholder(&a[..0]));
    }
}
