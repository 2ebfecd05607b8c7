//! SMS segment counting (GSM 03.38 7-bit vs UCS-2), as carriers bill it.

/// The encoding a message will be sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsEncoding {
    /// GSM 03.38 7-bit default alphabet (with extension characters counting twice).
    Gsm7,
    /// UCS-2, used as soon as one character is outside the GSM alphabet.
    Ucs2,
}

/// How a text splits into billable segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsSegments {
    /// The encoding.
    pub encoding: SmsEncoding,
    /// Length in encoding units (septets or UTF-16 code units).
    pub units: usize,
    /// Number of segments.
    pub segments: usize,
}

const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXTENSION: &str = "^{}\\[~]|€\u{000C}";

/// Counts the segments of an SMS body.
pub fn sms_segments(text: &str) -> SmsSegments {
    let mut septets = 0usize;
    let mut gsm = true;
    for c in text.chars() {
        if GSM_BASIC.contains(c) {
            septets += 1;
        } else if GSM_EXTENSION.contains(c) {
            septets += 2;
        } else {
            gsm = false;
            break;
        }
    }
    if gsm {
        let segments = match septets {
            0 => 0,
            n if n <= 160 => 1,
            n => n.div_ceil(153),
        };
        SmsSegments {
            encoding: SmsEncoding::Gsm7,
            units: septets,
            segments,
        }
    } else {
        let units = text.encode_utf16().count();
        let segments = match units {
            0 => 0,
            n if n <= 70 => 1,
            n => n.div_ceil(67),
        };
        SmsSegments {
            encoding: SmsEncoding::Ucs2,
            units,
            segments,
        }
    }
}

/// Whether a text tells the recipient how to opt out (`STOP` as a word, any case).
pub fn has_stop_wording(text: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case("stop"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm_and_ucs2_boundaries() {
        assert_eq!(sms_segments(&"a".repeat(160)).segments, 1);
        assert_eq!(sms_segments(&"a".repeat(161)).segments, 2);
        assert_eq!(sms_segments(&"a".repeat(306)).segments, 2);
        assert_eq!(sms_segments(&"a".repeat(307)).segments, 3);
        let euro = sms_segments(&"€".repeat(80));
        assert_eq!(
            (euro.encoding, euro.units, euro.segments),
            (SmsEncoding::Gsm7, 160, 1)
        );
        let emoji = sms_segments("Hi 👋");
        assert_eq!(emoji.encoding, SmsEncoding::Ucs2);
        assert_eq!(emoji.units, 5);
        assert_eq!(sms_segments(&"ü".repeat(70)).encoding, SmsEncoding::Gsm7);
        assert_eq!(sms_segments(&"ł".repeat(71)).segments, 2);
        assert_eq!(sms_segments("").segments, 0);
    }

    #[test]
    fn stop_wording() {
        assert!(has_stop_wording("Reply STOP to opt out"));
        assert!(has_stop_wording("stop."));
        assert!(!has_stop_wording("Unstoppable growth"));
    }
}
