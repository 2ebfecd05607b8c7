//! Which time zone a lead lives in, and how sure we are.
//!
//! Resolution order: the lead's explicit zone → its city (a small built-in table of business
//! cities, chiefly for countries spanning several zones) → its country → its phone number's
//! region → the configured default. The source is kept for the trace. When the zone is only a
//! guess from a country or phone region that spans several zones, the *spread* lists every
//! zone the lead might be in, so that SMS quiet hours can hold in all of them.

use chrono_tz::Tz;

use crate::contact::{CountryCode, TimeZone};
use crate::lead::{NewLead, ZoneSource};

/// A city's zone and, where it matters for rules, its ISO 3166-2 subdivision (`US-FL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CityZone {
    /// The city's zone.
    pub zone: TimeZone,
    /// The subdivision (state, province), e.g. `US-FL`.
    pub subdivision: Option<&'static str>,
}

/// The zones a lead might be in when its zone is a guess; empty when the zone is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZoneSpread {
    country: &'static [Tz],
    phone: &'static [Tz],
}

impl ZoneSpread {
    /// A spread over the given zones (used by tests and for unusual setups).
    pub fn of(zones: &'static [Tz]) -> Self {
        Self {
            country: zones,
            phone: &[],
        }
    }

    /// Every zone of the spread (a zone may appear twice when country and phone agree).
    pub fn zones(&self) -> impl Iterator<Item = TimeZone> + '_ {
        self.country
            .iter()
            .chain(self.phone.iter())
            .map(|tz| TimeZone::from_tz(*tz))
    }

    /// Whether the spread holds no zone (the lead's zone is known).
    pub fn is_empty(&self) -> bool {
        self.country.is_empty() && self.phone.is_empty()
    }

    /// How many distinct zones the spread holds.
    pub fn len(&self) -> usize {
        let mut n = self.country.len();
        n += self
            .phone
            .iter()
            .filter(|z| !self.country.contains(z))
            .count();
        n
    }
}

/// A lead's resolved zone with its source, subdivision and (for guesses) spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneResolution {
    /// The zone used to place slots.
    pub zone: TimeZone,
    /// Where it came from.
    pub source: ZoneSource,
    /// The subdivision when the city told us (`US-FL`).
    pub subdivision: Option<&'static str>,
    /// Other zones the lead may be in when `zone` is a guess from a multi-zone country.
    pub spread: ZoneSpread,
}

impl ZoneResolution {
    /// `America/Denver (city)`, `America/New_York (country; may be any of 7 zones)`.
    pub fn describe(&self) -> String {
        let n = self.spread.len();
        if n > 1 {
            format!(
                "{} ({}; may be any of {n} zones)",
                self.zone.name(),
                self.source.as_str()
            )
        } else {
            format!("{} ({})", self.zone.name(), self.source.as_str())
        }
    }
}

/// Resolves a lead's zone: explicit → city → country → phone region → `default`.
pub fn resolve_zone(profile: &NewLead, default: TimeZone) -> ZoneResolution {
    let country = profile.country.as_ref().map(CountryCode::as_str);
    let phone_region = profile.phone.as_ref().and_then(|p| p.region());
    let exact = |zone, source, subdivision| ZoneResolution {
        zone,
        source,
        subdivision,
        spread: ZoneSpread::default(),
    };
    if let Some(tz) = profile.time_zone {
        let subdivision = profile
            .city
            .as_deref()
            .and_then(|c| city_zone(country, c))
            .filter(|c| c.zone == tz)
            .and_then(|c| c.subdivision);
        return exact(tz, ZoneSource::Explicit, subdivision);
    }
    if let Some(city) = profile.city.as_deref().and_then(|c| city_zone(country, c)) {
        return exact(city.zone, ZoneSource::City, city.subdivision);
    }
    let phone_zones = phone_region.map_or(&[][..], country_zones);
    if let Some(cc) = profile.country.as_ref() {
        if let Some(tz) = TimeZone::for_country(cc) {
            let code = cc.as_str();
            let own = country_zones(code);
            // The phone's region adds zones only when it is another country.
            let phone = if phone_region == Some(code) {
                &[][..]
            } else {
                phone_zones
            };
            return ZoneResolution {
                zone: tz,
                source: ZoneSource::Country,
                subdivision: None,
                spread: spread_if_guess(own, phone),
            };
        }
    }
    if let Some(tz) = phone_region.and_then(primary_zone) {
        return ZoneResolution {
            zone: tz,
            source: ZoneSource::PhoneRegion,
            subdivision: None,
            spread: spread_if_guess(phone_zones, &[]),
        };
    }
    exact(default, ZoneSource::Default, None)
}

fn spread_if_guess(own: &'static [Tz], phone: &'static [Tz]) -> ZoneSpread {
    if own.len() <= 1 && phone.is_empty() {
        ZoneSpread::default()
    } else {
        ZoneSpread {
            country: own,
            phone,
        }
    }
}

fn primary_zone(code: &str) -> Option<TimeZone> {
    CountryCode::parse(code)
        .ok()
        .and_then(|c| TimeZone::for_country(&c))
}

/// The zones a country's people may live in, for the countries that span several; a
/// single-zone country gives its one zone, an unknown country none.
pub fn country_zones(code: &str) -> &'static [Tz] {
    use Tz::*;
    match code {
        "US" => &[
            America__New_York,
            America__Chicago,
            America__Denver,
            America__Phoenix,
            America__Los_Angeles,
            America__Anchorage,
            Pacific__Honolulu,
        ],
        "CA" => &[
            America__St_Johns,
            America__Halifax,
            America__Toronto,
            America__Winnipeg,
            America__Regina,
            America__Edmonton,
            America__Vancouver,
        ],
        "AU" => &[
            Australia__Sydney,
            Australia__Brisbane,
            Australia__Adelaide,
            Australia__Darwin,
            Australia__Perth,
        ],
        "BR" => &[
            America__Noronha,
            America__Sao_Paulo,
            America__Manaus,
            America__Rio_Branco,
        ],
        "MX" => &[
            America__Cancun,
            America__Mexico_City,
            America__Mazatlan,
            America__Tijuana,
        ],
        "ES" => &[Europe__Madrid, Atlantic__Canary],
        "PT" => &[Europe__Lisbon, Atlantic__Azores],
        "NZ" => &[Pacific__Auckland, Pacific__Chatham],
        "AR" => &[America__Argentina__Buenos_Aires],
        "GB" => &[Europe__London],
        "IE" => &[Europe__Dublin],
        "DE" => &[Europe__Berlin],
        "FR" => &[Europe__Paris],
        "NL" => &[Europe__Amsterdam],
        "BE" => &[Europe__Brussels],
        "IT" => &[Europe__Rome],
        "CH" => &[Europe__Zurich],
        "AT" => &[Europe__Vienna],
        "SE" => &[Europe__Stockholm],
        "NO" => &[Europe__Oslo],
        "DK" => &[Europe__Copenhagen],
        "FI" => &[Europe__Helsinki],
        "PL" => &[Europe__Warsaw],
        "IN" => &[Asia__Kolkata],
        "JP" => &[Asia__Tokyo],
        "SG" => &[Asia__Singapore],
        "CN" => &[Asia__Shanghai],
        "KR" => &[Asia__Seoul],
        "AE" => &[Asia__Dubai],
        "IL" => &[Asia__Jerusalem],
        "ZA" => &[Africa__Johannesburg],
        _ => &[],
    }
}

type CityRow = (&'static str, Tz, Option<&'static str>);

/// The built-in city table of one country: (name, zone, subdivision). Names are matched
/// case-insensitively (ASCII), with common alternative spellings listed as their own rows.
fn cities(country: &str) -> &'static [CityRow] {
    use Tz::*;
    match country {
        "US" => &[
            ("New York", America__New_York, Some("US-NY")),
            ("New York City", America__New_York, Some("US-NY")),
            ("NYC", America__New_York, Some("US-NY")),
            ("Brooklyn", America__New_York, Some("US-NY")),
            ("Boston", America__New_York, Some("US-MA")),
            ("Cambridge", America__New_York, Some("US-MA")),
            ("Philadelphia", America__New_York, Some("US-PA")),
            ("Pittsburgh", America__New_York, Some("US-PA")),
            ("Washington", America__New_York, Some("US-DC")),
            ("Washington DC", America__New_York, Some("US-DC")),
            ("Washington, DC", America__New_York, Some("US-DC")),
            ("Baltimore", America__New_York, Some("US-MD")),
            ("Atlanta", America__New_York, Some("US-GA")),
            ("Miami", America__New_York, Some("US-FL")),
            ("Orlando", America__New_York, Some("US-FL")),
            ("Tampa", America__New_York, Some("US-FL")),
            ("Jacksonville", America__New_York, Some("US-FL")),
            ("Charlotte", America__New_York, Some("US-NC")),
            ("Raleigh", America__New_York, Some("US-NC")),
            ("Columbus", America__New_York, Some("US-OH")),
            ("Cleveland", America__New_York, Some("US-OH")),
            ("Cincinnati", America__New_York, Some("US-OH")),
            ("Detroit", America__Detroit, Some("US-MI")),
            (
                "Indianapolis",
                America__Indiana__Indianapolis,
                Some("US-IN"),
            ),
            ("Louisville", America__Kentucky__Louisville, Some("US-KY")),
            ("Newark", America__New_York, Some("US-NJ")),
            ("Chicago", America__Chicago, Some("US-IL")),
            ("Houston", America__Chicago, Some("US-TX")),
            ("Dallas", America__Chicago, Some("US-TX")),
            ("Austin", America__Chicago, Some("US-TX")),
            ("San Antonio", America__Chicago, Some("US-TX")),
            ("Fort Worth", America__Chicago, Some("US-TX")),
            ("Nashville", America__Chicago, Some("US-TN")),
            ("Memphis", America__Chicago, Some("US-TN")),
            ("Minneapolis", America__Chicago, Some("US-MN")),
            ("Milwaukee", America__Chicago, Some("US-WI")),
            ("Kansas City", America__Chicago, Some("US-MO")),
            ("St. Louis", America__Chicago, Some("US-MO")),
            ("Saint Louis", America__Chicago, Some("US-MO")),
            ("New Orleans", America__Chicago, Some("US-LA")),
            ("Oklahoma City", America__Chicago, Some("US-OK")),
            ("Omaha", America__Chicago, Some("US-NE")),
            ("Denver", America__Denver, Some("US-CO")),
            ("Boulder", America__Denver, Some("US-CO")),
            ("Salt Lake City", America__Denver, Some("US-UT")),
            ("Albuquerque", America__Denver, Some("US-NM")),
            ("El Paso", America__Denver, Some("US-TX")),
            ("Boise", America__Boise, Some("US-ID")),
            ("Phoenix", America__Phoenix, Some("US-AZ")),
            ("Scottsdale", America__Phoenix, Some("US-AZ")),
            ("Tucson", America__Phoenix, Some("US-AZ")),
            ("Los Angeles", America__Los_Angeles, Some("US-CA")),
            ("San Francisco", America__Los_Angeles, Some("US-CA")),
            ("San Diego", America__Los_Angeles, Some("US-CA")),
            ("San Jose", America__Los_Angeles, Some("US-CA")),
            ("Palo Alto", America__Los_Angeles, Some("US-CA")),
            ("Mountain View", America__Los_Angeles, Some("US-CA")),
            ("Oakland", America__Los_Angeles, Some("US-CA")),
            ("Sacramento", America__Los_Angeles, Some("US-CA")),
            ("Seattle", America__Los_Angeles, Some("US-WA")),
            ("Bellevue", America__Los_Angeles, Some("US-WA")),
            ("Portland", America__Los_Angeles, Some("US-OR")),
            ("Las Vegas", America__Los_Angeles, Some("US-NV")),
            ("Anchorage", America__Anchorage, Some("US-AK")),
            ("Honolulu", Pacific__Honolulu, Some("US-HI")),
        ],
        "CA" => &[
            ("Toronto", America__Toronto, Some("CA-ON")),
            ("Ottawa", America__Toronto, Some("CA-ON")),
            ("Mississauga", America__Toronto, Some("CA-ON")),
            ("Waterloo", America__Toronto, Some("CA-ON")),
            ("Kitchener", America__Toronto, Some("CA-ON")),
            ("Hamilton", America__Toronto, Some("CA-ON")),
            ("Montreal", America__Toronto, Some("CA-QC")),
            ("Montréal", America__Toronto, Some("CA-QC")),
            ("Quebec City", America__Toronto, Some("CA-QC")),
            ("Québec", America__Toronto, Some("CA-QC")),
            ("Halifax", America__Halifax, Some("CA-NS")),
            ("St. John's", America__St_Johns, Some("CA-NL")),
            ("Winnipeg", America__Winnipeg, Some("CA-MB")),
            ("Regina", America__Regina, Some("CA-SK")),
            ("Saskatoon", America__Regina, Some("CA-SK")),
            ("Calgary", America__Edmonton, Some("CA-AB")),
            ("Edmonton", America__Edmonton, Some("CA-AB")),
            ("Vancouver", America__Vancouver, Some("CA-BC")),
            ("Victoria", America__Vancouver, Some("CA-BC")),
            ("Surrey", America__Vancouver, Some("CA-BC")),
        ],
        "AU" => &[
            ("Sydney", Australia__Sydney, Some("AU-NSW")),
            ("Newcastle", Australia__Sydney, Some("AU-NSW")),
            ("Canberra", Australia__Sydney, Some("AU-ACT")),
            ("Melbourne", Australia__Melbourne, Some("AU-VIC")),
            ("Brisbane", Australia__Brisbane, Some("AU-QLD")),
            ("Gold Coast", Australia__Brisbane, Some("AU-QLD")),
            ("Adelaide", Australia__Adelaide, Some("AU-SA")),
            ("Perth", Australia__Perth, Some("AU-WA")),
            ("Hobart", Australia__Hobart, Some("AU-TAS")),
            ("Darwin", Australia__Darwin, Some("AU-NT")),
        ],
        "BR" => &[
            ("São Paulo", America__Sao_Paulo, Some("BR-SP")),
            ("Sao Paulo", America__Sao_Paulo, Some("BR-SP")),
            ("Campinas", America__Sao_Paulo, Some("BR-SP")),
            ("Rio de Janeiro", America__Sao_Paulo, Some("BR-RJ")),
            ("Belo Horizonte", America__Sao_Paulo, Some("BR-MG")),
            ("Curitiba", America__Sao_Paulo, Some("BR-PR")),
            ("Porto Alegre", America__Sao_Paulo, Some("BR-RS")),
            ("Florianópolis", America__Sao_Paulo, Some("BR-SC")),
            ("Florianopolis", America__Sao_Paulo, Some("BR-SC")),
            ("Brasília", America__Sao_Paulo, Some("BR-DF")),
            ("Brasilia", America__Sao_Paulo, Some("BR-DF")),
            ("Salvador", America__Bahia, Some("BR-BA")),
            ("Recife", America__Recife, Some("BR-PE")),
            ("Fortaleza", America__Fortaleza, Some("BR-CE")),
            ("Belém", America__Belem, Some("BR-PA")),
            ("Belem", America__Belem, Some("BR-PA")),
            ("Manaus", America__Manaus, Some("BR-AM")),
        ],
        "MX" => &[
            ("Mexico City", America__Mexico_City, Some("MX-CMX")),
            ("Ciudad de México", America__Mexico_City, Some("MX-CMX")),
            ("Guadalajara", America__Mexico_City, Some("MX-JAL")),
            ("Monterrey", America__Monterrey, Some("MX-NLE")),
            ("Tijuana", America__Tijuana, Some("MX-BCN")),
            ("Cancún", America__Cancun, Some("MX-ROO")),
            ("Cancun", America__Cancun, Some("MX-ROO")),
        ],
        "ES" => &[
            ("Madrid", Europe__Madrid, Some("ES-MD")),
            ("Barcelona", Europe__Madrid, Some("ES-CT")),
            ("Valencia", Europe__Madrid, Some("ES-VC")),
            ("Seville", Europe__Madrid, Some("ES-AN")),
            ("Sevilla", Europe__Madrid, Some("ES-AN")),
            ("Málaga", Europe__Madrid, Some("ES-AN")),
            ("Malaga", Europe__Madrid, Some("ES-AN")),
            ("Bilbao", Europe__Madrid, Some("ES-PV")),
            ("Zaragoza", Europe__Madrid, Some("ES-AR")),
            ("Las Palmas", Atlantic__Canary, Some("ES-CN")),
            (
                "Las Palmas de Gran Canaria",
                Atlantic__Canary,
                Some("ES-CN"),
            ),
            ("Santa Cruz de Tenerife", Atlantic__Canary, Some("ES-CN")),
        ],
        "PT" => &[
            ("Lisbon", Europe__Lisbon, None),
            ("Lisboa", Europe__Lisbon, None),
            ("Porto", Europe__Lisbon, None),
            ("Funchal", Europe__Lisbon, None),
            ("Ponta Delgada", Atlantic__Azores, None),
        ],
        "DE" => &[
            ("Berlin", Europe__Berlin, None),
            ("Hamburg", Europe__Berlin, None),
            ("Munich", Europe__Berlin, None),
            ("München", Europe__Berlin, None),
            ("Cologne", Europe__Berlin, None),
            ("Köln", Europe__Berlin, None),
            ("Frankfurt", Europe__Berlin, None),
            ("Frankfurt am Main", Europe__Berlin, None),
            ("Stuttgart", Europe__Berlin, None),
            ("Düsseldorf", Europe__Berlin, None),
            ("Dusseldorf", Europe__Berlin, None),
            ("Leipzig", Europe__Berlin, None),
        ],
        "FR" => &[
            ("Paris", Europe__Paris, None),
            ("Lyon", Europe__Paris, None),
            ("Marseille", Europe__Paris, None),
            ("Toulouse", Europe__Paris, None),
            ("Bordeaux", Europe__Paris, None),
            ("Lille", Europe__Paris, None),
            ("Nantes", Europe__Paris, None),
            ("Nice", Europe__Paris, None),
        ],
        "GB" => &[
            ("London", Europe__London, None),
            ("Manchester", Europe__London, None),
            ("Birmingham", Europe__London, None),
            ("Leeds", Europe__London, None),
            ("Bristol", Europe__London, None),
            ("Edinburgh", Europe__London, None),
            ("Glasgow", Europe__London, None),
            ("Belfast", Europe__London, None),
            ("Cambridge", Europe__London, None),
        ],
        "NL" => &[
            ("Amsterdam", Europe__Amsterdam, None),
            ("Rotterdam", Europe__Amsterdam, None),
            ("Utrecht", Europe__Amsterdam, None),
            ("Eindhoven", Europe__Amsterdam, None),
            ("The Hague", Europe__Amsterdam, None),
            ("Den Haag", Europe__Amsterdam, None),
        ],
        "IN" => &[
            ("Mumbai", Asia__Kolkata, None),
            ("New Delhi", Asia__Kolkata, None),
            ("Delhi", Asia__Kolkata, None),
            ("Bengaluru", Asia__Kolkata, None),
            ("Bangalore", Asia__Kolkata, None),
            ("Chennai", Asia__Kolkata, None),
            ("Hyderabad", Asia__Kolkata, None),
            ("Pune", Asia__Kolkata, None),
            ("Kolkata", Asia__Kolkata, None),
            ("Gurugram", Asia__Kolkata, None),
            ("Noida", Asia__Kolkata, None),
        ],
        "JP" => &[
            ("Tokyo", Asia__Tokyo, None),
            ("Yokohama", Asia__Tokyo, None),
            ("Osaka", Asia__Tokyo, None),
            ("Kyoto", Asia__Tokyo, None),
            ("Fukuoka", Asia__Tokyo, None),
            ("Nagoya", Asia__Tokyo, None),
            ("Sapporo", Asia__Tokyo, None),
        ],
        "SG" => &[("Singapore", Asia__Singapore, None)],
        _ => &[],
    }
}

/// The countries of the built-in city table, searched when a lead has a city but no country.
const CITY_COUNTRIES: [&str; 13] = [
    "US", "CA", "AU", "BR", "MX", "ES", "PT", "DE", "FR", "GB", "NL", "IN", "JP",
];

/// The zone of a city from the built-in table. With a country, only that country's cities
/// are searched; without one, a city matches only when its name is unambiguous (so
/// `Cambridge` without a country, which is in the US and the UK, does not match).
pub fn city_zone(country: Option<&str>, city: &str) -> Option<CityZone> {
    let name = city.trim();
    if name.is_empty() {
        return None;
    }
    let find = |rows: &'static [CityRow]| {
        rows.iter()
            .find(|(n, _, _)| n.len() == name.len() && n.eq_ignore_ascii_case(name))
            .map(|(_, tz, sub)| CityZone {
                zone: TimeZone::from_tz(*tz),
                subdivision: *sub,
            })
    };
    match country {
        Some(code) => find(cities(code)),
        None => {
            let mut found = None;
            for code in CITY_COUNTRIES.iter().chain(["SG"].iter()) {
                if let Some(hit) = find(cities(code)) {
                    if found.is_some_and(|f: CityZone| f.zone != hit.zone) {
                        return None;
                    }
                    found = Some(hit);
                }
            }
            found
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::PhoneE164;

    fn lead(country: Option<&str>, city: Option<&str>, phone: Option<&str>) -> NewLead {
        NewLead {
            country: country.map(|c| CountryCode::parse(c).unwrap()),
            city: city.map(str::to_owned),
            phone: phone.map(|p| PhoneE164::parse(p, None).unwrap()),
            source: "test".into(),
            ..NewLead::default()
        }
    }

    fn default() -> TimeZone {
        TimeZone::parse("UTC").unwrap()
    }

    #[test]
    fn resolution_order_and_sources() {
        let cases = [
            // (country, city, phone, explicit, zone, source, spread)
            (
                Some("US"),
                Some("Salt Lake City"),
                None,
                None,
                "America/Denver",
                ZoneSource::City,
                0,
            ),
            (
                Some("US"),
                Some("salt lake city"),
                None,
                Some("America/Chicago"),
                "America/Chicago",
                ZoneSource::Explicit,
                0,
            ),
            (
                Some("US"),
                None,
                None,
                None,
                "America/New_York",
                ZoneSource::Country,
                7,
            ),
            (
                Some("US"),
                Some("Smallville"),
                Some("+14155550100"),
                None,
                "America/New_York",
                ZoneSource::Country,
                7,
            ),
            (
                Some("DE"),
                None,
                None,
                None,
                "Europe/Berlin",
                ZoneSource::Country,
                0,
            ),
            (
                Some("DE"),
                None,
                Some("+14155550100"),
                None,
                "Europe/Berlin",
                ZoneSource::Country,
                8,
            ),
            (
                None,
                None,
                Some("+12505294511"),
                None,
                "America/Toronto",
                ZoneSource::PhoneRegion,
                7,
            ),
            (None, None, None, None, "UTC", ZoneSource::Default, 0),
            (
                None,
                Some("Perth"),
                None,
                None,
                "Australia/Perth",
                ZoneSource::City,
                0,
            ),
            (
                Some("BR"),
                Some("São Paulo"),
                None,
                None,
                "America/Sao_Paulo",
                ZoneSource::City,
                0,
            ),
        ];
        for (country, city, phone, explicit, zone, source, spread) in cases {
            let mut l = lead(country, city, phone);
            l.time_zone = explicit.map(|z| TimeZone::parse(z).unwrap());
            let r = resolve_zone(&l, default());
            assert_eq!(
                (r.zone.name(), r.source, r.spread.len()),
                (zone, source, spread),
                "{country:?} {city:?} {phone:?} {explicit:?}"
            );
        }
    }

    #[test]
    fn cities_carry_their_state_and_ambiguous_names_need_a_country() {
        let miami = city_zone(Some("US"), "Miami").unwrap();
        assert_eq!(miami.subdivision, Some("US-FL"));
        assert!(city_zone(None, "Cambridge").is_none());
        assert_eq!(
            city_zone(Some("GB"), "cambridge").unwrap().zone.name(),
            "Europe/London"
        );
        assert_eq!(
            city_zone(Some("ES"), "Las Palmas").unwrap().zone.name(),
            "Atlantic/Canary"
        );
    }

    #[test]
    fn every_example_city_resolves() {
        let examples = include_str!("../../../examples/leads.csv");
        let mut reader = examples.lines();
        let header: Vec<&str> = reader.next().unwrap().split(',').collect();
        let country_col = header.iter().position(|h| *h == "country").unwrap();
        let city_col = header.iter().position(|h| *h == "city").unwrap();
        for line in reader {
            let cols: Vec<&str> = line.split(',').collect();
            let (country, city) = (cols[country_col], cols[city_col]);
            if CountryCode::parse(country).is_err() || city.is_empty() {
                continue;
            }
            assert!(
                city_zone(Some(country), city).is_some(),
                "{country} {city} is not in the city table"
            );
        }
    }
}
