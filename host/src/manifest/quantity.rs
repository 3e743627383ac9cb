//! Quantities as a manifest writes them: a count, a size with a unit
//! (`"64KiB"`) or a duration with one (`"10s"`), each parsed to a `u64` in
//! its kind's unit (a count, bytes or milliseconds).

use serde::Deserialize;

/// The largest count a limit may be (concurrency, instances, headers,
/// outbound requests): far above any real need, far below what would
/// overflow a semaphore or a pool.
const MAX_COUNT: u64 = 1_000_000;

/// A limit as written: a number, or a string with a unit (`"64MiB"`, `"5s"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Quantity {
    Number(u64),
    Text(String),
}

/// What unit a limit is in. Values are carried as `u64`: milliseconds,
/// bytes or a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Milliseconds; written `"500ms"`, `"10s"`, `"2m"`.
    Duration,
    /// Bytes; written as a number or `"64KiB"`, `"16MiB"`, `"1GiB"` (or KB/MB/GB, powers of 1000).
    Size,
    /// A plain positive number.
    Count,
}

/// A byte count in the largest binary unit that divides it.
pub(crate) fn size(bytes: u64) -> String {
    for (unit, factor) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

impl Kind {
    /// A value as written, in this kind's unit; the reason when it is not one.
    pub(crate) fn parse(self, value: &Quantity) -> Result<u64, String> {
        let parsed = match (self, value) {
            (Kind::Duration, Quantity::Number(_)) => {
                return Err("give a unit, for example \"500ms\" or \"10s\"".into())
            }
            (_, Quantity::Number(n)) => Some(*n),
            (Kind::Count, Quantity::Text(_)) => None,
            (Kind::Duration, Quantity::Text(text)) => with_unit(
                text,
                &[("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)],
            ),
            (Kind::Size, Quantity::Text(text)) => with_unit(
                text,
                &[
                    ("B", 1),
                    ("KiB", 1 << 10),
                    ("MiB", 1 << 20),
                    ("GiB", 1 << 30),
                    ("KB", 1000),
                    ("MB", 1_000_000),
                    ("GB", 1_000_000_000),
                    ("", 1),
                ],
            ),
        };
        let what = match self {
            Kind::Duration => "a duration such as \"500ms\", \"10s\", \"2m\" or \"1h\"",
            Kind::Size => "a size such as 65536, \"64KiB\" or \"16MiB\"",
            Kind::Count => "a whole number",
        };
        match parsed {
            Some(0) => Err(format!("must be more than zero; expected {what}")),
            Some(n) if matches!(self, Kind::Count) && n > MAX_COUNT => {
                Err(format!("at most {MAX_COUNT}"))
            }
            Some(n) => Ok(n),
            None => Err(format!("expected {what}")),
        }
    }
}

/// `"<number><unit>"` with one of `units` (longest suffix wins).
fn with_unit(text: &str, units: &[(&str, u64)]) -> Option<u64> {
    let text = text.trim();
    units.iter().find_map(|(unit, factor)| {
        let number = text.strip_suffix(unit)?.trim();
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        number.parse::<u64>().ok()?.checked_mul(*factor)
    })
}
