#!/usr/bin/env python3
# Deterministic generator for examples/leads.csv (synthetic B2B leads).
#
# Standard library only; fixed seed 42. Re-running produces a byte-identical file.
#
# All e-mail domains and websites are under the reserved `.example` TLD, so no
# real person or company can ever be contacted. Phone numbers are valid for their
# country according to libphonenumber's rules and, where a country has a range
# reserved for fiction, come from it: UK Ofcom drama ranges (020 7946 0xxx,
# 0161/0113/0117/0131 496 0xxx), AU 0491 570 xxx (the block holding ACMA's
# fictional mobile numbers). Ofcom's 07700 900xxx mobile drama range is NOT
# used: libphonenumber rejects it as invalid.
#
# Deliberately INVALID rows (1-based file line numbers, header = line 1):
#     line  37  email without an '@' sign
#     line  79  email with two '@' signs
#     line 116  no contact point at all (email and phone both empty)
#     line 157  timezone is not an IANA zone ('Mars/Olympus_Mons')
#     line 172  garbage phone number ('12ab')
#     line 223  country is not a 2-letter ISO code ('Germany123')
#
# Duplicate leads (VALID: the later row re-uses an earlier e-mail with different
# letter case and an updated title; the engine upserts by normalised e-mail):
#     line  21 -> line 125
#     line  42 -> line 147
#     line  49 -> line 193
#
# The script recomputes these positions on every run, prints them, and fails
# if they no longer match the lists above (see EXPECTED_* below).
#
# Usage: python3 examples/generate_leads.py   (writes examples/leads.csv)
"""Deterministic generator for examples/leads.csv (see the comment above)."""

import csv
import os
import random
import unicodedata

SEED = 42
TOTAL_ROWS = 230
OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "leads.csv")

EXPECTED_INVALID_LINES = [37, 79, 116, 157, 172, 223]
EXPECTED_DUPLICATE_LINES = [(21, 125), (42, 147), (49, 193)]

HEADER = [
    "email", "first_name", "last_name", "company", "title", "industry",
    "country", "city", "timezone", "phone", "linkedin_url", "website",
    "custom_message",
]

INDUSTRIES = [
    "SaaS", "Fintech", "Healthcare", "Manufacturing", "Logistics",
    "E-commerce", "Cybersecurity", "Marketing Agency",
]

# Number of valid, unique leads per country (sums to 221; plus 3 duplicate
# rows and 6 invalid rows = 230 data rows).
COUNTRY_COUNTS = {
    "US": 50, "GB": 24, "DE": 21, "FR": 17, "NL": 13, "ES": 14,
    "CA": 16, "AU": 16, "IN": 17, "JP": 12, "BR": 13, "SG": 8,
}

# city -> (IANA zone, phone area/prefix info used by the phone generator)
CITIES = {
    "US": [
        ("New York", "America/New_York", ["212", "646", "917"]),
        ("Boston", "America/New_York", ["617", "857"]),
        ("Atlanta", "America/New_York", ["404", "678"]),
        ("Miami", "America/New_York", ["305", "786"]),
        ("Chicago", "America/Chicago", ["312", "773"]),
        ("Austin", "America/Chicago", ["512", "737"]),
        ("Dallas", "America/Chicago", ["214", "469"]),
        ("Denver", "America/Denver", ["303", "720"]),
        ("Salt Lake City", "America/Denver", ["801", "385"]),
        ("San Francisco", "America/Los_Angeles", ["415", "628"]),
        ("Los Angeles", "America/Los_Angeles", ["213", "310", "323"]),
        ("Seattle", "America/Los_Angeles", ["206"]),
    ],
    "CA": [
        ("Toronto", "America/Toronto", ["416", "647"]),
        ("Ottawa", "America/Toronto", ["613", "343"]),
        ("Montreal", "America/Toronto", ["514", "438"]),
        ("Vancouver", "America/Vancouver", ["604", "778"]),
        ("Victoria", "America/Vancouver", ["250"]),
    ],
    # GB: Ofcom numbers reserved for TV/radio drama (geographic ranges).
    "GB": [
        ("London", "Europe/London", ("20", "7946 0")),
        ("Manchester", "Europe/London", ("161", "496 0")),
        ("Leeds", "Europe/London", ("113", "496 0")),
        ("Bristol", "Europe/London", ("117", "496 0")),
        ("Edinburgh", "Europe/London", ("131", "496 0")),
    ],
    "DE": [(c, "Europe/Berlin", None) for c in
           ("Berlin", "Munich", "Hamburg", "Frankfurt", "Cologne")],
    "FR": [(c, "Europe/Paris", None) for c in
           ("Paris", "Lyon", "Toulouse", "Bordeaux", "Lille")],
    "NL": [(c, "Europe/Amsterdam", None) for c in
           ("Amsterdam", "Rotterdam", "Utrecht", "Eindhoven")],
    "ES": [(c, "Europe/Madrid", None) for c in
           ("Madrid", "Barcelona", "Valencia", "Seville", "Bilbao")],
    "AU": [
        ("Sydney", "Australia/Sydney", None),
        ("Canberra", "Australia/Sydney", None),
        ("Melbourne", "Australia/Melbourne", None),
        ("Brisbane", "Australia/Brisbane", None),
        ("Perth", "Australia/Perth", None),
    ],
    "IN": [(c, "Asia/Kolkata", None) for c in
           ("Bengaluru", "Mumbai", "Pune", "Hyderabad", "New Delhi", "Chennai")],
    "JP": [(c, "Asia/Tokyo", None) for c in
           ("Tokyo", "Osaka", "Yokohama", "Fukuoka", "Kyoto")],
    "BR": [
        ("São Paulo", "America/Sao_Paulo", "11"),
        ("Rio de Janeiro", "America/Sao_Paulo", "21"),
        ("Belo Horizonte", "America/Sao_Paulo", "31"),
        ("Curitiba", "America/Sao_Paulo", "41"),
        ("Porto Alegre", "America/Sao_Paulo", "51"),
    ],
    "SG": [("Singapore", "Asia/Singapore", None)],
}

NAMES = {
    "US": (["James", "Emily", "Michael", "Sarah", "David", "Jessica", "Chris",
            "Ashley", "Brian", "Megan", "Kevin", "Lauren", "Jason", "Rachel",
            "Tyler", "Olivia", "Marcus", "Hannah", "Daniel", "Priya", "Carlos",
            "Nicole", "Ryan", "Amanda"],
           ["Smith", "Johnson", "Williams", "Brown", "Miller", "Davis", "Garcia",
            "Wilson", "Anderson", "Taylor", "Thomas", "Moore", "Martin",
            "Jackson", "Thompson", "White", "Harris", "Clark", "Lewis", "Walker",
            "Hall", "Young", "Patel", "Nguyen", "Rivera", "Brooks"]),
    "CA": (["Liam", "Emma", "Noah", "Chloe", "Ethan", "Sophie", "Mathieu",
            "Isabelle", "Owen", "Maya", "Félix", "Avery", "Jordan", "Camille"],
           ["Tremblay", "Roy", "Gagnon", "MacDonald", "Campbell", "Bouchard",
            "Leblanc", "Fraser", "Morin", "Wong", "Singh", "Stewart", "Côté"]),
    "GB": (["Oliver", "Amelia", "Harry", "Isla", "George", "Charlotte",
            "Jack", "Sophie", "Thomas", "Grace", "William", "Emily", "Alfie",
            "Freya", "Callum", "Eleanor", "Rhys", "Imogen"],
           ["Jones", "Evans", "Hughes", "Wright", "Robinson", "Wood",
            "Thompson", "Clarke", "Edwards", "Turner", "Hill", "Cooper",
            "Ward", "Morgan", "Bennett", "Fletcher", "Kaur", "Shah"]),
    "DE": (["Lukas", "Anna", "Jonas", "Lea", "Felix", "Laura", "Maximilian",
            "Julia", "Tobias", "Sophie", "Jürgen", "Katrin", "Florian",
            "Miriam", "Stefan", "Hannah"],
           ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer",
            "Wagner", "Becker", "Schulz", "Hoffmann", "Koch", "Richter",
            "Wolf", "Schröder", "Neumann", "Krüger"]),
    "FR": (["Louis", "Camille", "Hugo", "Chloé", "Lucas", "Manon", "Julien",
            "Léa", "Antoine", "Inès", "Mathis", "Élodie", "Nicolas", "Margaux"],
           ["Martin", "Bernard", "Dubois", "Durand", "Lefebvre", "Moreau",
            "Laurent", "Girard", "Rousseau", "Fontaine", "Chevalier",
            "Lambert", "Faure", "Mercier"]),
    "NL": (["Daan", "Sanne", "Bram", "Lotte", "Ruben", "Femke", "Thijs",
            "Anouk", "Jeroen", "Eva", "Sem", "Fleur"],
           ["de Jong", "Jansen", "de Vries", "van den Berg", "Bakker",
            "Visser", "Smit", "Meijer", "de Boer", "Mulder", "Bos",
            "van Dijk"]),
    "ES": (["Alejandro", "Lucía", "Pablo", "María", "Javier", "Carmen",
            "Sergio", "Laura", "Álvaro", "Marta", "Diego", "Paula", "Iker",
            "Nerea"],
           ["García", "Fernández", "González", "Rodríguez", "López",
            "Martínez", "Sánchez", "Pérez", "Gómez", "Ruiz", "Navarro",
            "Torres", "Etxeberria", "Romero"]),
    "AU": (["Jack", "Charlotte", "Lachlan", "Matilda", "Cooper", "Zoe",
            "Riley", "Chloe", "Mitchell", "Ruby", "Hamish", "Sienna"],
           ["Smith", "Jones", "Williams", "Kelly", "Ryan", "Murphy",
            "O'Brien", "Campbell", "Nguyen", "Chen", "Mitchell", "Harrison"]),
    "IN": (["Arjun", "Priya", "Rahul", "Ananya", "Vikram", "Sneha", "Rohan",
            "Kavya", "Aditya", "Neha", "Karthik", "Divya", "Siddharth",
            "Pooja"],
           ["Sharma", "Patel", "Iyer", "Reddy", "Gupta", "Nair", "Mehta",
            "Rao", "Kulkarni", "Menon", "Chatterjee", "Joshi", "Bhat",
            "Verma"]),
    "JP": (["Haruto", "Yui", "Sota", "Aoi", "Ren", "Hina", "Takumi", "Sakura",
            "Kenji", "Yuki", "Daiki", "Mei"],
           ["Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito",
            "Yamamoto", "Nakamura", "Kobayashi", "Kato", "Yoshida",
            "Matsumoto"]),
    "BR": (["Lucas", "Ana", "Gabriel", "Júlia", "Rafael", "Beatriz",
            "Thiago", "Larissa", "Felipe", "Camila", "João", "Mariana"],
           ["Silva", "Santos", "Oliveira", "Souza", "Lima", "Pereira",
            "Costa", "Ferreira", "Almeida", "Ribeiro", "Carvalho",
            "Gonçalves"]),
    "SG": (["Wei Ling", "Jun Jie", "Hui Min", "Darren", "Rachel", "Ravi",
            "Nurul", "Marcus", "Shu Fen", "Aaron"],
           ["Tan", "Lim", "Lee", "Ng", "Ong", "Wong", "Goh", "Chua",
            "Rahman", "Pillai"]),
}

COMPANY_PREFIXES = [
    "Northwind", "Bluepeak", "Ironclad", "Brightfield", "Silverline",
    "Quellwerk", "Helio", "Cobalt", "Lumen", "Granite", "Tidewater",
    "Redwood", "Polaris", "Kestrel", "Meridian", "Ember", "Harbor",
    "Vantage", "Orchard", "Summit", "Aster", "Fjord", "Copperleaf",
    "Starling", "Zephyr", "Bramble", "Oakridge", "Nimbus", "Sable",
    "Juniper", "Crescent", "Halcyon", "Pinecrest", "Riverstone", "Solace",
    "Waypoint", "Driftwood", "Kindling", "Larkspur", "Monarch",
]

COMPANY_SUFFIXES = {
    "SaaS": ["Analytics", "Cloud", "Software", "Labs", "Platform", "Stack"],
    "Fintech": ["Pay", "Capital", "Ledger", "Finance", "Treasury"],
    "Healthcare": ["Health", "Care", "Clinics", "MedTech", "Diagnostics"],
    "Manufacturing": ["Industries", "Fabrication", "Components", "Works"],
    "Logistics": ["Logistics", "Freight", "Shipping", "Fulfilment"],
    "E-commerce": ["Commerce", "Goods", "Market", "Supply Co"],
    "Cybersecurity": ["Security", "Shield", "Defense", "Sentinel"],
    "Marketing Agency": ["Creative", "Media", "Studio", "Growth Partners"],
}

TITLES = [
    # sales
    "VP of Sales", "Sales Director", "Head of Sales", "Account Executive",
    "Senior Account Executive", "SDR Manager", "Chief Revenue Officer",
    "Director of Business Development", "Head of Partnerships",
    # ops
    "Head of Revenue Operations", "RevOps Manager", "Director of Operations",
    "Operations Manager", "COO", "Head of Growth",
    # engineering
    "CTO", "VP of Engineering", "Engineering Manager", "Head of Platform",
    "Staff Software Engineer", "Director of Engineering",
    # founders
    "Founder & CEO", "Co-Founder", "Co-Founder & CTO",
]

PROMOTIONS = {
    "Account Executive": "Senior Account Executive",
    "Senior Account Executive": "Sales Director",
    "Sales Director": "VP of Sales",
    "Head of Sales": "Chief Revenue Officer",
    "VP of Sales": "Chief Revenue Officer",
    "SDR Manager": "Head of Sales",
    "RevOps Manager": "Head of Revenue Operations",
    "Operations Manager": "Director of Operations",
    "Director of Operations": "COO",
    "Engineering Manager": "Director of Engineering",
    "Staff Software Engineer": "Engineering Manager",
    "Director of Engineering": "VP of Engineering",
    "VP of Engineering": "CTO",
    "Head of Platform": "VP of Engineering",
    "Co-Founder": "Co-Founder & CEO",
    "Head of Revenue Operations": "COO",
    "COO": "Co-Founder & CEO",
    "Head of Growth": "Chief Revenue Officer",
    "Chief Revenue Officer": "COO",
    "Director of Business Development": "VP of Sales",
    "Head of Partnerships": "VP of Sales",
    "CTO": "Co-Founder & CTO",
    "Founder & CEO": "Founder & Executive Chair",
    "Co-Founder & CTO": "Co-Founder & CEO",
}

REGIONS = {
    "US": "Canada", "CA": "the US", "GB": "the Nordics", "DE": "Austria",
    "FR": "Belgium", "NL": "Germany", "ES": "Portugal", "AU": "New Zealand",
    "IN": "Southeast Asia", "JP": "South Korea", "BR": "Mexico",
    "SG": "Indonesia",
}

MESSAGES = [
    "Saw that {company} just opened a {city} office — congrats.",
    "Congrats on {company_pos} Series B, that's a big milestone.",
    "Noticed {company} is hiring SDRs in {city}, looks like a busy year.",
    "Heard {company} is expanding into {region} — exciting times.",
    "Your \"pipeline hygiene\" post about {company_pos} outbound team was spot on.",
    "Loved the new {company} case studies, especially the onboarding one.",
    "Great meeting the {company} team at the {city} meetup last month.",
    "Saw {company} launched a partner program, curious how it's going.",
    "Congrats on {company} crossing 100 customers, well deserved.",
    "Read that {company} moved to a usage-based plan, bold move.",
]

GERMAN_TRANSLIT = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss",
                   "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"}


def ascii_slug(text, sep=""):
    """Lower-case ASCII form of a name part, e.g. 'Müller' -> 'mueller'."""
    text = "".join(GERMAN_TRANSLIT.get(ch, ch) for ch in text)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    out = []
    for ch in text.lower():
        if ch.isalnum() and ch.isascii():
            out.append(ch)
        elif ch in " -'" and out and out[-1] != sep:
            out.append(sep)
    return "".join(out).strip(sep) if sep else "".join(out)


def company_slug(name):
    return ascii_slug(name.replace("&", "and"), sep="-")


def digits(rng, n):
    return "".join(str(rng.randint(0, 9)) for _ in range(n))


# --------------------------------------------------------------------- phones
def phone_parts(rng, country, city_info):
    """Return (country_code, national_significant_number, national_format,
    international_format) for a valid number in the given country."""
    if country in ("US", "CA"):
        area = rng.choice(city_info)
        while True:
            exch = str(rng.randint(2, 9)) + digits(rng, 2)
            if exch != "555" and exch[1:] != "11":
                break
        line = digits(rng, 4)
        nsn = area + exch + line
        return ("1", nsn, f"({area}) {exch}-{line}",
                f"+1 {area} {exch} {line}")
    if country == "GB":  # Ofcom drama ranges, e.g. 020 7946 0xxx
        area, block = city_info
        tail = digits(rng, 3)
        local = (block + tail)
        nsn = area + local.replace(" ", "")
        return ("44", nsn, f"0{area} {local}", f"+44 {area} {local}")
    if country == "DE":  # 0151 2xxxxxxx
        rest = "2" + digits(rng, 7)
        return ("49", "151" + rest, f"0151 {rest}", f"+49 151 {rest}")
    if country == "FR":  # 06 12 34 xx xx
        a, b = digits(rng, 2), digits(rng, 2)
        return ("33", "61234" + a + b, f"06 12 34 {a} {b}",
                f"+33 6 12 34 {a} {b}")
    if country == "NL":  # 06 1234 xxxx
        a = digits(rng, 4)
        return ("31", "61234" + a, f"06 1234 {a}", f"+31 6 1234 {a}")
    if country == "ES":  # 612 34 xx xx
        a, b = digits(rng, 2), digits(rng, 2)
        return ("34", "61234" + a + b, f"612 34 {a} {b}",
                f"+34 612 34 {a} {b}")
    if country == "AU":  # ACMA fiction range 0491 570 xxx
        a = digits(rng, 3)
        return ("61", "491570" + a, f"0491 570 {a}", f"+61 491 570 {a}")
    if country == "IN":  # 98xxx xxxxx
        a, b = digits(rng, 3), digits(rng, 5)
        return ("91", "98" + a + b, f"98{a} {b}", f"+91 98{a} {b}")
    if country == "JP":  # 090-xxxx-xxxx (first digit 1-9)
        a = str(rng.randint(1, 9)) + digits(rng, 3)
        b = digits(rng, 4)
        return ("81", "90" + a + b, f"090-{a}-{b}", f"+81 90-{a}-{b}")
    if country == "BR":  # (11) 9xxxx-xxxx
        ddd = city_info
        a = "9" + str(rng.randint(1, 9)) + digits(rng, 3)
        b = digits(rng, 4)
        return ("55", ddd + a + b, f"({ddd}) {a}-{b}", f"+55 {ddd} {a}-{b}")
    if country == "SG":  # 8xxx xxxx (81-88 are mobile blocks)
        a = "8" + str(rng.randint(1, 8)) + digits(rng, 2)
        b = digits(rng, 4)
        return ("65", a + b, f"{a} {b}", f"+65 {a} {b}")
    raise ValueError(country)


def make_phone(rng, country, city_info):
    cc, nsn, national, international = phone_parts(rng, country, city_info)
    style = rng.random()
    if style < 0.65:
        return f"+{cc}{nsn}"          # E.164
    if style < 0.80:
        return international          # +CC with spaces/dashes
    return national                   # national format, country as region


# ---------------------------------------------------------------- companies
class CompanyPool:
    def __init__(self, rng):
        self.rng = rng
        self.used_names = set()
        self.by_country = {}

    def new_company(self):
        while True:
            industry = self.rng.choice(INDUSTRIES)
            name = (self.rng.choice(COMPANY_PREFIXES) + " "
                    + self.rng.choice(COMPANY_SUFFIXES[industry]))
            if name not in self.used_names:
                self.used_names.add(name)
                return {"name": name, "industry": industry,
                        "slug": company_slug(name)}

    def pick(self, country):
        pool = self.by_country.setdefault(country, [])
        # ~70% of the time a new company, otherwise another contact at an
        # existing one (realistic: several leads per account).
        if not pool or self.rng.random() < 0.7:
            pool.append(self.new_company())
        return self.rng.choice(pool) if self.rng.random() < 0.3 else pool[-1]


# -------------------------------------------------------------------- leads
def make_lead(rng, country, companies, used_emails):
    firsts, lasts = NAMES[country]
    city, tz, city_info = rng.choice(CITIES[country])
    company = companies.pick(country)
    while True:
        first, last = rng.choice(firsts), rng.choice(lasts)
        f, l = ascii_slug(first), ascii_slug(last)
        domain = company["slug"] + ".example"
        for local in (f"{f}.{l}", f"{f[0]}{l}", f"{f}{l[0]}", f"{f}.{l}2"):
            email = f"{local}@{domain}"
            if email.lower() not in used_emails:
                break
        else:
            continue
        used_emails.add(email.lower())
        break

    lead = {
        "email": email,
        "first_name": first,
        "last_name": last,
        "company": company["name"],
        "title": rng.choice(TITLES),
        "industry": company["industry"],
        "country": country,
        "city": city,
        "timezone": "" if rng.random() < 0.15 else tz,
        "phone": make_phone(rng, country, city_info) if rng.random() < 0.40 else "",
        "linkedin_url": "",
        "website": f"https://{domain}",
        "custom_message": "",
    }
    if rng.random() < 0.50:
        lead["linkedin_url"] = (
            f"https://www.linkedin.com/in/{ascii_slug(first, '-')}-"
            f"{ascii_slug(last, '-')}-{rng.getrandbits(24):06x}")
    if rng.random() < 0.30:
        lead["custom_message"] = rng.choice(MESSAGES).format(
            company=company["name"], city=city, region=REGIONS[country],
            company_pos=company["name"]
            + ("'" if company["name"].endswith("s") else "'s"))
    return lead


def case_variant(email, style):
    local, domain = email.split("@")
    if style == 0:    # jane.doe -> Jane.Doe
        local = ".".join(p.capitalize() for p in local.split("."))
    elif style == 1:  # whole address upper-case
        local, domain = local.upper(), domain.upper()
    else:             # capitalised local part and domain
        local = ".".join(p.capitalize() for p in local.split("."))
        domain = "-".join(p.capitalize() for p in domain.split("-"))
    return f"{local}@{domain}"


def build_rows(rng):
    companies = CompanyPool(rng)
    used_emails = set()

    countries = [c for c, n in COUNTRY_COUNTS.items() for _ in range(n)]
    rng.shuffle(countries)
    rows = [make_lead(rng, c, companies, used_emails) for c in countries]
    for r in rows:
        r["_kind"] = "valid"

    # ---- 3 duplicates: re-appear later with different case + new title.
    dup_sources = sorted(rng.sample(range(10, 60), 3))
    dup_targets = [120, 142, 186]          # insertion indexes (pre-invalids)
    for style, (src_idx, tgt) in enumerate(zip(dup_sources, dup_targets)):
        src = rows[src_idx]
        dup = dict(src)
        dup["email"] = case_variant(src["email"], style)
        dup["title"] = PROMOTIONS[src["title"]]
        dup["custom_message"] = ""
        dup["_kind"] = "duplicate"
        dup["_dup_of"] = id(src)
        src["_id"] = id(src)
        rows.insert(tgt, dup)

    # ---- 6 invalid rows, each wrong in exactly one way.
    def base(country):
        lead = make_lead(rng, country, companies, used_emails)
        lead["phone"] = ""
        return lead

    bad = []
    r = base("DE")
    r["email"] = r["email"].replace("@", "")                    # (1) no '@'
    r["_kind"] = "invalid: email has no '@' sign"
    bad.append(r)

    r = base("GB")
    local, domain = r["email"].split("@")
    r["email"] = f"{local}@sales@{domain}"                      # (2) two '@'
    r["_kind"] = "invalid: email has two '@' signs"
    bad.append(r)

    r = base("FR")
    r["email"] = ""                                             # (3) no contact
    r["phone"] = ""
    r["linkedin_url"] = ""
    r["_kind"] = "invalid: no email and no phone (no contact point)"
    bad.append(r)

    r = base("US")
    r["timezone"] = "Mars/Olympus_Mons"                         # (4) bad tz
    r["_kind"] = "invalid: timezone 'Mars/Olympus_Mons' is not an IANA zone"
    bad.append(r)

    r = base("NL")
    r["phone"] = "12ab"                                         # (5) bad phone
    r["_kind"] = "invalid: phone '12ab' is garbage"
    bad.append(r)

    r = base("DE")
    r["country"] = "Germany123"                                 # (6) bad country
    r["_kind"] = "invalid: country 'Germany123' is not an ISO alpha-2 code"
    bad.append(r)

    # Scatter: one invalid row in each sixth of the file after line ~30.
    positions = []
    span = (TOTAL_ROWS - 30) // 6
    for i in range(6):
        lo = 30 + i * span
        positions.append(rng.randint(lo + 5, lo + span - 5))
    for pos, r in zip(positions, bad):
        rows.insert(pos, r)

    assert len(rows) == TOTAL_ROWS, len(rows)
    return rows


def main():
    rng = random.Random(SEED)
    rows = build_rows(rng)

    with open(OUT_PATH, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(HEADER)
        for r in rows:
            w.writerow([r[h] for h in HEADER])

    # Report (line 1 is the header, so data row i is at line i + 2).
    invalid = [(i + 2, r["_kind"]) for i, r in enumerate(rows)
               if r["_kind"].startswith("invalid")]
    line_of = {r["_id"]: i + 2 for i, r in enumerate(rows) if "_id" in r}
    dups = [(line_of[r["_dup_of"]], i + 2) for i, r in enumerate(rows)
            if r["_kind"] == "duplicate"]

    print(f"wrote {OUT_PATH}: {len(rows)} data rows + header")
    print("invalid rows (1-based line numbers, header = line 1):")
    for line, why in invalid:
        print(f"  line {line:3d}: {why}")
    print("duplicate leads (first line -> later case-variant line):")
    for a, b in dups:
        print(f"  line {a:3d} -> line {b:3d}")

    got_invalid = [line for line, _ in invalid]
    if got_invalid != EXPECTED_INVALID_LINES or dups != EXPECTED_DUPLICATE_LINES:
        raise SystemExit(
            "line numbers changed; update the header comment and EXPECTED_* "
            f"lists: invalid={got_invalid} duplicates={dups}")


if __name__ == "__main__":
    main()
