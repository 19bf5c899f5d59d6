//! Counts an `aws-chunked` S3 upload's chunks against the node's budget for
//! request bodies while `s3s` holds them. `s3s` checks each chunk's
//! signature before it hands any of the chunk on, so it keeps a whole chunk
//! in memory, and a chunk may declare any size (4 GiB was taken, and held,
//! as it arrived). This reads the chunks' framing as the bytes pass, and
//! holds budget for the chunk being sent; it changes no byte and checks no
//! signature (that stays `s3s`'s).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::{Body, Bytes};
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest chunk header (`<hex size>;chunk-signature=<64 hex>`).
const HEADER_MAX: usize = 256;

/// Where the framing is.
#[derive(Debug, PartialEq, Eq)]
enum At {
    /// In a chunk's header line, these bytes of it read.
    Header(Vec<u8>),
    /// In a chunk's data and its closing CRLF, these bytes left.
    Data(u64),
    /// Past the last chunk: trailers, passed on as they are.
    Trailer,
}

/// An `aws-chunked` body whose chunks hold the budget (one permit a KiB)
/// while they pass.
pub(crate) struct Budgeted {
    inner: Body,
    at: At,
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
}

impl Budgeted {
    pub(crate) fn new(inner: Body, budget: Arc<Semaphore>) -> Self {
        Self { inner, at: At::Header(Vec::new()), budget, held: None }
    }

    /// Follows the framing over `bytes`: the budget for each chunk whose
    /// header ends in them, or why not.
    fn follow(&mut self, mut bytes: &[u8]) -> Result<(), &'static str> {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Trailer => return Ok(()),
                At::Data(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.at = At::Header(Vec::new());
                    }
                }
                At::Header(line) => {
                    let end = bytes.iter().position(|&b| b == b'\n');
                    line.extend_from_slice(&bytes[..end.map_or(bytes.len(), |e| e + 1)]);
                    if line.len() > HEADER_MAX {
                        return Err("an aws-chunked chunk header is too long");
                    }
                    let Some(end) = end else { return Ok(()) };
                    bytes = &bytes[end + 1..];
                    let size = chunk_size(line).ok_or("an aws-chunked chunk header has no size")?;
                    // The previous chunk is whole: `s3s` hands it on now.
                    self.held = None;
                    if size == 0 {
                        self.at = At::Trailer;
                        continue;
                    }
                    let kib = u32::try_from(size.div_ceil(1024)).map_err(|_| BUSY)?;
                    self.held = Some(self.budget.clone().try_acquire_many_owned(kib).map_err(|_| BUSY)?);
                    // The data, then its CRLF.
                    self.at = At::Data(size + 2);
                }
            }
        }
        Ok(())
    }
}

const BUSY: &str = "the node is reading as much of request bodies as it may";

/// The size a chunk header (`<hex>[;extensions]\r\n`) declares: one to
/// eight hex digits, nothing else. `s3s` reads at most eight and passes
/// over the rest, so a longer size would be read two ways, and a client
/// could walk the two readings apart until this one lost the chunks'
/// framing while `s3s` held a chunk of any size.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex = line.split(|&b| b == b';' || b == b'\r' || b == b'\n').next()?;
    if hex.is_empty() || hex.len() > 8 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

impl http_body::Body for Budgeted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            if let Err(why) = this.follow(data.map_or(&[][..], |d| &d[..])) {
                return Poll::Ready(Some(Err(axum::Error::new(why))));
            }
        }
        if frame.is_none() {
            this.held = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgeted(kib: usize) -> Budgeted {
        Budgeted::new(Body::empty(), Arc::new(Semaphore::new(kib)))
    }

    #[test]
    fn each_chunk_holds_its_size_while_it_passes() {
        let mut b = budgeted(100);
        b.follow(b"10000;chunk-signature=ab\r\n").unwrap();
        assert_eq!(b.budget.available_permits(), 36, "64 KiB held");
        b.follow(&[b'x'; 0x10000]).unwrap();
        b.follow(b"\r\n4").unwrap();
        assert_eq!(b.budget.available_permits(), 36, "still held: the next header is not whole");
        b.follow(b"00\r\n").unwrap();
        assert_eq!(b.budget.available_permits(), 99, "the first given back, 1 KiB for the second");
        b.follow(&[b'y'; 0x400]).unwrap();
        b.follow(b"\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n").unwrap();
        assert_eq!((b.budget.available_permits(), &b.at), (100, &At::Trailer));
    }

    #[test]
    fn a_chunk_past_the_budget_or_without_a_size_is_refused() {
        assert_eq!(budgeted(1024).follow(b"ffffffff\r\n"), Err(BUSY), "4 GiB");
        assert!(budgeted(1024).follow(b"zz;chunk-signature=ab\r\n").is_err());
        assert!(budgeted(1024).follow(&[b'1'; 300]).is_err(), "a header without end");
        // Sizes `s3s` would read otherwise (it takes eight digits at most).
        for header in [&b"000000100;chunk-signature=ab\r\n"[..], b" 10\r\n", b"+10\r\n", b";x\r\n"] {
            assert!(budgeted(1024).follow(header).is_err(), "{}", String::from_utf8_lossy(header));
        }
        // Split anywhere, the same.
        let mut b = budgeted(1024);
        for byte in b"400;chunk-signature=ab\r\n" {
            b.follow(&[*byte]).unwrap();
        }
        assert_eq!(b.budget.available_permits(), 1023);
    }
}
