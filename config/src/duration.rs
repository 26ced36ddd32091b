//! Durations as people write them in a config file: `90`, `"90s"`, `"15m"`, `"8h"`, `"30d"`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub fn get(self) -> std::time::Duration {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
        let (digits, unit) = raw.split_at(split);
        let expected = || {
            format!("`{raw}` is not a duration (expected a number and a unit: 90s, 15m, 8h, 30d)")
        };
        let n: u64 = digits.parse().map_err(|_| expected())?;
        let scale = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(expected()),
        };
        n.checked_mul(scale)
            .map(Self::from_secs)
            .ok_or_else(|| format!("`{raw}` is too long"))
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.as_secs();
        match secs {
            0 => write!(f, "0s"),
            s if s % 86400 == 0 => write!(f, "{}d", s / 86400),
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as \"90s\", \"15m\", \"8h\" or \"30d\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
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
        for (raw, secs) in [
            ("90", 90),
            ("90s", 90),
            ("15m", 900),
            ("8h", 28800),
            ("30d", 2_592_000),
        ] {
            assert_eq!(Duration::parse(raw), Ok(Duration::from_secs(secs)), "{raw}");
        }
        assert_eq!(Duration::from_secs(900).to_string(), "15m");
        assert_eq!(Duration::from_secs(61).to_string(), "61s");
    }

    #[test]
    fn rejects_nonsense() {
        for raw in ["", "m", "5 weeks", "-3s", "1.5h", "99999999999999999999d"] {
            assert!(Duration::parse(raw).is_err(), "{raw}");
        }
    }
}
