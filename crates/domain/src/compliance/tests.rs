use super::*;
use crate::contact::{CountryCode, EmailAddress, PhoneE164};
use crate::lead::{LeadStatus, NewLead};
use chrono::TimeZone as _;

fn t(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, 12, 0, 0).unwrap()
}

fn lead(country: Option<&str>, phone: Option<&str>) -> Lead {
    let country = country.map(|c| CountryCode::parse(c).unwrap());
    Lead {
        id: LeadId(7),
        status: LeadStatus::Active,
        profile: NewLead {
            email: Some(EmailAddress::parse("ada@example.com").unwrap()),
            phone: phone.map(|p| PhoneE164::parse(p, None).unwrap()),
            country,
            source: "csv:leads.csv".into(),
            ..NewLead::default()
        },
    }
}

fn record(channel: Option<Channel>, basis: Basis, day: u32) -> ConsentRecord {
    ConsentRecord {
        id: i64::from(day),
        lead_id: LeadId(7),
        channel,
        basis,
        source: format!("form {day}"),
        reference: None,
        contact: None,
        obtained_at: t(day),
        expires_at: None,
    }
}

fn rules() -> ComplianceRules {
    ComplianceRules {
        sender: SenderIdentity {
            name: "Maya Chen".into(),
            company: "Acme".into(),
            postal_address: "548 Market St, San Francisco".into(),
            unsubscribe_endpoint: true,
        },
        ..ComplianceRules::default()
    }
}

/// (case, country, phone, channel, records, company LI, allowed, regimes checked, reason fragment)
#[test]
fn each_validator_reports_its_reason() {
    let li = Some("LIA-2026-01");
    type Case = (
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Channel,
        Vec<ConsentRecord>,
        Option<&'static str>,
        bool,
        &'static [&'static str],
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "US email: CAN-SPAM only",
            Some("US"),
            None,
            Channel::Email,
            vec![],
            None,
            true,
            &["can_spam"],
            "postal address",
        ),
        (
            "DE email without a basis",
            Some("DE"),
            None,
            Channel::Email,
            vec![],
            None,
            false,
            &["gdpr", "can_spam"],
            "no lawful basis",
        ),
        (
            "DE email under the company LI",
            Some("DE"),
            None,
            Channel::Email,
            vec![],
            li,
            true,
            &["gdpr", "can_spam"],
            "LIA-2026-01",
        ),
        (
            "DE sms: company LI does not cover texts",
            Some("DE"),
            Some("+4915123456789"),
            Channel::Sms,
            vec![],
            li,
            false,
            &["gdpr"],
            "does not cover",
        ),
        (
            "DE sms with consent",
            Some("DE"),
            Some("+4915123456789"),
            Channel::Sms,
            vec![record(Some(Channel::Sms), Basis::Consent, 2)],
            None,
            true,
            &["gdpr"],
            "form 2",
        ),
        (
            "GB lead with its own LI record",
            Some("GB"),
            None,
            Channel::Linkedin,
            vec![record(None, Basis::LegitimateInterest, 3)],
            None,
            true,
            &["gdpr"],
            "legitimate_interest",
        ),
        (
            "US sms without consent",
            Some("US"),
            Some("+14155550123"),
            Channel::Sms,
            vec![],
            li,
            false,
            &["tcpa"],
            "no prior express consent",
        ),
        (
            "US sms with email-only consent",
            Some("US"),
            Some("+14155550123"),
            Channel::Sms,
            vec![record(Some(Channel::Email), Basis::Consent, 2)],
            None,
            false,
            &["tcpa"],
            "no prior express consent",
        ),
        (
            "US sms with consent",
            Some("US"),
            Some("+14155550123"),
            Channel::Sms,
            vec![record(Some(Channel::Sms), Basis::Consent, 2)],
            None,
            true,
            &["tcpa"],
            "prior express consent",
        ),
        (
            "US sms consent then STOP",
            Some("US"),
            Some("+14155550123"),
            Channel::Sms,
            vec![
                record(Some(Channel::Sms), Basis::Consent, 2),
                record(Some(Channel::Sms), Basis::Withdrawn, 4),
            ],
            None,
            false,
            &["tcpa"],
            "withdrew consent",
        ),
        (
            "US sms STOP then START",
            Some("US"),
            Some("+14155550123"),
            Channel::Sms,
            vec![
                record(Some(Channel::Sms), Basis::Withdrawn, 2),
                record(Some(Channel::Sms), Basis::Consent, 4),
            ],
            None,
            true,
            &["tcpa"],
            "form 4",
        ),
        (
            "CA email without consent",
            Some("CA"),
            None,
            Channel::Email,
            vec![],
            li,
            false,
            &["can_spam", "casl"],
            "no express or implied",
        ),
        (
            "CA email with implied consent",
            Some("CA"),
            None,
            Channel::Email,
            vec![record(None, Basis::Implied, 1)],
            None,
            true,
            &["can_spam", "casl"],
            "implied consent until 2028",
        ),
        (
            "CA LinkedIn: CASL does not apply",
            Some("CA"),
            None,
            Channel::Linkedin,
            vec![],
            None,
            true,
            &[],
            "",
        ),
        (
            "Japan email: CAN-SPAM only",
            Some("JP"),
            None,
            Channel::Email,
            vec![],
            None,
            true,
            &["can_spam"],
            "one-click",
        ),
        (
            "no country, UK phone: GDPR by phone region",
            None,
            Some("+442079460958"),
            Channel::Sms,
            vec![],
            None,
            false,
            &["gdpr"],
            "no lawful basis",
        ),
    ];
    for (name, country, phone, channel, records, li, allowed, regimes, fragment) in cases {
        let mut r = rules();
        r.legitimate_interest = li.map(str::to_owned);
        let v = check(&r, &lead(country, phone), channel, &records, t(20));
        assert_eq!(v.allowed(), allowed, "{name}: {}", v.describe());
        assert_eq!(v.regimes(), regimes.to_vec(), "{name}");
        assert!(
            v.describe().contains(fragment),
            "{name}: {:?} lacks {fragment:?}",
            v.describe()
        );
    }
}

#[test]
fn an_objection_blocks_every_channel_for_good() {
    let records = vec![
        record(None, Basis::Consent, 1),
        record(None, Basis::Objection, 5),
        record(Some(Channel::Sms), Basis::Consent, 9),
    ];
    for channel in Channel::ALL {
        for country in ["US", "DE", "JP"] {
            let v = check(
                &rules(),
                &lead(Some(country), Some("+14155550123")),
                channel,
                &records,
                t(20),
            );
            assert!(!v.allowed(), "{channel} {country}");
            assert!(v.describe().contains("objection"), "{}", v.describe());
        }
    }
}

#[test]
fn consent_for_another_number_does_not_cover_a_new_one() {
    let mut r = record(Some(Channel::Sms), Basis::Consent, 2);
    r.contact = Some("+14155550199".into());
    let v = check(
        &rules(),
        &lead(Some("US"), Some("+14155550123")),
        Channel::Sms,
        &[r.clone()],
        t(20),
    );
    assert!(!v.allowed());
    r.contact = Some("+14155550123".into());
    let v = check(
        &rules(),
        &lead(Some("US"), Some("+14155550123")),
        Channel::Sms,
        &[r],
        t(20),
    );
    assert!(v.allowed(), "{}", v.describe());
}

#[test]
fn implied_consent_lapses_after_two_years_or_its_expiry() {
    let mut r = record(None, Basis::Implied, 1);
    let l = lead(Some("CA"), None);
    let later = t(1) + Duration::days(731);
    let v = check(&rules(), &l, Channel::Email, &[r.clone()], later);
    assert!(!v.allowed());
    assert!(
        v.describe().contains("lapsed") || v.describe().contains("no express"),
        "{}",
        v.describe()
    );
    r.expires_at = Some(t(10));
    let v = check(&rules(), &l, Channel::Email, &[r], t(20));
    assert!(!v.allowed());
}

#[test]
fn disabled_validators_are_not_run() {
    let mut r = rules();
    r.validators = vec![Regime::Gdpr, Regime::CanSpam];
    let v = check(
        &r,
        &lead(Some("US"), Some("+14155550123")),
        Channel::Sms,
        &[],
        t(20),
    );
    assert!(v.allowed());
    assert!(v.checks.is_empty());
}

#[test]
fn can_spam_fails_without_postal_address_or_unsubscribe() {
    let mut r = rules();
    r.sender.postal_address.clear();
    r.sender.unsubscribe_endpoint = false;
    let v = check(&r, &lead(Some("US"), None), Channel::Email, &[], t(20));
    assert!(!v.allowed());
    assert!(
        v.describe()
            .contains("a postal address and a working unsubscribe endpoint"),
        "{}",
        v.describe()
    );
}

#[test]
fn consents_come_from_imported_fields() {
    let mut l = lead(Some("US"), Some("+14155550123"));
    l.profile
        .custom
        .insert("sms_consent".into(), "web form, 2026-02 webinar".into());
    l.profile
        .custom
        .insert("consent_at".into(), "2026-02-14".into());
    l.profile.custom.insert("email_consent".into(), "no".into());
    let records = consents_from_fields(&l, t(20));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].channel, Some(Channel::Sms));
    assert_eq!(
        records[0].obtained_at.format("%Y-%m-%d").to_string(),
        "2026-02-14"
    );
    assert!(check(&rules(), &l, Channel::Sms, &records, t(20)).allowed());
    let mut other = l.clone();
    other.profile.phone = Some(PhoneE164::parse("+14155550999", None).unwrap());
    // A consent read from the lead's fields covers the number imported with it.
    assert!(!check(&rules(), &other, Channel::Sms, &records, t(20)).allowed());
}

#[test]
fn campaign_problems_halt_deceptive_or_unidentified_campaigns() {
    use crate::campaign::{Campaign, Step, StepTemplate};
    let mut r = rules();
    let step = Step {
        index: 0,
        name: "intro".into(),
        channels: vec![Channel::Email],
        delay: Duration::zero(),
        business_days: 0,
        delay_bounds: None,
        window: None,
        template: StepTemplate {
            subject: Some("A question".into()),
            body: "b".into(),
            html: None,
        },
        fallback_on_failure: None,
        task_deadline: Duration::days(crate::campaign::DEFAULT_TASK_DEADLINE_DAYS),
        on_deadline: crate::campaign::OnDeadline::Skip,
        angle: None,
        variants: Vec::new(),
        experiment: Default::default(),
    };
    let mut c = Campaign::new(
        crate::CampaignId(1),
        "spring".into(),
        "Spring".into(),
        vec![step],
        crate::timing::SendWindow::business_hours(),
    )
    .unwrap();
    assert!(
        campaign_problems(&r, &c).is_empty(),
        "{:?}",
        campaign_problems(&r, &c)
    );
    c.steps[0].template = StepTemplate {
        subject: Some("RE: our call".into()),
        body: "hello".into(),
        html: None,
    };
    let p = campaign_problems(&r, &c);
    assert_eq!(p.len(), 1);
    assert!(p[0].to_string().contains("deceptive subject"), "{}", p[0]);
    c.steps[0].template.subject = Some("Hello".into());
    c.steps[0].template.html = Some("<p>Hi</p><!-- tracking".into());
    assert!(campaign_problems(&r, &c)[0].to_string().contains("hides"));
    c.steps[0].template.html = Some("<p>Hi <!-- a note --> there</p>".into());
    assert!(campaign_problems(&r, &c).is_empty());
    r.sender.postal_address.clear();
    let p = campaign_problems(&r, &c);
    assert!(
        p.iter().any(|p| p.to_string().contains("postal address")),
        "{p:?}"
    );
}

#[test]
fn implied_consent_needs_a_date() {
    let mut l = lead(Some("CA"), None);
    l.profile.custom.insert(
        "casl_implied".into(),
        "address published on the company site".into(),
    );
    let undated = consents_from_fields(&l, DateTime::<Utc>::UNIX_EPOCH);
    let v = check(&rules(), &l, Channel::Email, &undated, t(20));
    assert!(!v.allowed());
    assert!(v.describe().contains("without a date"), "{}", v.describe());
    l.profile
        .custom
        .insert("consent_at".into(), "2026-02-01".into());
    let dated = consents_from_fields(&l, DateTime::<Utc>::UNIX_EPOCH);
    assert!(check(&rules(), &l, Channel::Email, &dated, t(20)).allowed());
}
