//! The Guacamole protocol's wire format, with the limits guacd and the Java server share, and
//! its status codes. One parser for everyone: the gateway's tunnel relays with it, the test kit's
//! guacd double speaks with it, and `guac/fuzz` hammers it.
//!
//! An instruction is `LEN.VALUE` elements separated by `,` and ended by `;`, the first element
//! being the opcode; `LEN` counts Unicode code points. [`scan`] finds where the first complete
//! instruction of a byte buffer ends without allocating, which is all a relay needs; [`parse`]
//! also splits it into an [`Instruction`].

mod status;

pub use status::Status;

/// Most code points in one instruction (digits, dots, separators and values together).
pub const MAX_INSTRUCTION_CHARS: usize = 8192;
/// Most digits in one element's length.
pub const MAX_LENGTH_DIGITS: usize = 5;
/// Most elements (opcode included) in one instruction.
pub const MAX_ELEMENTS: usize = 128;
/// Most bytes a complete instruction can take: every code point may be four bytes long.
pub const MAX_INSTRUCTION_BYTES: usize = MAX_INSTRUCTION_CHARS * 4;

/// Why bytes are not a valid instruction stream. Each is a protocol error: the peer is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// An element does not start with a decimal length followed by `.`.
    BadLength,
    /// A length has more than [`MAX_LENGTH_DIGITS`] digits.
    LengthTooLong,
    /// The instruction would exceed [`MAX_INSTRUCTION_CHARS`].
    TooLong,
    /// The instruction has more than [`MAX_ELEMENTS`] elements.
    TooManyElements,
    /// An element is not followed by `,` or `;`.
    BadTerminator,
    /// A value is not valid UTF-8.
    InvalidUtf8,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BadLength => "an element does not start with a length",
            Self::LengthTooLong => "an element length has more than 5 digits",
            Self::TooLong => "the instruction is longer than 8192 characters",
            Self::TooManyElements => "the instruction has more than 128 elements",
            Self::BadTerminator => "an element is not followed by ',' or ';'",
            Self::InvalidUtf8 => "the instruction is not valid UTF-8",
        })
    }
}

impl std::error::Error for ParseError {}

/// Where the first instruction of a buffer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A complete, valid instruction takes the first `n` bytes.
    Complete(usize),
    /// Valid so far; more bytes are needed. The buffer never needs to hold more than
    /// [`MAX_INSTRUCTION_BYTES`] for this to be decided.
    Incomplete,
}

/// Finds the end of the first instruction in `buf`, checking the limits and UTF-8 on the way.
pub fn scan(buf: &[u8]) -> Result<Scan, ParseError> {
    let mut pos = 0;
    let mut chars = 0usize;
    let mut elements = 0usize;
    loop {
        // The length: 1 to 5 digits, then '.'.
        let mut len = 0usize;
        let mut digits = 0usize;
        loop {
            let Some(&b) = buf.get(pos) else {
                return Ok(Scan::Incomplete);
            };
            match b {
                b'0'..=b'9' => {
                    digits += 1;
                    if digits > MAX_LENGTH_DIGITS {
                        return Err(ParseError::LengthTooLong);
                    }
                    len = len * 10 + usize::from(b - b'0');
                    pos += 1;
                }
                b'.' if digits > 0 => {
                    pos += 1;
                    break;
                }
                _ => return Err(ParseError::BadLength),
            }
        }
        elements += 1;
        if elements > MAX_ELEMENTS {
            return Err(ParseError::TooManyElements);
        }
        // Digits, the dot, the value and its terminator.
        chars += digits + 1 + len + 1;
        if chars > MAX_INSTRUCTION_CHARS {
            return Err(ParseError::TooLong);
        }
        // The value: `len` code points.
        for _ in 0..len {
            let Some(&lead) = buf.get(pos) else {
                return Ok(Scan::Incomplete);
            };
            let width = match lead {
                0x00..=0x7F => 1,
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                _ => return Err(ParseError::InvalidUtf8),
            };
            let Some(code_point) = buf.get(pos..pos + width) else {
                // Check what is there already, so garbage is refused without waiting.
                let partial = &buf[pos..];
                if partial[1..].iter().any(|&b| b & 0xC0 != 0x80) {
                    return Err(ParseError::InvalidUtf8);
                }
                return Ok(Scan::Incomplete);
            };
            if width > 1 && std::str::from_utf8(code_point).is_err() {
                return Err(ParseError::InvalidUtf8);
            }
            pos += width;
        }
        match buf.get(pos) {
            None => return Ok(Scan::Incomplete),
            Some(b',') => pos += 1,
            Some(b';') => return Ok(Scan::Complete(pos + 1)),
            Some(_) => return Err(ParseError::BadTerminator),
        }
    }
}

/// A decoded instruction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instruction {
    pub opcode: String,
    pub args: Vec<String>,
}

impl Instruction {
    pub fn new<S: Into<String>>(opcode: &str, args: impl IntoIterator<Item = S>) -> Self {
        Self {
            opcode: opcode.to_owned(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// The wire form, `LEN.VALUE,...;`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut String) {
        encode_element(out, &self.opcode);
        for arg in &self.args {
            out.push(',');
            encode_element(out, arg);
        }
        out.push(';');
    }

    /// The elements of one complete instruction (as delimited by [`scan`]).
    pub fn from_complete(text: &str) -> Result<Self, ParseError> {
        let mut elements = split_complete(text)?;
        let opcode = elements.remove(0).to_owned();
        Ok(Self {
            opcode,
            args: elements.into_iter().map(str::to_owned).collect(),
        })
    }
}

impl std::fmt::Display for Instruction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

fn encode_element(out: &mut String, value: &str) {
    use std::fmt::Write;
    let _ = write!(out, "{}.", value.chars().count());
    out.push_str(value);
}

/// The elements of one complete instruction, borrowed; the first is the opcode.
pub fn split_complete(text: &str) -> Result<Vec<&str>, ParseError> {
    match scan(text.as_bytes())? {
        Scan::Complete(n) if n == text.len() => {}
        _ => return Err(ParseError::BadTerminator),
    }
    let mut elements = Vec::new();
    let mut rest = text;
    loop {
        let (len, after) = rest.split_once('.').ok_or(ParseError::BadLength)?;
        let len: usize = len.parse().map_err(|_| ParseError::BadLength)?;
        let end = after
            .char_indices()
            .nth(len)
            .map_or(after.len(), |(i, _)| i);
        elements.push(&after[..end]);
        let terminator = after[end..].chars().next();
        rest = &after[end + 1..];
        if terminator == Some(';') {
            return Ok(elements);
        }
    }
}

/// Parses the first instruction of `buf`: the instruction and the bytes it took, or None when
/// more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Instruction, usize)>, ParseError> {
    match scan(buf)? {
        Scan::Incomplete => Ok(None),
        Scan::Complete(n) => {
            let text = std::str::from_utf8(&buf[..n]).map_err(|_| ParseError::InvalidUtf8)?;
            Ok(Some((Instruction::from_complete(text)?, n)))
        }
    }
}

/// The opcode of one complete instruction, borrowed (cheap: the relay classifies every
/// instruction the browser sends).
pub fn opcode(complete: &[u8]) -> &[u8] {
    let Some(dot) = complete.iter().position(|&b| b == b'.') else {
        return &[];
    };
    let len: usize = std::str::from_utf8(&complete[..dot])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Opcodes are ASCII; a non-ASCII one is compared as bytes and matches nothing we know.
    let start = dot + 1;
    let mut end = start;
    let mut seen = 0;
    while seen < len && end < complete.len() {
        end += 1;
        while end < complete.len() && complete[end] & 0xC0 == 0x80 {
            end += 1;
        }
        seen += 1;
    }
    &complete[start..end.min(complete.len())]
}

/// A protocol version as guacd names it (`VERSION_1_5_0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u16, pub u16, pub u16);

impl Version {
    pub const V1_0_0: Version = Version(1, 0, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);
    pub const V1_3_0: Version = Version(1, 3, 0);
    pub const V1_5_0: Version = Version(1, 5, 0);

    /// `VERSION_a_b_c`; None for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.strip_prefix("VERSION_")?.split('_');
        let mut next = || parts.next()?.parse().ok();
        let v = Version(next()?, next()?, next()?);
        parts.next().is_none().then_some(v)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VERSION_{}_{}_{}", self.0, self.1, self.2)
    }
}

#[cfg(test)]
mod tests;
