//! `resources` of a swarm phase: what the file says, checked and put in Swarm's units.

use serde::Deserialize;

/// `resources` of a swarm phase: reservations (what Swarm needs free on a node to place the
/// task) and limits (what the container may use).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs reserved (and the limit unless `limit_cpus` is set): `0.5`, `2`.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Memory reserved (and the limit unless `limit_memory` is set): `"256MiB"`, `"1G"`.
    #[serde(default)]
    pub memory: Option<String>,
    /// CPU limit above the reservation.
    #[serde(default)]
    pub limit_cpus: Option<f64>,
    /// Memory limit above the reservation.
    #[serde(default)]
    pub limit_memory: Option<String>,
}

/// [`Resources`] in Swarm's units (nano-CPUs, bytes), checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceSpec {
    /// Reserved nano-CPUs.
    pub reserve_nano_cpus: Option<i64>,
    /// Reserved bytes.
    pub reserve_memory: Option<i64>,
    /// Limit in nano-CPUs.
    pub limit_nano_cpus: Option<i64>,
    /// Limit in bytes.
    pub limit_memory: Option<i64>,
}

impl Resources {
    /// Checks the values and converts them.
    pub fn to_spec(&self) -> Result<ResourceSpec, String> {
        let cpus = |key: &str, v: Option<f64>| -> Result<Option<i64>, String> {
            match v {
                None => Ok(None),
                Some(c) if c.is_finite() && c > 0.0 && c <= 1024.0 => {
                    Ok(Some((c * 1e9).round() as i64))
                }
                Some(c) => Err(format!(
                    "`resources.{key} = {c}`: expected a number of CPUs above 0 (0.5, 2)"
                )),
            }
        };
        let memory = |key: &str, v: &Option<String>| -> Result<Option<i64>, String> {
            v.as_deref()
                .map(|m| parse_memory(m).map_err(|e| format!("`resources.{key}`: {e}")))
                .transpose()
        };
        let spec = ResourceSpec {
            reserve_nano_cpus: cpus("cpus", self.cpus)?,
            reserve_memory: memory("memory", &self.memory)?,
            limit_nano_cpus: cpus("limit_cpus", self.limit_cpus)?,
            limit_memory: memory("limit_memory", &self.limit_memory)?,
        };
        for (key, reserve, limit) in [
            ("cpus", spec.reserve_nano_cpus, spec.limit_nano_cpus),
            ("memory", spec.reserve_memory, spec.limit_memory),
        ] {
            if let (Some(r), Some(l)) = (reserve, limit)
                && l < r
            {
                return Err(format!(
                    "`resources.limit_{key}` is below `resources.{key}` (the reservation)"
                ));
            }
        }
        Ok(spec)
    }
}

/// Parses `"256MiB"`, `"1GiB"`, `"512MB"`, `"64m"` (a single letter is binary, as in
/// `docker run --memory`), `"1048576"` (bytes).
pub fn parse_memory(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (`256MiB`, `1GiB`, `512MB`)"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (B, KiB, MiB, GiB, KB, MB, GB, k, m, g)"
            ));
        }
    };
    let bytes = (value * factor).round();
    if !(1.0..9.0e18).contains(&bytes) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse() {
        for (text, bytes) in [
            ("256MiB", 256 << 20),
            ("1GiB", 1 << 30),
            ("64m", 64 << 20),
            ("512MB", 512_000_000),
            ("1048576", 1_048_576),
            ("1.5g", 3 << 29),
        ] {
            assert_eq!(parse_memory(text), Ok(bytes), "{text}");
        }
        for bad in ["", "MiB", "12 parsecs", "-1m", "0"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resources_check_their_values() {
        let r = Resources {
            cpus: Some(0.5),
            memory: Some("256MiB".into()),
            ..Resources::default()
        };
        assert_eq!(
            r.to_spec(),
            Ok(ResourceSpec {
                reserve_nano_cpus: Some(500_000_000),
                reserve_memory: Some(256 << 20),
                ..ResourceSpec::default()
            })
        );
        let low = Resources {
            memory: Some("1GiB".into()),
            limit_memory: Some("512MiB".into()),
            ..Resources::default()
        };
        assert!(low.to_spec().unwrap_err().contains("below"));
        let zero = Resources {
            cpus: Some(0.0),
            ..Resources::default()
        };
        assert!(zero.to_spec().unwrap_err().contains("resources.cpus"));
    }
}
