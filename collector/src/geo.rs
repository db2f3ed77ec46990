//! Where an address is and what kind of network it belongs to: a MaxMind-format city
//! database (GeoIP2/GeoLite2 City, or the flat layout ip-location-db publishes), an
//! optional ASN database (GeoLite2-ASN layout), and networks from the configuration
//! (office ranges, VPN egress) that override both.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What kind of network an address is on: it changes how much a new place means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetKind {
    #[default]
    Unknown = 0,
    Residential = 1,
    Office = 2,
    Vpn = 3,
    Hosting = 4,
    Mobile = 5,
    Private = 6,
}

impl NetKind {
    pub fn from_code(c: u8) -> NetKind {
        match c {
            1 => NetKind::Residential,
            2 => NetKind::Office,
            3 => NetKind::Vpn,
            4 => NetKind::Hosting,
            5 => NetKind::Mobile,
            6 => NetKind::Private,
            _ => NetKind::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NetKind::Unknown => "unknown",
            NetKind::Residential => "residential",
            NetKind::Office => "office",
            NetKind::Vpn => "vpn",
            NetKind::Hosting => "hosting",
            NetKind::Mobile => "mobile",
            NetKind::Private => "private",
        }
    }

    /// Egress shared by many people whose real place is elsewhere (a VPN; hosting
    /// networks are where machine clients and attackers both live, so they do not
    /// count).
    pub fn is_relay(self) -> bool {
        matches!(self, NetKind::Vpn)
    }
}

/// A network from the configuration: `[[detect.networks]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomNetwork {
    pub cidr: String,
    pub kind: NetKind,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub latitude: Option<f64>,
    #[serde(default)]
    pub longitude: Option<f64>,
}

/// What is known of an address.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Place {
    /// Latitude and longitude, when the address is located.
    pub location: Option<(f32, f32)>,
    pub country: Option<[u8; 2]>,
    pub city: Option<String>,
    pub asn: Option<u32>,
    pub org: Option<String>,
    pub kind: NetKind,
}

impl Place {
    pub fn country_str(&self) -> Option<&str> {
        self.country
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok())
    }

    /// `Paris, FR (AS64500 Example Telecom, residential)`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.city {
            s.push_str(c);
            s.push_str(", ");
        }
        s.push_str(self.country_str().unwrap_or("??"));
        let mut net = Vec::new();
        if let Some(a) = self.asn {
            net.push(match &self.org {
                Some(o) => format!("AS{a} {o}"),
                None => format!("AS{a}"),
            });
        } else if let Some(o) = &self.org {
            net.push(o.clone());
        }
        if self.kind != NetKind::Unknown {
            net.push(self.kind.name().to_string());
        }
        if !net.is_empty() {
            s.push_str(&format!(" ({})", net.join(", ")));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("reading {0}: {1}")]
    Open(String, maxminddb::MaxMindDbError),
    #[error("network `{0}` in the configuration: {1}")]
    Network(String, String),
}

/// The GeoIP2 City layout and ip-location-db's flat one, read with the same struct.
#[derive(Deserialize, Default)]
struct CityRecord {
    #[serde(default)]
    country: Option<CountryRec>,
    #[serde(default)]
    city: Option<CityField>,
    #[serde(default)]
    location: Option<LocationRec>,
    #[serde(default)]
    country_code: Option<String>,
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

#[derive(Deserialize)]
struct CountryRec {
    #[serde(default)]
    iso_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CityField {
    Name(String),
    Names {
        #[serde(default)]
        names: std::collections::BTreeMap<String, String>,
    },
}

#[derive(Deserialize)]
struct LocationRec {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

#[derive(Deserialize)]
struct AsnRecord {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(default)]
    autonomous_system_organization: Option<String>,
}

const CACHE_SLOTS: usize = 4096;

/// Address lookups, with a small direct-mapped cache (an actor's address repeats).
pub struct Geo {
    city: Option<maxminddb::Reader<Vec<u8>>>,
    asn: Option<maxminddb::Reader<Vec<u8>>>,
    custom: Vec<(IpNet, CustomNetwork)>,
    cache: Vec<Option<(IpAddr, Place)>>,
    pub lookups: u64,
    pub misses: u64,
}

impl Geo {
    pub fn open(
        city: Option<&Path>,
        asn: Option<&Path>,
        networks: &[CustomNetwork],
    ) -> Result<Geo, GeoError> {
        let open = |p: &Path| {
            maxminddb::Reader::open_readfile(p)
                .map_err(|e| GeoError::Open(p.display().to_string(), e))
        };
        let mut custom = Vec::new();
        for n in networks {
            let net: IpNet = n.cidr.parse().map_err(|e: ipnet::AddrParseError| {
                GeoError::Network(n.cidr.clone(), e.to_string())
            })?;
            if let Some(c) = &n.country
                && c.len() != 2
            {
                return Err(GeoError::Network(
                    n.cidr.clone(),
                    format!("country `{c}` is not a two-letter code"),
                ));
            }
            custom.push((net, n.clone()));
        }
        // Most specific first.
        custom.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Ok(Geo {
            city: city.map(open).transpose()?,
            asn: asn.map(open).transpose()?,
            custom,
            cache: vec![None; CACHE_SLOTS],
            lookups: 0,
            misses: 0,
        })
    }

    /// No databases, no networks: every address is unknown (but private ones are told).
    pub fn none() -> Geo {
        Geo::open(None, None, &[]).expect("nothing to open")
    }

    pub fn has_city(&self) -> bool {
        self.city.is_some()
    }

    pub fn lookup(&mut self, ip: IpAddr) -> Place {
        self.lookups += 1;
        let slot = (crate::baseline::stable_hash(&[&octets(ip)]) as usize) % CACHE_SLOTS;
        if let Some((cached, place)) = &self.cache[slot]
            && *cached == ip
        {
            return place.clone();
        }
        self.misses += 1;
        let place = self.resolve(ip);
        self.cache[slot] = Some((ip, place.clone()));
        place
    }

    fn resolve(&self, ip: IpAddr) -> Place {
        let mut place = Place::default();
        if is_private(ip) {
            place.kind = NetKind::Private;
        }
        if let Some(r) = &self.city
            && let Ok(res) = r.lookup(ip)
            && let Ok(Some(rec)) = res.decode::<CityRecord>()
        {
            let (lat, lon) = match &rec.location {
                Some(l) => (l.latitude, l.longitude),
                None => (rec.latitude, rec.longitude),
            };
            if let (Some(lat), Some(lon)) = (lat, lon) {
                place.location = Some((lat as f32, lon as f32));
            }
            let cc = rec.country.and_then(|c| c.iso_code).or(rec.country_code);
            place.country = cc.and_then(|c| two_letters(&c));
            place.city = match rec.city {
                Some(CityField::Name(n)) if !n.is_empty() => Some(n),
                Some(CityField::Names { names }) => names.get("en").cloned(),
                _ => None,
            };
        }
        if let Some(r) = &self.asn
            && let Ok(res) = r.lookup(ip)
            && let Ok(Some(rec)) = res.decode::<AsnRecord>()
        {
            place.asn = rec.autonomous_system_number;
            if let Some(org) = rec.autonomous_system_organization {
                if place.kind == NetKind::Unknown {
                    place.kind = kind_of_org(&org);
                }
                place.org = Some(org);
            }
        }
        if let Some((_, n)) = self.custom.iter().find(|(net, _)| net.contains(&ip)) {
            place.kind = n.kind;
            if let Some(name) = &n.name {
                place.org = Some(name.clone());
            }
            if let Some(c) = n.country.as_deref().and_then(two_letters) {
                place.country = Some(c);
            }
            if let Some(c) = &n.city {
                place.city = Some(c.clone());
            }
            if let (Some(lat), Some(lon)) = (n.latitude, n.longitude) {
                place.location = Some((lat as f32, lon as f32));
            }
        }
        place
    }
}

fn octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

fn two_letters(s: &str) -> Option<[u8; 2]> {
    let b = s.as_bytes();
    (b.len() == 2).then(|| [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()])
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_private() || v.is_loopback() || v.is_link_local(),
        IpAddr::V6(v) => v.is_loopback() || (v.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// A network owner's kind from its name, for ASN databases that do not say.
fn kind_of_org(org: &str) -> NetKind {
    let o = org.to_ascii_lowercase();
    const HOSTING: [&str; 14] = [
        "hosting",
        "cloud",
        "amazon",
        "google",
        "microsoft",
        "digitalocean",
        "ovh",
        "hetzner",
        "linode",
        "akamai",
        "datacamp",
        "m247",
        "leaseweb",
        "vultr",
    ];
    const VPN: [&str; 4] = ["vpn", "proton", "mullvad", "nord"];
    const MOBILE: [&str; 6] = ["mobile", "wireless", "cellular", "mobility", "lte", "4g"];
    if VPN.iter().any(|k| o.contains(k)) {
        NetKind::Vpn
    } else if HOSTING.iter().any(|k| o.contains(k)) {
        NetKind::Hosting
    } else if MOBILE.iter().any(|k| o.contains(k)) {
        NetKind::Mobile
    } else {
        NetKind::Residential
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_networks_override_and_private_addresses_are_told() {
        let nets = vec![CustomNetwork {
            cidr: "203.0.113.0/28".into(),
            kind: NetKind::Vpn,
            name: Some("corp VPN".into()),
            country: Some("us".into()),
            city: None,
            latitude: Some(40.7),
            longitude: Some(-74.0),
        }];
        let mut g = Geo::open(None, None, &nets).unwrap();
        let p = g.lookup("203.0.113.5".parse().unwrap());
        assert_eq!(p.kind, NetKind::Vpn);
        assert_eq!(p.country_str(), Some("US"));
        assert_eq!(p.location, Some((40.7, -74.0)));
        assert_eq!(g.lookup("10.1.2.3".parse().unwrap()).kind, NetKind::Private);
        assert_eq!(
            g.lookup("203.0.113.99".parse().unwrap()).kind,
            NetKind::Unknown
        );
        // The cache answers the same.
        assert_eq!(g.lookup("203.0.113.5".parse().unwrap()), p);
    }

    #[test]
    fn bad_networks_are_refused_with_their_text() {
        let nets = vec![CustomNetwork {
            cidr: "203.0.113.0/99".into(),
            kind: NetKind::Office,
            name: None,
            country: None,
            city: None,
            latitude: None,
            longitude: None,
        }];
        let e = Geo::open(None, None, &nets).err().unwrap().to_string();
        assert!(e.contains("203.0.113.0/99"), "{e}");
    }

    #[test]
    fn reads_geolite2_and_ip_location_db_layouts() {
        #[derive(serde::Serialize)]
        struct Flat<'a> {
            country_code: &'a str,
            city: &'a str,
            latitude: f64,
            longitude: f64,
        }
        #[derive(serde::Serialize)]
        struct Asn<'a> {
            autonomous_system_number: u32,
            autonomous_system_organization: &'a str,
        }
        let dir = std::env::temp_dir().join(format!("tapline-geo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut flat = mmdb_writer::Writer::new("ip-location-db city");
        flat.insert(
            "81.2.69.0/24".parse::<ipnet::IpNet>().unwrap(),
            &Flat {
                country_code: "GB",
                city: "London",
                latitude: 51.5,
                longitude: -0.12,
            },
        )
        .unwrap();
        let mut nested = mmdb_writer::Writer::new("GeoLite2-City");
        nested
            .insert(
                "81.2.69.0/24".parse::<ipnet::IpNet>().unwrap(),
                &serde_json::json!({
                    "city": {"names": {"en": "London"}},
                    "country": {"iso_code": "GB"},
                    "location": {"latitude": 51.5, "longitude": -0.12}
                }),
            )
            .unwrap();
        let mut asn = mmdb_writer::Writer::new("GeoLite2-ASN");
        asn.insert(
            "81.2.69.0/24".parse::<ipnet::IpNet>().unwrap(),
            &Asn {
                autonomous_system_number: 64512,
                autonomous_system_organization: "Example Mobile Ltd",
            },
        )
        .unwrap();
        let (f, n, a) = (
            dir.join("flat.mmdb"),
            dir.join("nested.mmdb"),
            dir.join("asn.mmdb"),
        );
        std::fs::write(&f, flat.to_bytes().unwrap()).unwrap();
        std::fs::write(&n, nested.to_bytes().unwrap()).unwrap();
        std::fs::write(&a, asn.to_bytes().unwrap()).unwrap();
        for city in [&f, &n] {
            let mut g = Geo::open(Some(city), Some(&a), &[]).unwrap();
            let p = g.lookup("81.2.69.160".parse().unwrap());
            assert_eq!(p.country_str(), Some("GB"));
            assert_eq!(p.city.as_deref(), Some("London"));
            assert_eq!(p.location, Some((51.5, -0.12)));
            assert_eq!(p.asn, Some(64512));
            assert_eq!(p.kind, NetKind::Mobile);
            assert_eq!(g.lookup("8.8.8.8".parse().unwrap()).location, None);
        }
        assert!(Geo::open(Some(&dir.join("missing.mmdb")), None, &[]).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn org_names_tell_hosting_and_mobile() {
        assert_eq!(kind_of_org("DIGITALOCEAN-ASN"), NetKind::Hosting);
        assert_eq!(kind_of_org("T-Mobile USA"), NetKind::Mobile);
        assert_eq!(kind_of_org("Deutsche Telekom AG"), NetKind::Residential);
    }
}
