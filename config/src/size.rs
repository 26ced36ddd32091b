//! Byte sizes as people write them in a config file: `1048576`, `"512KiB"`, `"100MiB"`, `"2GiB"`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(u64);

const UNITS: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

impl ByteSize {
    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
        let (digits, unit) = raw.split_at(split);
        let expected = || {
            format!(
                "`{raw}` is not a size (expected a number of bytes, or with a unit: 512KiB, 100MiB, 2GiB)"
            )
        };
        let n: u64 = digits.parse().map_err(|_| expected())?;
        let scale = match unit.trim() {
            "" => 1,
            unit => {
                UNITS
                    .iter()
                    .find(|(name, _)| *name == unit)
                    .ok_or_else(expected)?
                    .1
            }
        };
        n.checked_mul(scale)
            .map(Self)
            .ok_or_else(|| format!("`{raw}` is too large"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == 0 {
            return write!(f, "0B");
        }
        let (name, scale) = UNITS
            .iter()
            .find(|(_, scale)| self.0.is_multiple_of(*scale))
            .copied()
            .unwrap_or(("B", 1));
        write!(f, "{}{name}", self.0 / scale)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size such as \"512KiB\", \"100MiB\" or \"2GiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        de.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_round_trips() {
        for (raw, bytes) in [
            ("0", 0),
            ("1500", 1500),
            ("1500B", 1500),
            ("512KiB", 512 << 10),
            ("100MiB", 100 << 20),
            ("2GiB", 2 << 30),
        ] {
            assert_eq!(ByteSize::parse(raw), Ok(ByteSize(bytes)), "{raw}");
        }
        assert_eq!(ByteSize::mib(100).to_string(), "100MiB");
        assert_eq!(ByteSize(1536).to_string(), "1536B");
        assert_eq!(ByteSize(2048).to_string(), "2KiB");
    }

    #[test]
    fn rejects_nonsense() {
        for raw in [
            "",
            "MiB",
            "5 lots",
            "-3",
            "1.5GiB",
            "10MB",
            "99999999999GiB",
        ] {
            assert!(ByteSize::parse(raw).is_err(), "{raw}");
        }
    }
}
