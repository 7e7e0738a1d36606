//! V2Ray's geo data files (`geosite.dat`, `geoip.dat`, `ext:` files): where
//! they are found and a small reader for the protobuf messages inside.
//!
//! The messages, from `app/router/config.proto` of V2Ray 4.34 (only the
//! fields read here; unknown fields are skipped):
//!
//! | message | field | number | wire type |
//! |---|---|---|---|
//! | `GeoSiteList` | `repeated GeoSite entry` | 1 | length-delimited |
//! | `GeoSite` | `string country_code` | 1 | length-delimited |
//! | `GeoSite` | `repeated Domain domain` | 2 | length-delimited |
//! | `Domain` | `Type type` (0 plain, 1 regex, 2 domain, 3 full) | 1 | varint |
//! | `Domain` | `string value` | 2 | length-delimited |
//! | `Domain` | `repeated Attribute attribute` | 3 | length-delimited |
//! | `Attribute` | `string key` | 1 | length-delimited |
//! | `GeoIPList` | `repeated GeoIP entry` | 1 | length-delimited |
//! | `GeoIP` | `string country_code` | 1 | length-delimited |
//! | `GeoIP` | `repeated CIDR cidr` | 2 | length-delimited |
//! | `CIDR` | `bytes ip` (4 or 16 bytes) | 1 | length-delimited |
//! | `CIDR` | `uint32 prefix` | 2 | varint |
//!
//! A protobuf field is a varint key `number << 3 | wire_type` followed by
//! a varint (type 0), 8 bytes (type 1), a varint length and that many
//! bytes (type 2) or 4 bytes (type 5).
//!
//! Lists are found by case-insensitive name, the first match wins, as in
//! V2Ray. Only the requested list is decoded; the rest of a (possibly
//! multi-megabyte) file is skipped over. Not here: turning domains into
//! matchers (`domain`) or CIDRs into sets (`ip`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::ip::Cidr;

/// Where asset files are looked for, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssetLocator {
    dirs: Vec<PathBuf>,
}

impl AssetLocator {
    /// V2Ray's places: the directory in env `v2ray.location.asset` or
    /// `V2RAY_LOCATION_ASSET` when set, the running executable's directory,
    /// `/usr/local/share/v2ray/`, `/usr/share/v2ray/`.
    pub fn from_env() -> AssetLocator {
        let mut dirs = Vec::new();
        for name in ["v2ray.location.asset", "V2RAY_LOCATION_ASSET"] {
            if let Some(dir) = std::env::var_os(name) {
                dirs.push(PathBuf::from(dir));
                break;
            }
        }
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
        {
            dirs.push(dir);
        }
        dirs.push(PathBuf::from("/usr/local/share/v2ray/"));
        dirs.push(PathBuf::from("/usr/share/v2ray/"));
        AssetLocator { dirs }
    }

    /// Exactly these directories, in this order (tests, embedding).
    pub fn with_dirs(dirs: Vec<PathBuf>) -> AssetLocator {
        AssetLocator { dirs }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The first existing `dir/file`, or every path that was tried.
    pub fn find(&self, file: &str) -> Result<PathBuf, Vec<PathBuf>> {
        let candidates: Vec<PathBuf> = self.dirs.iter().map(|dir| dir.join(file)).collect();
        match candidates.iter().find(|path| path.is_file()) {
            Some(path) => Ok(path.clone()),
            None => Err(candidates),
        }
    }
}

impl Default for AssetLocator {
    fn default() -> AssetLocator {
        AssetLocator::from_env()
    }
}

/// Why a file could not be used; the router adds the rule index.
#[derive(Debug, PartialEq, Eq)]
pub enum AssetError {
    NotFound(Vec<PathBuf>),
    Unreadable(PathBuf, String),
    Malformed(PathBuf, String),
    ListNotFound(PathBuf),
}

/// Files read while one router is built, so that many rules naming the
/// same file read it once.
#[derive(Default)]
pub struct AssetCache {
    files: HashMap<String, (PathBuf, Vec<u8>)>,
}

impl AssetCache {
    fn load(
        &mut self,
        locator: &AssetLocator,
        file: &str,
    ) -> Result<&(PathBuf, Vec<u8>), AssetError> {
        if !self.files.contains_key(file) {
            let path = locator.find(file).map_err(AssetError::NotFound)?;
            let data = std::fs::read(&path)
                .map_err(|error| AssetError::Unreadable(path.clone(), error.to_string()))?;
            self.files.insert(file.to_owned(), (path, data));
        }
        self.files
            .get(file)
            .ok_or_else(|| AssetError::NotFound(Vec::new()))
    }

    /// The domains of list `list` in site file `file`.
    pub fn site(
        &mut self,
        locator: &AssetLocator,
        file: &str,
        list: &str,
    ) -> Result<Vec<GeoDomain>, AssetError> {
        let (path, data) = self.load(locator, file)?;
        let malformed = |reason: &str| AssetError::Malformed(path.clone(), reason.to_owned());
        let entry = find_entry(data, list).map_err(malformed)?;
        let entry = entry.ok_or_else(|| AssetError::ListNotFound(path.clone()))?;
        decode_site(entry).map_err(malformed)
    }

    /// The CIDRs of entry `code` in IP file `file`.
    pub fn ip(
        &mut self,
        locator: &AssetLocator,
        file: &str,
        code: &str,
    ) -> Result<Vec<Cidr>, AssetError> {
        let (path, data) = self.load(locator, file)?;
        let malformed = |reason: &str| AssetError::Malformed(path.clone(), reason.to_owned());
        let entry = find_entry(data, code).map_err(malformed)?;
        let entry = entry.ok_or_else(|| AssetError::ListNotFound(path.clone()))?;
        decode_ip(entry).map_err(malformed)
    }
}

/// The kind of a geosite domain (`Domain.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainKind {
    Plain,
    Regex,
    Domain,
    Full,
}

/// One domain of a geosite list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeoDomain {
    pub kind: DomainKind,
    pub value: String,
    /// Attribute keys (`@ads`, `@cn`), as written in the file.
    pub attributes: Vec<String>,
}

/// A protobuf field value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Reads the fields of one protobuf message.
struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.data.split_first().ok_or("truncated varint")?;
            self.data = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], &'static str> {
        let len = usize::try_from(len).map_err(|_| "length overflows")?;
        if len > self.data.len() {
            return Err("truncated field");
        }
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        Ok(head)
    }

    /// The next (field number, value), `None` at the end.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, &'static str> {
        if self.data.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => return Err("unsupported wire type"),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn fields(data: &[u8]) -> Fields<'_> {
    Fields { data }
}

/// The first `entry` (field 1 of a `GeoSiteList` or `GeoIPList`) whose
/// `country_code` equals `name` ignoring ASCII case.
fn find_entry<'a>(data: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, &'static str> {
    let mut list = fields(data);
    while let Some((number, value)) = list.next_field()? {
        let (1, Value::Bytes(entry)) = (number, value) else {
            continue;
        };
        let mut entry_fields = fields(entry);
        while let Some((number, value)) = entry_fields.next_field()? {
            if let (1, Value::Bytes(code)) = (number, value) {
                if code.eq_ignore_ascii_case(name.as_bytes()) {
                    return Ok(Some(entry));
                }
                break;
            }
        }
    }
    Ok(None)
}

fn utf8(bytes: &[u8]) -> Result<String, &'static str> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| "string is not utf-8")
}

fn decode_site(entry: &[u8]) -> Result<Vec<GeoDomain>, &'static str> {
    let mut domains = Vec::new();
    let mut site = fields(entry);
    while let Some((number, value)) = site.next_field()? {
        let (2, Value::Bytes(domain)) = (number, value) else {
            continue;
        };
        let mut kind = DomainKind::Plain;
        let mut text = String::new();
        let mut attributes = Vec::new();
        let mut domain_fields = fields(domain);
        while let Some((number, value)) = domain_fields.next_field()? {
            match (number, value) {
                (1, Value::Varint(code)) => {
                    kind = match code {
                        0 => DomainKind::Plain,
                        1 => DomainKind::Regex,
                        2 => DomainKind::Domain,
                        3 => DomainKind::Full,
                        _ => return Err("unsupported domain type"),
                    }
                }
                (2, Value::Bytes(bytes)) => text = utf8(bytes)?,
                (3, Value::Bytes(attribute)) => {
                    let mut attribute_fields = fields(attribute);
                    while let Some((number, value)) = attribute_fields.next_field()? {
                        if let (1, Value::Bytes(key)) = (number, value) {
                            attributes.push(utf8(key)?);
                        }
                    }
                }
                _ => {}
            }
        }
        domains.push(GeoDomain {
            kind,
            value: text,
            attributes,
        });
    }
    Ok(domains)
}

fn decode_ip(entry: &[u8]) -> Result<Vec<Cidr>, &'static str> {
    let mut cidrs = Vec::new();
    let mut geoip = fields(entry);
    while let Some((number, value)) = geoip.next_field()? {
        let (2, Value::Bytes(cidr)) = (number, value) else {
            continue;
        };
        let mut ip: &[u8] = &[];
        let mut prefix = 0u64;
        let mut cidr_fields = fields(cidr);
        while let Some((number, value)) = cidr_fields.next_field()? {
            match (number, value) {
                (1, Value::Bytes(bytes)) => ip = bytes,
                (2, Value::Varint(bits)) => prefix = bits,
                _ => {}
            }
        }
        let prefix = u32::try_from(prefix).map_err(|_| "cidr prefix too large")?;
        cidrs.push(Cidr::from_bytes(ip, prefix).ok_or("cidr with a bad ip length or prefix")?);
    }
    Ok(cidrs)
}

/// Writes V2Ray geo data files: for tests and tools that need small
/// `geosite.dat` / `geoip.dat` files without shipping binaries.
pub mod encode {
    use super::{DomainKind, GeoDomain};
    use crate::ip::Cidr;

    fn varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn bytes_field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
        varint(out, number << 3 | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    fn varint_field(out: &mut Vec<u8>, number: u64, value: u64) {
        varint(out, number << 3);
        varint(out, value);
    }

    /// A `GeoSiteList` with one `GeoSite` per `(code, domains)`.
    pub fn site_list(sites: &[(&str, Vec<GeoDomain>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (code, domains) in sites {
            let mut site = Vec::new();
            bytes_field(&mut site, 1, code.as_bytes());
            for domain in domains {
                let mut message = Vec::new();
                let kind = match domain.kind {
                    DomainKind::Plain => 0,
                    DomainKind::Regex => 1,
                    DomainKind::Domain => 2,
                    DomainKind::Full => 3,
                };
                if kind != 0 {
                    varint_field(&mut message, 1, kind);
                }
                bytes_field(&mut message, 2, domain.value.as_bytes());
                for key in &domain.attributes {
                    let mut attribute = Vec::new();
                    bytes_field(&mut attribute, 1, key.as_bytes());
                    varint_field(&mut attribute, 2, 1);
                    bytes_field(&mut message, 3, &attribute);
                }
                bytes_field(&mut site, 2, &message);
            }
            bytes_field(&mut out, 1, &site);
        }
        out
    }

    /// A `GeoIPList` with one `GeoIP` per `(code, cidrs)`.
    pub fn ip_list(entries: &[(&str, Vec<Cidr>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (code, cidrs) in entries {
            let mut geoip = Vec::new();
            bytes_field(&mut geoip, 1, code.as_bytes());
            for cidr in cidrs {
                let mut message = Vec::new();
                let prefix = match cidr {
                    Cidr::V4(ip, bits) => {
                        bytes_field(&mut message, 1, &ip.octets());
                        *bits
                    }
                    Cidr::V6(ip, bits) => {
                        bytes_field(&mut message, 1, &ip.octets());
                        *bits
                    }
                };
                varint_field(&mut message, 2, u64::from(prefix));
                bytes_field(&mut geoip, 2, &message);
            }
            bytes_field(&mut out, 1, &geoip);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(kind: DomainKind, value: &str, attributes: &[&str]) -> GeoDomain {
        GeoDomain {
            kind,
            value: value.to_owned(),
            attributes: attributes.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn round_trips_sites_and_finds_lists_ignoring_case() {
        let cn = vec![
            domain(DomainKind::Domain, "example.cn", &["cn"]),
            domain(DomainKind::Full, "www.example.org", &[]),
            domain(DomainKind::Regex, "^ads\\.", &["ads", "cn"]),
            domain(DomainKind::Plain, "baidu", &[]),
        ];
        let data = encode::site_list(&[("US", vec![]), ("CN", cn.clone())]);
        assert_eq!(
            decode_site(find_entry(&data, "cn").unwrap().unwrap()).unwrap(),
            cn
        );
        assert!(find_entry(&data, "us").unwrap().is_some());
        assert!(find_entry(&data, "jp").unwrap().is_none());
    }

    #[test]
    fn round_trips_ips() {
        let cidrs = vec![
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("2001:db8::/32").unwrap(),
        ];
        let data = encode::ip_list(&[("PRIVATE", cidrs.clone())]);
        assert_eq!(
            decode_ip(find_entry(&data, "private").unwrap().unwrap()).unwrap(),
            cidrs
        );
    }

    #[test]
    fn golden_bytes_of_a_tiny_site_list() {
        let data = encode::site_list(&[("a", vec![domain(DomainKind::Full, "b", &[])])]);
        // entry{code "a", domain{type 3, value "b"}}
        assert_eq!(
            data,
            [0x0a, 0x0a, 0x0a, 0x01, b'a', 0x12, 0x05, 0x08, 0x03, 0x12, 0x01, b'b']
        );
    }

    #[test]
    fn skips_unknown_fields() {
        // GeoIP entry with an unknown varint field 3 (reverse_match in
        // later versions) and a fixed32 field 7 before the CIDR.
        let mut entry = vec![0x0a, 0x02, b'x', b'y', 0x18, 0x01, 0x3d, 1, 2, 3, 4];
        entry.extend_from_slice(&[0x12, 0x08, 0x0a, 0x04, 127, 0, 0, 1, 0x10, 32]);
        let mut data = vec![0x0a, entry.len() as u8];
        data.extend_from_slice(&entry);
        let cidrs = decode_ip(find_entry(&data, "XY").unwrap().unwrap()).unwrap();
        assert_eq!(cidrs, vec![Cidr::parse("127.0.0.1").unwrap()]);
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        let data = encode::site_list(&[("cn", vec![domain(DomainKind::Full, "b", &["x"])])]);
        for len in 0..data.len() {
            let truncated = &data[..len];
            if let Ok(Some(entry)) = find_entry(truncated, "cn") {
                let _ = decode_site(entry);
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let garbage: Vec<u8> = (0..(seed % 64) as usize)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            if let Ok(Some(entry)) = find_entry(&garbage, "") {
                let _ = decode_site(entry);
                let _ = decode_ip(entry);
            }
        }
        assert_eq!(find_entry(&[0x0b], "x"), Err("unsupported wire type"));
        assert_eq!(find_entry(&[0x0a, 0x05, 0x00], "x"), Err("truncated field"));
    }

    #[test]
    fn locator_reports_every_place_it_looked() {
        let locator = AssetLocator::with_dirs(vec![
            PathBuf::from("/nonexistent-a"),
            PathBuf::from("/nonexistent-b"),
        ]);
        assert_eq!(
            locator.find("geosite.dat"),
            Err(vec![
                PathBuf::from("/nonexistent-a/geosite.dat"),
                PathBuf::from("/nonexistent-b/geosite.dat")
            ])
        );
    }
}
