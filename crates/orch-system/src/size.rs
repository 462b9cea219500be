//! Byte sizes as written in pipeline files: `4GiB`, `512MiB`, `10GB`, `1.5GiB`, or a number
//! of bytes.

use serde::{Deserialize, Deserializer};

use crate::errors::SizeError;

/// A number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

const UNITS: [(&str, u64); 13] = [
    ("b", 1),
    ("kb", 1000),
    ("mb", 1000 * 1000),
    ("gb", 1000 * 1000 * 1000),
    ("tb", 1000 * 1000 * 1000 * 1000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("k", 1 << 10),
    ("m", 1 << 20),
    ("g", 1 << 30),
    ("t", 1 << 40),
];

impl ByteSize {
    /// Parses `4GiB`, `512 MiB`, `10GB`, `1.5GiB`, `2G` (binary, as `docker --memory` reads
    /// it) or a plain number of bytes. Units are case-insensitive; `KB`, `MB`... are decimal,
    /// `KiB`, `MiB`... and the one-letter forms binary.
    ///
    /// ```
    /// use orch_system::size::ByteSize;
    /// assert_eq!(ByteSize::parse("4GiB").unwrap(), ByteSize(4 << 30));
    /// assert_eq!(ByteSize::parse("1.5 kB").unwrap(), ByteSize(1500));
    /// assert!(ByteSize::parse("lots").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, SizeError> {
        let err = || SizeError {
            text: text.to_owned(),
        };
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return Err(err());
        }
        let unit = unit.trim().to_ascii_lowercase();
        let factor = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, f)| *f)
                .ok_or_else(err)?
        };
        let bytes = match number.split_once('.') {
            None => number
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(factor)),
            Some((whole, frac)) => {
                let value: f64 = format!("{whole}.{frac}").parse().map_err(|_| err())?;
                let bytes = (value * factor as f64).round();
                (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
            }
        };
        bytes.map(Self).ok_or_else(err)
    }
}

impl std::fmt::Display for ByteSize {
    /// Binary units with one decimal: `4.0 GiB`, `512.0 MiB`, `900 B`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        let units = [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in units {
            if b >= size {
                return write!(f, "{:.1} {name}", b as f64 / size as f64);
            }
        }
        write!(f, "{b} B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Bytes(n)) => Ok(Self(n)),
            Ok(Raw::Text(t)) => Self::parse(&t).map_err(serde::de::Error::custom),
            Err(_) => Err(serde::de::Error::custom(
                "expected a size: a string like \"4GiB\" or \"512MiB\", or a number of bytes",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let ok = |t: &str, want: u64| assert_eq!(ByteSize::parse(t), Ok(ByteSize(want)), "{t}");
        ok("0", 0);
        ok("1024", 1024);
        ok("4GiB", 4 << 30);
        ok("4gib", 4 << 30);
        ok("10GB", 10_000_000_000);
        ok("512 MiB", 512 << 20);
        ok("1.5GiB", 3 << 29);
        ok("2G", 2 << 30);
        ok("100b", 100);
        for bad in [
            "",
            "lots",
            "GiB",
            "4 GiBs",
            "-1GiB",
            "1..5GiB",
            ".5G",
            "5.G",
            "99999999999TiB",
        ] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ByteSize(4 << 30).to_string(), "4.0 GiB");
        assert_eq!(ByteSize(1536).to_string(), "1.5 KiB");
        assert_eq!(ByteSize(900).to_string(), "900 B");
    }
}
