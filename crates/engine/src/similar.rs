//! What similar leads did on each channel: sends and positive replies grouped by the leads'
//! industry and country, read once per planner pass, for channel choice.

use std::collections::HashMap;

use engager_domain::channel_choice::ChannelEvidence;
use engager_domain::{Channel, Lead};
use engager_store::ChannelEvidenceRow;

/// Sends a group needs before it stands for "similar leads".
pub const MIN_GROUP_SENDS: u64 = 30;

/// Evidence per industry, per country and overall.
#[derive(Debug, Clone, Default)]
pub struct SimilarLeads {
    by_industry: HashMap<String, HashMap<Channel, ChannelEvidence>>,
    by_country: HashMap<String, HashMap<Channel, ChannelEvidence>>,
    all: HashMap<Channel, ChannelEvidence>,
}

fn add(map: &mut HashMap<Channel, ChannelEvidence>, row: &ChannelEvidenceRow) {
    let e = map.entry(row.channel).or_default();
    e.sent += row.sent;
    e.positive += row.positive;
}

fn total(map: &HashMap<Channel, ChannelEvidence>) -> u64 {
    map.values().map(|e| e.sent).sum()
}

impl SimilarLeads {
    /// Groups the store's rows.
    pub fn from_rows(rows: &[ChannelEvidenceRow]) -> Self {
        let mut s = Self::default();
        for row in rows {
            if !row.industry.trim().is_empty() {
                add(
                    s.by_industry
                        .entry(row.industry.trim().to_lowercase())
                        .or_default(),
                    row,
                );
            }
            if !row.country.trim().is_empty() {
                add(s.by_country.entry(row.country.clone()).or_default(), row);
            }
            add(&mut s.all, row);
        }
        s
    }

    /// The evidence for leads like this one: its industry's when that has enough sends, else
    /// its country's, else everyone's; with the group's name.
    pub fn for_lead(&self, lead: &Lead) -> (String, &HashMap<Channel, ChannelEvidence>) {
        let industry = lead
            .profile
            .industry
            .as_deref()
            .map(|i| i.trim().to_lowercase())
            .and_then(|i| self.by_industry.get(&i).map(|m| (i, m)))
            .filter(|(_, m)| total(m) >= MIN_GROUP_SENDS);
        if let Some((name, m)) = industry {
            return (format!("industry {name}"), m);
        }
        let country = lead
            .profile
            .country
            .as_ref()
            .map(|c| c.to_string())
            .and_then(|c| self.by_country.get(&c).map(|m| (c, m)))
            .filter(|(_, m)| total(m) >= MIN_GROUP_SENDS);
        if let Some((name, m)) = country {
            return (format!("country {name}"), m);
        }
        ("all leads".to_owned(), &self.all)
    }
}
