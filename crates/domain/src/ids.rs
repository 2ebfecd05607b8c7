//! Identifiers of stored entities.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// The id of a lead.
    LeadId
);
id_type!(
    /// The id of a campaign.
    CampaignId
);
id_type!(
    /// The id of one lead's enrollment in one campaign.
    EnrollmentId
);
id_type!(
    /// The id of a ledger row: one (enrollment, step) delivery.
    DeliveryId
);
