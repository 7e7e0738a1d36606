//! [`ReadAhead`]: bytes a layer read past its own header (a PROXY header,
//! an HTTP head) that belong to the layer above.

use tokio::io::ReadBuf;

/// Bytes a layer read past its own header that belong to the layer
/// above, handed out before anything more is read.
#[derive(Default)]
pub struct ReadAhead {
    bytes: Vec<u8>,
    at: usize,
}

impl ReadAhead {
    pub(crate) fn new(bytes: Vec<u8>) -> ReadAhead {
        ReadAhead { bytes, at: 0 }
    }

    /// Moves what fits into `buf`; false when nothing was left.
    pub(crate) fn read_into(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.at == self.bytes.len() {
            return false;
        }
        let n = (self.bytes.len() - self.at).min(buf.remaining());
        buf.put_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        if self.at == self.bytes.len() {
            *self = ReadAhead::default();
        }
        true
    }
}
