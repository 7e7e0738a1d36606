//! Port lists of the `port` and `sourcePort` conditions: `"53,443,1000-2000"`.
//!
//! Parsing follows V2Ray 4.34 (`infra/conf/common.go`), quirks included:
//! entries are split on `,` and trimmed, empty entries are skipped, a
//! single port must be a plain JSON integer (no leading zeros, at most
//! 65535), the two ends of a range are decimal numbers (leading zeros
//! allowed, no spaces around `-`), and a reversed range `2000-1000` is
//! accepted and matches nothing. A list with no entries matches nothing.
//! Not here: what the ports are matched against (see `router`).

/// Inclusive port ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortList {
    ranges: Vec<(u16, u16)>,
}

impl PortList {
    /// Parses a port list; on failure returns the offending entry.
    pub fn parse(text: &str) -> Result<PortList, String> {
        let mut ranges = Vec::new();
        for entry in text.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            if let Some((from, to)) = entry.split_once('-') {
                let from = parse_decimal(from).ok_or_else(|| entry.to_owned())?;
                let to = parse_decimal(to).ok_or_else(|| entry.to_owned())?;
                ranges.push((from, to));
            } else {
                let port = parse_json_integer(entry).ok_or_else(|| entry.to_owned())?;
                ranges.push((port, port));
            }
        }
        Ok(PortList { ranges })
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(from, to)| from <= port && port <= to)
    }
}

/// Go's `strconv.ParseUint(s, 10, 32)` then a 65535 bound.
fn parse_decimal(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().and_then(|n| u16::try_from(n).ok())
}

/// Go's `json.Unmarshal` into a `uint32` then a 65535 bound: digits only,
/// no leading zero unless the number is 0.
fn parse_json_integer(text: &str) -> Option<u16> {
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    parse_decimal(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        let list = PortList::parse("53, 443 ,1000-2000,,").unwrap();
        for (port, want) in [
            (53, true),
            (443, true),
            (1000, true),
            (1500, true),
            (2000, true),
            (999, false),
            (2001, false),
            (0, false),
        ] {
            assert_eq!(list.contains(port), want, "{port}");
        }
    }

    #[test]
    fn follows_v2ray_quirks() {
        assert_eq!(PortList::parse(""), Ok(PortList::default()));
        assert!(!PortList::parse("").unwrap().contains(0));
        assert!(PortList::parse("0").unwrap().contains(0));
        assert!(PortList::parse("0080-0090").unwrap().contains(85));
        assert!(!PortList::parse("2000-1000").unwrap().contains(1500));
        assert!(PortList::parse("65535").unwrap().contains(65535));
    }

    #[test]
    fn names_the_bad_entry() {
        for (text, bad) in [
            ("abc", "abc"),
            ("53,abc", "abc"),
            ("080", "080"),
            ("65536", "65536"),
            ("1-70000", "1-70000"),
            ("1000 - 2000", "1000 - 2000"),
            ("+5", "+5"),
            ("-5", "-5"),
            ("1-2-3", "1-2-3"),
        ] {
            assert_eq!(PortList::parse(text), Err(bad.to_owned()), "{text}");
        }
    }
}
