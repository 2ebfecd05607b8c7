//! Reply classification: what a person's answer means (positive, neutral, negative, out of
//! office, a request to unsubscribe), the event each class is recorded as, and the keyword
//! rules used when no model is configured or the model fails.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::EventKind;

/// What a reply means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReplyClass {
    /// Interested: wants a call, a demo, more information with intent.
    Positive,
    /// A person answered without interest or refusal ("who are you?", "send it later").
    Neutral,
    /// Not interested, wrong person, annoyed.
    Negative,
    /// An automatic or out-of-office answer.
    OutOfOffice,
    /// Asks to be removed from the list.
    Unsubscribe,
}

impl ReplyClass {
    /// Every class, in display order.
    pub const ALL: [ReplyClass; 5] = [
        ReplyClass::Positive,
        ReplyClass::Neutral,
        ReplyClass::Negative,
        ReplyClass::OutOfOffice,
        ReplyClass::Unsubscribe,
    ];

    /// The name used in storage, output and the model's answer.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyClass::Positive => "positive",
            ReplyClass::Neutral => "neutral",
            ReplyClass::Negative => "negative",
            ReplyClass::OutOfOffice => "out_of_office",
            ReplyClass::Unsubscribe => "unsubscribe",
        }
    }

    /// The event kind a reply of this class is recorded as: positive and neutral replies stop
    /// the sequence like any reply, a negative one is a negative signal, an out-of-office
    /// answer changes nothing, and a request to unsubscribe is a negative reply that also
    /// opts the lead out (see [`ReplyClass::opts_out`]).
    pub fn event_kind(self) -> EventKind {
        match self {
            ReplyClass::Positive | ReplyClass::Neutral => EventKind::Replied,
            ReplyClass::Negative | ReplyClass::Unsubscribe => EventKind::NegativeReply,
            ReplyClass::OutOfOffice => EventKind::AutoReplied,
        }
    }

    /// Whether the reply opts the lead out like an unsubscribe (suppression, status
    /// `unsubscribed`).
    pub fn opts_out(self) -> bool {
        self == ReplyClass::Unsubscribe
    }
}

impl fmt::Display for ReplyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unrecognized reply class.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown reply class {0:?}: expected positive, neutral, negative, out_of_office or unsubscribe"
)]
pub struct UnknownReplyClass(pub String);

impl FromStr for ReplyClass {
    type Err = UnknownReplyClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "positive" => Ok(ReplyClass::Positive),
            "neutral" => Ok(ReplyClass::Neutral),
            "negative" => Ok(ReplyClass::Negative),
            "out_of_office" | "ooo" | "auto_reply" => Ok(ReplyClass::OutOfOffice),
            "unsubscribe" | "unsubscribe_request" | "opt_out" => Ok(ReplyClass::Unsubscribe),
            _ => Err(UnknownReplyClass(s.to_owned())),
        }
    }
}

const UNSUBSCRIBE: &[&str] = &[
    "unsubscribe",
    "remove me",
    "take me off",
    "opt me out",
    "opt out",
    "stop emailing",
    "stop contacting",
    "stop sending",
    "do not contact",
    "don't contact",
    "do not email",
    "don't email",
    "abmelden",
    "désabonner",
    "desabonner",
];

const OUT_OF_OFFICE: &[&str] = &[
    "out of office",
    "out of the office",
    "on vacation",
    "on holiday",
    "on leave",
    "automatic reply",
    "auto-reply",
    "autoreply",
    "away until",
    "back on",
    "limited access to email",
    "abwesenheitsnotiz",
    "réponse automatique",
];

const NEGATIVE: &[&str] = &[
    "not interested",
    "no interest",
    "no thanks",
    "no thank you",
    "not a fit",
    "not relevant",
    "wrong person",
    "please stop",
    "leave me alone",
    "we're all set",
    "we are all set",
    "already have a solution",
    "kein interesse",
    "pas intéressé",
];

const POSITIVE: &[&str] = &[
    "interested",
    "let's talk",
    "lets talk",
    "let's chat",
    "happy to chat",
    "book a",
    "schedule a",
    "set up a call",
    "a call",
    "a demo",
    "a meeting",
    "sounds good",
    "sounds great",
    "tell me more",
    "send me more",
    "when are you free",
    "what time",
    "calendar",
    "yes",
];

/// Classifies a reply by keyword rules over its subject and text, in priority order
/// (unsubscribe, out of office, negative, positive; otherwise neutral). Returns the class and
/// the phrase that decided it.
pub fn classify_by_keywords(subject: &str, text: &str) -> (ReplyClass, String) {
    let all = format!("{subject}\n{text}").to_lowercase();
    let words = |phrase: &str| contains_phrase(&all, phrase);
    for (class, phrases) in [
        (ReplyClass::Unsubscribe, UNSUBSCRIBE),
        (ReplyClass::OutOfOffice, OUT_OF_OFFICE),
        (ReplyClass::Negative, NEGATIVE),
        (ReplyClass::Positive, POSITIVE),
    ] {
        if let Some(p) = phrases.iter().find(|p| words(p)) {
            return (class, format!("keyword rule: \"{p}\""));
        }
    }
    (
        ReplyClass::Neutral,
        "keyword rule: no known phrase".to_owned(),
    )
}

/// Whether `phrase` occurs in `text` on word boundaries ("yes" is not in "eyes").
fn contains_phrase(text: &str, phrase: &str) -> bool {
    let mut from = 0;
    while let Some(at) = text[from..].find(phrase) {
        let start = from + at;
        let end = start + phrase.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        if boundary(before) && boundary(after) {
            return true;
        }
        from = start + phrase.len().max(1);
        while !text.is_char_boundary(from) {
            from += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_rules_classify_typical_replies() {
        for (subject, text, expected) in [
            (
                "Re: intro",
                "Please remove me from your list.",
                ReplyClass::Unsubscribe,
            ),
            (
                "Out of Office: Re: intro",
                "I am away until Monday.",
                ReplyClass::OutOfOffice,
            ),
            (
                "Re: intro",
                "Thanks, but we are not interested.",
                ReplyClass::Negative,
            ),
            (
                "Re: intro",
                "Sounds good - can we book a call Tuesday?",
                ReplyClass::Positive,
            ),
            ("Re: intro", "Who gave you my address?", ReplyClass::Neutral),
            // "yes" inside "eyes" is no answer.
            ("Re: intro", "I'll keep my eyes open.", ReplyClass::Neutral),
            // "not interested" wins over "interested".
            (
                "Re: intro",
                "Not interested, but good luck.",
                ReplyClass::Negative,
            ),
        ] {
            assert_eq!(classify_by_keywords(subject, text).0, expected, "{text}");
        }
    }

    #[test]
    fn classes_parse_and_map_to_events() {
        for class in ReplyClass::ALL {
            assert_eq!(class.as_str().parse::<ReplyClass>().unwrap(), class);
        }
        assert_eq!(
            "out-of-office".parse::<ReplyClass>().unwrap(),
            ReplyClass::OutOfOffice
        );
        assert!("maybe"
            .parse::<ReplyClass>()
            .unwrap_err()
            .to_string()
            .contains("maybe"));
        assert_eq!(ReplyClass::OutOfOffice.event_kind(), EventKind::AutoReplied);
        assert_eq!(
            ReplyClass::Unsubscribe.event_kind(),
            EventKind::NegativeReply
        );
        assert!(ReplyClass::Unsubscribe.opts_out() && !ReplyClass::Negative.opts_out());
        assert!(!ReplyClass::OutOfOffice.event_kind().stops_sequences());
        assert!(ReplyClass::Neutral.event_kind().stops_sequences());
    }
}
