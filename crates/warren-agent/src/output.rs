//! Bounded output of a background process: the newest bytes are kept, older ones dropped with a
//! count, and readers address bytes by absolute offset so they can resume where they stopped.

/// Bytes kept per stream of one background process.
pub const RETAINED: usize = 4 * 1024 * 1024;

#[derive(Default)]
pub struct OutputLog {
    /// Absolute offset of `buf[0]`, i.e. how many bytes were dropped from the front.
    start: u64,
    buf: Vec<u8>,
}

/// A slice of the log as text.
pub struct Read {
    pub text: String,
    /// Where the next read should start.
    pub next_offset: u64,
    /// Bytes between the requested offset and the oldest retained byte that are gone.
    pub dropped: u64,
}

impl OutputLog {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Trim in large steps so pushes stay amortised O(1).
        if self.buf.len() > RETAINED + RETAINED / 4 {
            let excess = self.buf.len() - RETAINED;
            self.buf.drain(..excess);
            self.start += excess as u64;
        }
    }

    pub fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Text from absolute `offset` to the last complete UTF-8 character. An offset before the
    /// retained window gets a marker naming how much was lost.
    pub fn read_from(&self, offset: u64) -> Read {
        let dropped = self.start.saturating_sub(offset);
        let from = offset.clamp(self.start, self.end()) - self.start;
        let bytes = &self.buf[from as usize..];
        let complete = complete_utf8_len(bytes);
        let mut text = String::new();
        if dropped > 0 {
            text.push_str(&format!(
                "[warren: {dropped} earlier bytes of output were dropped; {RETAINED} bytes are kept]\n"
            ));
        }
        text.push_str(&String::from_utf8_lossy(&bytes[..complete]));
        Read {
            text,
            next_offset: self.start + from + complete as u64,
            dropped,
        }
    }
}

/// Length of the longest prefix that does not end inside a multi-byte character, so a chunk
/// boundary never turns one character into two replacement characters.
pub fn complete_utf8_len(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        // error_len() == None: the input ends in the middle of a character.
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => {
            // Invalid bytes somewhere: only hold back a truncated sequence at the very end.
            let tail_start = bytes.len().saturating_sub(3);
            (tail_start..bytes.len())
                .find(|&i| {
                    let b = bytes[i];
                    b >= 0xC0 && (bytes.len() - i) < utf8_width(b)
                })
                .unwrap_or(bytes.len())
        }
    }
}

fn utf8_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// Turns a byte stream into text chunks without splitting characters.
#[derive(Default)]
pub struct Utf8Chunker {
    carry: Vec<u8>,
}

impl Utf8Chunker {
    pub fn feed(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let n = complete_utf8_len(&self.carry);
        let text = String::from_utf8_lossy(&self.carry[..n]).into_owned();
        self.carry.drain(..n);
        text
    }

    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resume_at_offsets_and_report_drops() {
        let mut log = OutputLog::default();
        log.push(b"hello ");
        let first = log.read_from(0);
        assert_eq!(first.text, "hello ");
        log.push(b"world");
        let second = log.read_from(first.next_offset);
        assert_eq!(second.text, "world");
        assert_eq!(second.dropped, 0);

        let mut big = OutputLog::default();
        big.push(&vec![b'x'; RETAINED * 2]);
        let r = big.read_from(0);
        assert!(r.dropped > 0 && r.text.starts_with("[warren: "));
        assert_eq!(r.next_offset, big.end());
    }

    #[test]
    fn characters_are_never_split() {
        let euro = "€".as_bytes();
        let mut c = Utf8Chunker::default();
        assert_eq!(c.feed(&euro[..1]), "");
        assert_eq!(c.feed(&euro[1..]), "€");
        let mut log = OutputLog::default();
        log.push(b"a");
        log.push(&euro[..2]);
        let r = log.read_from(0);
        assert_eq!((r.text.as_str(), r.next_offset), ("a", 1));
    }
}
